-- The dyno results database: the single source of its schema, embedded into
-- the binary at build time and executed once, when a new file is created.
-- Column names are a contract (DESIGN.md section 7): scripts and the dashboard
-- read them, so a new axis or metric is a new column, never a rename.
-- PRAGMA application_id is set by results/db.c in the same transaction, so
-- the file's header says "dyno" before any of these tables is visible.

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- results/db.c refuses a file whose schema_version is newer than its own.
INSERT OR IGNORE INTO meta (key, value) VALUES
    ('schema_version', '1'),
    ('created_by', 'dyno');

-- One invocation of dyno: who ran what, where and when.
CREATE TABLE IF NOT EXISTS runs (
    id           INTEGER PRIMARY KEY,
    started_at   TEXT NOT NULL,          -- ISO 8601 UTC
    dyno_version TEXT,
    git_commit   TEXT,
    host         TEXT,
    os           TEXT,
    argv         TEXT,
    uuid         TEXT                    -- random, given at insert: the run in any file (dyno merge)
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_uuid ON runs (uuid);

-- A device as one run found it, with the ceilings it measured on it, so
-- bw_util and flop_util of its points can be recomputed.
CREATE TABLE IF NOT EXISTS devices (
    id              INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    backend         TEXT NOT NULL,
    device_index    INTEGER NOT NULL,
    name            TEXT,
    vendor          TEXT,
    driver_version  TEXT,
    runtime_version TEXT,
    mem_total_bytes INTEGER,
    compute_units   INTEGER,
    clock_mhz       INTEGER,
    copy_gbps       REAL,                -- bytes read + written per second / 1e9
    gemm_tflops     REAL,
    gemm_dtype      TEXT                 -- dtype gemm_tflops was measured in
);
CREATE INDEX IF NOT EXISTS devices_run ON devices (run_id);

-- One measured configuration. NULL in an axis means "not applicable to this
-- workload"; NULL in a metric means "not measured".
CREATE TABLE IF NOT EXISTS points (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    -- NULL for points imported from a study that names no device row
    device_id    INTEGER REFERENCES devices (id) ON DELETE CASCADE,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    -- axes, named after the CLI options with dashes as underscores
    backend      TEXT,
    device       TEXT,
    workload     TEXT,
    model        TEXT,
    batch        INTEGER,
    input_len    INTEGER,
    output_len   INTEGER,
    experts      INTEGER,
    top_k        INTEGER,
    moe_ffn_dim  INTEGER,
    routing      TEXT,
    weight_dtype TEXT,
    kv_dtype     TEXT,
    evict        TEXT,
    kv_budget    INTEGER,
    block_size   INTEGER,
    image_size   INTEGER,
    patch        INTEGER,
    seed         INTEGER,
    layers       INTEGER,
    tag          TEXT,
    -- outcome
    status       TEXT NOT NULL
                 CHECK (status IN ('ok', 'failed', 'oom', 'skipped', 'mismatch')),
    reason       TEXT,
    source       TEXT NOT NULL DEFAULT 'dyno',   -- 'dyno' or an imported study
    -- metrics (DESIGN.md section 5)
    ttft_ms      REAL,
    tpot_ms_p50  REAL,
    tpot_ms_p90  REAL,
    tpot_ms_p99  REAL,
    e2e_ms       REAL,
    output_tok_s REAL,
    total_tok_s  REAL,
    images_s     REAL,
    peak_mem_bytes INTEGER,
    weight_bytes INTEGER,
    kv_bytes     INTEGER,
    energy_j     REAL,
    avg_power_w  REAL,
    bw_util      REAL,
    flop_util    REAL,
    host_e2e_ms  REAL,                   -- host wall time beside the device-event e2e_ms
    repeat       INTEGER,
    warmup       INTEGER,
    config_key   TEXT,                   -- every axis value, canonical: what --resume matches
    uuid         TEXT,                   -- random, given at insert: the point in any file (dyno merge)
    e2e_noise    REAL,                   -- relative standard deviation of e2e over the repetitions
    e2e_ms_p90   REAL,                   -- e2e percentiles over the repetitions (e2e_ms is the median);
    e2e_ms_p99   REAL,                   -- for the ViT, the latency of one batch
    lora_rank    INTEGER,                -- ViT LoRA adapters on q, k, v, o (axes added later)
    lora_merged  INTEGER,
    expert_load_max  REAL,               -- MoE prefill: tokens of the busiest expert (mean over layers)
    expert_load_mean REAL,               -- MoE prefill: tokens per expert
    expert_imbalance REAL,               -- expert_load_max / expert_load_mean
    experts_touched  REAL,               -- MoE decode: experts with a token per layer and step
    step_bytes       INTEGER,            -- bytes a decode step reads (what bw_util divides)
    top_k_map        TEXT,               -- --top-k lexi:N: each layer's k, comma-separated (top_k: their mean)
    token_agreement  REAL,               -- lossy KV (fp8, int8): share of next tokens equal to the reference's
    kl_mean          REAL,               -- mean KL(reference || this) of next-token distributions, teacher-forced
    lora_targets     TEXT,               -- ViT LoRA on attn (q, k, v, o) or attn+mlp (fc1, fc2 too)
    lora_rank_map    TEXT,               -- --lora-rank-map: each layer's rank, comma-separated (attn/mlp with attn+mlp)
    expert_bits      TEXT,               -- --weight-dtype mopeq:BITS: each expert's bits, a digit each, layers comma-separated
    kv_budget_map    TEXT                -- --kv-budget-alloc profile: each layer's KV budget in tokens, comma-separated (BaKlaVa)
);
CREATE INDEX IF NOT EXISTS points_run ON points (run_id);
-- the dashboard looks points up by where they ran and on what; --resume by
-- config_key (below)
CREATE INDEX IF NOT EXISTS points_config ON points (backend, device, model);
CREATE INDEX IF NOT EXISTS points_model ON points (model);
CREATE INDEX IF NOT EXISTS points_config_key ON points (config_key);
CREATE UNIQUE INDEX IF NOT EXISTS points_uuid ON points (uuid);

-- Raw per-iteration device times, warm-ups excluded, so statistics can be
-- recomputed later.
CREATE TABLE IF NOT EXISTS samples (
    point_id INTEGER NOT NULL REFERENCES points (id) ON DELETE CASCADE,
    phase    INTEGER NOT NULL CHECK (phase IN (0, 1, 2)),  -- 0 prefill, 1 decode, 2 e2e
    rep      INTEGER NOT NULL,           -- repetition, 0-based
    step     INTEGER NOT NULL,           -- decode step, 0 for the other phases
    ns       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_point ON samples (point_id);
