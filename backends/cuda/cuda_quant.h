/* Device helpers for the one-byte KV caches (fp8 E4M3 and int8 with scales),
 * shared by the KV ops and the decode kernels, and for quantized weights
 * (int4 too). Every conversion is exact, so caches written here match
 * backend.h's helpers bit for bit. */
#ifndef DY_CUDA_QUANT_H
#define DY_CUDA_QUANT_H

#include "gpu_compat.h"

#include "../backend.h"

static inline bool dy_cuda_is_activation_dtype(enum dy_dtype t)
{
    return t == DY_F32 || t == DY_F16 || t == DY_BF16;
}

static inline bool dy_cuda_is_cache_dtype(enum dy_dtype t)
{
    return dy_cuda_is_activation_dtype(t) || t == DY_FP8 || t == DY_I8;
}

/* dy_f32_to_fp8 in integer arithmetic only: backend.h's subnormal path
 * rounds with (x * 512 + 2^23) - 2^23, which a compiler that contracts or
 * reassociates floating point could change. */
__device__ __forceinline__ uint8_t dy_cuda_f32_to_fp8(float f)
{
    uint32_t bits = __float_as_uint(f);
    uint8_t sign = (uint8_t)((bits >> 24) & 0x80u);
    uint32_t abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u)
        return (uint8_t)(sign | 0x7fu);
    if (abs >= 0x43e00000u) /* 448 */
        return (uint8_t)(sign | 0x7eu);
    if (abs < 0x3c800000u) {
        /* below 2^-6: x * 2^9 = mantissa >> (141 - exponent), rounded to
         * nearest even; 8 becomes the smallest normal, 0x08 */
        int exponent = (int)(abs >> 23);
        int shift = 141 - (exponent ? exponent : 1);
        if (shift > 31)
            return sign;
        uint32_t mantissa = (abs & 0x7fffffu) | (exponent ? 0x800000u : 0u);
        uint32_t q = mantissa >> shift, rest = mantissa & ((1u << shift) - 1u), half = 1u << (shift - 1);
        q += rest > half || (rest == half && (q & 1u));
        return (uint8_t)(sign | q);
    }
    abs += 0x7ffffu + ((abs >> 20) & 1u); /* round the 20 dropped bits */
    return (uint8_t)(sign | ((abs - (120u << 23)) >> 20));
}

/* dy_store_f32 with the fp8 encoder above. */
__device__ __forceinline__ void dy_cuda_store_f32(void *base, enum dy_dtype t, size_t i, float x)
{
    if (t == DY_FP8)
        ((uint8_t *)base)[i] = dy_cuda_f32_to_fp8(x);
    else
        dy_store_f32(base, t, i, x);
}

/* The four bytes of w, lowest first, as f32 values (int8: the integers, the
 * scale is applied by the caller). */
template <enum dy_dtype CT> __device__ __forceinline__ void dy_cuda_unpack4(uint32_t w, float *out);

template <> __device__ __forceinline__ void dy_cuda_unpack4<DY_I8>(uint32_t w, float *out)
{
    /* byte ^ 0x80 is the value + 128; under the exponent of 2^23 it is the
     * low bits of 2^23 + 128 + value, which one subtraction takes away */
    uint32_t biased = w ^ 0x80808080u;
#pragma unroll
    for (int i = 0; i < 4; i++)
        out[i] = __uint_as_float(__byte_perm(biased, 0x4b000000u, 0x7540u | i)) - 8388736.0f;
}

template <> __device__ __forceinline__ void dy_cuda_unpack4<DY_FP8>(uint32_t w, float *out)
{
#if !DY_HIP && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    /* every E4M3 value is exact in f16: one conversion per pair of bytes */
    uint32_t lo, hi;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(lo) : "h"((unsigned short)(w & 0xffffu)));
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(hi) : "h"((unsigned short)(w >> 16)));
    float2 a = __half22float2(*(const __half2 *)&lo), b = __half22float2(*(const __half2 *)&hi);
    out[0] = a.x;
    out[1] = a.y;
    out[2] = b.x;
    out[3] = b.y;
#else
#pragma unroll
    for (int i = 0; i < 4; i++)
        out[i] = dy_fp8_to_f32((uint8_t)(w >> (8 * i)));
#endif
}

/* The eight int4 weights of one 32-bit word (element 2b is byte b's low
 * nibble, 2b + 1 its high one) as f32 q - zero, given zf = 2^23 + zero:
 * a byte permute builds 2^23 + q in the mantissa and one subtraction
 * takes 2^23 + zero away, exactly (no integer-to-float conversion). */
__device__ __forceinline__ void dy_cuda_unpack8_i4(uint32_t w, float zf, float *out)
{
    uint32_t lo = w & 0x0f0f0f0fu, hi = (w >> 4) & 0x0f0f0f0fu;
#pragma unroll
    for (int b = 0; b < 4; b++) {
        out[2 * b] = __uint_as_float(__byte_perm(lo, 0x4b000000u, 0x7540u | b)) - zf;
        out[2 * b + 1] = __uint_as_float(__byte_perm(hi, 0x4b000000u, 0x7540u | b)) - zf;
    }
}

/* Word w of a 16-byte load. */
static __device__ __forceinline__ uint32_t word_of(const uint4 &r, int w)
{
    return w == 0 ? r.x : w == 1 ? r.y : w == 2 ? r.z : r.w;
}

#endif
