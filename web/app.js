// tally dashboard: campaign table, per-minute chart, live updates over SSE.
// No dependencies. The API key lives in localStorage and goes in the
// Authorization header; /v1/live takes it as ?key= (EventSource cannot send headers).
"use strict";

const KEY_STORE = "tally.apiKey";
const COUNT_COLS = ["sent", "delivered", "bounced", "unique_opens", "unique_clicks", "complaints", "unsubscribes"];
const RATE_COLS = ["delivery_rate", "open_rate", "human_open_rate", "click_rate", "click_to_open_rate"];

const $ = (id) => document.getElementById(id);
const num = new Intl.NumberFormat();
const state = { key: "", campaigns: new Map(), selected: null, live: null, chartTimer: null, chartBusy: false };

function fmtRate(v) { return v === null || v === undefined ? "—" : (v * 100).toFixed(1) + "%"; }
function fmtTime(iso) { return iso ? new Date(iso).toLocaleString() : "—"; }

function showMessage(text) {
  const m = $("message");
  m.textContent = text || "";
  m.hidden = !text;
}

function setStatus(text, cls) {
  const s = $("status");
  s.textContent = text;
  s.className = "status " + cls;
}

async function api(path) {
  const res = await fetch(path, { headers: { Authorization: "Bearer " + state.key } });
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const msg = body && body.error ? body.error.message : res.statusText;
    const err = new Error(msg);
    err.status = res.status;
    throw err;
  }
  return body;
}

// ---- campaign table ------------------------------------------------------

function cell(tr, text) {
  const td = document.createElement("td");
  td.textContent = text;
  tr.appendChild(td);
}

function renderTable(flash) {
  const tbody = $("campaigns").tBodies[0];
  const rows = [];
  const names = [...state.campaigns.keys()].sort();
  for (const name of names) {
    const c = state.campaigns.get(name);
    const tr = document.createElement("tr");
    tr.dataset.campaign = name;
    if (name === state.selected) tr.classList.add("selected");
    if (flash && flash.has(name)) tr.classList.add("flash");
    cell(tr, name);
    for (const k of COUNT_COLS) cell(tr, num.format(c.counts[k] || 0));
    for (const k of RATE_COLS) cell(tr, fmtRate(c.rates[k]));
    cell(tr, fmtTime(c.last_event));
    rows.push(tr);
  }
  tbody.replaceChildren(...rows);
  $("updated").textContent = names.length ? "updated " + new Date().toLocaleTimeString() : "no data yet";
  if (state.selected) renderNumbers();
}

function renderNumbers() {
  const c = state.campaigns.get(state.selected);
  const dl = $("numbers");
  if (!c) { dl.replaceChildren(); return; }
  const items = [];
  const add = (k, v) => {
    const d = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = k.replace(/_/g, " ");
    dd.textContent = v;
    d.append(dt, dd);
    items.push(d);
  };
  for (const [k, v] of Object.entries(c.counts)) add(k, num.format(v));
  for (const [k, v] of Object.entries(c.rates)) add(k, fmtRate(v));
  dl.replaceChildren(...items);
}

async function loadCampaigns() {
  // In pages, so that a tenant with very many campaigns is not one huge answer.
  const all = new Map();
  let after = null;
  for (;;) {
    const q = "/v1/campaigns?limit=5000" + (after === null ? "" : "&after=" + encodeURIComponent(after));
    const body = await api(q);
    for (const c of body.campaigns) all.set(c.campaign, c);
    if (!body.next) break;
    after = body.next;
  }
  state.campaigns = all;
  renderTable(null);
}

// ---- chart ---------------------------------------------------------------

function scheduleChart(delay) {
  if (state.chartTimer) return;
  state.chartTimer = setTimeout(() => { state.chartTimer = null; loadChart(); }, delay);
}

async function loadChart() {
  if (!state.selected || state.chartBusy) return;
  state.chartBusy = true;
  try {
    const minutes = Number($("range").value);
    const to = Math.ceil(Date.now() / 60000) * 60000;
    const from = to - minutes * 60000;
    const q = (metric) => "/v1/campaigns/" + encodeURIComponent(state.selected) + "/series?metric=" + metric +
      "&granularity=minute&from=" + new Date(from).toISOString() + "&to=" + new Date(to).toISOString();
    const [opens, clicks] = await Promise.all([api(q("opens")), api(q("clicks"))]);
    drawChart(from, minutes, [[opens.points, "--opens"], [clicks.points, "--clicks"]]);
  } catch (e) {
    if (e.status !== 404) showMessage("chart: " + e.message);
  } finally {
    state.chartBusy = false;
  }
}

function drawChart(from, minutes, series) {
  const canvas = $("chart");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = 260;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.clearRect(0, 0, w, h);

  // Dense per-minute arrays (the API returns only non-empty buckets).
  const dense = series.map(([points]) => {
    const a = new Float64Array(minutes);
    for (const [t, v] of points) {
      const i = Math.floor((Date.parse(t) - from) / 60000);
      if (i >= 0 && i < minutes) a[i] += v;
    }
    return a;
  });
  let max = 1;
  for (const a of dense) for (const v of a) if (v > max) max = v;
  const mag = Math.pow(10, Math.floor(Math.log10(max)));
  max = Math.ceil(max / mag) * mag;

  const css = getComputedStyle(document.documentElement);
  const L = 48, R = 10, T = 10, B = 24;
  const pw = w - L - R, ph = h - T - B;
  const x = (i) => L + (minutes <= 1 ? 0 : (i / (minutes - 1)) * pw);
  const y = (v) => T + ph - (v / max) * ph;

  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = css.getPropertyValue("--muted").trim();
  ctx.strokeStyle = css.getPropertyValue("--line").trim();
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    ctx.beginPath();
    ctx.moveTo(L, Math.round(y(v)) + 0.5);
    ctx.lineTo(w - R, Math.round(y(v)) + 0.5);
    ctx.stroke();
    ctx.fillText(num.format(v), L - 6, y(v));
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const ticks = 6;
  for (let k = 0; k <= ticks; k++) {
    const i = Math.round(((minutes - 1) * k) / ticks);
    const d = new Date(from + i * 60000);
    ctx.fillText(d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }), x(i), h - B + 6);
  }

  series.forEach(([, color], s) => {
    ctx.strokeStyle = css.getPropertyValue(color).trim();
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    dense[s].forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
    ctx.stroke();
  });
}

function select(name) {
  state.selected = name;
  $("detail").hidden = !name;
  $("detail-name").textContent = name || "";
  renderTable(null);
  loadChart();
}

// ---- live updates --------------------------------------------------------

function stopLive() {
  if (state.live) state.live.close();
  state.live = null;
  setStatus("disconnected", "off");
}

function startLive() {
  stopLive();
  const es = new EventSource("/v1/live?key=" + encodeURIComponent(state.key));
  state.live = es;
  es.addEventListener("open", () => {
    setStatus("live", "live");
    // Catch up on whatever happened while (re)connecting.
    loadCampaigns().catch((e) => showMessage(e.message));
  });
  es.addEventListener("batch", (ev) => {
    const data = JSON.parse(ev.data);
    const changed = new Set();
    for (const c of data.campaigns) {
      state.campaigns.set(c.campaign, c);
      changed.add(c.campaign);
    }
    renderTable(changed);
    if (state.selected && changed.has(state.selected)) scheduleChart(1000);
  });
  // Too many campaigns changed for one event: reload them all.
  es.addEventListener("resync", () => {
    loadCampaigns().catch((e) => showMessage(e.message));
    if (state.selected) scheduleChart(1000);
  });
  es.addEventListener("error", () => {
    // EventSource reconnects by itself; a 401/503 answer ends it for good.
    setStatus(es.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…", "err");
  });
}

async function connect() {
  showMessage("");
  if (!state.key) { stopLive(); return; }
  try {
    await loadCampaigns();
    startLive();
  } catch (e) {
    stopLive();
    showMessage(e.status === 401 ? "The API key was not accepted." : "Cannot load campaigns: " + e.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  state.key = localStorage.getItem(KEY_STORE) || "";
  $("key").value = state.key;
  $("keyform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.key = $("key").value.trim();
    localStorage.setItem(KEY_STORE, state.key);
    select(null);
    connect();
  });
  $("forget").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORE);
    state.key = "";
    $("key").value = "";
    state.campaigns.clear();
    renderTable(null);
    select(null);
    stopLive();
  });
  $("campaigns").tBodies[0].addEventListener("click", (ev) => {
    const tr = ev.target.closest("tr");
    if (tr) select(tr.dataset.campaign === state.selected ? null : tr.dataset.campaign);
  });
  $("range").addEventListener("change", () => loadChart());
  window.addEventListener("resize", () => scheduleChart(200));
  connect();
});
