// The kawal admin page: fetches status.json every few seconds (only while
// the tab is visible) and draws it. No framework, no outside asset; text is
// set with textContent only.
"use strict";

const REFRESH_MS = 3000;
const CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const CERT_WARN_DAYS = 14, CERT_BAD_DAYS = 2;
const SVG = "http://www.w3.org/2000/svg"; // a namespace name, not a fetch

function el(tag, attrs, ...children) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function duration(s) {
  s = Math.round(s);
  const sign = s < 0 ? "-" : "";
  s = Math.abs(s);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${sign}${d}d ${h}h`;
  if (h) return `${sign}${h}h ${m}m`;
  if (m) return `${sign}${m}m ${s % 60}s`;
  return `${sign}${s}s`;
}

const num = (x, digits = 1) => (x == null ? "–" : Number(x).toFixed(digits));
const kv = (pairs) => el("div", { class: "kv" }, ...pairs.map(([k, v]) => el("span", {}, `${k} `, el("b", {}, v))));

// A small line plot: series = [{name, values (null = no data), color}],
// one value a minute, the last one now. Labels are HTML, so the SVG may
// stretch to its box without distorting text.
function plot(title, series, unit) {
  const W = 100, H = 40;
  const all = series.flatMap((s) => s.values).filter((v) => v != null);
  const max = Math.max(1e-9, ...all);
  const n = Math.max(2, series[0].values.length);
  const x = (i) => (W * i) / (n - 1);
  const y = (v) => H - 2 - ((H - 4) * v) / max;
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": title });
  series.forEach((s, k) => {
    const cls = `s${s.color ?? k}`;
    // A run of points between gaps becomes one polyline; a lone point, a short tick.
    let run = [];
    const flush = () => {
      if (run.length === 1) run.push([run[0][0] >= 3 ? run[0][0] - 3 : run[0][0] + 3, run[0][1]]);
      if (run.length) svg.append(el("svg:polyline", { class: cls, points: run.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" ") }));
      run = [];
    };
    s.values.forEach((v, i) => (v == null ? flush() : run.push([x(i), y(v)])));
    flush();
  });
  const legend = el("div", { class: "legend" }, ...series.map((s, k) => el("span", { class: `l${s.color ?? k}` }, s.name)),
    el("span", { class: "axis" }, `-${n - 1}m … now`));
  return el("div", { class: "plot" }, el("div", { class: "title" }, `${title} · max ${num(max, max < 10 ? 2 : 0)} ${unit}`), svg, legend);
}

// The window's slots, oldest first; minutes before kawal started are gaps.
let SLOTS = 12;
const pad = (recent) => Array(Math.max(0, SLOTS - recent.length)).fill(null).concat(recent);

function ratePlots(recent) {
  recent = pad(recent);
  const at = (f) => recent.map((p) => (p == null ? null : f(p)));
  const rate = at((p) => p.requests / p.seconds);
  const errors = at((p) => (p.requests ? (100 * p.errors) / p.requests : null));
  return el("div", { class: "plots" },
    plot("req/s", [{ name: "req/s", values: rate }], "/s"),
    plot("5xx %", [{ name: "5xx %", values: errors, color: 1 }], "%"),
    plot("latency ms", [
      { name: "p50", values: at((p) => p.p50Ms) },
      { name: "p99", values: at((p) => p.p99Ms), color: 2 },
    ], "ms"));
}

function codes(totals) {
  const entries = Object.entries(totals.byCode);
  return entries.length ? entries.map(([c, n]) => `${c}: ${n}`).join(", ") : "none yet";
}

function current(recent) {
  const p = recent[recent.length - 1] || { requests: 0, errors: 0, seconds: 1 };
  return [p.requests / p.seconds, p.requests ? (100 * p.errors) / p.requests : 0];
}

function breakerBadge(b) {
  let text = b.state.replace("_", "-");
  if (b.state === "open" && b.retryAfterSeconds != null) text = `OPEN · ${Math.ceil(b.retryAfterSeconds)}s left`;
  return el("span", { class: `badge breaker ${b.state}`, "data-breaker": b.state }, text);
}

function upstreamCard(u) {
  const [rate, errPct] = current(u.requests.recent);
  const card = el("article", { class: `card upstream breaker-${u.breaker.state}`, "data-upstream": u.name, "data-breaker": u.breaker.state },
    el("h3", {}, el("span", { class: "name" }, u.name), breakerBadge(u.breaker)));
  card.append(kv([
    ["req/s", num(rate)], ["errors", `${num(errPct)}%`],
    ["retry budget left", u.retryBudgetRemaining], ["total", u.requests.totals.total],
  ]));
  const retries = Object.entries(u.retries);
  if (retries.length) card.append(kv([["retries", retries.map(([r, n]) => `${r}: ${n}`).join(", ")]]));
  if (u.breaker.state !== "disabled") {
    card.append(kv([["window", `${u.breaker.windowFailures}/${u.breaker.windowRequests} failed`],
      ["consecutive failures", u.breaker.consecutiveFailures], ["times opened", u.breaker.openedCount]]));
  }
  const rows = u.endpoints.map((e) => el("tr", {}, el("td", {}, e.address), el("td", {}, e.outstanding),
    el("td", {}, e.ejected ? "ejected" : "in rotation")));
  card.append(el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "endpoint"), el("th", {}, "outstanding"),
    el("th", {}, "state"))), el("tbody", {}, ...rows)));
  card.append(kv([["by code", codes(u.requests.totals)]]));
  card.append(ratePlots(u.requests.recent));
  return card;
}

function reasons(title, map) {
  const entries = Object.entries(map || {});
  return kv([[title, entries.length ? entries.map(([r, n]) => `${r}: ${n}`).join(", ") : "0"]]);
}

function inboundCard(i) {
  const recent = i.requests.recent;
  const [rate, errPct] = current(recent);
  const card = el("article", { class: "card", "data-inbound": "" }, el("h3", {}, "to the app"));
  card.append(kv([["req/s", num(rate)], ["errors", `${num(errPct)}%`], ["authorization denials", i.authzDenied]]));
  card.append(reasons("JWT failures", i.jwtFailures));
  card.append(reasons("TLS handshake failures", i.tlsHandshakeFailures));
  card.append(kv([["by code", codes(i.requests.totals)]]));
  const byClass = CLASSES.map((c, k) => ({ name: c, values: pad(recent).map((p) => (p == null ? null : p.byClass[k] / p.seconds)), color: [3, 4, 0, 2, 1][k] }))
    .filter((s) => s.values.some((v) => v > 0));
  const plots = ratePlots(recent);
  if (byClass.length) plots.firstChild.replaceWith(plot("req/s by class", byClass, "/s"));
  card.append(plots);
  return card;
}

function panel(id, data, fields) {
  const section = document.getElementById(`${id}-section`);
  section.hidden = !data;
  if (!data) return;
  const box = document.getElementById(id);
  box.replaceChildren(el("div", { class: "card" }, kv(fields(data))));
}

function render(s) {
  SLOTS = s.window.slots;
  document.getElementById("service").textContent = s.service;
  document.title = `kawal ${s.service}`;
  document.getElementById("summary").textContent =
    `version ${s.version} · up ${duration(s.uptimeSeconds)} · ${s.ready ? "ready" : "NOT READY"} · updated ${new Date().toLocaleTimeString()}`;

  const ups = document.getElementById("upstreams");
  document.getElementById("upstreams-section").hidden = !s.upstreams.length;
  ups.replaceChildren(el("div", { class: "cards" }, ...s.upstreams.map(upstreamCard)));
  if (s.unrouted) ups.append(kv([["unrouted requests", `${s.unrouted.total} (${codes(s.unrouted)})`]]));

  document.getElementById("inbound-section").hidden = !s.inbound;
  if (s.inbound) document.getElementById("inbound").replaceChildren(el("div", { class: "cards" }, inboundCard(s.inbound)));

  panel("cache", s.cache, (c) => [
    ["hit ratio", c.hits + c.misses ? `${num((100 * c.hits) / (c.hits + c.misses))}%` : "–"],
    ["hits", c.hits], ["misses", c.misses], ["bytes used", c.bytesUsed], ["stale served", c.staleServed],
  ]);
  panel("guard", s.guard, (g) => [["replays", g.replays], ["duplicates", g.duplicates], ["conflicts", g.conflicts]]);

  document.getElementById("certs-section").hidden = !s.certificates.length;
  document.querySelector("#certs tbody").replaceChildren(...s.certificates.map((c) => {
    const days = c.expiresInSeconds / 86400;
    const cls = days < CERT_BAD_DAYS ? "cert-bad" : days < CERT_WARN_DAYS ? "cert-warn" : "";
    return el("tr", { class: cls }, el("td", {}, c.name), el("td", {}, new Date(c.notAfterUnix * 1000).toISOString()),
      el("td", {}, c.expiresInSeconds < 0 ? `EXPIRED ${duration(-c.expiresInSeconds)} ago` : duration(c.expiresInSeconds)));
  }));

  document.getElementById("process").replaceChildren(kv([
    ["started", new Date(s.startedAtUnix * 1000).toISOString()], ["config loaded", new Date(s.configLoadedAtUnix * 1000).toISOString()],
    ["log lines dropped", s.logLinesDropped], ["plot window", `${s.window.slots} × ${s.window.slotSeconds}s`],
  ]));
  document.getElementById("config").textContent = s.config;
}

// A fetch or a timer is on its way; a hidden tab lets the chain stop and
// restarts it when shown again, so an unwatched page costs nothing.
let pending = false;

async function refresh() {
  if (document.hidden) {
    pending = false;
    return;
  }
  pending = true;
  try {
    const res = await fetch("status.json", { cache: "no-store" });
    if (!res.ok) throw new Error(`status.json: HTTP ${res.status}`);
    render(await res.json());
  } catch (e) {
    document.getElementById("summary").textContent = `cannot reach kawal: ${e.message}`;
  }
  setTimeout(refresh, REFRESH_MS);
}

document.addEventListener("visibilitychange", () => { if (!pending) refresh(); });
refresh();
