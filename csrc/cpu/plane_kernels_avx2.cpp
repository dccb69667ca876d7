// AVX2 + FMA build of the plane kernels (16 ymm registers: 4 rows x 2 ymm accumulators, inputs kept in registers).
#include <cstring>
#pragma GCC target("avx2,fma")
#define VHEAT_ISA avx2
#define VHEAT_VEC_BYTES 32
#define VHEAT_ROW_BLOCK 4
#define VHEAT_GROUP 2
#define VHEAT_GROUP_ROW_BLOCK 2
#include "plane_kernels_impl.h"
