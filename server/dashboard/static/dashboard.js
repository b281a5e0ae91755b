// fedrp dashboard: polls the JSON API and redraws; no build step, no network beyond this server.
"use strict";
const fedrp = (() => {
  // With a token, the server answered ?token= with an HttpOnly cookie that every later request carries:
  // take the token out of the address bar so that it is not copied, shown or kept in this history entry.
  if (new URLSearchParams(location.search).has("token")) history.replaceState(null, "", location.pathname);
  const LIVE_MS = 2000, IDLE_MS = 10000;

  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-store" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  function showProblem(message) {
    const p = document.getElementById("problem");
    p.textContent = message || "";
    p.hidden = !message;
  }

  function cell(row, value, className) {
    const td = row.insertCell();
    if (value instanceof Node) td.appendChild(value); else td.textContent = value ?? "";
    if (className) td.className = className;
    return td;
  }

  const fmt = (v, digits = 4) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(digits)) : v ?? "");
  const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
  const link = (href, text) => Object.assign(document.createElement("a"), { href, textContent: text });
  const metricsText = (m) => Object.entries(m || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(", ");

  function fill(tbody, rows, columns) {
    tbody.replaceChildren();
    for (const r of rows) {
      const tr = tbody.insertRow();
      for (const [value, cls] of columns(r)) cell(tr, value, cls);
    }
  }

  function schedule(fn, status) {
    setTimeout(fn, status === "running" ? LIVE_MS : IDLE_MS);
  }

  async function runList() {
    let anyRunning = false;
    try {
      const runs = await getJSON("/api/runs");
      anyRunning = runs.some((r) => r.status === "running");
      fill(document.querySelector("#runs tbody"), runs, (r) => [
        [link(`/runs/${r.id}`, `#${r.id}`)], [r.status, `status-${r.status}`], [r.task], [r.method], [r.backbone],
        [`${r.rounds_done} / ${r.num_rounds}`, "num"], [r.metric ? `${r.metric} ${fmt(r.final)} (best ${fmt(r.best)}, round ${r.best_round})` : ""], [when(r.started)],
      ]);
      showProblem("");
    } catch (err) {
      showProblem(err.message);
    }
    schedule(runList, anyRunning ? "running" : "idle");
  }

  const layout = (title, yTitle) => ({
    title: { text: title, x: 0.02 }, margin: { t: 40, r: 55, b: 40, l: 55 }, xaxis: { title: { text: "round" }, dtick: 1 },
    yaxis: { title: { text: yTitle } }, legend: { orientation: "h", y: -0.25 },
  });
  const PLOT_OPTIONS = { displayModeBar: false, responsive: true };
  // From zero: a constant series (every round sends the same bytes) would otherwise be drawn on an axis
  // autoscaled into its last digits (35.879k to 35.881k).
  const bytesLayout = () => {
    const l = layout("Bytes per round", "bytes");
    l.yaxis.rangemode = "tozero";
    return l;
  };
  const line = (x, y, name, extra = {}) => ({ x, y, name, type: "scatter", mode: "lines+markers", ...extra });

  function draw(view) {
    const s = view.series, x = s.round;
    const metrics = [
      ...Object.entries(s.server).map(([k, y]) => line(x, y, `server ${k}`)),
      ...Object.entries(s.clients).map(([k, y]) => line(x, y, `clients' mean ${k}`, { line: { dash: "dot" } })),
      ...("train-loss" in s.train ? [line(x, s.train["train-loss"], "clients' train loss", { yaxis: "y2" })] : []),
    ];
    Plotly.react("chart-metrics", metrics, {
      ...layout("Metrics per round", "metric"), yaxis2: { title: { text: "loss" }, overlaying: "y", side: "right" },
    }, PLOT_OPTIONS);
    Plotly.react("chart-bytes", [line(x, s.bytes_up, "bytes up"), line(x, s.bytes_down, "bytes down")],
      bytesLayout(), PLOT_OPTIONS);
    Plotly.react("chart-clients", [
      { x, y: s.accepted, name: "accepted", type: "bar", marker: { color: "#2da44e" } },
      { x, y: s.refused, name: "refused or missing", type: "bar", marker: { color: "#cf222e" } },
    ], { ...layout("Client replies per round", "replies"), barmode: "stack" }, PLOT_OPTIONS);
    const eps = [];
    if (s.epsilon_max.length) eps.push(line(x, s.epsilon_max, "largest client epsilon (sample-level)"));
    if ("client-dp-epsilon" in s.train) eps.push(line(x, s.train["client-dp-epsilon"], "client-level epsilon"));
    const epsDiv = document.getElementById("chart-epsilon");
    epsDiv.hidden = !eps.length;
    if (eps.length) Plotly.react(epsDiv, eps, layout("Privacy spent", "epsilon"), PLOT_OPTIONS);
    document.body.dataset.rounds = String(x.length);
  }

  function describe(view) {
    const run = view.run;
    document.title = `fedrp run ${run.id}`;
    document.getElementById("title").textContent = `Run ${run.id}: ${run.task} / ${run.method}`;
    const initial = metricsText(view.initial_metrics);
    document.getElementById("summary").replaceChildren(
      Object.assign(document.createElement("span"), { className: `status-${run.status}`, textContent: run.status }),
      ` - ${view.series.round.length} of ${run.num_rounds} rounds` + (initial ? ` - before training: ${initial}` : "")
      + (run.error ? ` - ${run.error}` : ""));
    fill(document.querySelector("#identity tbody"), [
      ["backbone", run.backbone], ["fingerprint", run.fingerprint], ["started", when(run.started)],
      ["ended", when(run.ended)], ["resumed from", run.resumed_from],
    ], (r) => [[r[0]], [r[1]]]);
    document.getElementById("spec").textContent = view.spec ? JSON.stringify(view.spec, null, 2) : "(no projection: a baseline)";
    document.getElementById("config").textContent = JSON.stringify(view.config, null, 2);
    fill(document.querySelector("#refusals tbody"), view.refusals, (r) => [
      [r.round, "num"], [r.kind], [r.client], [r.status], [r.reason], [r.detail, "detail"],
    ]);
    fill(document.querySelector("#clients tbody"), view.clients, (c) => [
      [c.client], [fmt(c.examples), "num"], [c.replies, "num"], [c.accepted, "num"], [c.refused, "num"],
      [c.last_round, "num"], [metricsText(c.last_metrics)], [fmt(c.epsilon), "num"],
    ]);
  }

  async function runPage() {
    const id = location.pathname.split("/").filter(Boolean).pop();
    document.getElementById("csv").href = `/api/runs/${id}/rounds.csv`;
    document.getElementById("json").href = `/api/runs/${id}/rounds.json`;
    let status = "running";
    try {
      const view = await getJSON(`/api/runs/${id}`);
      status = view.run.status;
      describe(view);
      draw(view);
      showProblem("");
    } catch (err) {
      showProblem(err.message);
    }
    schedule(runPage, status);
  }

  return { runList, runPage };
})();
