// Baseline x86-64 / other-architecture build of the plane kernels.
#include <cstring>
#define VHEAT_ISA generic
#define VHEAT_VEC_BYTES 16
#define VHEAT_ROW_BLOCK 2
#define VHEAT_GROUP 1
#define VHEAT_GROUP_ROW_BLOCK 2
#include "plane_kernels_impl.h"
