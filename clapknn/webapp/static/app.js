// clapknn serve: the curator's page. Plain script, no build step, nothing fetched from elsewhere.
"use strict";

const TOKEN = document.querySelector('meta[name="clapknn-token"]').content;
const $ = (id) => document.getElementById(id);
const view = { tab: "library", sort: "name", desc: false, page: 1, perPage: 50, selected: null, status: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function showError(text) {
  $("error-text").textContent = text;
  $("error").hidden = false;
}

function showMessage(text, changed) {
  const box = $("message");
  box.replaceChildren(el("span", {}, text));
  if (changed && changed.length) {
    box.append(el("span", {}, ` — ${changed.length} track(s) changed tag:`));
    const list = el("ul", { id: "changed-list" });
    for (const c of changed.slice(0, 12)) {
      list.append(el("li", {}, el("a", { href: "#", "data-id": c.id, onclick: (e) => { e.preventDefault(); select(c.id); } }, c.name),
        ` ${c.before} → ${c.after}`));
    }
    if (changed.length > 12) list.append(el("li", {}, `and ${changed.length - 12} more (tick “changed” to see them all)`));
    box.append(list);
  } else if (changed) {
    box.append(el("span", {}, " — no other track changed its top tag."));
  }
  box.hidden = false;
}

async function api(path, options = {}) {
  const opts = { headers: {}, ...options };
  if (opts.method && opts.method !== "GET") {
    opts.headers["Content-Type"] = "application/json";
    opts.headers["X-Clapknn-Token"] = TOKEN;
    opts.body = JSON.stringify(opts.body || {});
  }
  let response;
  try {
    response = await fetch(path, opts);
  } catch (err) {
    showError(`the server does not answer (${err.message}); is clapknn serve still running?`);
    throw err;
  }
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (!response.ok) {
    const text = (data && data.error) || `${response.status} ${response.statusText}`;
    showError(text);
    throw new Error(text);
  }
  return data;
}

function trackUrl(name) {
  return "/audio/track/" + name.split(/[\\/]/).map(encodeURIComponent).join("/");
}

function fmt(x) { return Number(x).toFixed(2); }
function secs(x) { return `${Number(x).toFixed(1)} s`; }

// ------------------------------------------------------------------ status and progress
async function poll() {
  let s;
  try { s = await api("/api/status"); } catch (err) { setTimeout(poll, 2000); return; }
  view.status = s;
  $("where").textContent = `index ${s.index} · library ${s.library}`;
  if (s.state === "error") {
    $("progress").hidden = true;
    $("main").hidden = true;
    $("missing").hidden = false;
    $("missing-text").textContent = s.error;
    return;
  }
  if (s.state !== "ready") {
    $("progress").hidden = false;
    const pct = s.total ? (100 * s.done) / s.total : 0;
    $("progress-bar").style.width = `${pct}%`;
    $("progress-text").textContent = s.total
      ? `tagging the library: ${s.done} of ${s.total} tracks` + (s.cached ? ` (${s.cached} from the embedding cache)` : "")
      : "loading the index…";
    setTimeout(poll, 500);
    return;
  }
  $("progress").hidden = true;
  $("main").hidden = false;
  ready(s);
}

function ready(s) {
  applyStatus(s);
  const tagSelect = $("filter-tag");
  tagSelect.replaceChildren(el("option", { value: "" }, "every tag"), ...s.tags.map((t) => el("option", { value: t }, t)));
  for (const id of ["export-tags", "export-playlists"]) $(id).disabled = false;
  $("export-csv").classList.remove("disabled");
  buildHead(s.tags);
  load();
}

function applyStatus(s) {
  const grown = view.status && view.status.tags && s.tags && view.status.tags.join("\n") !== s.tags.join("\n");
  view.status = s;
  if (grown) {
    const keep = $("filter-tag").value;
    $("filter-tag").replaceChildren(el("option", { value: "" }, "every tag"), ...s.tags.map((t) => el("option", { value: t }, t)));
    $("filter-tag").value = s.tags.includes(keep) ? keep : "";
    buildHead(s.tags);
  }
  $("undo").disabled = !s.undo;
  $("undo").textContent = s.undo ? `Undo (${s.undo})` : "Undo";
  if (s.history && s.history.length) {
    const last = s.history[s.history.length - 1];
    $("undo").title = `take back: ${last.name} → ${last.tags.join(", ")}`;
  }
  const counts = Object.entries(s.counts || {}).map(([t, n]) => `${t} ${n}`).join(" · ");
  $("counts").textContent = `${s.n_tracks} tracks · ${s.n_examples} examples · ${s.n_low} low-confidence · ${counts}`;
  const skip = $("show-skipped");
  skip.hidden = !s.n_skipped;
  skip.textContent = `${s.n_skipped} file(s) not tagged`;
}

// ------------------------------------------------------------------ the table
function buildHead(tags) {
  const cols = [["name", "track"], ["top", "top tag"], ["score", "score"], ["margin", "margin"],
    ...tags.map((t) => [`score:${t}`, t]), ["example", "example"]];
  $("head").replaceChildren(...cols.map(([key, label]) => {
    const th = el("th", { "data-sort": key, class: key === "name" ? "name" : "" }, label);
    th.addEventListener("click", () => {
      if (view.tab !== "library") return;
      if (view.sort === key) view.desc = !view.desc; else { view.sort = key; view.desc = key !== "name"; }
      view.page = 1;
      load();
    });
    return th;
  }));
}

function params() {
  const p = new URLSearchParams({ sort: view.sort, desc: view.desc ? "1" : "0", page: view.page, per_page: view.perPage });
  const q = $("search").value.trim();
  if (q) p.set("q", q);
  if ($("filter-tag").value) p.set("tag", $("filter-tag").value);
  if ($("filter-min").value !== "") p.set("min", $("filter-min").value);
  if ($("filter-max").value !== "") p.set("max", $("filter-max").value);
  if ($("filter-low").checked) p.set("low", "1");
  if ($("filter-changed").checked) p.set("changed", "1");
  return p;
}

async function load(fresh = false) {
  for (const th of $("head").children) {
    th.classList.toggle("sorted", view.tab === "library" && th.dataset.sort === view.sort);
    th.classList.toggle("desc", view.desc);
  }
  let data;
  if (view.tab === "queue") {
    data = await api("/api/queue?n=10" + (fresh ? "&fresh=1" : ""));
    $("page-info").textContent = `${data.rows.length} track(s) to label next`;
    $("prev").disabled = $("next").disabled = true;
  } else {
    data = await api(`/api/tracks?${params()}`);
    view.page = data.page;
    $("page-info").textContent = `page ${data.page} of ${data.pages} · ${data.total} track(s)`;
    $("prev").disabled = data.page <= 1;
    $("next").disabled = data.page >= data.pages;
  }
  renderRows(data.rows);
}

function renderRows(rows) {
  const tags = view.status.tags;
  $("rows").replaceChildren(...rows.map((r) => {
    const tr = el("tr", { "data-id": r.id, class: [r.changed ? "changed" : "", r.id === view.selected ? "selected" : ""].join(" ") },
      el("td", { class: "name", title: r.name }, r.name),
      el("td", { class: "top" }, r.top, " ", r.low ? el("span", { class: "flag", title: "the two best tags are close" }, "low") : ""),
      el("td", {}, fmt(r.score)),
      el("td", {}, fmt(r.margin)),
      ...tags.map((t) => el("td", { class: "tagscore", title: `${t} ${fmt(r.scores[t])}`, style: `background: rgba(47, 111, 222, ${(0.55 * r.scores[t]).toFixed(3)})` }, fmt(r.scores[t]))),
      el("td", {}, r.example ? el("span", { class: "ex" }, r.example) : ""));
    tr.addEventListener("click", () => select(r.id));
    return tr;
  }));
}

// ------------------------------------------------------------------ one track
async function select(id) {
  view.selected = id;
  for (const tr of $("rows").children) tr.classList.toggle("selected", Number(tr.dataset.id) === id);
  const d = await api(`/api/tracks/${id}`);
  const t = d.track;
  $("detail-empty").hidden = true;
  $("detail-body").hidden = false;
  $("d-name").textContent = t.name;
  const src = trackUrl(t.name);
  const audio = $("track-audio");
  if (audio.dataset.src !== src) { audio.src = src; audio.dataset.src = src; }
  const [s, e] = t.snippet;
  $("snippet-label").textContent = `snippet that voted ${secs(s)}–${secs(e)}`;
  const snippet = $("snippet-audio");
  const ssrc = `${src}#t=${s},${e}`;
  if (snippet.dataset.src !== ssrc) { snippet.src = ssrc; snippet.dataset.src = ssrc; }
  $("d-scores").replaceChildren(...d.tags.map((tag) => el("div", { class: "score" }, el("span", {}, tag),
    el("span", {}, el("span", { class: "bar", style: `width:${Math.round(100 * t.scores[tag])}%` })), el("span", {}, fmt(t.scores[tag])))));
  $("d-example").textContent = t.example ? `This track is an example of ${t.example}.` : (t.low ? "Low confidence: the two best tags are close." : "");
  $("label-buttons").replaceChildren(...d.tags.map((tag) => {
    const confirm = tag === t.top;
    return el("button", { "data-tag": tag, class: confirm ? "confirm" : "", title: confirm ? "confirm the top tag" : `correct to ${tag}`,
      onclick: () => label(id, tag) }, confirm ? `✓ ${tag}` : `→ ${tag}`);
  }));
  $("why").replaceChildren(...d.why.map((n) => {
    const li = el("li", {}, el("div", {}, el("strong", {}, n.tags), " ", n.name),
      el("div", { class: "meta" }, `similarity ${n.similarity.toFixed(3)} · ${n.votes} vote(s) · closest snippet at ${secs(n.start)}`));
    if (n.example !== null) li.append(el("audio", { controls: true, preload: "none", src: `/audio/example/${n.example}#t=${n.start}` }));
    return li;
  }));
}

async function label(id, tag) {
  const r = await api("/api/label", { method: "POST", body: { id, tags: [tag] } });
  applyStatus(r.status);
  showMessage(r.message, r.changed);
  await load();
  await select(id);
}

async function undo() {
  const r = await api("/api/undo", { method: "POST" });
  applyStatus(r.status);
  showMessage(r.message, r.changed);
  await load();
  if (view.selected !== null) await select(view.selected);
}

// ------------------------------------------------------------------ export
async function exportTags() {
  const plan = await api("/api/export/filetags", { method: "POST", body: { dry_run: true } });
  const todo = plan.changes.filter((c) => c.status === "planned");
  const others = plan.changes.filter((c) => c.status !== "planned");
  $("confirm-title").textContent = `Write the ${plan.field} tag into ${todo.length} file(s)?`;
  const list = el("ul", {}, ...todo.map((c) => el("li", {}, `${c.path}: ${c.what}`)));
  const rest = el("p", {}, `${others.filter((c) => c.status === "unchanged").length} unchanged, ` +
    `${others.filter((c) => !["unchanged", "planned"].includes(c.status)).length} cannot be written` +
    (others.some((c) => !["unchanged", "planned"].includes(c.status)) ? ": " + others.filter((c) => !["unchanged", "planned"].includes(c.status)).slice(0, 5).map((c) => `${c.path} (${c.what})`).join("; ") : ""));
  $("confirm-list").replaceChildren(el("p", {}, "Dry run: nothing is written until you confirm."), list, rest);
  $("confirm-ok").textContent = `Write ${todo.length} file(s)`;
  $("confirm-ok").disabled = !todo.length;
  $("confirm-ok").onclick = async () => {
    $("confirm").close();
    const done = await api("/api/export/filetags", { method: "POST", body: { dry_run: false } });
    const n = done.counts.written || 0;
    const bad = done.changes.filter((c) => !["written", "unchanged"].includes(c.status));
    showMessage(`wrote the ${done.field} tag into ${n} file(s)` + (bad.length ? `; ${bad.length} not written: ${bad.slice(0, 3).map((c) => c.what).join("; ")}` : ""));
  };
  $("confirm").showModal();
}

async function exportPlaylists() {
  const r = await api("/api/export/playlists", { method: "POST", body: { folder: "Playlists" } });
  showMessage(`wrote ${r.playlists.length} playlist(s) to ${r.folder}: ` + r.playlists.map((p) => `${p.name} (${p.tracks})`).join(", "));
}

async function showSkipped(e) {
  e.preventDefault();
  const r = await api("/api/skipped");
  $("confirm-title").textContent = `${r.skipped.length} file(s) not tagged`;
  $("confirm-list").replaceChildren(el("ul", {}, ...r.skipped.map((s) => el("li", {}, `${s.path}: ${s.reason}`))));
  $("confirm-ok").textContent = "OK";
  $("confirm-ok").disabled = false;
  $("confirm-ok").onclick = () => $("confirm").close();
  $("confirm").showModal();
}

// ------------------------------------------------------------------ wiring
function setTab(tab) {
  view.tab = tab;
  $("tab-library").classList.toggle("active", tab === "library");
  $("tab-queue").classList.toggle("active", tab === "queue");
  $("filters").hidden = tab !== "library";
  $("queue-help").hidden = tab !== "queue";
  load();
}

let searchTimer = null;
function refilter() { view.page = 1; load(); }

window.addEventListener("error", (e) => showError(`the page failed: ${e.message}`));

document.addEventListener("DOMContentLoaded", () => {
  $("error-close").addEventListener("click", () => { $("error").hidden = true; });
  $("undo").addEventListener("click", undo);
  $("export-tags").addEventListener("click", exportTags);
  $("export-playlists").addEventListener("click", exportPlaylists);
  $("confirm-cancel").addEventListener("click", () => $("confirm").close());
  $("show-skipped").addEventListener("click", showSkipped);
  $("tab-library").addEventListener("click", () => setTab("library"));
  $("tab-queue").addEventListener("click", () => setTab("queue"));
  $("queue-fresh").addEventListener("click", () => load(true));
  $("prev").addEventListener("click", () => { view.page -= 1; load(); });
  $("next").addEventListener("click", () => { view.page += 1; load(); });
  $("search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(refilter, 250); });
  for (const id of ["filter-tag", "filter-min", "filter-max", "filter-low", "filter-changed"]) $(id).addEventListener("change", refilter);
  $("new-tag-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const tag = $("new-tag").value.trim();
    if (tag && view.selected !== null) { $("new-tag").value = ""; label(view.selected, tag); }
  });
  poll();
});
