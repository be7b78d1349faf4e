// The demo: load a checkpoint (Cache API kept), choose or drop images, type labels, see the
// zero-shot probabilities and CLIP scores, the adapter, the engine path and the timings.
// URL parameters (used by the browser test): ?model=URL&device=D&images=URL,URL&run=1
import init, { Clip } from "/target/web/pkg/clip_wgpu.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let clip = null;
let items = []; // {name, blob}
const lines = [];
const status = (m) => { lines.push(m); $("status").textContent = lines.join("\n"); };

async function load() {
  if (clip) { clip.free(); clip = null; }
  const t0 = performance.now();
  status(`loading ${$("model").value} …`);
  clip = await Clip.load($("model").value, {
    device: $("device").value,
    progress: (file, loaded, total) => {
      if (total && loaded === total) status(`  ${file}: ${(total / 1048576).toFixed(1)} MiB`);
    },
  });
  status(`engine: ${clip.path}${clip.adapter ? ` — adapter ${clip.adapter}` : ""}; dim ${clip.dim}; ` +
    `loaded in ${(performance.now() - t0).toFixed(0)} ms`);
}

function show(rows, labels, probs, scores) {
  const m = labels.length;
  $("results").innerHTML = "";
  rows.forEach((it, i) => {
    const card = document.createElement("div");
    card.className = "card";
    const img = document.createElement("img");
    img.src = URL.createObjectURL(it.blob);
    card.append(img);
    const t = document.createElement("table");
    const order = [...labels.keys()].sort((a, b) => probs[i * m + b] - probs[i * m + a]);
    for (const j of order) {
      const p = probs[i * m + j];
      const tr = t.insertRow();
      tr.insertCell().textContent = labels[j];
      tr.insertCell().innerHTML = `<div class="bar" style="width:${Math.max(1, p * 120)}px"></div>`;
      tr.insertCell().textContent = `${(100 * p).toFixed(1)}%`;
      tr.insertCell().textContent = `score ${scores[i * m + j].toFixed(1)}`;
    }
    card.append(`${it.name}`, t);
    $("results").append(card);
  });
}

async function classify() {
  if (!clip) await load();
  const labels = $("labels").value.split("\n").map((s) => s.trim()).filter(Boolean);
  if (!items.length || !labels.length) return status("choose images and type labels first");
  const t0 = performance.now();
  const img = await clip.embedImages(items.map((it) => it.blob));
  const t1 = performance.now();
  const txt = await clip.embedTexts(labels);
  const t2 = performance.now();
  show(items, labels, clip.classify(img, txt), clip.score(img, txt));
  status(`batch: ${items.length} images in ${(t1 - t0).toFixed(0)} ms, ${labels.length} labels in ${(t2 - t1).toFixed(0)} ms`);
}

const guard = (f) => async () => {
  try { await f(); } catch (e) { status(`error: ${e && e.message || e}`); }
};
$("load").onclick = guard(load);
$("run").onclick = guard(classify);
$("files").onchange = () => { items = [...$("files").files].map((f) => ({ name: f.name, blob: f })); };
const drop = $("drop");
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  items = [...e.dataTransfer.files].filter((f) => f.type.startsWith("image/")).map((f) => ({ name: f.name, blob: f }));
  status(`${items.length} images dropped`);
};

await init();
status(`WebGPU: ${navigator.gpu ? "available" : "not in this browser (the CPU engine runs)"}`);
if (params.get("model")) $("model").value = params.get("model");
if (params.get("device")) $("device").value = params.get("device");
if (params.get("images")) {
  items = await Promise.all(params.get("images").split(",").map(async (u) =>
    ({ name: u.split("/").pop(), blob: await (await fetch(u)).blob() })));
}
if (params.get("run")) await guard(classify)();
window.__demoDone = true;
