/* A dense decoder layer's decode step at one sequence in one launch
 * (dy_decode_layer): NVIDIA's OpenCL spends about 5 µs a kernel however
 * little it does and has no command buffers, and a step of Llama-3.2-1B
 * launched some 100 kernels (bench/README, issue 4).
 *
 * The work-groups of the launch run the layer's ops as phases, each the
 * work-groups its own kernel would have had: the q/k/v GEMV (norm, RoPE,
 * KV append: gemm.cl's gemv1_body), decode attention (attention.cl's
 * attention_decode_body), the splits' merge where there are several, the
 * o GEMV into the residual stream, the gate/up GEMV (norm, SwiGLU), the
 * down GEMV into the residual stream. A work-group of a phase waits until
 * every work-group of the phase before has counted itself done
 * (phase_wait, phase_done) — a GEMV's work-group after issuing its first
 * loads of B, so the weights stream while the phase before ends.
 *
 * Waiting on other work-groups is safe only if those run: a work-group's
 * phase comes from a ticket it draws when it starts (count[0]), not from
 * its id, so every work-group it waits on drew an earlier ticket and has
 * started, whatever order the device starts them in. count[1 ..] are the
 * phases' done counts; the last work-group of the last phase puts every
 * count back to 0 for the next launch. */

#ifndef DY_NO_LAYER /* the Level Zero module leaves it out (gemm.cl's phase_wait) */

/* One GEMV phase's arguments; B's, the bias's and the norm weights' dtypes
 * are the launch's, A and C are f32. */
#define LAYER_GEMV(P)                                                                          \
    __global const uchar *P##a, ulong P##a_off, __global const uchar *P##b, ulong P##b_off,   \
        __global const uchar *P##bias, ulong P##bias_off, __global uchar *P##c, ulong P##c_off, \
        __global const uchar *P##norm, ulong P##norm_off, float P##beta, int P##n, int P##k

#define LAYER_GEMV_CALL(P, grp, count, target, swiglu_half, rope_cols, rope_half, kv_dim)       \
    gemv1_body(grp, red4, ss4, tot, count, target, P##a, P##a_off, P##b, P##b_off, P##k, w_dtype, \
               P##bias, P##bias_off, P##c, P##c_off, DT_F32, P##beta, P##n, P##k, swiglu_half,   \
               P##norm, P##norm_off, norm_dtype, eps, rope_pos, pos_off, inv_freq, freq_off,      \
               rope_cols, rope_half, slots, slots_off, k_cache, kc_off, v_cache, vc_off,          \
               cache_dtype, k_col, v_col, kv_dim)

/* Counts this work-group done at count[phase] once its writes are out;
 * returns the count before, on item 0 (elsewhere -1). */
int phase_done(volatile __global int *count, int phase)
{
    mem_fence(CLK_GLOBAL_MEM_FENCE);
    barrier(CLK_GLOBAL_MEM_FENCE);
    return get_local_id(0) == 0 ? atomic_inc(count + phase) : -1;
}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void decode_layer(LAYER_GEMV(qkv_), LAYER_GEMV(o_), LAYER_GEMV(gu_), LAYER_GEMV(down_),
                  int w_dtype, int norm_dtype, float eps, __global const int *rope_pos,
                  ulong pos_off, __global const float *inv_freq, ulong freq_off, int rope_cols,
                  int rope_half, __global const int *slots, ulong slots_off,
                  __global uchar *k_cache, ulong kc_off, __global uchar *v_cache, ulong vc_off,
                  int cache_dtype, int k_col, int v_col, int kv_dim, int swiglu_half,
                  __global const uchar *q, ulong q_off, __global uchar *out, ulong out_off,
                  __global const uchar *att_k, ulong att_kc_off, __global const uchar *att_v,
                  ulong att_vc_off, __global const int *block_table, ulong table_off,
                  __global const int *context_lens, ulong lens_off, int heads, int kv_heads,
                  int head_dim, int block_size, int max_blocks_per_seq, float scale, int vec,
                  int split_len, int splits, __global float *partial,
                  volatile __global int *count, int n_qkv, int n_o, int n_gu, int n_down,
                  __local float *qs)
{
    __local float4 red4[WG / 4], ss4[WG / 4];
    __local float tot[GEMV_ROWS + 1];
    __local float red[WG], weight[WG], fold[WG * 8];
    __local uint slot_of[WG];
    __local int ticket;
    if (get_local_id(0) == 0)
        ticket = atomic_inc(count);
    barrier(CLK_LOCAL_MEM_FENCE);
    int v = ticket;
    int n_att = heads * splits, n_comb = splits > 1 ? heads : 0;
    /* where each phase's tickets end, and the phase the next one waits on */
    int e_att = n_qkv + n_att, e_comb = e_att + n_comb, e_o = e_comb + n_o, e_gu = e_o + n_gu;
    int before_o = splits > 1 ? 3 : 2, n_before_o = splits > 1 ? n_comb : n_att;
    if (v < n_qkv) {
        LAYER_GEMV_CALL(qkv_, v, 0, 0, 0, rope_cols, rope_half, kv_dim);
        phase_done(count, 1);
    } else if (v < e_att) {
        phase_wait(count + 1, n_qkv);
        int a = v - n_qkv;
        attention_decode_body(a % heads, 0, a / heads, splits, red, weight, fold, slot_of, q,
                              q_off, 0, out, out_off, 0, att_k, att_kc_off, att_v, att_vc_off, 0,
                              0, 0, 0, block_table, table_off, context_lens, lens_off, heads,
                              kv_heads, head_dim, block_size, max_blocks_per_seq, scale, DT_F32,
                              cache_dtype, vec, split_len, partial, qs);
        phase_done(count, 2);
    } else if (v < e_comb) {
        phase_wait(count + 2, n_att);
        decode_combine_body(v - e_att, 0, partial, splits, heads, head_dim, out, out_off, 0,
                            DT_F32);
        phase_done(count, 3);
    } else if (v < e_o) {
        LAYER_GEMV_CALL(o_, v - e_comb, count + before_o, n_before_o, 0, 0, 0, 0);
        phase_done(count, 4);
    } else if (v < e_gu) {
        LAYER_GEMV_CALL(gu_, v - e_o, count + 4, n_o, swiglu_half, 0, 0, 0);
        phase_done(count, 5);
    } else {
        LAYER_GEMV_CALL(down_, v - e_gu, count + 5, n_gu, 0, 0, 0, 0);
        if (phase_done(count, 6) == n_down - 1)
            for (int i = 0; i < 7; i++)
                count[i] = 0;
    }
}
#endif
