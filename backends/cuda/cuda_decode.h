/* Shared by the decode-attention kernels: cuda_attention.cu (the generic
 * kernel, the split merge and the dispatch) and cuda_decode.cu (the
 * vectorised, pipelined kernel). */
#ifndef DY_CUDA_DECODE_H
#define DY_CUDA_DECODE_H

#include "cuda_internal.h"

#define MAX_GROUP 8
#define DECODE_WARPS 4

/* Weight of a softmax state with running max m once merged under m_new. */
__device__ __forceinline__ float merge_weight(float m, float m_new)
{
    return m == -INFINITY ? 0.0f : __expf(m - m_new);
}

/* The vectorised kernel for head dims 64 and 128 over caches aligned to 16
 * bytes, any cache dtype; grid (batch, KV heads, splits) and output or
 * split partials (m, l, acc per head) as the generic kernel's. The heads
 * head0 .. head0 + group - 1 of each KV head's group. With `resident`
 * set, launches nothing and gives the blocks of the kernel it would launch
 * that one multiprocessor holds. DY_E_UNSUPPORTED: the generic kernel's
 * case. */
int dy_cuda_decode_fast(struct cuda_ctx *c, const struct dy_attention_decode_desc *d, dim3 grid, int splits,
                        int tokens_per_split, int head0, int group, int *resident);

#endif
