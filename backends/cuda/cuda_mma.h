/* Warp-level tensor-core pieces for sm_80 and later, CUDA only (HIP builds
 * do not include it): mma.sync m16n8k16 over bf16 with f32 accumulators,
 * ldmatrix and movmatrix, and the split of f32 values into two bf16
 * terms. Shared by the int4 GEMV on the tensor cores (cuda_qgemv.cu) and
 * decode attention on the tensor cores (cuda_decode.cu). */
#ifndef DY_CUDA_MMA_H
#define DY_CUDA_MMA_H

#include <stdint.h>

/* d += a b: a the 16 x 16 A fragment, (b0, b1) the 16 x 8 B fragment */
__device__ __forceinline__ void mma_bf16_16816(float *d, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* four 8 x 8 matrices of 16-bit elements from shared memory, lane l giving
 * the address of row l % 8 of matrix l / 8 (.trans: each transposed) */
__device__ __forceinline__ void ldsm_x4(const void *p, uint32_t *r)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((unsigned)__cvta_generic_to_shared(p))
                 : "memory");
}

__device__ __forceinline__ void ldsm_x4_trans(const void *p, uint32_t *r)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((unsigned)__cvta_generic_to_shared(p))
                 : "memory");
}

/* an 8 x 8 matrix of 16-bit elements, one word a lane, transposed */
__device__ __forceinline__ uint32_t movmatrix_trans(uint32_t x)
{
    uint32_t y;
    asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
    return y;
}

/* (x0, x1) as bf16 pairs hi and lo with x = hi + lo to 16 bits of
 * mantissa (f32's range); x0 in the low halves */
__device__ __forceinline__ void bf16_split(float x0, float x1, uint32_t *hi, uint32_t *lo)
{
    uint32_t h, l;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(h) : "f"(x1), "f"(x0));
    float r0 = x0 - __uint_as_float(h << 16), r1 = x1 - __uint_as_float(h & 0xffff0000u);
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(l) : "f"(r1), "f"(r0));
    *hi = h;
    *lo = l;
}

#endif
