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
      const chosen = new Set([...document.querySelectorAll("#runs input:checked")].map((b) => b.value));
      fill(document.querySelector("#runs tbody"), runs, (r) => [
        [Object.assign(document.createElement("input"), { type: "checkbox", value: r.id, checked: chosen.has(String(r.id)),
          title: "compare" })],
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
  // Each chart's toolbar downloads it as PNG (plotly's own button) or SVG (this one). Built on first use:
  // the runs page loads no plotly.
  const plotOptions = () => ({
    displaylogo: false, responsive: true, modeBarButtonsToAdd: [{
      name: "Download plot as SVG", icon: Plotly.Icons.camera,
      click: (gd) => Plotly.downloadImage(gd, { format: "svg", filename: gd.id }),
    }],
  });
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
    }, plotOptions());
    Plotly.react("chart-bytes", [line(x, s.bytes_up, "bytes up"), line(x, s.bytes_down, "bytes down")],
      bytesLayout(), plotOptions());
    Plotly.react("chart-clients", [
      { x, y: s.accepted, name: "accepted", type: "bar", marker: { color: "#2da44e" } },
      { x, y: s.refused, name: "refused or missing", type: "bar", marker: { color: "#cf222e" } },
    ], { ...layout("Client replies per round", "replies"), barmode: "stack" }, plotOptions());
    const eps = [];
    if (s.epsilon_max.length) eps.push(line(x, s.epsilon_max, "largest client epsilon (sample-level)"));
    if ("client-dp-epsilon" in s.train) eps.push(line(x, s.train["client-dp-epsilon"], "client-level epsilon"));
    const epsDiv = document.getElementById("chart-epsilon");
    epsDiv.hidden = !eps.length;
    if (eps.length) Plotly.react(epsDiv, eps, layout("Privacy spent", "epsilon"), plotOptions());
    drawUpdates(view.updates);
    drawLabels(view.label_mix);
    drawClientEpsilon(view.client_epsilon, x);
    document.body.dataset.rounds = String(x.length);
  }

  // Each client's label mix, stacked, from the counts it reported (or why there are none).
  function drawLabels(mix) {
    const div = document.getElementById("chart-labels");
    document.getElementById("labels-note").textContent = mix.withheld || "";
    div.hidden = !mix.clients.length;
    if (div.hidden) return;
    const labels = Math.max(...mix.counts.map((c) => c.length));
    const traces = [...Array(labels).keys()].map((k) => ({
      type: "bar", name: `label ${k}`, x: mix.clients, y: mix.counts.map((c) => c[k] ?? 0),
    }));
    Plotly.react(div, traces, { ...layout("Label mix per client (reported counts)", "examples"), barmode: "stack",
      xaxis: { type: "category" } }, plotOptions());
  }

  // Each client's sample-level epsilon by round, against the run's budget (dashed).
  function drawClientEpsilon(eps, x) {
    const div = document.getElementById("chart-client-epsilon"), clients = Object.entries(eps.clients);
    div.hidden = !clients.length;
    if (div.hidden) return;
    const traces = clients.map(([c, y]) => line(x, y, c));
    if (eps.budget) traces.push(line(x, x.map(() => eps.budget), "budget", { mode: "lines", line: { dash: "dash" } }));
    Plotly.react(div, traces, layout("Epsilon spent per client", "epsilon"), plotOptions());
  }

  // Clients x rounds: each training reply's cosine with the round's aggregate update (its norm and weight on
  // hover); refused replies are crossed out in red, so an outlier that was left out stands apart.
  function drawUpdates(u) {
    const div = document.getElementById("chart-updates"), note = document.getElementById("updates-note");
    note.textContent = u.withheld || "";
    div.hidden = Boolean(u.withheld) || !u.clients.length;
    if (div.hidden) return;
    const hover = u.clients.map((c, i) => u.rounds.map((r, j) => u.status[i][j] === null ? "no reply" :
      `${c}, round ${r}: ${u.status[i][j]}${u.reason[i][j] ? ` (${u.reason[i][j]})` : ""}<br>norm ${fmt(u.norm[i][j])}` +
      `, cosine ${fmt(u.cosine[i][j])}, weight ${fmt(u.weight[i][j])}`));
    const refused = { x: [], y: [], text: [] };
    u.clients.forEach((c, i) => u.rounds.forEach((r, j) => {
      if (u.status[i][j] && u.status[i][j] !== "accepted") {
        refused.x.push(r); refused.y.push(c); refused.text.push(u.reason[i][j] || u.status[i][j]);
      }
    }));
    Plotly.react(div, [
      { type: "heatmap", x: u.rounds, y: u.clients, z: u.cosine, zmin: -1, zmax: 1, colorscale: "RdBu", reversescale: true,
        text: hover, hoverinfo: "text", colorbar: { title: { text: "cosine" } }, name: "updates" },
      { type: "scatter", mode: "markers", x: refused.x, y: refused.y, text: refused.text, name: "refused",
        marker: { symbol: "x", size: 12, color: "#cf222e" }, hoverinfo: "text" },
    ], { ...layout("Updates: cosine with the round's aggregate", "client"), yaxis: { type: "category" } }, plotOptions());
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
    document.getElementById("replies-csv").href = `/api/runs/${id}/replies.csv`;
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

  function compareLink() {
    const ids = [...document.querySelectorAll("#runs input:checked")].map((b) => b.value);
    const a = document.getElementById("compare");
    a.href = `/compare?runs=${ids.join(",")}`;
    a.hidden = ids.length < 2;
  }

  async function comparePage() {
    const runs = new URLSearchParams(location.search).get("runs") || "";
    document.getElementById("csv").href = `/api/compare.csv?runs=${runs}`;
    try {
      const compared = await getJSON(`/api/compare?runs=${encodeURIComponent(runs)}`);
      const name = (c) => `#${c.id} ${c.method}, ${c.task}${c.alpha != null ? `, alpha ${c.alpha}` : ""}`;
      const metric = compared.map((c) => c.metric).find(Boolean) || "metric";
      Plotly.react("chart-by-round", compared.map((c) => line(c.round, c.value, name(c))),
        layout(`${metric} per round`, metric), plotOptions());
      Plotly.react("chart-by-bytes", compared.map((c) => line(c.bytes_up, c.value, name(c))), {
        ...layout(`${metric} against bytes uploaded`, metric),
        xaxis: { title: { text: "bytes uploaded so far (all clients)" }, type: "log" },
      }, plotOptions());
      document.body.dataset.compared = String(compared.length);
      showProblem("");
    } catch (err) {
      showProblem(err.message);
    }
  }

  return { runList, runPage, comparePage, compareLink };
})();
