// The dyno report: decodes the embedded results and draws every view with
// Observable Plot. Strings from the database reach the page only through
// textContent or Plot's text channels, never as markup.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("dy-data").textContent);
  // Scatter plots beyond this many marks are thinned (and say so): SVG with
  // 100,000 circles would take seconds to draw.
  const MAX_MARKS = 3000;
  const NONE = "(none)";
  const fmt = (v) => (v == null || !isFinite(v) ? "—" : d3.format(".4~g")(v));
  const fmtBytes = (v) => (v == null ? "—" : d3.format(".3~s")(v) + "B");

  // ---- the points, decoded from columns (report.c sends them that way) ----
  function column(name) {
    const c = data.points[name];
    if (c == null) return () => null;
    if (Array.isArray(c)) return (i) => c[i];
    return (i) => c.dict[c.idx[i]];
  }
  const g = {};
  for (const name of Object.keys(data.points)) g[name] = column(name);
  const status = data.points.status;
  const count = status == null ? 0 : status.idx.length;
  const points = new Array(count);
  const configIds = new Map();
  for (let i = 0; i < count; i++) {
    const r = {
      run_id: g.run_id(i), backend: g.backend(i), device: g.device(i), workload: g.workload(i),
      model: g.model(i), batch: g.batch(i), input_len: g.input_len(i), output_len: g.output_len(i),
      experts: g.experts(i), top_k: g.top_k(i), moe_ffn_dim: g.moe_ffn_dim(i), routing: g.routing(i),
      weight_dtype: g.weight_dtype(i), kv_dtype: g.kv_dtype(i), evict: g.evict(i),
      kv_budget: g.kv_budget(i), block_size: g.block_size(i), image_size: g.image_size(i),
      patch: g.patch(i), layers: g.layers(i), tag: g.tag(i), status: g.status(i), reason: g.reason(i),
      source: g.source(i), ttft_ms: g.ttft_ms(i), tpot_ms_p50: g.tpot_ms_p50(i),
      tpot_ms_p90: g.tpot_ms_p90(i), tpot_ms_p99: g.tpot_ms_p99(i), e2e_ms: g.e2e_ms(i),
      output_tok_s: g.output_tok_s(i), total_tok_s: g.total_tok_s(i), images_s: g.images_s(i),
      peak_mem_bytes: g.peak_mem_bytes(i), weight_bytes: g.weight_bytes(i), kv_bytes: g.kv_bytes(i),
      energy_j: g.energy_j(i), avg_power_w: g.avg_power_w(i), bw_util: g.bw_util(i),
      flop_util: g.flop_util(i), kl_mean: g.kl_mean(i), token_agreement: g.token_agreement(i),
      lora_rank: g.lora_rank(i), lora_merged: g.lora_merged(i), lora_targets: g.lora_targets(i),
      lora_rank_map: g.lora_rank_map(i), kv_budget_map: g.kv_budget_map(i), expert_bits: g.expert_bits(i),
      label: "", imported: false, config: 0, thr: null,
    };
    r.imported = r.source !== "dyno";
    // a device as the views name it: the same chip under two backends is two
    // contenders, and an imported figure says where it came from
    r.label = (r.device ?? NONE) + " · " + (r.backend ?? NONE) + (r.imported ? " [" + r.source + "]" : "");
    // LoRA axes as dyno compare matches them: unset is the flag's default
    const config = [r.workload, r.model, r.batch, r.input_len, r.output_len, r.experts, r.top_k,
      r.moe_ffn_dim, r.routing, r.weight_dtype, r.kv_dtype, r.evict, r.kv_budget, r.block_size,
      r.image_size, r.patch, r.layers, r.lora_rank ?? 0, r.lora_merged ?? 0, r.lora_targets ?? "attn",
      r.lora_rank_map].join("\u0001");
    // a small number is a cheaper grouping key than the long string
    if (!configIds.has(config)) configIds.set(config, configIds.size);
    r.config = configIds.get(config);
    r.thr = r.total_tok_s ?? r.images_s;
    points[i] = r;
  }

  // ---- filters, kept in the URL fragment so a view can be shared ----
  const DIMS = [
    ["device", "device"], ["backend", "backend"], ["model", "model"], ["workload", "workload"],
    ["weight_dtype", "weights"], ["kv_dtype", "KV dtype"], ["evict", "eviction"], ["tag", "tag"],
    ["source", "source"],
  ];
  const key = (v) => (v == null ? NONE : String(v));

  function readState() {
    const params = new URLSearchParams(location.hash.slice(1));
    const state = { filters: {}, baseline: params.get("baseline") };
    for (const [dim] of DIMS) state.filters[dim] = new Set(params.getAll(dim));
    return state;
  }

  function writeState(state) {
    const params = new URLSearchParams();
    for (const [dim] of DIMS) for (const v of state.filters[dim]) params.append(dim, v);
    if (state.baseline) params.set("baseline", state.baseline);
    const hash = "#" + params.toString();
    if (hash !== location.hash) location.hash = hash;
    else render();
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }

  function drawFilters(state) {
    const nav = document.getElementById("filters");
    const open = new Set([...nav.querySelectorAll("details[open]")].map((d) => d.dataset.dim));
    nav.replaceChildren();
    for (const [dim, title] of DIMS) {
      const values = [...new Set(points.map((r) => key(r[dim])))].sort();
      const chosen = state.filters[dim];
      const box = el("details", { "data-dim": dim, class: chosen.size ? "active" : "" });
      if (open.has(dim)) box.open = true;
      box.append(el("summary", { text: title + (chosen.size ? " (" + chosen.size + ")" : "") }));
      const list = el("div", { class: "options" });
      for (const v of values) {
        const input = el("input", { type: "checkbox", value: v });
        input.checked = chosen.size === 0 || chosen.has(v);
        input.addEventListener("change", () => {
          // every box ticked means "no filter"; the fragment stays short
          const ticked = [...list.querySelectorAll("input:checked")].map((i) => i.value);
          state.filters[dim] = new Set(ticked.length === values.length ? [] : ticked);
          writeState(state);
        });
        list.append(el("label", {}, input, " ", v));
      }
      box.append(list);
      nav.append(box);
    }
    const reset = el("button", { type: "button", text: "clear filters" });
    reset.addEventListener("click", () => {
      location.hash = "";
    });
    nav.append(reset);
  }

  function applyFilters(state) {
    const active = DIMS.filter(([dim]) => state.filters[dim].size > 0);
    if (active.length === 0) return points;
    return points.filter((r) => active.every(([dim]) => state.filters[dim].has(key(r[dim]))));
  }

  // ---- helpers for the views ----
  function median(values) {
    const v = Float64Array.from(values).sort();
    if (v.length === 0) return null;
    const m = v.length >> 1;
    return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
  }

  // The median of METRICS over the points sharing the values of KEYS, with
  // the CARRY fields of the group's first point (fields the keys determine).
  // Nested maps, one level per key, and no key strings: this runs over
  // every point for most views.
  function aggregate(rows, keys, metrics, carry = []) {
    const root = new Map();
    const groups = [];
    const last = keys.length - 1;
    for (const r of rows) {
      let level = root;
      for (let i = 0; i < last; i++) {
        let next = level.get(r[keys[i]]);
        if (!next) {
          next = new Map();
          level.set(r[keys[i]], next);
        }
        level = next;
      }
      let grp = level.get(r[keys[last]]);
      if (!grp) {
        grp = { first: r, n: 0, values: metrics.map(() => []) };
        level.set(r[keys[last]], grp);
        groups.push(grp);
      }
      grp.n++;
      for (let m = 0; m < metrics.length; m++) {
        const v = r[metrics[m]];
        if (v != null) grp.values[m].push(v);
      }
    }
    const out = [];
    for (const grp of groups) {
      const a = { n: grp.n };
      for (const f of keys) a[f] = grp.first[f];
      for (const f of carry) a[f] = grp.first[f];
      metrics.forEach((m, i) => { a[m] = median(grp.values[i]); });
      out.push(a);
    }
    return out;
  }

  // Every k-th row, so a thinned chart still spans the whole range.
  function thin(rows, notes) {
    if (rows.length <= MAX_MARKS) return rows;
    notes.push("showing " + MAX_MARKS.toLocaleString() + " of " + rows.length.toLocaleString() +
      " points; filter to see them all");
    const step = rows.length / MAX_MARKS;
    return Array.from({ length: MAX_MARKS }, (_, i) => rows[Math.floor(i * step)]);
  }

  function table(headers, rows) {
    const t = el("table", {}, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { text: h })))));
    const body = el("tbody");
    for (const row of rows) {
      body.append(el("tr", {}, ...row.map((c) =>
        typeof c === "number" ? el("td", { class: "num", text: fmt(c) }) : el("td", { text: c ?? "—" }))));
    }
    t.append(body);
    return t;
  }

  // device labels are long: wide margins keep them whole on the y axis and
  // in facet titles
  const LABEL_MARGIN = 280;
  const plot = (options) => Plot.plot({ style: { fontSize: "11px" }, marginLeft: 60, width: 960,
    fx: { label: null }, fy: { label: null }, ...options });
  const labelsOf = (rows) => [...new Set(rows.map((r) => r.label))].sort();
  const colorBy = (rows) => ({ legend: true, domain: labelsOf(rows) });

  // ---- the per-layer maps some points store as text: LoRA ranks "16/16,8/4"
  // (attn/mlp) or "16,8", KV budgets in tokens "32,16", MoPEQ expert bits
  // "2433,3342" (a digit per expert, a group per layer) ----
  const hasLora = (r) => r.lora_rank_map != null || r.lora_rank > 0;
  const loraText = (r) => (!hasLora(r) ? "no LoRA"
    : `${r.lora_rank_map != null ? "rank map " + r.lora_rank_map : "rank " + r.lora_rank} · ` +
      `${r.lora_targets ?? "attn"} · ${r.lora_merged === 1 ? "merged" : "unmerged"}`);
  const layersOf = (map) => map.split(",");
  const spread = (v) => `${d3.min(v)}–${d3.max(v)}, mean ${fmt(d3.mean(v))}`;
  const kvBudgetText = (map) => `per-layer budgets ${spread(layersOf(map).map(Number))} tokens over ${layersOf(map).length} layers`;
  const expertBits = (map) => [...map.replace(/,/g, "")].map(Number);
  const expertBitsText = (map) => `expert bits ${spread(expertBits(map))} over ${expertBits(map).length} experts`;
  const shorten = (text) => (text.length > 40 ? text.slice(0, 39) + "…" : text);

  // One stored map drawn by DRAW, for the configuration picked from the
  // distinct ones among ROWS; a new pick redraws this chart alone.
  function mapDetail(rows, field, title, describe, draw) {
    const distinct = new Map();
    for (const r of rows) {
      if (r[field] == null) continue;
      const name = describe(r) + ": " + shorten(r[field]);
      const id = name + "\u0001" + r[field];
      if (!distinct.has(id)) distinct.set(id, [name, r]);
    }
    if (distinct.size === 0) return null;
    const choices = [...distinct.values()].sort((a, b) => d3.ascending(a[0], b[0]));
    const pick = el("select", { "aria-label": title });
    choices.forEach(([name], i) => pick.append(el("option", { value: String(i), text: name })));
    const chart = el("div");
    const show = () => chart.replaceChildren(draw(choices[Number(pick.value)][1]));
    pick.addEventListener("change", show);
    show();
    return el("div", { class: "map-detail", "data-map": field }, el("p", {}, title + ": ", pick), chart);
  }

  const kvBudgetChart = (r) => plot({
    title: "KV budget per layer (dashed: the uniform budget)", width: 480, height: 220,
    x: { label: "layer", type: "band" }, y: { label: "tokens kept", grid: true },
    marks: [Plot.barY(layersOf(r.kv_budget_map).map((v, layer) => ({ layer, tokens: Number(v) })),
      { x: "layer", y: "tokens", fill: "#4e79a7", title: (b) => `layer ${b.layer}: ${b.tokens} tokens` }),
    Plot.ruleY(r.kv_budget == null ? [] : [r.kv_budget], { stroke: "#c00", strokeDasharray: "4 3" })],
  });

  function expertBitsChart(r) {
    const layers = layersOf(r.expert_bits);
    const cells = layers.flatMap((experts, layer) => [...experts].map((b, expert) => ({ layer, expert, bits: Number(b) })));
    const experts = d3.max(layers, (l) => l.length);
    return plot({
      title: "bits of each expert's weights, by layer", width: Math.min(960, 140 + 16 * experts), height: 70 + 16 * layers.length,
      x: { label: "expert", type: "band", tickFormat: (e) => (experts > 16 && e % 8 ? "" : e) },
      y: { label: "layer", type: "band" }, color: { legend: true, type: "ordinal", scheme: "blues", label: "bits" },
      marks: [Plot.cell(cells, { x: "expert", y: "layer", fill: "bits", inset: 0.5,
        title: (c) => `layer ${c.layer}, expert ${c.expert}: ${c.bits} bits` })],
    });
  }

  const rankMapChart = (r) => plot({
    title: "LoRA rank per layer", width: 480, height: 220,
    fx: { label: "layer" }, x: { axis: null }, y: { label: "rank", grid: true }, color: { legend: true, domain: ["attn", "mlp"] },
    marks: [Plot.barY(layersOf(r.lora_rank_map).flatMap((v, layer) => v.split("/")
      .map((rank, i) => ({ layer, part: i ? "mlp" : "attn", rank: Number(rank) }))),
    { fx: "layer", x: "part", y: "rank", fill: "part", title: (b) => `layer ${b.layer} ${b.part}: rank ${b.rank}` })],
  });

  // ---- the views: each returns [state, ...elements]; "empty" explains why ----
  function deviceComparison(ok, state) {
    const labels = labelsOf(ok.filter((r) => r.thr != null));
    if (labels.length < 2) return ["empty", "fewer than two devices with throughput figures in the filtered points"];
    // by default the dyno device measured most often: it matches the most
    const counts = d3.rollup(ok, (v) => v.length, (r) => r.label);
    const base = labels.includes(state.baseline) ? state.baseline
      : d3.greatest(labels, (l) => (l.includes(" [") ? 0 : 1e9) + counts.get(l));
    const pick = el("select", { "aria-label": "baseline" });
    for (const l of labels) {
      const o = el("option", { value: l, text: l });
      o.selected = l === base;
      pick.append(o);
    }
    pick.addEventListener("change", () => {
      state.baseline = pick.value;
      writeState(state);
    });
    const byConfig = d3.group(aggregate(ok, ["config", "label"], ["thr", "ttft_ms", "tpot_ms_p50"],
      ["model", "batch", "input_len", "output_len", "weight_dtype", "kv_dtype", "lora_rank", "lora_merged",
        "lora_targets", "lora_rank_map"]), (a) => a.config);
    const ratios = [];
    for (const members of byConfig.values()) {
      const b = members.find((a) => a.label === base);
      if (!b || !b.thr) continue;
      for (const a of members) {
        if (a.label === base || a.thr == null) continue;
        ratios.push({
          label: a.label, model: a.model, batch: a.batch,
          what: `batch ${key(a.batch)} · in ${key(a.input_len)} · out ${key(a.output_len)} · ${key(a.weight_dtype)}/${key(a.kv_dtype)}` +
            (hasLora(a) ? " · LoRA " + loraText(a) : ""),
          thr: a.thr / b.thr,
          ttft: a.ttft_ms && b.ttft_ms ? b.ttft_ms / a.ttft_ms : null,
          tpot: a.tpot_ms_p50 && b.tpot_ms_p50 ? b.tpot_ms_p50 / a.tpot_ms_p50 : null,
        });
      }
    }
    const head = el("p", {}, "baseline: ", pick, " — × > 1 means faster than the baseline (throughput: device/baseline; latency: baseline/device)");
    if (ratios.length === 0) return ["empty", head, el("p", { class: "empty", text: "no configuration measured on the baseline was measured elsewhere" })];
    const geo = (v) => { const x = v.filter((r) => r != null && r > 0); return x.length ? Math.exp(d3.mean(x, Math.log)) : null; };
    const summary = d3.rollups(ratios, (v) => [v.length, geo(v.map((r) => r.thr)), geo(v.map((r) => r.ttft)), geo(v.map((r) => r.tpot))], (r) => r.label)
      .map(([l, s]) => [l, ...s]);
    const notes = [];
    const shown = thin(ratios, notes);
    const rowsDrawn = new Set(shown.map((r) => r.label)).size * new Set(shown.map((r) => r.model)).size;
    const chart = plot({
      title: "throughput × baseline, one dot per configuration, coloured by batch",
      height: 70 + 32 * rowsDrawn,
      x: { type: "log", label: "throughput × baseline", grid: true },
      y: { label: null }, marginLeft: LABEL_MARGIN, marginRight: 120, color: { legend: true, type: "ordinal", scheme: "viridis", label: "batch" },
      fy: { label: null },
      marks: [
        Plot.ruleX([1], { stroke: "#999" }),
        Plot.dot(shown, { x: "thr", y: "label", fy: "model", stroke: "batch", title: (r) => `${r.label}\n${r.model}: ${r.what}\n×${fmt(r.thr)}` }),
      ],
    });
    return ["drawn", head, chart, ...notes.map((t) => el("p", { class: "note", text: t })),
      table(["device", "matching configs", "throughput ×", "TTFT ×", "tpot p50 ×"], summary)];
  }

  // The points no other point of the same device and model beats on both
  // latency and throughput.
  function paretoFront(rows) {
    const front = [];
    for (const members of d3.group(rows, (r) => r.label + "\u0001" + r.model).values()) {
      let best = -Infinity;
      for (const r of [...members].sort((a, b) => a.tpot_ms_p50 - b.tpot_ms_p50 || b.output_tok_s - a.output_tok_s)) {
        if (r.output_tok_s > best) {
          best = r.output_tok_s;
          front.push(r);
        }
      }
    }
    return front;
  }

  function scaling(ok) {
    const llm = ok.filter((r) => r.thr != null && r.batch != null);
    if (llm.length === 0) return ["empty", "no throughput figures in the filtered points"];
    const agg = aggregate(llm, ["label", "model", "batch", "input_len"], ["thr"]);
    const byBatch = plot({
      title: "throughput vs batch (one line per device and prompt length)",
      x: { type: "log", label: "batch" }, y: { type: "log", label: "total tok/s", grid: true }, color: colorBy(agg),
      marks: [Plot.line(agg, { x: "batch", y: "thr", stroke: "label", z: (a) => a.label + a.input_len, fx: "model", sort: "batch" }),
        Plot.dot(agg, { x: "batch", y: "thr", fill: "label", fx: "model", title: (a) => `${a.label}\nbatch ${a.batch}, in ${a.input_len}: ${fmt(a.thr)} tok/s` })],
    });
    const bySeq = plot({
      title: "throughput vs prompt length (one line per device and batch)",
      x: { type: "log", label: "input tokens" }, y: { type: "log", label: "total tok/s", grid: true }, color: colorBy(agg),
      marks: [Plot.line(agg, { x: "input_len", y: "thr", stroke: "label", z: (a) => a.label + a.batch, fx: "model", sort: "input_len" }),
        Plot.dot(agg, { x: "input_len", y: "thr", fill: "label", fx: "model", title: (a) => `${a.label}\nbatch ${a.batch}, in ${a.input_len}: ${fmt(a.thr)} tok/s` })],
    });
    const timed = llm.filter((r) => r.tpot_ms_p50 != null && r.output_tok_s != null);
    const notes = [];
    const dots = thin(timed, notes);
    const front = paretoFront(timed);
    const pareto = plot({
      title: "throughput vs per-step latency; lines: Pareto front per device and model",
      x: { type: "log", label: "tpot p50 ms (lower is better)", grid: true }, y: { type: "log", label: "output tok/s", grid: true },
      color: colorBy(timed),
      marks: [Plot.dot(dots, { x: "tpot_ms_p50", y: "output_tok_s", stroke: "label", r: 2.5, title: (r) => `${r.label}\n${r.model} batch ${r.batch} in ${r.input_len}` }),
        Plot.line(front, { x: "tpot_ms_p50", y: "output_tok_s", stroke: "label", z: (r) => r.label + r.model, curve: "step-after", strokeWidth: 2 })],
    });
    return ["drawn", el("div", { class: "charts" }, byBatch, bySeq, pareto), ...notes.map((t) => el("p", { class: "note", text: t }))];
  }

  function latency(ok) {
    const timed = ok.filter((r) => r.ttft_ms != null);
    if (timed.length === 0) return ["empty", "no latency figures in the filtered points"];
    const ttft = aggregate(timed, ["label", "model", "batch", "input_len"], ["ttft_ms"]);
    const ttftChart = plot({
      title: "TTFT vs prompt length (one line per device and batch)",
      x: { type: "log", label: "input tokens" }, y: { type: "log", label: "TTFT ms", grid: true }, color: colorBy(ttft),
      marks: [Plot.line(ttft, { x: "input_len", y: "ttft_ms", stroke: "label", z: (a) => a.label + a.batch, fx: "model", sort: "input_len" }),
        Plot.dot(ttft, { x: "input_len", y: "ttft_ms", fill: "label", fx: "model", title: (a) => `${a.label}\nbatch ${a.batch}: ${fmt(a.ttft_ms)} ms` })],
    });
    const steps = aggregate(timed.filter((r) => r.tpot_ms_p50 != null), ["label", "batch"], ["tpot_ms_p50", "tpot_ms_p90", "tpot_ms_p99"]);
    const long = steps.flatMap((a) => [["p50", a.tpot_ms_p50], ["p90", a.tpot_ms_p90], ["p99", a.tpot_ms_p99]]
      .filter(([, v]) => v != null).map(([pct, ms]) => ({ label: a.label, batch: String(a.batch), pct, ms })));
    const pctChart = plot({
      title: "per-step latency percentiles by batch (median over matching points)",
      x: { type: "point", label: "batch" }, y: { type: "log", label: "decode step ms", grid: true }, fy: { label: null },
      marginRight: LABEL_MARGIN, color: { legend: true, domain: ["p50", "p90", "p99"] },
      marks: [Plot.ruleX(steps, { x: (a) => String(a.batch), y1: "tpot_ms_p50", y2: "tpot_ms_p99", fy: "label", stroke: "#bbb" }),
        Plot.dot(long, { x: "batch", y: "ms", fill: "pct", fy: "label", title: (d) => `${d.label}\nbatch ${d.batch} ${d.pct}: ${fmt(d.ms)} ms` })],
    });
    return ["drawn", el("div", { class: "charts" }, ttftChart, pctChart)];
  }

  function memory(ok) {
    const rows = ok.filter((r) => r.weight_bytes != null || r.peak_mem_bytes != null);
    if (rows.length === 0) return ["empty", "no memory figures in the filtered points"];
    let agg = aggregate(rows, ["label", "model", "batch", "input_len", "output_len", "weight_dtype", "kv_dtype"],
      ["weight_bytes", "kv_bytes", "peak_mem_bytes"]);
    const notes = [];
    if (agg.length > 60) {
      notes.push(`showing the 60 largest of ${agg.length} configurations by peak memory`);
      agg = agg.sort((a, b) => (b.peak_mem_bytes ?? 0) - (a.peak_mem_bytes ?? 0)).slice(0, 60);
    }
    for (const a of agg) a.cfg = `${key(a.model)} b${key(a.batch)} ${key(a.input_len)}+${key(a.output_len)} ${key(a.weight_dtype)}/${key(a.kv_dtype)}`;
    const long = agg.flatMap((a) => [{ ...a, kind: "weights", bytes: a.weight_bytes }, { ...a, kind: "KV cache", bytes: a.kv_bytes }]);
    const chart = plot({
      title: "device memory: weights + KV cache (bars), peak (tick)",
      x: { label: "bytes", tickFormat: "~s", grid: true }, y: { label: null }, fy: { label: null },
      marginLeft: 230, marginRight: LABEL_MARGIN, color: { legend: true, domain: ["weights", "KV cache"] },
      marks: [Plot.barX(long, { x: "bytes", y: "cfg", fill: "kind", fy: "label", title: (d) => `${d.kind}: ${fmtBytes(d.bytes)}` }),
        Plot.tickX(agg, { x: "peak_mem_bytes", y: "cfg", fy: "label", stroke: "black", strokeWidth: 2, title: (a) => `peak ${fmtBytes(a.peak_mem_bytes)}` })],
    });
    return ["drawn", chart, ...notes.map((t) => el("p", { class: "note", text: t }))];
  }

  function moe(ok) {
    const rows = ok.filter((r) => r.experts != null && r.thr != null);
    if (rows.length === 0) return ["empty", "no data yet: no MoE points (experts, top-k) in the filtered results"];
    const agg = aggregate(rows, ["label", "model", "experts", "top_k"], ["thr"]);
    const charts = [plot({
      title: "throughput vs experts (one line per top-k)", x: { type: "log", label: "experts" }, y: { label: "total tok/s", grid: true },
      color: { legend: true, type: "ordinal" },
      marks: [Plot.line(agg, { x: "experts", y: "thr", stroke: (a) => "top-" + a.top_k, fx: "label", sort: "experts" }),
        Plot.dot(agg, { x: "experts", y: "thr", fill: (a) => "top-" + a.top_k, fx: "label" })],
    })];
    // load balance: how far the busiest expert is above the mean, per routing
    const load = rows.filter((r) => r.expert_imbalance != null);
    if (load.length) {
      const byRouting = aggregate(load, ["label", "model", "routing", "top_k"], ["expert_imbalance", "thr"]);
      charts.push(plot({
        title: "expert load imbalance (busiest expert / mean, prefill) by routing", x: { label: "imbalance", grid: true }, y: { label: null },
        color: { legend: true, type: "ordinal" },
        marks: [Plot.dot(byRouting, { x: "expert_imbalance", y: (a) => key(a.routing), fill: (a) => "top-" + a.top_k, fy: "label",
          title: (a) => `${a.label}, ${a.model}\nrouting ${key(a.routing)}, top-${a.top_k}: imbalance ${fmt(a.expert_imbalance)}, ${fmt(a.thr)} tok/s` })],
      }));
    }
    return ["drawn", ...charts];
  }

  function quantization(ok) {
    const rows = ok.filter((r) => r.weight_dtype != null && r.thr != null);
    if (rows.length === 0) return ["empty", "no data yet: no points with a weight dtype in the filtered results"];
    const agg = aggregate(rows, ["label", "model", "weight_dtype", "kv_dtype"], ["thr", "weight_bytes"], ["expert_bits"]);
    // relative to the device's fastest dtypes for the model: models differ by
    // orders of magnitude, and the question is what a dtype buys on a device
    const best = d3.rollup(agg, (v) => d3.max(v, (a) => a.thr), (a) => a.label, (a) => a.model);
    for (const a of agg) {
      a.dtypes = `${key(a.weight_dtype)}/${key(a.kv_dtype)}`;
      a.rel = a.thr / best.get(a.label).get(a.model);
    }
    const charts = [plot({
      title: "median throughput by weight / KV dtype, relative to the device's fastest for the model",
      x: { label: null }, y: { label: "throughput ÷ fastest dtypes", grid: true, domain: [0, 1] },
      marginRight: 120, color: { legend: true },
      marks: [Plot.barY(agg, { x: "dtypes", y: "rel", fill: "dtypes", fx: "label", fy: "model",
        title: (a) => `${a.label}, ${a.model}\n${a.dtypes}: ${fmt(a.thr)} tok/s, weights ${fmtBytes(a.weight_bytes)}` +
          (a.expert_bits == null ? "" : "\n" + expertBitsText(a.expert_bits)) })],
    })];
    // what a format costs: KL against the unquantized weights and f32 cache,
    // against the bytes it keeps (eviction points are the other view's)
    const lossy = aggregate(rows.filter((r) => r.kl_mean != null && (r.evict == null || r.evict === "none")),
      ["label", "model", "weight_dtype", "kv_dtype"], ["weight_bytes", "tpot_ms_p50", "kl_mean", "token_agreement"]);
    for (const a of lossy) a.dtypes = `${key(a.weight_dtype)}/${key(a.kv_dtype)}`;
    if (lossy.length)
      charts.push(plot({
        title: "fidelity lost: mean KL vs the unquantized reference (teacher-forced), by weight bytes",
        x: { label: "weight bytes", tickFormat: "~s" }, y: { label: "mean KL (nats)", grid: true }, color: { legend: true },
        marks: [Plot.dot(lossy, { x: "weight_bytes", y: "kl_mean", fill: "dtypes", fx: "label", fy: "model", r: 5,
          title: (a) => `${a.dtypes}: KL ${fmt(a.kl_mean)}, ${fmt(100 * a.token_agreement)} % tokens agree, ` +
            `weights ${fmtBytes(a.weight_bytes)}, decode step ${fmt(a.tpot_ms_p50)} ms` })],
      }));
    return ["drawn", ...charts, mapDetail(rows, "expert_bits", "MoPEQ bits per expert of",
      (a) => `${a.label} · ${a.model} · ${a.weight_dtype}`, expertBitsChart)];
  }

  function eviction(ok) {
    const rows = ok.filter((r) => r.evict != null && r.evict !== "none" && r.thr != null);
    if (rows.length === 0) return ["empty", "no data yet: no points with a KV eviction policy other than none in the filtered results"];
    // per-layer budgets (--kv-budget-alloc profile) are a policy of their own
    const agg = aggregate(rows, ["label", "model", "evict", "kv_budget", "kv_budget_map"], ["thr", "kv_bytes", "kl_mean", "token_agreement"]);
    for (const a of agg) {
      a.policy = a.kv_budget_map == null ? a.evict : a.evict + " · per-layer budgets";
      a.what = `${a.evict}, budget ${a.kv_budget}` + (a.kv_budget_map == null ? "" : `\n${kvBudgetText(a.kv_budget_map)}`);
    }
    const charts = [plot({
      title: "KV memory vs throughput per eviction policy",
      x: { label: "KV bytes", tickFormat: "~s" }, y: { label: "total tok/s", grid: true }, color: { legend: true },
      marks: [Plot.dot(agg, { x: "kv_bytes", y: "thr", fill: "policy", fx: "label", title: "what" })],
    })];
    // what each setting costs: KL against the unevicted f32 reference
    const lossy = agg.filter((a) => a.kl_mean != null);
    if (lossy.length)
      charts.push(plot({
        title: "fidelity lost: mean KL vs the unevicted reference (teacher-forced), by KV budget",
        x: { label: "KV budget (tokens)", type: "log" }, y: { label: "mean KL (nats)", grid: true }, color: { legend: true },
        marks: [Plot.line(lossy, { x: "kv_budget", y: "kl_mean", stroke: "policy", fx: "label", sort: "kv_budget" }),
          Plot.dot(lossy, { x: "kv_budget", y: "kl_mean", fill: "policy", fx: "label",
            title: (a) => `${a.what}\nKL ${fmt(a.kl_mean)}, ${fmt(100 * a.token_agreement)} % tokens agree` })],
      }));
    return ["drawn", ...charts, mapDetail(rows, "kv_budget_map", "per-layer KV budgets of",
      (a) => `${a.label} · ${a.model} · ${a.evict} · budget ${a.kv_budget}`, kvBudgetChart)];
  }

  // What adapters cost a ViT: images/s and flop_util against the LoRA rank,
  // one series per model, targets and merged or not, each starting from the
  // same configuration without adapters at rank 0. A rank map is a series
  // of its own, drawn at its mean rank.
  function lora(ok) {
    const vit = ok.filter((r) => r.workload === "vit" && r.images_s != null);
    if (!vit.some(hasLora)) return ["empty", "no data yet: no ViT points with LoRA adapters (--lora-rank, --lora-rank-map) in the filtered results"];
    const agg = aggregate(vit, ["label", "model", "batch", "image_size", "weight_dtype", "lora_targets", "lora_merged",
      "lora_rank_map", "lora_rank"], ["images_s", "flop_util"]);
    const shared = (a) => [a.label, a.model, a.batch, a.image_size, a.weight_dtype].join("\u0001");
    const bare = new Map(agg.filter((a) => !hasLora(a)).map((a) => [shared(a), a]));
    const marks = [];
    const anchored = new Set();
    for (const a of agg.filter(hasLora)) {
      const b = bare.get(shared(a));
      const series = `${a.model} · ${a.lora_targets ?? "attn"} · ${a.lora_merged === 1 ? "merged" : "unmerged"}` +
        (a.lora_rank_map != null ? " · map " + shorten(a.lora_rank_map) : "");
      const line = series + "\u0001" + shared(a);
      const rank = a.lora_rank_map != null ? d3.mean(a.lora_rank_map.split(/[,/]/), Number) : a.lora_rank;
      marks.push({ ...a, series, line, rank, vsBare: b && b.images_s ? a.images_s / b.images_s : null });
      if (b && !anchored.has(line)) {
        anchored.add(line);
        marks.push({ ...b, series, line, rank: 0, vsBare: 1 });
      }
    }
    marks.sort((a, b) => a.rank - b.rank);
    const what = (a) => `${a.label}\n${a.model} batch ${a.batch}, ${key(a.image_size)} px, ${key(a.weight_dtype)}\n${loraText(a)}`;
    const devices = new Set(marks.map((a) => a.label)).size;
    const chart = (y, label, type, tip) => plot({
      title: `${label} against LoRA rank (rank 0: no adapters; squares: rank maps at their mean rank)`,
      height: 80 + 220 * devices, marginRight: LABEL_MARGIN,
      x: { label: "LoRA rank", grid: true }, y: { label, grid: true, type },
      color: { legend: true, domain: [...new Set(marks.map((a) => a.series))].sort() },
      marks: [Plot.line(marks, { x: "rank", y, stroke: "series", z: "line", fy: "label" }),
        Plot.dot(marks, { x: "rank", y, stroke: "series", fill: "white", fy: "label", r: 3.5,
          symbol: (a) => (a.lora_rank_map != null ? "square" : "circle"), title: (a) => `${what(a)}\n${tip(a)}` })],
    });
    const notes = [];
    let rows = marks.filter(hasLora);
    if (rows.length > 60) {
      notes.push(`table: the 60 configurations of ${rows.length} with the largest adapter overhead`);
      rows = rows.sort((a, b) => (a.vsBare ?? 1) - (b.vsBare ?? 1)).slice(0, 60);
    }
    return ["drawn",
      chart("images_s", "images/s", "log", (a) => `${fmt(a.images_s)} images/s` + (a.vsBare == null ? "" : `, ${fmt(a.vsBare)}× those without adapters`)),
      chart("flop_util", "flop_util", "linear", (a) => `flop_util ${fmt(a.flop_util)}`),
      ...notes.map((t) => el("p", { class: "note", text: t })),
      table(["device", "model", "batch", "image px", "weights", "adapters", "images/s", "÷ without adapters", "flop_util"],
        rows.map((a) => [a.label, a.model, a.batch, a.image_size, a.weight_dtype, loraText(a), a.images_s, a.vsBare, a.flop_util])),
      mapDetail(marks, "lora_rank_map", "ranks of the rank map",
        (a) => `${a.label} · ${a.model} · ${a.lora_targets ?? "attn"}`, rankMapChart)];
  }


  function efficiency(ok) {
    // one value per configuration, so repeated runs do not weigh more
    const configs = aggregate(ok, ["label", "config"], ["bw_util", "flop_util"]);
    // box statistics computed here: Plot's boxX over every value of 100,000
    // points costs a quarter of a second more
    const boxes = [];
    for (const [metric, field] of [["bw_util (decode)", "bw_util"], ["flop_util (prefill)", "flop_util"]]) {
      for (const [label, members] of d3.group(configs, (r) => r.label)) {
        const v = Float64Array.from(members.map((r) => r[field]).filter((x) => x != null)).sort();
        if (v.length === 0) continue;
        boxes.push({ label, metric, n: v.length, min: v[0], max: v[v.length - 1],
          q1: d3.quantileSorted(v, 0.25), median: d3.quantileSorted(v, 0.5), q3: d3.quantileSorted(v, 0.75) });
      }
    }
    if (boxes.length === 0) return ["empty", "no bw_util or flop_util figures in the filtered points"];
    const chart = plot({
      title: "achieved fraction of each device's own measured ceilings (min, quartiles, median, max over configurations)",
      x: { label: "fraction of ceiling", domain: [0, Math.max(1, d3.max(boxes, (b) => b.max))], grid: true },
      y: { label: null }, marginLeft: LABEL_MARGIN, marginRight: 130,
      marks: [Plot.ruleY(boxes, { x1: "min", x2: "max", y: "label", fy: "metric", stroke: "#888" }),
        Plot.barX(boxes, { x1: "q1", x2: "q3", y: "label", fy: "metric", fill: "#ccc",
          title: (b) => `${b.label}: median ${fmt(b.median)}, quartiles ${fmt(b.q1)}–${fmt(b.q3)}, ${b.n} configurations` }),
        Plot.tickX(boxes, { x: "median", y: "label", fy: "metric", strokeWidth: 2 }),
        Plot.ruleX([1], { stroke: "#c00" })],
    });
    const devs = data.devices.rows.map((r) => Object.fromEntries(data.devices.cols.map((c, i) => [c, r[i]])));
    return ["drawn", chart, table(["backend", "device", "copy GB/s", "GEMM TFLOP/s", "GEMM dtype"],
      devs.map((d) => [d.backend, d.name, d.copy_gbps, d.gemm_tflops, d.gemm_dtype]))];
  }

  function imported(ok) {
    const ext = ok.filter((r) => r.imported);
    if (ext.length === 0) return ["empty", "no imported results in the filtered points (dyno import adds them)"];
    const models = new Set(ext.map((r) => r.model));
    const notes = [];
    const rows = thin(ok.filter((r) => models.has(r.model) && r.thr != null), notes);
    const chart = plot({
      title: "throughput: dyno's points (circles) beside imported studies (triangles)",
      x: { type: "log", label: "batch" }, y: { type: "log", label: "total tok/s", grid: true },
      color: colorBy(rows), symbol: { legend: true, domain: ["dyno", "imported"] },
      marks: [Plot.dot(rows, { x: "batch", y: "thr", stroke: "label", symbol: (r) => (r.imported ? "imported" : "dyno"), fx: "model", r: 4,
        title: (r) => `${r.label}\nsource: ${r.source}\nbatch ${r.batch}: ${fmt(r.thr)} tok/s` })],
    });
    const sources = d3.rollups(ext, (v) => v.length, (r) => r.source).map(([s, n]) => [s, n]);
    return ["drawn", chart, ...notes.map((t) => el("p", { class: "note", text: t })), table(["imported source", "points"], sources)];
  }

  function failures(all) {
    const bad = all.filter((r) => r.status !== "ok");
    if (bad.length === 0) return ["empty", "every filtered point ran"];
    const chart = plot({
      title: "points that did not run, by device and status", x: { label: "points", grid: true }, y: { label: null },
      marginLeft: LABEL_MARGIN, color: { legend: true },
      marks: [Plot.barX(bad, Plot.groupY({ x: "count" }, { y: "label", fill: "status" }))],
    });
    const shown = bad.slice(0, 300);
    const rows = shown.map((r) => [r.status, r.label, r.model, r.workload,
      `b${key(r.batch)} in ${key(r.input_len)} out ${key(r.output_len)} ${key(r.weight_dtype)}/${key(r.kv_dtype)}` +
        (hasLora(r) ? " LoRA " + loraText(r) : ""), r.tag, r.reason]);
    return ["drawn", chart, bad.length > shown.length ? el("p", { class: "note", text: `first ${shown.length} of ${bad.length} shown` }) : null,
      table(["status", "device", "model", "workload", "configuration", "tag", "reason"], rows)];
  }

  const VIEWS = [
    ["compare", "Device comparison", "The same model and configuration on every device, as ratios against a baseline.", deviceComparison],
    ["scaling", "Scaling with batch and sequence length", "Throughput against batch size and prompt length; throughput against latency with each device's Pareto front.", scaling],
    ["latency", "Latency: TTFT and per-step percentiles", "Prefill to first token, and decode-step p50/p90/p99.", latency],
    ["memory", "Memory", "Weights, KV cache and the peak the backend allocated.", memory],
    ["moe", "MoE: experts and top-k", "Mixture-of-experts points by expert count and routing width.", moe],
    ["quant", "Quantization", "Weight and KV-cache dtypes.", quantization],
    ["eviction", "KV-cache eviction", "Memory saved against throughput per eviction policy, and the fidelity it costs.", eviction],
    ["lora", "ViT LoRA adapters", "Images/s and flop_util against the adapters' rank, per model, targets and merged or not; the cost over the same ViT without adapters.", lora],
    ["efficiency", "Efficiency against each device's ceilings", "bw_util: bytes a decode step reads over the measured copy bandwidth; flop_util: prefill FLOPs over the measured GEMM rate.", efficiency],
    ["imported", "Imported results", "Results of external studies (source ≠ dyno), marked, beside dyno's own.", imported],
    ["failures", "Failed and skipped points", "Every point that did not run, with its reason.", failures],
  ];

  function render() {
    const state = readState();
    drawFilters(state);
    const rows = applyFilters(state);
    const ok = rows.filter((r) => r.status === "ok");
    const byStatus = d3.rollups(rows, (v) => v.length, (r) => r.status).map(([s, n]) => `${n} ${s}`).join(", ");
    document.getElementById("summary").textContent =
      `${rows.length.toLocaleString()} of ${points.length.toLocaleString()} points shown (${byStatus || "none"}) · ` +
      `${data.runs.rows.length} run(s) · ${data.db} · generated ${data.generated_at} by dyno ${data.dyno_version}`;
    const main = document.getElementById("views");
    main.replaceChildren();
    for (const [id, title, why, view] of VIEWS) {
      const section = el("section", { class: "view", id: "view-" + id, "data-view": id },
        el("h2", { text: title }), el("p", { class: "why", text: why }));
      let result;
      try {
        result = view(id === "failures" ? rows : ok, state);
      } catch (e) {
        console.error("view " + id + ": " + e);
        result = ["error", "this view failed: " + e.message];
      }
      const [drawn, ...parts] = result;
      section.dataset.state = drawn;
      for (const p of parts.filter((x) => x != null))
        section.append(typeof p === "string" ? el("p", { class: "empty", text: p }) : p);
      main.append(section);
    }
  }

  window.addEventListener("hashchange", render);
  render();
})();
