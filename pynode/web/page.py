"""The operator page: one self-contained HTML document (inline CSS and script, no external
resource) that polls ``/api/cluster`` and redraws in place.

What the script relies on is the JSON shape of :mod:`pynode.web.cluster`. Every text from
the cluster is set with ``textContent`` (job ids are terms anyone can choose), never as
HTML. Elements carry ``data-`` attributes for tests and scripts: node cards
``[data-node][data-up][data-runtime]``, job rows ``tr[data-job][data-node]`` (``data-moved-from``
once the page has seen the job change node). Imports nothing.
"""

from __future__ import annotations

__all__ = ["PAGE"]

_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pynode cluster</title>
<style>
:root {
  --bg: #f5f6f8; --fg: #1d2430; --muted: #5f6b7a; --card: #ffffff; --line: #dde1e7;
  --up: #1f9d55; --down: #c53030; --warn: #b7791f; --accent: #2b6cb0;
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; }
header { background: #1d2430; color: #f0f3f7; padding: 10px 20px; display: flex; flex-wrap: wrap;
  align-items: baseline; gap: 8px 18px; }
header h1 { font-size: 18px; margin: 0; font-weight: 600; letter-spacing: .2px; }
header .sub { color: #b8c2cf; font-size: 13px; }
#live { display: inline-flex; align-items: center; gap: 6px; margin-left: auto; font-size: 13px; color: #b8c2cf; }
#live .dot { width: 9px; height: 9px; border-radius: 50%; background: #718096; }
#live.ok .dot { background: #48bb78; animation: pulse 2s infinite; }
#live.bad .dot { background: #f56565; }
#live.bad { color: #feb2b2; }
@keyframes pulse { 0% { box-shadow: 0 0 0 0 rgba(72,187,120,.7); } 70% { box-shadow: 0 0 0 7px rgba(72,187,120,0); }
  100% { box-shadow: 0 0 0 0 rgba(72,187,120,0); } }
main { padding: 14px 20px 30px; max-width: 1500px; }
h2 { font-size: 15px; margin: 18px 0 8px; font-weight: 600; color: #2d3748; }
h2 .count { color: var(--muted); font-weight: 400; }
#totals { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 4px; }
.pill { background: var(--card); border: 1px solid var(--line); border-radius: 999px; padding: 3px 12px; }
.pill b { font-variant-numeric: tabular-nums; }
#spread { display: flex; height: 14px; border-radius: 7px; overflow: hidden; margin: 10px 0 0; background: #e2e8f0; }
#spread span { display: block; height: 100%; transition: flex-grow .6s ease; }
#spread-legend { font-size: 12px; color: var(--muted); margin-top: 4px; }
#nodes { display: grid; grid-template-columns: repeat(auto-fill, minmax(270px, 1fr)); gap: 10px; }
.card { background: var(--card); border: 1px solid var(--line); border-left: 5px solid var(--up);
  border-radius: 8px; padding: 9px 12px; }
.card.down { border-left-color: var(--down); background: #fff7f7; }
.card.down .name { text-decoration: line-through; text-decoration-color: rgba(197,48,48,.5); }
.card .head { display: flex; align-items: center; gap: 7px; flex-wrap: wrap; }
.card .state { font-size: 13px; margin: 4px 0 2px; }
.card.up .state { color: var(--up); }
.card.down .state { color: var(--down); font-weight: 600; }
.card dl { margin: 4px 0 0; display: grid; grid-template-columns: auto 1fr; gap: 1px 10px; font-size: 13px; }
.card dt { color: var(--muted); }
.card dd { margin: 0; }
.badge { font-size: 11px; border-radius: 4px; padding: 1px 6px; font-weight: 600; text-transform: uppercase;
  letter-spacing: .4px; }
.rt-python { background: #ebf4ff; color: #2c5282; }
.rt-beam { background: #faf0ff; color: #6b2c91; }
.rt-unknown { background: #edf2f7; color: #4a5568; }
.me { background: #fefcbf; color: #744210; }
.chip { display: inline-block; border-radius: 4px; padding: 0 6px; font-family: ui-monospace, "SFMono-Regular",
  Menlo, Consolas, monospace; font-size: 12.5px; background: hsl(var(--h, 210) 70% 92%);
  border: 1px solid hsl(var(--h, 210) 45% 72%); color: hsl(var(--h, 210) 60% 22%); white-space: nowrap; }
.toolbar { display: flex; gap: 10px; align-items: center; }
#filter { padding: 5px 9px; border: 1px solid var(--line); border-radius: 6px; min-width: 260px; font: inherit; }
table { border-collapse: collapse; width: 100%; background: var(--card); border: 1px solid var(--line);
  border-radius: 8px; overflow: hidden; }
th, td { text-align: left; padding: 6px 9px; border-bottom: 1px solid #edf0f4; vertical-align: top; }
th { background: #eef1f5; font-size: 12px; text-transform: uppercase; letter-spacing: .4px; color: #4a5568; }
td.id { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px; word-break: break-all; }
td.detail { color: var(--muted); font-size: 13px; }
tr.gone td { opacity: .45; }
tr.moved { animation: moved 4s ease-out; }
@keyframes moved { 0% { background: #fbd38d; } 100% { background: transparent; } }
.from { display: inline-block; margin-left: 6px; font-size: 12px; color: var(--warn); font-weight: 600; }
.st { font-size: 12px; font-weight: 600; border-radius: 4px; padding: 1px 7px; background: #edf2f7; color: #4a5568; }
.st-running, .st-working { background: #e6fffa; color: #234e52; }
.st-done, .st-results-ready { background: #f0fff4; color: #22543d; }
.st-failed { background: #fff5f5; color: #9b2c2c; }
.st-cancelled { background: #fffaf0; color: #7b341e; }
.st-queued { background: #ebf8ff; color: #2a4365; }
.bar { width: 130px; height: 9px; background: #e2e8f0; border-radius: 5px; overflow: hidden; display: inline-block;
  vertical-align: middle; margin-right: 6px; }
.bar span { display: block; height: 100%; background: var(--accent); transition: width .5s; }
.num { font-variant-numeric: tabular-nums; font-size: 12.5px; }
.empty { color: var(--muted); padding: 14px; text-align: center; }
footer { color: var(--muted); font-size: 12px; margin-top: 14px; }
#errors { color: var(--down); }
</style>
</head>
<body>
<header>
  <h1>pynode cluster</h1>
  <span class="sub">served by <b id="served">&hellip;</b></span>
  <span class="sub" id="updated"></span>
  <span id="live"><span class="dot"></span><span id="live-text">connecting</span></span>
</header>
<main>
  <div id="totals"></div>
  <div id="spread" title="jobs per node"></div>
  <div id="spread-legend"></div>
  <h2>Nodes <span class="count" id="node-count"></span></h2>
  <div id="nodes"></div>
  <div class="toolbar"><h2>Jobs <span class="count" id="job-count"></span></h2>
    <input id="filter" type="search" placeholder="filter: id, kind, node, status" aria-label="filter jobs"></div>
  <table id="jobs">
    <thead><tr><th>Job</th><th>Kind</th><th>Node</th><th>Replicas</th><th>Status</th><th>Progress</th><th>Detail</th></tr></thead>
    <tbody></tbody>
  </table>
  <footer><div id="limits"></div><div id="errors"></div></footer>
</main>
<script>
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const rows = new Map();          // job id -> <tr>
  const lastNode = new Map();      // job id -> the node the page last showed it on
  let refreshMs = 1000, okOnce = false;

  function hue(name) { let h = 7; for (const c of name) h = (h * 31 + c.codePointAt(0)) >>> 0; return h % 360; }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function chip(name, extra) {
    const s = el("span", "chip", extra ? name + " " + extra : name);
    s.style.setProperty("--h", hue(name));
    return s;
  }
  function dur(ms) {
    let s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + " s";
    let m = Math.floor(s / 60); s %= 60;
    if (m < 60) return m + " min " + s + " s";
    const h = Math.floor(m / 60); m %= 60;
    return h + " h " + m + " min";
  }
  function clock(ms) { return new Date(ms).toLocaleTimeString(); }
  function setText(node, text) { text = String(text); if (node.textContent !== text) node.textContent = text; }
  function compact(v) {
    try { const s = JSON.stringify(v); return s.length > 80 ? s.slice(0, 77) + "..." : s; } catch (e) { return "?"; }
  }

  function renderTotals(d) {
    const t = d.totals, box = $("totals");
    box.replaceChildren();
    const add = (label, value) => { const p = el("span", "pill"); p.append(el("b", null, value), " " + label); box.append(p); };
    add("nodes up", t.nodes_up); add("down", t.nodes_down); add("job hosts", t.job_hosts);
    add("jobs", t.jobs); add("registry entries", t.registry_entries);
    const spread = $("spread"), legend = $("spread-legend");
    spread.replaceChildren(); legend.replaceChildren();
    const counts = d.nodes.filter((n) => n.jobs > 0);
    for (const n of counts) {
      const s = el("span"); s.style.flexGrow = n.jobs; s.style.background = "hsl(" + hue(n.name) + " 60% 55%)";
      s.title = n.name + ": " + n.jobs + " job(s)"; spread.append(s);
      legend.append(chip(n.name, String(n.jobs)), " ");
    }
    if (!counts.length) legend.textContent = "no jobs";
  }

  function renderNodes(d) {
    const box = $("nodes");
    box.replaceChildren();
    for (const n of d.nodes) {
      const c = el("div", "card " + (n.up ? "up" : "down"));
      c.dataset.node = n.name; c.dataset.up = String(n.up); c.dataset.runtime = n.runtime;
      const head = el("div", "head");
      head.append(chip(n.name));
      const rt = { python: "Python", beam: "BEAM", unknown: "?" }[n.runtime] || n.runtime;
      head.append(el("span", "badge rt-" + n.runtime, rt));
      if (n.self) head.append(el("span", "badge me", "this page"));
      c.append(head);
      const ago = d.generated_at - n.since;
      c.append(el("div", "state", n.up ? "up since " + clock(n.since) + " (" + dur(ago) + ")"
                                          : "down since " + clock(n.since) + " (" + dur(ago) + " ago)"));
      const dl = el("dl");
      const row = (k, v) => { dl.append(el("dt", null, k)); const dd = el("dd"); dd.append(v); dl.append(dd); };
      row("job host", n.job_host ? (n.kinds.length ? n.kinds.join(", ") : "yes") : "no");
      if (n.load) row("load", n.load.running + " running, " + n.load.queued + " queued / " + n.load.max_jobs);
      row("jobs", String(n.jobs) + (n.replicas_held ? "  \u00b7  " + n.replicas_held + " replica(s) held" : ""));
      row("registry", n.registry_entries + " entr" + (n.registry_entries === 1 ? "y" : "ies"));
      c.append(dl);
      box.append(c);
    }
    const up = d.nodes.filter((n) => n.up).length;
    $("node-count").textContent = "(" + up + " up, " + (d.nodes.length - up) + " down)";
  }

  function jobRow(id) {
    const tr = el("tr");
    tr.dataset.job = id;
    for (const cls of ["id", "kind", "node", "replicas", "status", "progress", "detail"]) tr.append(el("td", cls));
    return tr;
  }

  function renderJobs(d) {
    const body = document.querySelector("#jobs tbody");
    const seen = new Set();
    for (const j of d.jobs) {
      seen.add(j.id);
      let tr = rows.get(j.id);
      if (!tr) { tr = jobRow(j.id); rows.set(j.id, tr); }
      const td = tr.children;
      setText(td[0], j.id);
      setText(td[1], j.kind);
      const prev = lastNode.get(j.id);
      if (prev !== undefined && prev !== j.node) {
        tr.classList.remove("moved"); void tr.offsetWidth; tr.classList.add("moved");
        tr.dataset.movedFrom = prev;
      } else if (j.moved_from && tr.dataset.movedFrom === undefined) {
        tr.dataset.movedFrom = j.moved_from;   // a move the page did not see (opened later, a gap)
      }
      lastNode.set(j.id, j.node);
      if (tr.dataset.node !== j.node || td[2].childElementCount === 0 || td[2].dataset.from !== String(j.moved_from)) {
        tr.dataset.node = j.node;
        td[2].replaceChildren(chip(j.node));
        td[2].dataset.from = String(j.moved_from);
        if (j.moved_from) td[2].append(el("span", "from", "\u21aa from " + j.moved_from));
      }
      const fromRecently = j.moved_from && j.moved_at && d.generated_at - j.moved_at < 30000;
      const f = td[2].querySelector(".from"); if (f) f.style.display = fromRecently ? "" : "none";
      const reps = j.replicas.map((r) => r.node + (r.seq !== null ? "#" + r.seq : "")).join(" ");
      if (td[3].dataset.v !== reps) {
        td[3].dataset.v = reps; td[3].replaceChildren();
        if (!j.replicas.length) td[3].textContent = "none";
        for (const r of j.replicas) { td[3].append(chip(r.node, r.seq !== null ? "#" + r.seq : ""), " "); }
      }
      const st = j.status || (j.state_error ? "no answer" : "\u2026");
      if (td[4].dataset.v !== st) {
        td[4].dataset.v = st;
        td[4].replaceChildren(el("span", "st st-" + st.replace(/[^a-z]+/g, "-"), st));
      }
      const p = j.progress;
      let ptxt = "", pct = null;
      if (p && typeof p.done === "number" && typeof p.total === "number" && p.total > 0) {
        pct = Math.min(100, Math.round(100 * p.done / p.total)); ptxt = p.done + " / " + p.total;
      } else if (p && typeof p.events === "number") { ptxt = p.events + " event" + (p.events === 1 ? "" : "s"); }
      else if (p && Object.keys(p).length) { ptxt = compact(p); }
      if (j.attempts && j.attempts > 1) ptxt += "  (attempt " + j.attempts + ")";
      if (td[5].dataset.v !== ptxt + "|" + pct) {
        td[5].dataset.v = ptxt + "|" + pct; td[5].replaceChildren();
        if (pct !== null) { const b = el("span", "bar"); const i = el("span"); i.style.width = pct + "%"; b.append(i); td[5].append(b); }
        td[5].append(el("span", "num", ptxt));
      }
      let detail = j.detail || "";
      if (!j.registered) detail = "not in the registry yet; " + detail;
      if (j.state_error) detail += (detail ? "; " : "") + "state: " + j.state_error;
      setText(td[6], detail);
      body.append(tr);   // moves it into the sorted order
    }
    for (const [id, tr] of rows) {
      if (!seen.has(id)) { tr.remove(); rows.delete(id); }   // lastNode kept: a moving job may miss a poll
    }
    if (lastNode.size > 20000) { for (const id of [...lastNode.keys()]) if (!rows.has(id)) lastNode.delete(id); }
    let empty = body.querySelector("tr.empty-row");
    if (!d.jobs.length) {
      if (!empty) { empty = el("tr", "empty-row"); const td = el("td", "empty", "no jobs in the cluster");
        td.colSpan = 7; empty.append(td); body.append(empty); }
    } else if (empty) { empty.remove(); }
    $("job-count").textContent = "(" + d.totals.jobs + (d.limits.jobs_truncated ? ", " + d.limits.jobs_truncated + " not shown" : "") + ")";
    applyFilter();
  }

  function applyFilter() {
    const q = $("filter").value.trim().toLowerCase();
    for (const tr of rows.values()) tr.style.display = !q || tr.textContent.toLowerCase().includes(q) ? "" : "none";
  }

  function render(d) {
    refreshMs = Math.max(250, d.refresh_ms || 1000);
    $("served").textContent = d.node;
    $("updated").textContent = "updated " + clock(d.generated_at);
    document.title = "pynode cluster \u00b7 " + d.node;
    renderTotals(d); renderNodes(d); renderJobs(d);
    const l = d.limits;
    $("limits").textContent = "Refreshed every " + Math.round(refreshMs / 100) / 10 + " s; at most " + l.state_cap +
      " job states asked per refresh (" + l.jobs_without_state + " waiting for one); calls time out after " +
      l.call_timeout_ms + " ms.";
    $("errors").textContent = d.errors.length ? "Unanswered: " + d.errors.join("; ") : "";
  }

  function live(ok, text) {
    const e = $("live"); e.className = ok ? "ok" : "bad"; $("live-text").textContent = text;
  }

  async function poll() {
    try {
      const r = await fetch("/api/cluster", { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      render(await r.json());
      okOnce = true;
      live(true, "live");
    } catch (e) {
      live(false, (okOnce ? "lost the node serving this page, retrying" : "cannot reach the node") + " (" + e.message + ")");
    } finally {
      setTimeout(poll, document.hidden ? Math.max(5000, refreshMs) : refreshMs);
    }
  }
  $("filter").addEventListener("input", applyFilter);
  poll();
})();
</script>
</body>
</html>
"""

#: the page, as served
PAGE: bytes = _HTML.encode("utf-8")
