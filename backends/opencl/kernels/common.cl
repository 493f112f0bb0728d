/* Shared by every kernel: dtype codes, loads and stores that convert to and
 * from f32 exactly as backend.h does, and work-group reductions.
 *
 * Buffers arrive as bytes plus a byte offset (OpenCL 1.2 has no device
 * pointers, and sub-buffers need aligned origins), so kernels index with
 * element offsets from `base + off`. Arithmetic is f32: PoCL and NVIDIA's
 * OpenCL have no cl_khr_fp16, so f16 is read with vload_half and bf16 by
 * shifting its bits into the top of an f32. fp8 (E4M3) and int8 are
 * KV-cache and weight dtypes, stored as bytes (byte stores are core since
 * OpenCL 1.1); int4 is a weight dtype, two to a byte. */

/* backend.h's enum dy_dtype */
#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2
#define DT_I32 3
#define DT_FP8 4
#define DT_I8 5
#define DT_I4 6

/* Every kernel that reduces over a work-group uses this size; the host
 * launches with it (opencl_internal.h's DY_OCL_WG). */
#define WG 128

#define BYTES(base, off) ((__global uchar *)(base) + (off))
#define CBYTES(base, off) ((__global const uchar *)(base) + (off))

/* Bytes per element. Not `t == DT_F32 || t == DT_I32 ? 4 : ...`: clang
 * makes a switch of that with two cases to one block, whose phi
 * llvm-spirv-14 writes with a parent twice, which spirv-val rejects. */
size_t dtype_size(int t)
{
    return t >= DT_FP8 ? 1 : t == DT_F16 || t == DT_BF16 ? 2 : 4;
}

/* backend.h's dy_fp8_to_f32, N at a time, in integer operations and one
 * subtraction (no f32 subnormals, which a device may flush): exponent and
 * mantissa move into an f32's with the bias 7 made 127. A subnormal
 * (exponent 0) is m * 2^-9, read as 2^-6 * 1.m less 2^-6, exactly. Four
 * at a time for GPUs, sixteen (a CPU's vector) for the span kernels. */
#define FP8_TO_F32(N)                                                                  \
    float##N fp8x##N##_to_f32(uchar##N b)                                              \
    {                                                                                  \
        uint##N u = convert_uint##N(b);                                                \
        uint##N sign = (u & 0x80u) << 24, mag = (u & 0x7fu) << 20;                    \
        float##N normal = as_float##N(mag + (120u << 23));                             \
        float##N subnormal = as_float##N(mag | 0x3c800000u) - 0x1p-6f;                \
        float##N v = as_float##N(as_uint##N(select(normal, subnormal, (u & 0x78u) == 0)) | \
                                 sign);                                                \
        return select(v, (float##N)NAN, (u & 0x7fu) == 0x7fu);                         \
    }
FP8_TO_F32(4)
FP8_TO_F32(16)

/* int8 to f32 through the bits of 2^23 + 128 + x: conversion instructions
 * run at a fraction of the rate of integer and float ones on GPUs. */
float4 i8x4_to_f32(uchar4 b)
{
    return as_float4(convert_uint4(b ^ (uchar4)0x80u) | 0x4b000000u) - 8388736.0f;
}

/* backend.h's dy_f32_to_fp8 in integer code: its subnormal path rounds by
 * an f32 addition that a compiler may fuse or fold (NVIDIA's fuses
 * fill_random's product into its sum, see ops.cl). */
uchar f32_to_fp8(float f)
{
    uint u = as_uint(f);
    uint sign = (u >> 24) & 0x80u;
    uint a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uchar)(sign | 0x7fu);
    if (a >= 0x43e00000u) /* 448 and up, infinity too, saturate */
        return (uchar)(sign | 0x7eu);
    if (a >= 0x3c800000u) { /* from 2^-6, the smallest normal */
        a += 0x7ffffu + ((a >> 20) & 1u);
        return (uchar)(sign | ((a - (120u << 23)) >> 20));
    }
    if (a <= 0x3a800000u) /* up to half the smallest subnormal: 0 (ties to even) */
        return (uchar)sign;
    /* steps of 2^-9: the significand shifted right by 21 to 24 bits,
     * rounded to nearest even; 8 steps make the smallest normal, 0x08 */
    uint man = (a & 0x7fffffu) | 0x800000u, shift = 141u - (a >> 23);
    man += (1u << (shift - 1)) - 1u + ((man >> shift) & 1u);
    return (uchar)(sign | (man >> shift));
}

/* Element i of a buffer of dtype t as f32; int8 is the integer itself, its
 * scale lives elsewhere (as backend.h's dy_load_f32). */
float ld(__global const uchar *p, int t, size_t i)
{
    if (t == DT_FP8)
        return fp8x4_to_f32((uchar4)p[i]).x;
    if (t == DT_I8)
        return (float)((__global const char *)p)[i];
    if (t == DT_F16)
        return vload_half(i, (__global const half *)p);
    if (t == DT_BF16)
        return as_float((uint)((__global const ushort *)p)[i] << 16);
    if (t == DT_I32)
        return (float)((__global const int *)p)[i];
    return ((__global const float *)p)[i];
}

/* Bytes of `count` elements of dtype t (int4: two to a byte), as
 * backend.h's dy_dtype_bytes. */
size_t dtype_bytes(int t, size_t count)
{
    return t == DT_I4 ? (count + 1) / 2 : count * dtype_size(t);
}

/* Element (j, i) of a weight matrix of dtype t, rows k elements apart: for
 * fp8, int8 and int4 backend.h's dy_dequant (scale and zero the matrix's
 * own, zero NULL for symmetric int4), one f32 product as the host's, so
 * that the value is the same bits; the value itself for the other dtypes. */
float ldw(__global const uchar *w, int t, __global const float *scale, __global const uchar *zero,
          int k, int group, size_t j, int i)
{
    size_t e = j * k + i;
    if (t < DT_FP8)
        return ld(w, t, e);
    if (t != DT_I4)
        return scale[t == DT_I8 ? j : 0] * ld(w, t, e);
    size_t g = j * (k / group) + i / group;
    int nibble = (w[e / 2] >> (4 * (e & 1))) & 15;
    return scale[g] * (float)(nibble - (zero ? zero[g] : 8));
}

/* backend.h's dy_f32_to_f16 in integer code, so that rounding, overflow to
 * infinity and NaN match the host bit for bit whatever the device's
 * vstore_half does. */
ushort f32_to_f16(float f)
{
    uint u = as_uint(f);
    uint sign = (u >> 16) & 0x8000u;
    uint a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (ushort)(sign | 0x7e00u);
    if (a >= 0x477ff000u)
        return (ushort)(sign | 0x7c00u);
    if (a < 0x38800000u) {
        /* adding 0.5 puts the half subnormal's bits at the bottom of the
         * mantissa, rounded to nearest even by the adder */
        float s = as_float(a) + 0.5f;
        return (ushort)(sign | (as_uint(s) - 0x3f000000u));
    }
    a += 0xc8000fffu + ((a >> 13) & 1u);
    return (ushort)(sign | (a >> 13));
}

ushort f32_to_bf16(float f)
{
    uint u = as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (ushort)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (ushort)(u >> 16);
}

void st(__global uchar *p, int t, size_t i, float x)
{
    if (t == DT_F16)
        ((__global ushort *)p)[i] = f32_to_f16(x);
    else if (t == DT_BF16)
        ((__global ushort *)p)[i] = f32_to_bf16(x);
    else if (t == DT_I32)
        ((__global int *)p)[i] = (int)x;
    else if (t == DT_FP8)
        p[i] = f32_to_fp8(x);
    else if (t == DT_I8)
        ((__global char *)p)[i] = (char)x;
    else
        ((__global float *)p)[i] = x;
}

/* f32_to_f16 and f32_to_bf16 on N values at once, their branches made
 * selects, so that a CPU converts a vector in a handful of instructions:
 * eight for the span kernels, four for norm's register path. */
#define F32_TO_16BIT(N)                                                                \
    ushort##N f32x##N##_to_f16(float##N f)                                             \
    {                                                                                  \
        uint##N u = as_uint##N(f);                                                     \
        uint##N sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;                       \
        uint##N h = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;                        \
        h = select(h, as_uint##N(as_float##N(a) + 0.5f) - 0x3f000000u, a < 0x38800000u); \
        h = select(h, (uint##N)0x7c00u, a >= 0x477ff000u);                             \
        h = select(h, (uint##N)0x7e00u, a > 0x7f800000u);                              \
        return convert_ushort##N(h | sign);                                            \
    }                                                                                  \
    ushort##N f32x##N##_to_bf16(float##N f)                                            \
    {                                                                                  \
        uint##N u = as_uint##N(f);                                                     \
        uint##N r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;                            \
        return convert_ushort##N(select(r, (u >> 16) | 0x40u,                          \
                                        (u & 0x7fffffffu) > 0x7f800000u));             \
    }
F32_TO_16BIT(4)
F32_TO_16BIT(8)

/* Eight values to elements i to i + 7 of a float dtype or fp8, any
 * alignment of the element: st() eight times over. */
void st8(__global uchar *p, int t, size_t i, float8 x)
{
    if (t == DT_F16)
        vstore8(f32x8_to_f16(x), 0, (__global ushort *)p + i);
    else if (t == DT_BF16)
        vstore8(f32x8_to_bf16(x), 0, (__global ushort *)p + i);
    else if (t == DT_FP8)
        vstore8((uchar8)(f32_to_fp8(x.s0), f32_to_fp8(x.s1), f32_to_fp8(x.s2), f32_to_fp8(x.s3),
                         f32_to_fp8(x.s4), f32_to_fp8(x.s5), f32_to_fp8(x.s6), f32_to_fp8(x.s7)),
                0, p + i);
    else
        vstore8(x, 0, (__global float *)p + i);
}

/* Eight consecutive elements from i on, any alignment of the element. */
float8 ld8(__global const uchar *p, int t, size_t i)
{
    if (t == DT_F16)
        return vload_half8(0, (__global const half *)p + i);
    if (t == DT_BF16)
        return as_float8(convert_uint8(vload8(0, (__global const ushort *)p + i)) << 16);
    return vload8(0, (__global const float *)p + i);
}

/* Eight f16 or bf16 values of one 16-byte word as floats. f16 goes through
 * a private copy: vload_half8 straight from global memory compiles to
 * eight 2-byte loads on NVIDIA (a third of the bandwidth), from registers
 * to conversions only. */
float8 unpack8(uint4 w, int t)
{
    if (t == DT_F16) {
        uint bits[4] = { w.x, w.y, w.z, w.w };
        return vload_half8(0, (const half *)bits);
    }
    return as_float8((uint8)(w.x << 16, w.x & 0xffff0000u, w.y << 16, w.y & 0xffff0000u,
                             w.z << 16, w.z & 0xffff0000u, w.w << 16, w.w & 0xffff0000u));
}

/* Eight elements from a 16-byte aligned address: one 16-byte load for the
 * 16-bit dtypes, two for f32, so weights and KV rows are read in wide,
 * coalesced transactions. */
float8 ld8_aligned(__global const uchar *p, int t)
{
    if (t == DT_F32) {
        __global const float4 *f = (__global const float4 *)p;
        return (float8)(f[0], f[1]);
    }
    return unpack8(*(__global const uint4 *)p, t);
}

/* Eight values of a cache of element size `esize` from an element index
 * that is a multiple of 8, the cache on 16 bytes: one 8-byte load for the
 * one-byte dtypes (int8 without its scale). */
float8 cache8(__global const uchar *cache, size_t i, size_t esize, int dtype)
{
    if (esize != 1)
        return ld8_aligned(cache + i * esize, dtype);
    uchar8 b = *(__global const uchar8 *)(cache + i);
    if (dtype == DT_FP8)
        return (float8)(fp8x4_to_f32(b.lo), fp8x4_to_f32(b.hi));
    return (float8)(i8x4_to_f32(b.lo), i8x4_to_f32(b.hi));
}

/* Sixteen values of a one-byte cache from a 16-byte aligned address. */
float16 bytes16(__global const uchar *p, int dtype)
{
    uchar16 b = *(__global const uchar16 *)p;
    if (dtype == DT_FP8)
        return (float16)(fp8x4_to_f32(b.s0123), fp8x4_to_f32(b.s4567), fp8x4_to_f32(b.s89ab),
                         fp8x4_to_f32(b.scdef));
    return (float16)(i8x4_to_f32(b.s0123), i8x4_to_f32(b.s4567), i8x4_to_f32(b.s89ab),
                     i8x4_to_f32(b.scdef));
}

float dot16(float16 x, float16 w)
{
    return dot(x.s0123, w.s0123) + dot(x.s4567, w.s4567) + dot(x.s89ab, w.s89ab) +
           dot(x.scdef, w.scdef);
}

float dot8(float8 x, float8 w)
{
    return dot(x.lo, w.lo) + dot(x.hi, w.hi);
}

float sum8(float8 v)
{
    float4 h = v.lo + v.hi;
    return h.x + h.y + h.z + h.w;
}

float sum16(float16 v)
{
    return sum8(v.lo + v.hi);
}

/* component i (0-3) of v, i known only at run time */
float lane_of(float4 v, int i)
{
    return i == 0 ? v.s0 : i == 1 ? v.s1 : i == 2 ? v.s2 : v.s3;
}

/* Asks a CPU to fetch n bytes from p into its caches ahead of their use:
 * clang's prefetch builtin where the host says the device is a CPU
 * (DY_OCL_CPU; OpenCL's own prefetch() does nothing in PoCL), nothing on
 * other devices, whose compilers need not know the builtin. */
void prefetch_bytes(__global const uchar *p, size_t n)
{
#ifdef DY_OCL_CPU
    for (size_t o = 0; o < n; o += 64)
        __builtin_prefetch(p + o);
#endif
}

/* Sum and maximum of one value per work-item over a work-group of WG
 * items; every item gets the result. `red` holds WG floats and may be
 * reused right after the call. */
float group_sum(__local float *red, float v)
{
    int lid = get_local_id(0);
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WG / 2; s > 0; s >>= 1) {
        if (lid < s)
            red[lid] += red[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float r = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

float group_max(__local float *red, float v)
{
    int lid = get_local_id(0);
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WG / 2; s > 0; s >>= 1) {
        if (lid < s)
            red[lid] = fmax(red[lid], red[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float r = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}
