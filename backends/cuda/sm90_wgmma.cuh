/* Hopper (sm_90a) building blocks shared by the wgmma kernels
 * (cuda_flash_sm90.cu) and the benchmarks that try new ones
 * (bench/cuda/gemm_pingpong.cu): mbarriers, named barriers between two
 * warpgroups, TMA loads completing an mbarrier, the descriptors of
 * 128-byte-swizzled shared-memory operands and the wgmma instructions over
 * them. Device code only; include after <cuda.h> (CUtensorMap). */
#pragma once

#include <cuda.h>
#include <stdint.h>

/* this thread's warpgroup (threadIdx.x / 128), read from lane 0 so that
 * the compiler knows it is the same in every lane of the warp: the
 * shared-memory descriptors built from it then stay in uniform registers
 * instead of moving there before each wgmma (CUTLASS's
 * canonical_warp_group_idx does the same) */
__device__ __forceinline__ int warpgroup_index()
{
    return __shfl_sync(0xffffffffu, (int)threadIdx.x / 128, 0);
}

/* mbarriers in shared memory (at shared address `bar`) */
__device__ __forceinline__ void mbar_init(unsigned bar, int count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}

__device__ __forceinline__ void mbar_arrive(unsigned bar)
{
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar) : "memory");
}

/* arrives once this thread's earlier cp.asyncs have landed (counted among
 * the barrier's expected arrivals) */
__device__ __forceinline__ void mbar_arrive_copies(unsigned bar)
{
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}

/* waits for the completion of the barrier's phase of this parity */
__device__ __forceinline__ void mbar_wait(unsigned bar, int parity)
{
    asm volatile("{\n.reg .pred p;\nWAIT:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
                 "@!p bra WAIT;\n}\n" ::"r"(bar),
                 "r"(parity)
                 : "memory");
}

/* named barriers 1 and 2 between the two warpgroups (256 threads): one
 * arrives, the other waits */
__device__ __forceinline__ void named_arrive(int id)
{
    if (id == 1)
        asm volatile("bar.arrive 1, 256;\n" ::: "memory");
    else
        asm volatile("bar.arrive 2, 256;\n" ::: "memory");
}

__device__ __forceinline__ void named_sync(int id)
{
    if (id == 1)
        asm volatile("bar.sync 1, 256;\n" ::: "memory");
    else
        asm volatile("bar.sync 2, 256;\n" ::: "memory");
}

/* shared memory that other threads' copies wrote, as wgmma (the async
 * proxy) will read it */
__device__ __forceinline__ void fence_async_proxy()
{
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

/* wgmma shared-memory descriptor of a 128-byte-swizzled operand at shared
 * address `a`: stride between 8-row groups 1,024 bytes, between 64-wide
 * column blocks `lbo` bytes (read for MN-major operands only) */
__device__ __forceinline__ uint64_t sw128_desc(unsigned a, unsigned lbo)
{
    return (uint64_t)((a & 0x3ffffu) >> 4) | (uint64_t)((lbo >> 4) & 0x3fffu) << 16 |
           (uint64_t)(1024 >> 4) << 32 | (uint64_t)1 << 62;
}

/* The same descriptor as a low word built once and advanced: sw128_at(lo,
 * off) is sw128_desc(a + off, lbo) where lo = sw128_lo(a, lbo), one 32-bit
 * add a k step instead of the mask-and-shift chain ptxas otherwise emits
 * before every wgmma (shared addresses stay below 2^18, so the address
 * field never carries into the next) */
__device__ __forceinline__ unsigned sw128_lo(unsigned a, unsigned lbo)
{
    return ((a & 0x3ffffu) >> 4) | ((lbo >> 4) & 0x3fffu) << 16;
}

__device__ __forceinline__ uint64_t sw128_at(unsigned lo, unsigned off)
{
    return (uint64_t)(lo + (off >> 4)) | (uint64_t)(1024 >> 4) << 32 | (uint64_t)1 << 62;
}

__device__ __forceinline__ void wgmma_fence()
{
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void wgmma_commit()
{
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void wgmma_wait_all()
{
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}

/* all but the last committed group done */
__device__ __forceinline__ void wgmma_wait_one()
{
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
}

/* A 64 x N x 16 wgmma's accumulators, N / 2 floats a thread (d[0] ..),
 * as asm operands of constraint C ("+f" accumulates, "=f" overwrites) and
 * as the instruction's register list */
#define FW_ACC4(C, i) C(d[i]), C(d[i + 1]), C(d[i + 2]), C(d[i + 3])
#define FW_ACC16(C, i) FW_ACC4(C, i), FW_ACC4(C, i + 4), FW_ACC4(C, i + 8), FW_ACC4(C, i + 12)
#define FW_ACC32(C) FW_ACC16(C, 0), FW_ACC16(C, 16)
#define FW_ACC64(C) FW_ACC32(C), FW_ACC16(C, 32), FW_ACC16(C, 48)
#define FW_ACC68(C) FW_ACC64(C), FW_ACC4(C, 64)
#define FW_ACC104(C) FW_ACC64(C), FW_ACC16(C, 64), FW_ACC16(C, 80), FW_ACC4(C, 96), FW_ACC4(C, 100)
/* the register lists of 32, 64 and 104 accumulators, in pieces */
#define FW_L0 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
#define FW_L1 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define FW_L2 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47"
#define FW_L3 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define FW_L4 "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79"
#define FW_L5 "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95"
#define FW_L6 "%96, %97, %98, %99, %100, %101, %102, %103"
#define FW_REGS32 "{" FW_L0 ", " FW_L1 "}"
#define FW_REGS64 "{" FW_L0 ", " FW_L1 ", " FW_L2 ", " FW_L3 "}"
#define FW_REGS68 "{" FW_L0 ", " FW_L1 ", " FW_L2 ", " FW_L3 ", %64, %65, %66, %67}"
#define FW_REGS104 "{" FW_L0 ", " FW_L1 ", " FW_L2 ", " FW_L3 ", " FW_L4 ", " FW_L5 ", " FW_L6 "}"
/* the instruction: A and B descriptors (SS) or A's four registers and B's
 * descriptor (RS, B MN-major: transposed), then the predicate operand that
 * says whether to add to d */
#define FW_SS(N, REGS, A, B, P)                                                                                    \
    "{\n.reg .pred p;\nsetp.ne.b32 p, " P ", 0;\nwgmma.mma_async.sync.aligned.m64n" N "k16.f32.bf16.bf16 " REGS    \
    ", " A ", " B ", p, 1, 1, 0, 0;\n}\n"
#define FW_RS(N, REGS, A, B, P)                                                                                    \
    "{\n.reg .pred p;\nsetp.ne.b32 p, " P ", 0;\nwgmma.mma_async.sync.aligned.m64n" N "k16.f32.bf16.bf16 " REGS    \
    ", " A ", " B ", p, 1, 1, 1;\n}\n"

/* d (+)= A B for a 64 x N x 16 tile, A and B K-major in shared memory;
 * the first k step (ACC false) only writes d, so nothing before it orders
 * against the wgmma */
template <int N, bool ACC> __device__ __forceinline__ void wgmma_ss(float *d, uint64_t a, uint64_t b)
{
    static_assert(N == 64 || N == 128 || N == 208, "64, 128 or 208 columns");
    if constexpr (N == 64 && ACC)
        asm volatile(FW_SS("64", FW_REGS32, "%32", "%33", "%34") : FW_ACC32("+f") : "l"(a), "l"(b), "r"(1));
    else if constexpr (N == 64)
        asm volatile(FW_SS("64", FW_REGS32, "%32", "%33", "%34") : FW_ACC32("=f") : "l"(a), "l"(b), "r"(0));
    else if constexpr (N == 128 && ACC)
        asm volatile(FW_SS("128", FW_REGS64, "%64", "%65", "%66") : FW_ACC64("+f") : "l"(a), "l"(b), "r"(1));
    else if constexpr (N == 128)
        asm volatile(FW_SS("128", FW_REGS64, "%64", "%65", "%66") : FW_ACC64("=f") : "l"(a), "l"(b), "r"(0));
    else if constexpr (ACC)
        asm volatile(FW_SS("208", FW_REGS104, "%104", "%105", "%106") : FW_ACC104("+f") : "l"(a), "l"(b), "r"(1));
    else
        asm volatile(FW_SS("208", FW_REGS104, "%104", "%105", "%106") : FW_ACC104("=f") : "l"(a), "l"(b), "r"(0));
}

/* the same with whether to add to d decided at run time (acc 0: d = A B),
 * so a loop's first step needs no branch of its own (a wgmma in a divergent
 * path makes ptxas serialize them all, C7520) */
template <int N> __device__ __forceinline__ void wgmma_ss_acc(float *d, uint64_t a, uint64_t b, int acc)
{
    static_assert(N == 64 || N == 128, "64 or 128 columns");
    if constexpr (N == 64)
        asm volatile(FW_SS("64", FW_REGS32, "%32", "%33", "%34") : FW_ACC32("+f") : "l"(a), "l"(b), "r"(acc));
    else
        asm volatile(FW_SS("128", FW_REGS64, "%64", "%65", "%66") : FW_ACC64("+f") : "l"(a), "l"(b), "r"(acc));
}

/* d (+)= A B for a 64 x N x 16 tile, A in registers, B MN-major
 * (transposed) in shared memory; with ACC false d is only written. N 136:
 * head dim 128 and 8 columns of ones, whose sums are A's row sums
 * (d[64 .. 67]) */
template <int N, bool ACC = true> __device__ __forceinline__ void wgmma_rs(float *d, const uint32_t *a, uint64_t b)
{
    static_assert(N == 64 || N == 128 || N == 136, "64, 128 or 136 columns");
    if constexpr (N == 136 && ACC)
        asm volatile(FW_RS("136", FW_REGS68, "{%68, %69, %70, %71}", "%72", "%73")
                     : FW_ACC68("+f")
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
    else if constexpr (N == 136)
        asm volatile(FW_RS("136", FW_REGS68, "{%68, %69, %70, %71}", "%72", "%73")
                     : FW_ACC68("=f")
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(0));
    else if constexpr (N == 64 && ACC)
        asm volatile(FW_RS("64", FW_REGS32, "{%32, %33, %34, %35}", "%36", "%37")
                     : FW_ACC32("+f")
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
    else if constexpr (N == 64)
        asm volatile(FW_RS("64", FW_REGS32, "{%32, %33, %34, %35}", "%36", "%37")
                     : FW_ACC32("=f")
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(0));
    else if constexpr (ACC)
        asm volatile(FW_RS("128", FW_REGS64, "{%64, %65, %66, %67}", "%68", "%69")
                     : FW_ACC64("+f")
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
    else
        asm volatile(FW_RS("128", FW_REGS64, "{%64, %65, %66, %67}", "%68", "%69")
                     : FW_ACC64("=f")
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(0));
}

/* keeps the compiler from moving uses of wgmma accumulators across the
 * issue or the wait (the asm statements alone do not order them) */
template <int N> __device__ __forceinline__ void fence_regs(float *d)
{
#pragma unroll
    for (int i = 0; i < N; i++)
        asm volatile("" : "+f"(d[i])::"memory");
}

__device__ __forceinline__ void mbar_expect(unsigned bar, unsigned bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

/* box (c0, c1, c2) of the map into shared memory at dst, completing `bar`'s
 * transaction bytes */
__device__ __forceinline__ void tma_load(unsigned dst, const CUtensorMap *map, int c0, int c1, int c2, unsigned bar)
{
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
                 "[%5];\n" ::"r"(dst),
                 "l"((uint64_t)map), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
                 : "memory");
}
