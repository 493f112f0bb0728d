/* The OpenCL backend's ops other than GEMM, and GEMM with quantized B:
 * kernel_ops.inc, kernel_quant.inc and kernel_moe.inc over OpenCL's
 * launch. */
#include "opencl_internal.h"

#define KO_FN(name) dy_ocl_##name
#define KO_CTX struct dy_ocl_ctx
#define KO_MEM cl_mem
#define KO_MEM_OF dy_ocl_mem
#define KO_OFF dy_ocl_off
#define KO_KERNEL(name) DY_OCL_K_##name
#define KO_LAUNCH dy_ocl_launch
#define KO_ARGS DY_OCL_ARGS
#define KO_ARG DY_OCL_ARG
#define KO_LOCAL DY_OCL_LOCAL
#define KO_WG DY_OCL_WG
#define KO_FAILF dy_ocl_failf
#define KO_DTYPE_NAME dy_ocl_dtype_name
#define KO_SCRATCH dy_ocl_scratch
#define KO_GEMV_LANES(c) ((c)->gemv_lanes)
#define KO_GEMV_OLD(c) ((c)->gemv_old)
#define KO_GEMV1_GPU(c, d) dy_ocl_gemv1_fits(c, d)
#define KO_SPANS(c) ((c)->spans)
#define KO_GQA_DECODE(c) ((c)->gqa_decode)

#include "kernel_ops.inc"
#include "kernel_quant.inc"
#include "kernel_moe.inc"
