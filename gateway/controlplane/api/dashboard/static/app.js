// The modelserve dashboard. Plain JavaScript, no framework, nothing fetched but the control
// plane's own API: /v1/services (the InferenceService documents, and the rollout PATCHes the
// CLI sends), /v1/metrics and /v1/services/NAME/metrics (numbers computed by the gateway),
// /v1/slo, /v1/services/NAME/example, /v1/services/NAME/try (a prediction, sent by the
// control plane to the data plane) and /v1/services/NAME/logged (the payload logger's last
// events, read by the control plane from the log sink). Every number shown comes from those
// answers; every string, payloads above all, is shown as text, never parsed as HTML.
// The admin token comes from the URL's fragment (/ui#token=..., printed by `modelserve up`;
// a fragment is never sent to a server), is kept in this tab (sessionStorage) and sent in the
// Authorization header, never in a cookie: a foreign page cannot make the browser send it.
"use strict";

(function () {
  const KEY_STORAGE = "modelserve.adminToken";
  const POLL_MS = 2000;
  const CHART = { 60: [120, 2], 300: [300, 5], 900: [900, 15] }; // window -> [chart s, step s]
  const SVG_NS = "http://www.w3.org/2000/svg";

  function tokenFromUrl() {
    const match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    if (!match) return null;
    // Out of the address bar and the history at once.
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
    const token = decodeURIComponent(match[1]);
    sessionStorage.setItem(KEY_STORAGE, token);
    return token;
  }

  const state = {
    key: tokenFromUrl() || sessionStorage.getItem(KEY_STORAGE) || "",
    services: [],
    metrics: {},
    slo: null,
    selected: null,
    example: null,
    timer: null,
    generation: 0, // of the poll loop: a restart (new key, new window) ends the previous one
    waitingForKey: false,
    canaryDirty: false,
  };

  const $ = (id) => document.getElementById(id);

  class AuthNeeded extends Error {}

  // --- the API ---------------------------------------------------------------------------

  async function api(path, options = {}) {
    const headers = Object.assign({ accept: "application/json" }, options.headers || {});
    if (state.key) headers.authorization = `Bearer ${state.key}`;
    let response, text;
    try {
      response = await fetch(path, Object.assign({}, options, { headers }));
      text = await response.text();
    } catch (error) {
      throw new Error(`cannot reach the control plane (${error.message || error})`);
    }
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    if (response.status === 401 || response.status === 403) {
      askForKey(response.status, body && body.error);
      throw new AuthNeeded(String(response.status));
    }
    return { status: response.status, ok: response.ok, body, text };
  }

  function errorText(result) {
    const detail = result.body && result.body.error ? result.body.error : result.text;
    return `${result.status}: ${detail || "no details"}`;
  }

  // --- the API key -----------------------------------------------------------------------

  function askForKey(status, message) {
    state.waitingForKey = true;
    const why = status === 401 ? "The control plane asks for its admin token" : "The control plane refused this token";
    $("auth-message").textContent =
      `${why}${message ? ` (${status}: ${message})` : ""}. ` +
      "`modelserve up` prints the dashboard's URL with it and writes it to its token file. " +
      "It is kept in this tab only (sessionStorage) and sent in the Authorization header.";
    $("auth").hidden = false;
    setStatus("waiting for the admin token", "warn");
    $("api-key").focus();
  }

  function setupAuth() {
    $("auth-open").addEventListener("click", () => {
      $("auth").hidden = !$("auth").hidden;
      if (!$("auth").hidden) $("api-key").focus();
    });
    $("auth-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.key = $("api-key").value.trim();
      sessionStorage.setItem(KEY_STORAGE, state.key);
      $("api-key").value = "";
      $("auth").hidden = true;
      state.waitingForKey = false;
      state.example = null;
      poll();
    });
    $("auth-forget").addEventListener("click", () => {
      state.key = "";
      sessionStorage.removeItem(KEY_STORAGE);
      $("api-key").value = "";
      poll();
    });
  }

  // --- formatting ------------------------------------------------------------------------

  function fmt(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "—";
    if (Math.abs(value) >= 100) return Math.round(value).toString();
    return value.toFixed(digits === undefined ? (Math.abs(value) >= 10 ? 1 : 2) : digits);
  }

  function pct(ratio) {
    if (ratio === null || ratio === undefined) return "—";
    if (ratio === 0) return "0 %";
    return `${(ratio * 100).toFixed(ratio < 0.001 ? 3 : 1)} %`;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.append(child instanceof Node ? child : document.createTextNode(String(child)));
      }
    }
    return node;
  }

  function badge(text, kind) {
    return el("span", { class: `badge ${kind}`, text });
  }

  function setStatus(text, kind) {
    const status = $("gateway-status");
    status.textContent = text;
    status.className = `gateway-status ${kind || ""}`;
  }

  function showBanner(text) {
    const banner = $("banner");
    banner.hidden = !text;
    banner.textContent = text || "";
  }

  // --- reading the InferenceService documents --------------------------------------------

  function entry(doc) {
    const components = (doc.status && doc.status.components) || {};
    const name = Object.keys(components)[0] || "predictor";
    return { name, status: components[name] || {} };
  }

  function readiness(doc) {
    const conditions = (doc.status && doc.status.conditions) || [];
    const ready = conditions.find((c) => c.type === "Ready");
    if (!ready) return { ready: false, text: "unknown", message: "no Ready condition yet" };
    const isReady = ready.status === "True";
    return {
      ready: isReady,
      text: isReady ? "Ready" : "Not ready",
      message: isReady ? "" : [ready.reason, ready.message].filter(Boolean).join(": "),
    };
  }

  function revisions(doc) {
    // One row per revision: the traffic entries, joined with the local revisions' details.
    const traffic = entry(doc).status.traffic || [];
    const local = (doc.status && doc.status.modelserve && doc.status.modelserve.revisions) || [];
    const byName = new Map();
    for (const t of traffic) {
      byName.set(t.revisionName, { name: t.revisionName, percent: t.percent, tag: t.tag, latest: t.latestRevision });
    }
    for (const r of local) {
      const row = byName.get(r.name) || { name: r.name, percent: r.percent };
      byName.set(r.name, Object.assign(row, { details: r }));
    }
    return Array.from(byName.values());
  }

  function shortRevision(service, revision) {
    return revision && revision.startsWith(`${service}-`) ? revision.slice(service.length + 1) : revision;
  }

  function replicas(doc) {
    const local = (doc.status && doc.status.modelserve && doc.status.modelserve.revisions) || [];
    if (!local.length) return { text: "—", panic: false };
    const ready = local.reduce((n, r) => n + (r.readyReplicas || 0), 0);
    const desired = local.reduce((n, r) => n + (r.desiredReplicas || 0), 0);
    return { text: `${ready} / ${desired}`, panic: local.some((r) => r.panic) };
  }

  function sloVerdict(name) {
    if (!state.slo) return { text: "…", kind: "muted", title: "" };
    const doc = state.slo.services && state.slo.services[name];
    if (!doc || !doc.targets) {
      return { text: "no SLO", kind: "muted", title: state.slo.error || `no SLO for ${name} in ${state.slo.slo_file}` };
    }
    const parts = [];
    let kind = "muted";
    if (doc.report && doc.report.checks) {
      const failed = doc.report.checks.filter((c) => !c.passed).map((c) => c.slo);
      parts.push(failed.length ? `load test FAIL (${failed.join(", ")})` : "load test pass");
      kind = failed.length ? "bad" : "ok";
    } else {
      parts.push("no load test");
    }
    if (doc.live && doc.live.checks) {
      const failed = doc.live.checks.filter((c) => !c.passed).map((c) => c.slo);
      parts.push(failed.length ? `live FAIL (${failed.join(", ")})` : "live pass");
      if (failed.length) kind = "bad";
      else if (kind === "muted") kind = "ok";
    }
    return { text: parts.join(" · "), kind, title: doc.report_error || "" };
  }

  // --- the services table ----------------------------------------------------------------

  function trafficCell(doc) {
    const name = doc.metadata.name;
    const cell = el("span", { class: "traffic" });
    for (const rev of revisions(doc)) {
      const label = `${shortRevision(name, rev.name)} ${rev.percent === undefined ? "?" : rev.percent}%`;
      cell.append(el("span", {
        class: `traffic-entry${rev.latest ? " latest" : ""}`,
        "data-testid": "traffic-entry",
        "data-revision": rev.name,
        "data-percent": rev.percent,
        title: `${rev.name}${rev.tag ? ` (tag ${rev.tag})` : ""}${rev.latest ? ", latest revision" : ""}`,
        text: label,
      }));
    }
    if (!cell.childElementCount) cell.append(el("span", { class: "subtle", text: "no revisions" }));
    return cell;
  }

  function serviceRow(doc) {
    const name = doc.metadata.name;
    const row = el("tr", { "data-testid": "service-row", "data-service": name });
    const button = el("button", {
      type: "button", class: "link", "aria-controls": "detail", "data-testid": "service-open",
      text: name,
    });
    button.addEventListener("click", () => select(name, true));
    row.append(el("th", { scope: "row" }, button, el("div", { class: "subtle url", "data-col": "url" })));
    for (const col of ["ready", "traffic", "replicas", "rps", "p50", "p95", "p99", "errors", "slo"]) {
      const numeric = ["rps", "p50", "p95", "p99", "errors"].includes(col);
      row.append(el("td", { "data-col": col, class: numeric ? "num" : null }));
    }
    return row;
  }

  function fill(row, col, ...content) {
    const cell = row.querySelector(`[data-col="${col}"]`);
    cell.replaceChildren(...content.map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  }

  function renderServices() {
    const body = $("services-body");
    const docs = state.services;
    $("services-empty").hidden = docs.length > 0;
    $("services-table").hidden = docs.length === 0;
    const rows = new Map(Array.from(body.rows).map((r) => [r.dataset.service, r]));
    docs.forEach((doc, index) => {
      const name = doc.metadata.name;
      let row = rows.get(name);
      if (!row) row = serviceRow(doc);
      rows.delete(name);
      if (body.rows[index] !== row) body.insertBefore(row, body.rows[index] || null);
      const ready = readiness(doc);
      const m = (state.metrics[name]) || {};
      const scale = replicas(doc);
      const slo = sloVerdict(name);
      row.classList.toggle("selected", state.selected === name);
      row.querySelector("button").setAttribute("aria-pressed", state.selected === name ? "true" : "false");
      fill(row, "url", (doc.status && doc.status.url) || "");
      fill(row, "ready", badge(ready.text, ready.ready ? "ok" : "bad"),
        ready.message ? el("div", { class: "why", "data-testid": "not-ready-message", text: ready.message }) : "");
      fill(row, "traffic", trafficCell(doc));
      fill(row, "replicas", scale.text, scale.panic ? badge("panic", "warn") : "");
      fill(row, "rps", fmt(m.rps, 1));
      fill(row, "p50", fmt(m.p50_ms));
      fill(row, "p95", fmt(m.p95_ms));
      fill(row, "p99", fmt(m.p99_ms));
      fill(row, "errors", pct(m.error_ratio));
      const verdict = el("span", { class: `verdict ${slo.kind}`, title: slo.title || null, text: slo.text });
      fill(row, "slo", verdict);
    });
    for (const stale of rows.values()) stale.remove();
    const rejected = state.metrics.unknown;
    $("rejected").textContent = rejected && rejected.requests
      ? `${rejected.requests} request(s) refused before routing in this window (no such model, a missing or wrong API key, a rate limit).`
      : "";
  }

  // --- the selected service --------------------------------------------------------------

  function select(name, byUser) {
    if (state.selected !== name) {
      state.selected = name;
      state.example = null;
      state.canaryDirty = false;
      $("try-result").hidden = true;
      $("try-body").value = "";
      $("try-path").textContent = "";
      $("try-example-message").textContent = "Loading the example…";
      $("canary-message").textContent = "";
      $("logged-body").replaceChildren();
      $("logged-message").textContent = "";
      history.replaceState(null, "", `#service=${encodeURIComponent(name)}`);
      loadExample(null);
    }
    if (!byUser) return; // the poll that chose it renders and refreshes next
    renderServices();
    renderDetail();
    refreshDetail().catch((error) => showBanner(String(error.message || error)));
    $("detail-title").focus();
  }

  function selectedDoc() {
    return state.services.find((d) => d.metadata.name === state.selected) || null;
  }

  function renderDetail() {
    const doc = selectedDoc();
    const detail = $("detail");
    detail.hidden = !doc;
    if (!doc) return;
    const name = doc.metadata.name;
    detail.dataset.service = name;
    $("detail-title").textContent = name;
    $("detail-title").setAttribute("tabindex", "-1");
    $("detail-url").textContent = (doc.status && doc.status.url) || "—";
    const ready = readiness(doc);
    $("detail-ready").replaceChildren(badge(ready.text, ready.ready ? "ok" : "bad"),
      ready.message ? el("span", { class: "why", text: ` ${ready.message}` }) : "");
    renderRevisions(doc);
    renderSlo(name);
  }

  function renderRevisions(doc) {
    const name = doc.metadata.name;
    const component = entry(doc);
    const s = component.status;
    const perRevision = ((state.metrics[name] || {}).revisions) || {};
    const body = $("revisions-body");
    body.replaceChildren();
    for (const rev of revisions(doc)) {
      const d = rev.details || {};
      const m = perRevision[rev.name] || {};
      const readyText = d.ready === undefined ? "—" : d.ready ? "ready" : "not ready";
      body.append(el("tr", { "data-revision": rev.name, "data-testid": "revision-row" },
        el("th", { scope: "row" }, el("code", { title: rev.name, text: shortRevision(name, rev.name) }),
          rev.tag ? el("span", { class: "tag", text: rev.tag }) : null,
          d.message ? el("div", { class: "why", text: d.message }) : null),
        el("td", { class: "num", "data-col": "percent", text: rev.percent === undefined ? "—" : `${rev.percent}%` }),
        el("td", {}, d.ready === undefined ? "—" : badge(readyText, d.ready ? "ok" : "bad")),
        el("td", {}, d.readyReplicas === undefined ? "—" : `${d.readyReplicas} / ${d.desiredReplicas}`,
          d.panic ? badge("panic", "warn") : null),
        el("td", { class: "num", text: d.inFlight === undefined ? "—" : d.inFlight }),
        el("td", { class: "num", text: fmt(m.rps, 1) }),
        el("td", { class: "num", text: fmt(m.p95_ms) }),
        el("td", { class: "num", text: pct(m.error_ratio) })));
    }
    if (!body.rows.length) {
      body.append(el("tr", {}, el("td", { colspan: 8, class: "empty", text: "No revisions yet." })));
    }
    const facts = [
      ["latest ready", s.latestReadyRevision],
      ["latest rolled out", s.latestRolledoutRevision],
      ["previous rolled out", s.previousRolledoutRevision],
    ].filter(([, v]) => v).map(([k, v]) => `${k}: ${v}`);
    $("rollout-summary").textContent = `Component: ${component.name}. ${facts.join(" · ")}`;
    const canary = ((doc.spec || {})[component.name] || {}).canaryTrafficPercent;
    const latest = revisions(doc).find((r) => r.latest);
    const current = canary !== undefined ? canary : latest ? latest.percent : 100;
    const input = $("canary-percent");
    if (!state.canaryDirty && document.activeElement !== input) input.value = current;
  }

  function checkRow(check, liveChecks) {
    const live = (liveChecks || []).find((c) => c.slo === check.slo);
    const value = (c) => (c.measured === null ? "n/a" : `${fmt(c.measured, c.unit ? undefined : 4)}${c.unit ? ` ${c.unit}` : ""}`);
    const cell = (c) => (c ? el("td", { class: "num" }, value(c), " ", badge(c.passed ? "pass" : "FAIL", c.passed ? "ok" : "bad")) : el("td", { class: "num", text: "—" }));
    return el("tr", { "data-slo": check.slo },
      el("th", { scope: "row", text: check.slo }),
      el("td", { class: "num", text: `${check.relation} ${check.target}${check.unit ? ` ${check.unit}` : ""}` }),
      cell(check.measured === undefined ? null : check), cell(live));
  }

  function renderSlo(name) {
    const body = $("slo-body");
    const message = $("slo-message");
    body.replaceChildren();
    $("slo-table").hidden = true;
    if (!state.slo) {
      message.textContent = "Loading the SLOs…";
      return;
    }
    const doc = state.slo.services && state.slo.services[name];
    if (!doc || !doc.targets) {
      message.textContent = state.slo.error || `No SLO for ${name} in ${state.slo.slo_file}.`;
      return;
    }
    $("slo-table").hidden = false;
    const t = doc.targets;
    const reportChecks = (doc.report && doc.report.checks) || null;
    const targets = reportChecks || [
      { slo: "p50", relation: "<=", target: t.p50_ms, unit: "ms" },
      { slo: "p95", relation: "<=", target: t.p95_ms, unit: "ms" },
      { slo: "p99", relation: "<=", target: t.p99_ms, unit: "ms" },
      { slo: "error_ratio", relation: "<=", target: t.max_error_ratio, unit: "" },
      { slo: "rps", relation: ">=", target: t.min_rps, unit: "req/s" },
    ];
    for (const check of targets) body.append(checkRow(check, doc.live && doc.live.checks));
    const parts = [];
    if (doc.report) {
      const when = new Date(doc.report.modified * 1000).toLocaleString();
      parts.push(`Load test: ${doc.report.file} (${when}, ${doc.report.measured.requests} requests).`);
    } else {
      parts.push(doc.report_error || "No load-test report yet.");
    }
    parts.push(doc.live
      ? `Live: the last ${Math.round(doc.live.window_s)} s (${doc.live.requests} requests; errors = server errors).`
      : "Live: no requests in the window yet.");
    message.textContent = parts.join(" ");
  }

  // --- the chart -------------------------------------------------------------------------

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= value) return m * power;
    return 10 * power;
  }

  function drawChart(node, points, lines, spanS, label) {
    const width = 520, height = 150, left = 44, right = 8, top = 10, bottom = 22;
    node.setAttribute("viewBox", `0 0 ${width} ${height}`);
    node.replaceChildren();
    const values = [];
    for (const p of points) for (const line of lines) {
      const v = line.value(p);
      if (typeof v === "number") values.push(v);
    }
    const yMax = niceMax(Math.max(0, ...values));
    const x = (t) => left + (width - left - right) * (1 + t / spanS);
    const y = (v) => top + (height - top - bottom) * (1 - v / yMax);
    for (const frac of [0, 0.5, 1]) {
      const v = yMax * frac;
      node.append(svg("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "gridline" }));
      const text = svg("text", { x: left - 4, y: y(v) + 4, class: "axis", "text-anchor": "end" });
      text.textContent = Number.isInteger(v) ? String(v) : v.toFixed(v >= 1 ? 1 : 2);
      node.append(text);
    }
    for (const [t, name] of [[-spanS, `-${spanS} s`], [-spanS / 2, `-${spanS / 2} s`], [0, "now"]]) {
      const text = svg("text", { x: x(t), y: height - 6, class: "axis", "text-anchor": t === 0 ? "end" : t === -spanS ? "start" : "middle" });
      text.textContent = name;
      node.append(text);
    }
    if (!values.length) {
      const text = svg("text", { x: width / 2, y: height / 2, class: "chart-empty", "text-anchor": "middle" });
      text.textContent = "No requests in this window yet";
      node.append(text);
    }
    lines.forEach((line, index) => {
      let d = "";
      let pen = false;
      for (const p of points) {
        const v = line.value(p);
        if (typeof v !== "number") {
          pen = false;
          continue;
        }
        d += `${pen ? "L" : "M"}${x(p.t).toFixed(1)},${y(v).toFixed(1)} `;
        pen = true;
      }
      if (d) node.append(svg("path", { d, class: `series s${index % 6}${line.dashed ? " dashed" : ""}` }));
      const key = svg("text", { x: left + 6 + index * 110, y: top + 10, class: `legend s${index % 6}` });
      key.textContent = line.name;
      node.append(key);
    });
    const last = points.length ? points[points.length - 1] : null;
    const summary = last
      ? lines.map((l) => `${l.name} ${fmt(l.value(last))}`).join(", ")
      : "no data yet";
    node.setAttribute("aria-label", `${label}, latest: ${summary}`);
  }

  function renderCharts(doc, spanS) {
    const points = doc.series || [];
    drawChart($("chart-latency"), points, [
      { name: "p50", value: (p) => p.p50_ms },
      { name: "p95", value: (p) => p.p95_ms },
      { name: "p99", value: (p) => p.p99_ms },
    ], spanS, "Latency in milliseconds");
    const revisionNames = Object.keys((doc.summary && doc.summary.revisions) || {}).filter((r) => r !== "none");
    const lines = [{ name: "all", value: (p) => p.rps }];
    for (const rev of revisionNames) {
      lines.push({ name: shortRevision(doc.service, rev), dashed: true, value: (p) => (p.revisions || {})[rev] });
    }
    drawChart($("chart-rps"), points, lines, spanS, "Requests per second");
  }

  // --- try it ----------------------------------------------------------------------------

  async function loadExample(protocol) {
    const name = state.selected;
    if (!name) return;
    const query = protocol ? `?protocol=${encodeURIComponent(protocol)}` : "";
    const message = $("try-example-message");
    try {
      const result = await api(`/v1/services/${encodeURIComponent(name)}/example${query}`);
      if (name !== state.selected) return;
      if (!result.ok) {
        state.example = { service: name, protocol: protocol || "v1", path: null, available: [] };
        message.textContent = `No example payload: ${errorText(result)}`;
        $("try-body").value = "";
        $("try-path").textContent = "";
        return;
      }
      state.example = result.body;
      message.textContent = "Pre-filled with the load tests' example payload.";
      $("try-body").value = JSON.stringify(result.body.payload, null, 2);
      $("try-path").textContent = `POST ${result.body.path}`;
      const select = $("try-protocol");
      select.value = result.body.protocol;
      for (const option of select.options) {
        option.textContent = option.value === "v1" ? "v1 (KServe predict)" : "v2 (Open Inference Protocol)";
        if (!result.body.available.includes(option.value)) option.textContent += " — no example";
      }
    } catch (error) {
      if (!(error instanceof AuthNeeded)) message.textContent = `Cannot load the example: ${error}`;
    }
  }

  function setupTry() {
    $("try-protocol").addEventListener("change", () => loadExample($("try-protocol").value));
    $("try-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const name = state.selected;
      if (!name) return;
      const protocol = $("try-protocol").value;
      // Sent by the control plane to the data plane (another origin, with its own keys).
      const target = `/v1/services/${encodeURIComponent(name)}/try?protocol=${encodeURIComponent(protocol)}`;
      const headers = { "content-type": "application/json" };
      if (state.key) headers.authorization = `Bearer ${state.key}`;
      const send = $("try-send");
      send.disabled = true;
      $("try-result").hidden = false;
      $("try-status").textContent = "sending…";
      try {
        const started = performance.now();
        const response = await fetch(target, { method: "POST", headers, body: $("try-body").value });
        const text = await response.text();
        const elapsed = performance.now() - started;
        $("try-status").textContent = `${response.status} ${response.statusText}`.trim();
        $("try-status").className = response.ok ? "ok-text" : "bad-text";
        $("try-latency").textContent = `${elapsed.toFixed(1)} ms (measured in the browser)`;
        $("try-revision").textContent = response.headers.get("x-modelserve-revision") || "—";
        let shown = text;
        try {
          shown = JSON.stringify(JSON.parse(text), null, 2);
        } catch (_) {
          // not JSON: shown as it came
        }
        $("try-response").textContent = shown;
        if (response.status === 401 || response.status === 403) {
          let message = null;
          try { message = JSON.parse(text).error; } catch (_) { message = null; }
          askForKey(response.status, message);
        }
      } catch (error) {
        $("try-status").textContent = "no answer";
        $("try-status").className = "bad-text";
        $("try-response").textContent = `The request failed: ${error}`;
      } finally {
        send.disabled = false;
      }
    });
  }

  // --- canary controls -------------------------------------------------------------------

  async function rollout(body, contentType, description) {
    const doc = selectedDoc();
    if (!doc) return;
    const message = $("canary-message");
    const buttons = ["canary-apply", "canary-promote", "canary-rollback"].map($);
    buttons.forEach((b) => { b.disabled = true; });
    message.className = "message";
    message.textContent = `${description}…`;
    try {
      const result = await api(`/v1/services/${encodeURIComponent(doc.metadata.name)}`, {
        method: "PATCH",
        headers: { "content-type": contentType },
        body: JSON.stringify(body),
      });
      if (!result.ok) {
        message.className = "message bad-text";
        message.textContent = `${description} failed: ${errorText(result)}`;
        return;
      }
      state.canaryDirty = false;
      const updated = result.body && result.body.metadata ? result.body : null;
      if (updated) {
        state.services = state.services.map((d) => (d.metadata.name === updated.metadata.name ? updated : d));
      }
      const split = updated
        ? revisions(updated).map((r) => `${shortRevision(updated.metadata.name, r.name)} ${r.percent}%`).join(", ")
        : "";
      message.className = "message ok-text";
      message.textContent = `${description}: done.${split ? ` Traffic: ${split}.` : ""}`;
      renderServices();
      renderDetail();
    } catch (error) {
      if (!(error instanceof AuthNeeded)) {
        message.className = "message bad-text";
        message.textContent = `${description} failed: ${error}`;
      }
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  function setupCanary() {
    const component = () => entry(selectedDoc() || {}).name;
    $("canary-percent").addEventListener("input", () => { state.canaryDirty = true; });
    $("canary-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("canary-percent");
      const percent = Number(input.value);
      if (!input.checkValidity() || !Number.isInteger(percent)) {
        $("canary-message").className = "message bad-text";
        $("canary-message").textContent = "The canary percent is a whole number from 0 to 100.";
        input.focus();
        return;
      }
      rollout({ spec: { [component()]: { canaryTrafficPercent: percent } } },
        "application/merge-patch+json", `Canary at ${percent}%`);
    });
    $("canary-promote").addEventListener("click", () => {
      rollout([{ op: "remove", path: `/spec/${component()}/canaryTrafficPercent` }],
        "application/json-patch+json", "Promote the latest revision");
    });
    $("canary-rollback").addEventListener("click", () => {
      rollout({ spec: { [component()]: { canaryTrafficPercent: 0 } } },
        "application/merge-patch+json", "Roll back to the previous revision");
    });
  }

  // --- logged requests -------------------------------------------------------------------

  function hasLogger(doc) {
    const spec = (doc && doc.spec) || {};
    return ["predictor", "transformer"].some((c) => spec[c] && spec[c].logger && spec[c].logger.url);
  }

  function shortTime(text) {
    const when = text ? new Date(text) : null;
    return when && !Number.isNaN(when.getTime()) ? when.toLocaleTimeString() : (text || "—");
  }

  function loggedRow(event) {
    const kind = event.kind === "request" || event.kind === "response"
      ? badge(event.kind, event.kind === "request" ? "muted" : event.statuscode && event.statuscode !== "200" ? "bad" : "ok")
      : el("code", { text: event.kind });
    return el("tr", { "data-testid": "logged-row", "data-id": event.id },
      el("td", { title: event.time || "", text: shortTime(event.time) }),
      el("td", {}, kind, event.statuscode ? el("span", { class: "subtle", text: ` ${event.statuscode}` }) : null),
      el("td", { text: `${event.component || "—"}${event.endpoint && event.endpoint !== "default" ? ` (${event.endpoint})` : ""}` }),
      el("td", {}, el("code", { title: event.id, text: event.id.length > 14 ? `${event.id.slice(0, 13)}…` : event.id })),
      el("td", {}, el("code", { class: "preview", "data-testid": "logged-preview", text: event.preview })));
  }

  function renderLogged(view) {
    const body = $("logged-body");
    const message = $("logged-message");
    body.replaceChildren(...view.events.map(loggedRow));
    $("logged-table").hidden = !view.events.length;
    const parts = view.sinks.map((sink) => (sink.ok
      ? `${sink.events} event(s) from ${sink.url} (${sink.components.join(", ")}).`
      : `${sink.components.join(", ")}: ${sink.error}`));
    if (!view.events.length && view.sinks.every((s) => s.ok)) parts.push("Nothing logged yet.");
    message.className = view.sinks.some((s) => !s.ok) ? "bad-text" : "subtle";
    message.textContent = parts.join(" ");
  }

  async function refreshLogged(name) {
    const card = $("logged");
    card.hidden = !hasLogger(selectedDoc());
    if (card.hidden) return;
    try {
      const result = await api(`/v1/services/${encodeURIComponent(name)}/logged?limit=10`);
      if (name !== state.selected) return;
      if (result.ok) renderLogged(result.body);
      else $("logged-message").textContent = `Cannot read the logged requests: ${errorText(result)}`;
    } catch (error) {
      if (!(error instanceof AuthNeeded)) $("logged-message").textContent = `Cannot read the logged requests: ${error}`;
    }
  }

  // --- polling ---------------------------------------------------------------------------

  function windowS() {
    return Number($("window").value) || 60;
  }

  async function refreshDetail() {
    const name = state.selected;
    if (!name) return;
    const [span, step] = CHART[windowS()] || [120, 2];
    try {
      const result = await api(`/v1/services/${encodeURIComponent(name)}/metrics?window=${span}&step=${step}`);
      if (name === state.selected && result.ok) renderCharts(result.body, span);
    } catch (error) {
      if (!(error instanceof AuthNeeded)) throw error;
    }
    await refreshLogged(name);
  }

  async function poll() {
    clearTimeout(state.timer);
    const generation = ++state.generation;
    if (state.waitingForKey) return;
    try {
      const win = windowS();
      const [services, metrics, slo] = await Promise.all([
        api("/v1/services"),
        api(`/v1/metrics?window=${win}`),
        api(`/v1/slo?window=${win}`),
      ]);
      if (!services.ok) throw new Error(`GET /v1/services: ${errorText(services)}`);
      state.services = (services.body.services || []).slice().sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
      state.metrics = metrics.ok ? metrics.body.services : {};
      if (slo.ok) state.slo = slo.body;
      if (!state.selected || !selectedDoc()) {
        const wanted = decodeURIComponent((location.hash.match(/service=([^&]+)/) || [])[1] || "");
        const first = state.services.find((d) => d.metadata.name === wanted) || state.services[0];
        if (first) select(first.metadata.name, false);
      }
      renderServices();
      renderDetail();
      await refreshDetail();
      showBanner(metrics.ok ? "" : `Metrics unavailable: ${errorText(metrics)}`);
      setStatus(`live · updated ${new Date().toLocaleTimeString()}`, "ok");
    } catch (error) {
      if (error instanceof AuthNeeded) return;
      showBanner(`The dashboard could not refresh: ${error.message || error}`);
      setStatus("offline", "bad");
    }
    if (generation === state.generation) state.timer = setTimeout(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupAuth();
    setupTry();
    setupCanary();
    $("window").addEventListener("change", () => { state.slo = null; poll(); });
    poll();
  });
})();
