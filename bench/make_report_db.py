#!/usr/bin/env python3
"""Writes a dyno database of synthetic points for bench/report_bench.sh: the
shape of a large multi-device sweep (six devices, five models, batch, prompt
and output lengths, dtypes, MoE and eviction points, failures, an imported
study), with figures from a rough roofline plus noise. Not measurements.

usage: make_report_db.py SCHEMA.sql OUT.db [POINTS]
"""
import itertools
import random
import sqlite3
import sys
import uuid

DEVICES = [  # backend, device, copy GB/s, GEMM TFLOP/s, memory GB
    ('cuda', 'NVIDIA H100 80GB HBM3', 3000, 700, 80),
    ('cuda', 'NVIDIA H200', 4300, 700, 141),
    ('hip', 'AMD Instinct MI300X', 4700, 1000, 192),
    ('level_zero', 'Intel Data Center GPU Max 1550', 2500, 600, 128),
    ('opencl', 'Portable Computing Language (PoCL) EPYC', 40, 1.5, 24),
    ('cpu', 'AMD EPYC', 45, 0.25, 24),
]
MODELS = [('tiny-llama', 0.01), ('llama-3.2-1b', 1.2), ('qwen2.5-7b', 7.6),
          ('llama-3.1-8b', 8.0), ('mixtral-8x7b', 47.0)]
BYTES = {'f32': 4, 'f16': 2, 'bf16': 2, 'fp8': 1, 'int8': 1, 'int4': 0.5}


def main():
    schema, out = sys.argv[1], sys.argv[2]
    want = int(sys.argv[3]) if len(sys.argv) > 3 else 100000
    rng = random.Random(1)
    db = sqlite3.connect(out)
    db.executescript(open(schema).read())
    db.execute('PRAGMA application_id = %d' % 0x64796E6F)
    run = db.execute("INSERT INTO runs (started_at, host, argv) VALUES "
                     "('2026-11-26T00:00:00Z', 'bench', 'make_report_db.py')").lastrowid
    dev_ids = {}
    for backend, name, gbps, tflops, _ in DEVICES:
        dev_ids[name] = db.execute(
            'INSERT INTO devices (run_id, backend, device_index, name, copy_gbps, gemm_tflops, '
            "gemm_dtype) VALUES (?, ?, 0, ?, ?, ?, 'bf16')", (run, backend, name, gbps, tflops)).lastrowid
    cols = ('run_id, device_id, backend, device, workload, model, batch, input_len, output_len, '
            'experts, top_k, weight_dtype, kv_dtype, evict, kv_budget, block_size, layers, tag, '
            'status, reason, source, ttft_ms, tpot_ms_p50, tpot_ms_p90, tpot_ms_p99, e2e_ms, '
            'output_tok_s, total_tok_s, peak_mem_bytes, weight_bytes, kv_bytes, bw_util, flop_util, uuid')
    sql = 'INSERT INTO points (%s) VALUES (%s)' % (cols, ','.join('?' * len(cols.split(','))))
    axes = itertools.product(range(4), DEVICES, MODELS, [1, 2, 4, 8, 16, 32, 64, 128, 256],
                             [128, 512, 1024, 2048, 4096, 8192], [32, 128, 512],
                             ['bf16', 'fp8', 'int4'], ['f16', 'fp8'])
    rows = []
    for rep, (backend, name, gbps, tflops, mem_gb), (model, params_b), batch, inp, outp, wd, kd in axes:
        if len(rows) == want - 3:  # three imported points follow
            break
        moe = model.startswith('mixtral')
        evict = rng.choice(['none', 'none', 'window', 'streaming']) if inp >= 2048 else 'none'
        weight = params_b * 1e9 * BYTES[wd]
        kv = batch * (inp + outp) * 32 * 1024 * 2 * BYTES[kd] * (0.5 if evict != 'none' else 1)
        status, reason = 'ok', None
        if weight + kv > mem_gb * 1e9:
            status, reason = 'oom', 'needs %.1f GB, %d GB free' % ((weight + kv) / 1e9, mem_gb)
        elif backend in ('cpu', 'opencl') and wd != 'bf16':
            status, reason = 'skipped', '--weight-dtype %s: not supported by the %s backend' % (wd, backend)
        elif rng.random() < 0.01:
            status, reason = 'failed', 'device lost during decode (synthetic)'
        point = [run, dev_ids[name], backend, name, 'moe' if moe else 'llm', model, batch, inp, outp,
                 8 if moe else None, 2 if moe else None, wd, kd, evict,
                 inp // 2 if evict != 'none' else None, 16, None, 'rep%d' % rep, status, reason, 'dyno']
        if status == 'ok':
            step = (weight * (0.25 if moe else 1) + kv) / (gbps * 1e9 * rng.uniform(0.6, 0.9)) * 1e3
            ttft = 2 * params_b * 1e9 * batch * inp / (tflops * 1e12 * rng.uniform(0.4, 0.8)) * 1e3
            e2e = ttft + step * (outp - 1)
            point += [ttft, step, step * rng.uniform(1.01, 1.1), step * rng.uniform(1.1, 1.5), e2e,
                      batch * outp / e2e * 1e3, batch * (inp + outp) / e2e * 1e3,
                      int((weight + kv) * 1.1), int(weight), int(kv), rng.uniform(0.5, 0.9),
                      rng.uniform(0.3, 0.8)]
        else:
            point += [None] * 12
        rows.append(point + [uuid.uuid4().hex])
    # an imported study beside them
    for batch in [1, 8, 64]:
        rows.append([run, None, 'vllm', 'A100-SXM4-80GB', 'llm', 'llama-3.1-8b', batch, 1024, 128,
                     None, None, 'bf16', 'f16', None, None, None, None, 'imported', 'ok', None,
                     'llm-inference-bench', None, None, None, None, None, None, 300.0 * batch,
                     None, None, None, None, None, uuid.uuid4().hex])
    if 'uuid' not in [r[1] for r in db.execute('PRAGMA table_info(points)')]:
        sql = sql.replace(', uuid)', ')').replace(',?)', ')')
        rows = [r[:-1] for r in rows]
    db.executemany(sql, rows)
    db.commit()
    print('%d points in %s' % (len(rows), out))


if __name__ == '__main__':
    main()
