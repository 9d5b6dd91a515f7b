// The dashboard's one script. Each page is rendered by the server and works without it; this
// makes it live by short polling: fetch the page's JSON twin (body[data-json]) every
// body[data-poll] ms and redraw in place, charts with uPlot (vendored, static/VENDORED.md).
// Text from the store (samples, names, errors, tags) is only ever written with textContent, never
// innerHTML: a sample may hold markup or script and must show as text.
"use strict";

(function () {
  const body = document.body;
  const page = body.dataset.page;
  const jsonUrl = body.dataset.json;
  const pollMs = parseInt(body.dataset.poll || "3000", 10);
  const initial = JSON.parse(document.getElementById("page-data").textContent);

  // --- helpers --------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  // a non-finite loss arrives as the string "NaN" or "Infinity" (valid JSON); shown as such
  function num(v, digits) {
    if (v === null || v === undefined) return "-";
    return typeof v === "number" ? v.toFixed(digits) : String(v);
  }
  function when(t) {
    if (!t) return "-";
    return new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19);
  }
  function replaceRows(tbody, rows) { tbody.replaceChildren(...rows); }
  function jobLink(id) { return el("a", {href: "/job/" + encodeURIComponent(id)}, id); }
  function status(s) { return el("span", {class: "status s-" + s}, s); }
  // a running job that waits for space in a full store says so, as `orchestrator list` does
  function waiting(j) {
    return j.waiting ? el("span", {class: "waiting", title: j.waiting}, " waiting: store full")
                     : null;
  }
  function progress(j) { return (j.iteration || 0) + "/" + (j.iterations || "?"); }
  const banner = document.getElementById("banner");
  function setBanner(msg) {
    if (!banner) return;
    banner.hidden = !msg;
    banner.textContent = msg || "";
  }
  function color(i, n) {
    return "hsl(" + Math.round((i * 360) / Math.max(n, 1) + 210) % 360 + ", 70%, 45%)";
  }
  function width(fig) { return Math.max(300, (fig.clientWidth || 800) - 10); }

  // Sorted by x, one y per x (the last row wins, as in leaderboard.curves): a resumed or rolled
  // back job repeats iterations, and uPlot needs ascending x.
  function table(xs, ys) {
    const m = new Map();
    xs.forEach((x, i) => m.set(x, typeof ys[i] === "number" ? ys[i] : null));   // NaN: a gap
    const sx = [...m.keys()].sort((a, b) => a - b);
    return [sx, sx.map(x => m.get(x))];
  }

  // --- polling --------------------------------------------------------------------------------
  // `url`: a string, or a function called at each tick (a job page asks for what is new)
  function poll(url, every, render) {
    let stopped = false;
    async function tick() {
      try {
        const r = await fetch(typeof url === "function" ? url() : url, {cache: "no-store", credentials: "same-origin",
                                    headers: {"Accept": "application/json"}});
        let data = null;
        try { data = await r.json(); } catch (e) { data = null; }
        if (!r.ok) {
          setBanner((data && data.error) || ("the server answered " + r.status + "; retrying"));
        } else {
          setBanner(null);
          if (render(data) === "stop") stopped = true;
        }
      } catch (e) {
        setBanner("the dashboard server is unreachable; retrying");
      }
      if (!stopped) setTimeout(tick, every);
    }
    setTimeout(tick, every);
  }

  // --- jobs -----------------------------------------------------------------------------------
  function jobRow(j) {
    return el("tr", {"data-job-id": j.job_id},
      el("td", {class: "id"}, jobLink(j.job_id)), el("td", {}, j.name || ""),
      el("td", {}, status(j.status), waiting(j)), el("td", {class: "num"}, progress(j)),
      el("td", {class: "num"}, num(j.loss, 3)), el("td", {class: "num"}, num(j.val_loss, 3)),
      el("td", {class: "num"}, num(j.best_val_loss, 3)),
      el("td", {class: "num"}, num(j.chars_per_second, 0)), el("td", {}, j.worker || "-"),
      el("td", {}, when(j.submitted_at)), el("td", {}, when(j.started_at)),
      el("td", {}, when(j.finished_at)));
  }
  function renderJobs(d) {
    replaceRows(document.querySelector("#jobs-table tbody"), d.jobs.map(jobRow));
    const c = document.getElementById("jobs-count");
    const first = d.jobs.length ? d.offset + 1 : 0;
    c.textContent = d.total + " job(s)" + (d.status || d.tag ? " in this index" : "") +
      "; showing " + first + "–" + (d.offset + d.jobs.length) + ", newest first";
  }

  // --- one job --------------------------------------------------------------------------------
  let lossChart = null;
  // what the page holds: the twin is asked for what came after (views.job_view), and a poll's
  // curves and samples are appended to these
  const held = {curves: null, rows: 0, samples: 0};
  function jobUrl() {
    return jsonUrl + "?samples_since=" + held.samples + "&history_since=" + held.rows;
  }
  function addCurves(d) {
    const c = d.curves;
    if (d.history_since === 0 || !held.curves) held.curves = c;
    else for (const k of ["train_chars", "train_loss", "val_chars", "val_loss"]) held.curves[k].push(...c[k]);
    held.rows = d.history_rows;
    return held.curves;
  }
  function lossData(c) {
    return uPlot.join([table(c.train_chars, c.train_loss), table(c.val_chars, c.val_loss)]);
  }
  function drawLoss(curves) {
    const fig = document.getElementById("loss-chart");
    const data = lossData(curves);
    if (!lossChart) {
      lossChart = new uPlot({
        width: width(fig), height: 320,
        scales: {x: {time: false}},
        axes: [{label: "characters seen"}, {label: "nats / character"}],
        series: [{label: "chars"},
                 {label: "training (smoothed)", stroke: "hsl(210, 70%, 45%)", width: 1.5, spanGaps: true},
                 {label: "validation", stroke: "hsl(20, 80%, 50%)", width: 2, spanGaps: true,
                  points: {show: true, size: 6}}],
      }, data, fig);
    } else {
      lossChart.setData(data);
    }
    // what the chart holds, for a reader of the page's markup (and the browser test)
    fig.dataset.points = lossChart.data[1].filter(v => v !== null).length +
                         lossChart.data[2].filter(v => v !== null).length;
  }
  function renderJob(d) {
    const j = d.job;
    const f = (name) => document.querySelector('[data-field="' + name + '"]');
    const set = (name, v) => { const e = f(name); if (e) e.textContent = v; };
    const st = f("status");
    if (st) { st.textContent = j.status; st.className = "status s-" + j.status; }
    const w = f("waiting");
    if (w) { w.textContent = j.waiting || ""; w.hidden = !j.waiting; }
    set("progress", progress(j));
    set("loss", num(j.loss, 4)); set("val_loss", num(j.val_loss, 4));
    set("best_val_loss", num(j.best_val_loss, 4));
    set("chars_per_second", num(j.chars_per_second, 0)); set("worker", j.worker || "-");
    set("submitted_at", when(j.submitted_at)); set("started_at", when(j.started_at));
    set("finished_at", when(j.finished_at)); set("restarts", j.restarts + " · " + j.rollbacks);
    set("checkpoint_iteration", d.checkpoint_iteration === null ? "none yet"
                                : "iteration " + d.checkpoint_iteration);
    document.getElementById("history-rows").textContent = d.history_rows;
    drawLoss(addCurves(d));
    if (d.samples_written !== held.samples) {
      document.getElementById("samples-count").textContent = d.samples_written;
      const box = document.getElementById("samples");
      const figs = d.samples.map(s =>
        el("figure", {class: "sample"}, el("figcaption", {}, "iteration " + s.iteration),
           el("pre", {}, s.text)));
      if (d.samples_since === 0) box.replaceChildren(...figs);
      else {
        box.querySelectorAll("p.empty").forEach(n => n.remove());
        box.append(...figs);
        const shown = box.querySelectorAll("figure.sample");   // the store keeps the newest only
        for (let i = 0; i < shown.length - d.samples_kept; i++) shown[i].remove();
      }
      if (!box.children.length) box.append(el("p", {class: "empty"}, "no samples yet"));
      held.samples = d.samples_written;
      box.scrollTop = box.scrollHeight;      // the newest, at the bottom, in view
    }
    replaceRows(document.querySelector("#events tbody"), d.events.map(e => {
      const details = Object.entries(e).filter(([k]) => k !== "t" && k !== "event")
        .map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join(" ");
      return el("tr", {}, el("td", {}, when(e.t)), el("td", {}, e.event),
                el("td", {class: "details"}, details));
    }));
    return d.finished ? "stop" : null;
  }

  // --- sweeps ---------------------------------------------------------------------------------
  function renderSweeps(d) {
    replaceRows(document.querySelector("#sweeps-table tbody"), d.sweeps.length ? d.sweeps.map(s =>
      el("tr", {}, el("td", {class: "id"}, el("a", {href: "/sweep/" + encodeURIComponent(s.sweep_id)}, s.sweep_id)),
         el("td", {}, s.name || ""), el("td", {}, when(s.created_at)), el("td", {class: "num"}, s.jobs),
         el("td", {}, countsText(s.counts, ", ")))) :
      [el("tr", {}, el("td", {colspan: 5, class: "empty"}, "no sweeps"))]);
  }
  function countsText(counts, sep) {
    return Object.keys(counts).sort().map(k => counts[k] + " " + k).join(sep);
  }

  // --- one sweep ------------------------------------------------------------------------------
  const scatterCharts = {};
  function drawScatters(d) {
    for (const fig of document.querySelectorAll("figure.scatter")) {
      const name = fig.dataset.param;
      const pts = d.scatter[name] || [];
      const numeric = pts.every(p => typeof p.x === "number");
      const cats = numeric ? [] : [...new Set(pts.map(p => String(p.x)))].sort();
      const xOf = p => numeric ? p.x : cats.indexOf(String(p.x));
      const sorted = pts.map(p => [xOf(p), p.y]).sort((a, b) => a[0] - b[0]);
      const data = [sorted.map(p => p[0]), sorted.map(p => p[1])];
      const xs = data[0];
      const logx = numeric && xs.length > 1 && xs[0] > 0 && xs[xs.length - 1] / xs[0] >= 20;
      fig.dataset.points = data[0].length;
      if (scatterCharts[name]) { scatterCharts[name].setData(data); continue; }
      const xaxis = {label: name};
      if (!numeric) {
        xaxis.values = (u, splits) => splits.map(v => Number.isInteger(v) && cats[v] !== undefined ? cats[v] : "");
        xaxis.splits = () => cats.map((_, i) => i);
      }
      scatterCharts[name] = new uPlot({
        width: 360, height: 240, legend: {show: false},
        scales: {x: {time: false, distr: logx ? 3 : 1,
                     range: numeric ? undefined : () => [-0.5, cats.length - 0.5]}},
        axes: [xaxis, {label: "best val loss"}],
        series: [{}, {stroke: "hsl(210, 70%, 45%)", paths: () => null,
                      points: {show: true, size: 8, fill: "hsl(210, 70%, 45%)"}}],
      }, data, fig);
    }
  }

  let curveCharts = null, curveLines = [];
  function drawCurves(c) {
    const note = document.getElementById("curves-note");
    note.textContent = c.lines.length < c.total ?
      "the best " + c.lines.length + " of " + c.total + " jobs" : "";
    const ids = c.lines.map(l => l.job_id).join(",");
    const trainData = uPlot.join(c.lines.map(l => table(l.train_chars, l.train_loss)));
    const valData = uPlot.join(c.lines.map(l => table(l.val_chars, l.val_loss)));
    if (!c.lines.length) return;
    if (curveCharts && ids === curveLines.map(l => l.job_id).join(",")) {
      curveCharts[0].setData(trainData); curveCharts[1].setData(valData);
    } else {
      if (curveCharts) curveCharts.forEach(u => u.destroy());
      curveLines = c.lines;
      const series = (pts) => [{label: "chars"}, ...c.lines.map((l, i) => ({
        label: l.label, stroke: color(i, c.lines.length), width: 1.5, spanGaps: true,
        points: {show: pts}}))];
      const opts = (fig, pts, ylabel) => ({
        width: width(fig), height: 300, legend: {show: true, live: false},
        focus: {alpha: 0.15}, cursor: {focus: {prox: 16}},
        scales: {x: {time: false}}, axes: [{label: "characters seen"}, {label: ylabel}],
        series: series(pts)});
      const tf = document.getElementById("curves-train"), vf = document.getElementById("curves-val");
      tf.querySelectorAll(".uplot").forEach(n => n.remove());
      vf.querySelectorAll(".uplot").forEach(n => n.remove());
      curveCharts = [new uPlot(opts(tf, false, "nats / char"), trainData, tf),
                     new uPlot(opts(vf, true, "nats / char"), valData, vf)];
      const sel = document.getElementById("highlight");
      const keep = sel.value;
      sel.replaceChildren(el("option", {value: ""}, "none"), ...c.lines.map((l, i) =>
        el("option", {value: l.job_id}, (i + 1) + ". " + l.label + " (" + l.job_id.slice(0, 8) + ")")));
      sel.value = keep;
      highlight(keep);
    }
    document.getElementById("curves-train").dataset.lines = c.lines.length;
  }
  function highlight(jobId) {
    if (!curveCharts) return;
    const i = curveLines.findIndex(l => l.job_id === jobId);
    for (const u of curveCharts) u.setSeries(i < 0 ? null : i + 1, {focus: true});
  }
  function renderSweep(d) {
    document.getElementById("sweep-counts").firstChild.textContent =
      d.jobs.length + " job(s): " + countsText(d.counts, ", ") + " · created " + when(d.created_at) + " · ";
    const head = document.querySelector("#leaderboard thead tr");
    head.replaceChildren(el("th", {class: "num"}, "#"), el("th", {}, "job"), el("th", {}, "status"),
      el("th", {class: "num"}, "best val"), ...d.varying.map(n => el("th", {class: "num"}, n)),
      el("th", {class: "num"}, "iteration"), el("th", {class: "num"}, "chars/s"), el("th", {}, "last sample"));
    const cap = parseInt(body.dataset.rows || "0", 10);
    replaceRows(document.querySelector("#leaderboard tbody"), (cap ? d.jobs.slice(0, cap) : d.jobs).map(r =>
      el("tr", {"data-job-id": r.job_id}, el("td", {class: "num"}, r.rank),
         el("td", {class: "id"}, jobLink(r.job_id)), el("td", {}, status(r.status)),
         el("td", {class: "num"}, num(r.best_val_loss, 4)),
         ...d.varying.map(n => el("td", {class: "num"}, r.params[n])),
         el("td", {class: "num"}, r.iteration + "/" + (r.iterations || "?")),
         el("td", {class: "num"}, num(r.chars_per_second, 0)),
         el("td", {class: "sample-line"}, r.sample || ""))));
    drawScatters(d);
    const rungs = document.getElementById("rungs");
    if (rungs) {
      rungs.replaceChildren(...d.rungs.flatMap(rung => [
        el("h3", {}, "rung at iteration " + rung.iteration + ": " + rung.decisions.length +
           " reached, " + rung.decisions.filter(x => x.continue).length + " continued"),
        el("table", {class: "rung"}, el("thead", {}, el("tr", {}, ...["job", "val loss", "rank", "of", "kept", "decision"]
            .map((h, i) => el("th", {class: i && i < 5 ? "num" : null}, h)))),
          el("tbody", {}, ...(rung.decisions.length ? rung.decisions.map(x => el("tr", {},
            el("td", {class: "id"}, jobLink(x.job_id)), el("td", {class: "num"}, num(x.val_loss, 4)),
            el("td", {class: "num"}, x.rank), el("td", {class: "num"}, x.reached),
            el("td", {class: "num"}, x.keep),
            el("td", {class: x.continue ? "continue" : "stop"}, x.continue ? "continued" : "stopped here"))) :
            [el("tr", {}, el("td", {colspan: 6, class: "empty"}, "no job has reached it yet"))])))]));
    }
    return d.finished ? "stop" : null;
  }
  async function loadCurves() {
    try {
      const r = await fetch(body.dataset.curves, {cache: "no-store", credentials: "same-origin"});
      if (r.ok) drawCurves(await r.json());
    } catch (e) { /* the page's own poll reports an unreachable server */ }
  }

  // --- workers --------------------------------------------------------------------------------
  function renderWorkers(d) {
    document.getElementById("counts").textContent =
      Object.entries(d.counts).map(([k, v]) => v + " " + k).join(" · ");
    const who = w => [el("td", {}, w.name), el("td", {}, w.host || ""),
      el("td", {class: w.alive ? (w.jobs.length ? "busy" : "idle") : "gone"},
        w.alive ? (w.jobs.length ? "running" : "idle") : "not renewing")];
    const rows = d.workers.flatMap(w => w.jobs.length ? w.jobs.map(j => el("tr", {}, ...who(w),
      el("td", {class: "id"}, jobLink(j.job_id)), el("td", {}, j.name || ""),
      el("td", {class: "num"}, progress(j)), el("td", {class: "num"}, num(j.loss, 3)),
      el("td", {class: "num"}, num(j.val_loss, 3)), el("td", {class: "num"}, num(j.chars_per_second, 0)),
      el("td", {}, when(j.started_at)))) :
      [el("tr", {}, ...who(w), el("td", {colspan: 7, class: "empty"}, "no job"))]);
    replaceRows(document.querySelector("#workers-table tbody"), rows.length ? rows :
      [el("tr", {}, el("td", {colspan: 10, class: "empty"}, "no worker alive"))]);
  }

  // --- start ----------------------------------------------------------------------------------
  if (page === "jobs") poll(jsonUrl, pollMs, renderJobs);
  if (page === "sweeps") poll(jsonUrl, pollMs, renderSweeps);
  if (page === "workers") poll(jsonUrl, pollMs, renderWorkers);
  if (page === "job") {
    held.curves = initial.curves;
    held.rows = initial.history_rows;
    held.samples = initial.samples_written;
    drawLoss(held.curves);
    const box = document.getElementById("samples");
    box.scrollTop = box.scrollHeight;
    if (!initial.finished) poll(jobUrl, pollMs, renderJob);
  }
  if (page === "sweep") {
    drawScatters(initial);
    document.getElementById("highlight").addEventListener("change", e => highlight(e.target.value));
    loadCurves();
    if (!initial.finished) {
      poll(jsonUrl, pollMs, d => { loadCurves(); return renderSweep(d); });
    }
  }
})();
