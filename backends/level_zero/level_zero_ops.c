/* The Level Zero backend's ops other than GEMM, and GEMM with quantized
 * B: the OpenCL backend's kernel_ops.inc, kernel_quant.inc and
 * kernel_moe.inc over Level Zero's launch (the kernels are the same). */
#include "level_zero_internal.h"

#define KO_FN(name) dy_ze_##name
#define KO_CTX struct dy_ze_ctx
#define KO_MEM dy_ze_devptr
#define KO_MEM_OF dy_ze_mem
#define KO_OFF dy_ze_off
#define KO_KERNEL(name) DY_ZE_K_##name
#define KO_LAUNCH dy_ze_launch
#define KO_ARGS DY_ZE_ARGS
#define KO_ARG DY_ZE_ARG
#define KO_LOCAL DY_ZE_LOCAL
#define KO_WG DY_ZE_WG
#define KO_FAILF dy_ze_failf
#define KO_DTYPE_NAME dy_ze_dtype_name
#define KO_SCRATCH dy_ze_scratch
#define KO_GQA_DECODE(c) 1

#include "../opencl/kernel_ops.inc"
#include "../opencl/kernel_quant.inc"
#include "../opencl/kernel_moe.inc"
