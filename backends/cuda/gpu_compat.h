/* One source for two vendors: the CUDA backend's .cu files include this
 * header instead of the CUDA headers, so nvcc builds libdyno-cuda.so and
 * hipcc builds libdyno-hip.so from the same text (ggml's vendors/hip.h does
 * the same). Under hipcc the cuda* names the sources use are mapped to their
 * hip* equivalents; under nvcc nothing is renamed.
 *
 * DY_WARP is the number of lanes a kernel's warp has: 32 on NVIDIA, the
 * wavefront size on AMD. The kernels derive lane and warp indices, block
 * sizes, shuffle offsets and lanes per head-dim slice from it, so on a
 * wave64 chip a "warp" is the whole wavefront and every __shfl_xor stays
 * inside it. It is a compile-time constant because the host side sizes the
 * launches with it: the HIP build passes -DDY_WARP=64 and targets only
 * wave64 chips (gfx90a, gfx940); the device pass checks that below, and
 * ctx_create checks the device's warpSize at run time.
 * The other way, 32-lane logical warps inside a wavefront, would also be
 * correct (an xor offset below 32 never leaves its half), but the two
 * halves share one program counter: where the kernels branch per warp
 * (keys per query row in prefill, columns past n in the GEMV) the halves
 * would diverge and run one after the other. With warp = wavefront,
 * control flow that is uniform per warp is uniform on the hardware. */
#ifndef DY_GPU_COMPAT_H
#define DY_GPU_COMPAT_H

#if defined(__HIP_PLATFORM_AMD__) || defined(__HIPCC__)

#include <hip/hip_runtime.h>
#include <hip/hip_fp16.h>
/* no hip_bf16.h in ROCm 5.2: bf16 goes through backend.h's bit conversions */

#define DY_HIP 1
#define DY_GPU_NAME "hip"
#define DY_GPU_VENDOR "AMD"
#define DY_GPU_API "HIP"
#define DY_GPU_API_PREFIX "hip"
#ifndef DY_WARP
#define DY_WARP 64
#endif
#if defined(__HIP_DEVICE_COMPILE__) && __AMDGCN_WAVEFRONT_SIZE != DY_WARP
#error "DY_WARP must equal the target's wavefront size: build wave32 targets with -DDY_WARP=32"
#endif
/* No vendor BLAS on this side (Debian ships no hipBLAS): GEMMs beyond the
 * decode GEMV take the portable tiled kernel in cuda_gemm.cu. */
#define DY_GPU_BLAS 0

/* runtime: types and constants */
#define cudaError_t hipError_t
#define cudaSuccess hipSuccess
#define cudaErrorMemoryAllocation hipErrorOutOfMemory
#define cudaStream_t hipStream_t
#define cudaEvent_t hipEvent_t
#define cudaDeviceProp hipDeviceProp_t
#define cudaStreamNonBlocking hipStreamNonBlocking
#define cudaMemcpyHostToDevice hipMemcpyHostToDevice
#define cudaMemcpyDeviceToHost hipMemcpyDeviceToHost
#define cudaMemcpyDeviceToDevice hipMemcpyDeviceToDevice
#define cudaDevAttrClockRate hipDeviceAttributeClockRate
#define cudaDevAttrMultiProcessorCount hipDeviceAttributeMultiprocessorCount
#define cudaDevAttrWarpSize hipDeviceAttributeWarpSize
/* no opt-in on AMD: a block may have all of a CU's LDS */
#define cudaDevAttrMaxSharedMemoryPerBlockOptin hipDeviceAttributeMaxSharedMemoryPerBlock
#define cudaFuncAttributeMaxDynamicSharedMemorySize hipFuncAttributeMaxDynamicSharedMemorySize
#define cudaGraph_t hipGraph_t
#define cudaGraphExec_t hipGraphExec_t
#define cudaStreamCaptureModeThreadLocal hipStreamCaptureModeThreadLocal

/* runtime: functions */
#define cudaGetErrorString hipGetErrorString
#define cudaGetErrorName hipGetErrorName
#define cudaGetLastError hipGetLastError
#define cudaGetDeviceCount hipGetDeviceCount
#define cudaGetDeviceProperties hipGetDeviceProperties
#define cudaDeviceGetAttribute hipDeviceGetAttribute
#define cudaDriverGetVersion hipDriverGetVersion
#define cudaRuntimeGetVersion hipRuntimeGetVersion
#define cudaSetDevice hipSetDevice
#define cudaMalloc hipMalloc
#define cudaFree hipFree
/* hipMallocHost/hipFreeHost are deprecated in favour of these */
#define cudaMallocHost(ptr, bytes) hipHostMalloc(ptr, bytes, hipHostMallocDefault)
#define cudaFreeHost hipHostFree
#define cudaMemcpyAsync hipMemcpyAsync
#define cudaMemsetAsync hipMemsetAsync
#define cudaMemGetInfo hipMemGetInfo
#define cudaStreamCreateWithFlags hipStreamCreateWithFlags
#define cudaStreamSynchronize hipStreamSynchronize
#define cudaStreamDestroy hipStreamDestroy
#define cudaEventCreate hipEventCreate
#define cudaEventDestroy hipEventDestroy
#define cudaEventRecord hipEventRecord
#define cudaEventSynchronize hipEventSynchronize
#define cudaEventElapsedTime hipEventElapsedTime
#define cudaFuncSetAttribute(fn, attr, value) hipFuncSetAttribute((const void *)(fn), attr, value)
#define cudaStreamBeginCapture hipStreamBeginCapture
#define cudaStreamEndCapture hipStreamEndCapture
#define cudaGraphInstantiateWithFlags hipGraphInstantiateWithFlags
#define cudaGraphLaunch hipGraphLaunch
#define cudaGraphDestroy hipGraphDestroy
#define cudaGraphExecDestroy hipGraphExecDestroy

/* device code: HIP 5.2 has no *_sync shuffles or votes. The mask only names lanes
 * that take part, and every caller passes the full warp, so dropping it
 * keeps the meaning; the offsets the kernels use are below DY_WARP. */
#define __shfl_xor_sync(mask, var, lane_mask) __shfl_xor(var, lane_mask)
#define __shfl_up_sync(mask, var, delta) __shfl_up(var, delta)
#define __shfl_sync(mask, var, src_lane) __shfl(var, src_lane)
#define __any_sync(mask, predicate) __any(predicate)
#define __ballot_sync(mask, predicate) __ballot(predicate) /* 64 bits on a wave64 chip */
/* a wavefront runs in lockstep: a fence around a compiler barrier orders
 * its lanes' shared-memory accesses (what later HIP's __syncwarp does) */
__device__ static inline void __syncwarp()
{
    __builtin_amdgcn_fence(__ATOMIC_RELEASE, "wavefront");
    __builtin_amdgcn_wave_barrier();
    __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "wavefront");
}

#else /* nvcc */

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cublas_v2.h>
#include <cublasLt.h>

#define DY_HIP 0
#define DY_GPU_NAME "cuda"
#define DY_GPU_VENDOR "NVIDIA"
#define DY_GPU_API "CUDA"
#define DY_GPU_API_PREFIX "cuda"
#define DY_WARP 32
/* -DDY_GPU_BLAS=0 builds the portable GEMM instead of cuBLAS, to check the
 * HIP build's path on an NVIDIA card */
#ifndef DY_GPU_BLAS
#define DY_GPU_BLAS 1
#endif

#endif

/* Programmatic dependent launch (Hopper and later). A kernel launched with
 * dy_launch may start while the kernel before it in the stream is still
 * running: DY_GRID_WAIT() blocks until that kernel has finished and its
 * writes are visible, so every such kernel calls it before it touches
 * memory another kernel writes or reads (weights, which no kernel of a
 * step writes, may be fetched before it). DY_GRID_RELEASE() lets the next
 * kernel's blocks be scheduled; a kernel that never calls it releases them
 * when it ends. No-ops where the instructions do not exist (HIP, older
 * NVIDIA targets), where launches keep the stream's plain order. */
#if !DY_HIP && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define DY_GRID_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#define DY_GRID_RELEASE() asm volatile("griddepcontrol.launch_dependents;" :::)
/* Starts bringing `bytes` (a multiple of 16, 16-byte aligned) at p into L2. */
#define DY_PREFETCH_L2(p, bytes) \
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"((unsigned)(bytes)) : "memory")
#else
#define DY_GRID_WAIT() ((void)0)
#define DY_GRID_RELEASE() ((void)0)
#define DY_PREFETCH_L2(p, bytes) ((void)0)
#endif
/* Before DY_GRID_WAIT(): starts bringing the first `bytes` of weights at p,
 * at most `cap`, into L2, so that the block's first loads find them there
 * while the kernel before it is still finishing. One thread asks for a
 * block's (or a warp's) share; a p not on 16 bytes asks for nothing. */
#define DY_PREFETCH_BYTES 32768 /* a block's share */
static __device__ __forceinline__ void dy_prefetch_weights(const void *p, size_t bytes, size_t cap)
{
    bytes = (bytes < cap ? bytes : cap) & ~(size_t)15;
    if (bytes && ((size_t)p & 15) == 0)
        DY_PREFETCH_L2(p, bytes);
}
/* The usual start of a dy_launch kernel: wait for the one before, then let
 * the one after begin. */
#define DY_GRID_ENTER() \
    do {                \
        DY_GRID_WAIT(); \
        DY_GRID_RELEASE(); \
    } while (0)

#endif
