/* Shared by every kernel: dtype codes, loads and stores that convert to and
 * from f32 exactly as backend.h does, and work-group reductions.
 *
 * Buffers arrive as bytes plus a byte offset (OpenCL 1.2 has no device
 * pointers, and sub-buffers need aligned origins), so kernels index with
 * element offsets from `base + off`. Arithmetic is f32: PoCL and NVIDIA's
 * OpenCL have no cl_khr_fp16, so f16 is read with vload_half and bf16 by
 * shifting its bits into the top of an f32. */

/* backend.h's enum dy_dtype */
#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2
#define DT_I32 3

/* Every kernel that reduces over a work-group uses this size; the host
 * launches with it (opencl_internal.h's DY_OCL_WG). */
#define WG 128

#define BYTES(base, off) ((__global uchar *)(base) + (off))
#define CBYTES(base, off) ((__global const uchar *)(base) + (off))

float ld(__global const uchar *p, int t, size_t i)
{
    if (t == DT_F16)
        return vload_half(i, (__global const half *)p);
    if (t == DT_BF16)
        return as_float((uint)((__global const ushort *)p)[i] << 16);
    if (t == DT_I32)
        return (float)((__global const int *)p)[i];
    return ((__global const float *)p)[i];
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
    else
        ((__global float *)p)[i] = x;
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

/* Eight elements from a 16-byte aligned address: one 16-byte load for the
 * 16-bit dtypes, two for f32, so weights and KV rows are read in wide,
 * coalesced transactions. f16 goes through a private copy: vload_half8
 * straight from global memory compiles to eight 2-byte loads on NVIDIA
 * (a third of the bandwidth), from registers to conversions only. */
float8 ld8_aligned(__global const uchar *p, int t)
{
    if (t == DT_F32) {
        __global const float4 *f = (__global const float4 *)p;
        return (float8)(f[0], f[1]);
    }
    uint4 w = *(__global const uint4 *)p;
    if (t == DT_F16) {
        uint bits[4] = { w.x, w.y, w.z, w.w };
        return vload_half8(0, (const half *)bits);
    }
    return as_float8((uint8)(w.x << 16, w.x & 0xffff0000u, w.y << 16, w.y & 0xffff0000u,
                             w.z << 16, w.z & 0xffff0000u, w.w << 16, w.w & 0xffff0000u));
}

float dot8(float8 x, float8 w)
{
    return dot(x.lo, w.lo) + dot(x.hi, w.hi);
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
