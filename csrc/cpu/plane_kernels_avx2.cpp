// AVX2 + FMA build of the plane kernels. 16 ymm registers: a dense block of 2 lines keeps
// 3 rows x 2 lines x 2 ymm accumulators and one input point of both lines (4 ymm) in
// registers; 2 rows load each input point for fewer multiply-adds, 4 rows spill.
#include <cstring>
#pragma GCC target("avx2,fma")
#define VHEAT_ISA avx2
#define VHEAT_VEC_BYTES 32
#define VHEAT_ROW_BLOCK 6
#define VHEAT_GROUP 2
#define VHEAT_GROUP_ROW_BLOCK 3
#include "plane_kernels_impl.h"
