// AVX-512 build of the plane kernels (selected when the CPU reports avx512f).
#include <cstring>
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,fma")
#define VHEAT_ISA avx512
#define VHEAT_VEC_BYTES 64
#define VHEAT_ROW_BLOCK 8
#define VHEAT_GROUP 4
#define VHEAT_GROUP_ROW_BLOCK 6
#include "plane_kernels_impl.h"
