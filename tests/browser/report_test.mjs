// Opens a page written by `dyno report` in headless Chromium and checks it
// as a user would meet it; prints TAP.
// usage: node report_test.mjs REPORT.html SCREENSHOT.png EMPTY_REPORT.html
//        node report_test.mjs --time REPORT.html
// The second form prints how long the page takes to become interactive
// (bench/report_bench.sh).
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const timeOnly = process.argv[2] === "--time";
const [reportPath, screenshotPath, emptyPath] = process.argv.slice(timeOnly ? 3 : 2);
const url = pathToFileURL(resolve(reportPath)).href;
const HOSTILE = "<img src=x onerror=alert(1)>";
// MoE and eviction workloads do not exist yet: those views say so instead
const MAY_BE_EMPTY = new Set(["moe", "eviction"]);

let n = 0;
let failed = 0;
function check(name, ok, detail) {
  n++;
  if (!ok) failed++;
  console.log(`${ok ? "ok" : "not ok"} ${n} - ${name}`);
  if (!ok && detail !== undefined) console.log("# " + JSON.stringify(detail));
}

// Every view's state and how many marks its charts hold.
const viewsOf = (page) => page.$$eval("#views section.view", (sections) => sections.map((s) => ({
  id: s.dataset.view,
  state: s.dataset.state,
  marks: s.querySelectorAll("svg circle, svg path, svg rect, svg line, svg text").length,
  text: s.textContent,
  // a JavaScript null or undefined printed where an element or text belongs
  stray: [...s.querySelectorAll("*")].some((e) => [...e.childNodes].some((c) =>
    c.nodeType === Node.TEXT_NODE && /^(null|undefined|NaN)$/.test(c.textContent.trim()))),
})));
// What is drawn, as one string, to tell whether a filter changed it.
const drawing = (page) => page.$eval("#views", (v) => [...v.querySelectorAll("svg")].map((s) => s.outerHTML).join("") +
  [...v.querySelectorAll("table")].map((t) => t.textContent).join(""));

// The flags of shared/TOOLCHAINS.md; playwright adds --headless, and
// --user-data-dir as this fresh profile, itself.
const profile = mkdtempSync(join(tmpdir(), "dyno-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1400, height: 1000 },
});
try {
  const page = await context.newPage();
  const errors = [];
  const dialogs = [];
  const requests = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  page.on("request", (r) => { if (!r.url().startsWith("file:") && !r.url().startsWith("data:")) requests.push(r.url()); });

  const start = Date.now();
  await page.goto(url, { waitUntil: "load" });
  // the last view exists once the app has run to its end
  const loaded = await page.waitForSelector("#views section.view[data-view=failures]", { timeout: 15000 })
    .then(() => true, () => false);
  const interactiveMs = Date.now() - start;
  if (!loaded) {
    console.log("1..1\nnot ok 1 - the page draws its views");
    console.log("# " + JSON.stringify(errors));
    process.exitCode = 1;
  } else
  if (timeOnly) {
    console.log(`interactive_ms ${interactiveMs}`);
    console.log(`points ${await page.$eval("#summary", (s) => s.textContent)}`);
  } else {
    console.log("1..13");
    console.log(`# interactive after ${interactiveMs} ms`);
    const views = await viewsOf(page);
    check("eleven views", views.length === 11, views.map((v) => v.id));
    const bad = views.filter((v) => v.stray || (!(v.state === "drawn" && v.marks > 0) &&
      !(MAY_BE_EMPTY.has(v.id) && v.state === "empty" && v.text.includes("no data yet"))));
    check("every view draws (or says no data yet where no workload exists), no stray null", bad.length === 0,
      bad.map((v) => [v.id, v.state, v.marks, v.stray]));
    check("imported results are drawn and named by source",
      views.some((v) => v.id === "imported" && v.state === "drawn" && v.text.includes("llm-inference-bench")));
    check("failed and skipped points listed with reasons",
      views.some((v) => v.id === "failures" && v.text.includes("quantizes experts") && v.text.includes("kernel said")));

    // the fixture's ViT sweep: per device (three), the configuration without
    // adapters anchoring each of six series (four of ranks 4 and 16, two of a
    // rank map), one dot per rank
    const lora = await page.$eval("section[data-view=lora]", (s) => ({
      state: s.dataset.state,
      dots: [...s.querySelectorAll("figure")].map((f) => f.querySelectorAll("g[aria-label=dot] circle, g[aria-label=dot] path").length),
      lines: s.querySelectorAll("figure g[aria-label=line] path").length,
      legend: ["tiny-vit · attn · unmerged", "tiny-vit · attn+mlp · merged", "tiny-vit · attn+mlp · unmerged · map 16/16,8/8,4/0,0/4"]
        .filter((t) => !s.textContent.includes(t)),
      rows: s.querySelectorAll("table tbody tr").length,
      bars: s.querySelectorAll(".map-detail[data-map=lora_rank_map] g[aria-label=bar] rect").length,
    }));
    // 8 bars: attn and mlp of 4 layers, rank 0 ones included
    check("LoRA view: images/s and flop_util dots per rank, a line per series, the rank map its own series and bars",
      lora.state === "drawn" && lora.dots[0] === 48 && lora.dots[1] === 48 && lora.lines === 36 &&
      lora.legend.length === 0 && lora.rows === 30 && lora.bars === 8, lora);
    // per-layer maps: in the tooltips, and drawn for the configuration picked
    const maps = await page.evaluate(() => {
      const detail = (m) => document.querySelector(`.map-detail[data-map=${m}]`);
      const titles = (v) => [...document.querySelectorAll(`section[data-view=${v}] svg title`)].map((t) => t.textContent).join("\n");
      return {
        kvTip: titles("eviction").includes("per-layer budgets 32–32, mean 32 tokens over 4 layers"),
        kvBars: detail("kv_budget_map")?.querySelectorAll("g[aria-label=bar] rect").length,
        bitsTip: titles("quant").includes("over 64 experts"),
        bitsCells: detail("expert_bits")?.querySelectorAll("g[aria-label=cell] rect").length,
        bitsOptions: detail("expert_bits")?.querySelectorAll("option").length,
      };
    });
    check("KV budget maps and MoPEQ expert bits: in the tooltips, and drawn per layer / per expert",
      maps.kvTip && maps.kvBars === 4 && maps.bitsTip && maps.bitsCells === 64 && maps.bitsOptions === 2, maps);
    await page.$eval(".map-detail[data-map=lora_rank_map] svg", (s) => s.setAttribute("data-old", ""));
    const options = await page.$$eval(".map-detail[data-map=lora_rank_map] option", (o) => o.map((x) => x.textContent));
    await page.selectOption(".map-detail[data-map=lora_rank_map] select", "1");
    const picked = await page.$eval(".map-detail[data-map=lora_rank_map]", (d) => ({
      bars: d.querySelectorAll("g[aria-label=bar] rect").length, old: d.querySelectorAll("svg[data-old]").length }));
    check("picking another configuration redraws its map; the choices are named as text", options.length === 3 &&
      options.some((o) => o.startsWith(HOSTILE)) && picked.bars === 8 && picked.old === 0, { options, ...picked });

    const before = await drawing(page);
    await page.click("details[data-dim=device] summary");
    await page.click("details[data-dim=device] label:has-text('host CPU (reference)') input");
    await page.waitForFunction(() => location.hash.includes("device="));
    const after = await drawing(page);
    const hash = await page.evaluate(() => location.hash);
    check("a filter change changes what is drawn and lands in the URL", before !== after && hash.includes("device="),
      { hash, same: before === after });

    const shared = await context.newPage();
    await shared.goto(url + hash, { waitUntil: "load" });
    const unticked = await shared.$eval("details[data-dim=device]", (d) => [...d.querySelectorAll("label")]
      .filter((l) => !l.querySelector("input").checked).map((l) => l.textContent.trim()));
    check("the URL fragment restores the filters", unticked.length === 1 && unticked[0] === "host CPU (reference)", unticked);
    await shared.close();
    await page.evaluate(() => { location.hash = ""; });
    await page.waitForFunction(() => !location.hash.includes("device="));

    const hostile = await page.evaluate((h) => ({
      text: document.body.innerText.includes(h),
      tag: document.body.textContent.includes("</script><script>alert(2)</script>"),
      images: document.querySelectorAll("img").length,
      scripts: document.querySelectorAll("script").length,
    }), HOSTILE);
    check("hostile strings render as text and stay inert",
      hostile.text && hostile.tag && hostile.images === 0 && hostile.scripts === 4 && dialogs.length === 0,
      { ...hostile, dialogs });
    check("no console errors and no network requests", errors.length === 0 && requests.length === 0, { errors, requests });

    const empty = await context.newPage();
    const emptyErrors = [];
    empty.on("console", (m) => { if (m.type() === "error") emptyErrors.push(m.text()); });
    empty.on("pageerror", (e) => emptyErrors.push(String(e)));
    await empty.goto(pathToFileURL(resolve(emptyPath)).href, { waitUntil: "load" });
    const emptyViews = await viewsOf(empty);
    check("a database with no points: every view says so, no errors",
      emptyViews.length === 11 && emptyViews.every((v) => v.state === "empty") && emptyErrors.length === 0,
      { emptyErrors, states: emptyViews.map((v) => v.state) });
    await empty.close();

    await page.screenshot({ path: screenshotPath, fullPage: true });
    check("screenshot saved", true);
  }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
if (n) console.log(`# ${n} checks, ${failed} failed`);
process.exit(failed || process.exitCode ? 1 : 0);
