// tomoweave web GUI: a hash router over a few pages; live updates from the catalog's events.
import { showGraph } from "./graph.js";
import { showForm } from "./form.js";
import { showRun } from "./run.js";
import { showTomogram } from "./tomogram.js";
import { showTiltSeries } from "./tiltseries.js";
import { showAverage } from "./ctf.js";
import { showCtf } from "./ctf_assistant.js";
import { showIsosurface } from "./volume3d.js";

const listeners = new Set();
let routeCount = 0;
let cleanup = null;

// Every state-changing request carries the page's cross-site token (see web/security.py).
const CSRF_TOKEN = document.querySelector('meta[name="tomoweave-csrf"]')?.content || "";

export async function api(path, options = {}) {
  const init = { headers: { "X-Tomoweave-Csrf": CSRF_TOKEN }, ...options };
  if (options.json !== undefined) {
    init.method = options.method || "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok) {
    const error = new Error(describeError(data) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.detail = data && data.detail;
    throw error;
  }
  return data;
}

function describeError(data) {
  if (!data || !data.detail) return null;
  const detail = data.detail;
  if (typeof detail === "string") return detail;
  if (detail.message) return detail.message;
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  return JSON.stringify(detail);
}

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const STATES = ["queued", "running", "finished", "finished with failures", "failed", "interrupted"];
export const STATE_COLOURS = {
  queued: "#8795a1", running: "#2b6cb0", finished: "#2f855a",
  "finished with failures": "#c27c0e", failed: "#c53030", interrupted: "#805ad5",
};

export const WARNING_COLOUR = "#c27c0e";

// "1 warning, 2 warnings", but "2 TiltSeries" (issue 18.15: not "TiltSeriess")
export function plural(count, word) { return `${count} ${word}${count === 1 || /s$/.test(word) ? "" : "s"}`; }

// The state, and the warnings the run's items logged: a run that "finished" with warnings on
// every item must not look plain green (issue 18.6).
export function stateBadge(state, warnings = 0) {
  const badge = el("span", { class: `badge state-${state.replaceAll(" ", "-")}`, "data-state": state,
    "data-warnings": warnings }, state);
  if (!warnings) return badge;
  return el("span", { class: "badge-group" }, badge,
    el("span", { class: "warn-badge", "data-warnings": warnings, title: "warnings in the run log" }, `⚠ ${plural(warnings, "warning")}`));
}

// Units live in the parameter names (pixel_size_a, tilt_deg); the label drops that suffix and the
// unit is shown beside it instead.
const UNIT_SUFFIXES = ["_e_a2", "_inv_a", "_a2", "_deg", "_kv", "_mm", "_um", "_nm", "_px", "_s", "_a"];
export function fieldLabel(name) {
  let base = name;
  for (const suffix of UNIT_SUFFIXES) {
    if (base.endsWith(suffix) && base.length > suffix.length) { base = base.slice(0, -suffix.length); break; }
  }
  const words = base.replaceAll("_", " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export function fmt(value, digits = 2) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    return Math.abs(value) >= 1000 ? value.toFixed(0) : value.toFixed(digits);
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function fixed(value, digits = 1) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

export function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "–";
}

// Sizes are only known once a node is in the document (pages are built off screen first).
export function whenAttached(node, callback) {
  if (node.isConnected) callback();
  else requestAnimationFrame(() => whenAttached(node, callback));
}

export function onProjectEvent(callback) {
  listeners.add(callback);
  return () => listeners.delete(callback);
}

export function setCleanup(callback) { cleanup = callback; }

function connectEvents() {
  const indicator = document.getElementById("live-indicator");
  let source = null;
  let last = 0;
  const open = () => {
    source = new EventSource(`/api/events/stream?after=${last}`);
    source.onopen = () => indicator.classList.remove("off");
    source.onmessage = (message) => {
      const event = JSON.parse(message.data);
      last = Math.max(last, event.id);
      for (const listener of listeners) listener(event);
    };
    source.onerror = () => {
      indicator.classList.add("off");
      source.close();
      setTimeout(open, 2000);
    };
  };
  api("/api/events?after=0").then((events) => {
    last = events.length ? events[events.length - 1].id : 0;
    open();
  }).catch(() => setTimeout(connectEvents, 2000));
}

async function buildProtocolMenu() {
  const menu = document.getElementById("protocol-menu");
  const button = document.getElementById("new-run-button");
  const protocols = await api("/api/protocols");
  const groups = {};
  for (const p of protocols) (groups[p.name.split(".")[0]] ||= []).push(p);
  menu.replaceChildren();
  for (const [group, members] of Object.entries(groups)) {
    menu.append(el("div", { class: "group" }, group));
    for (const p of members) {
      menu.append(el("a", { href: `#/new/${p.name}`, title: p.description, role: "menuitem" },
        p.label, el("small", {}, p.name)));
    }
  }
  button.addEventListener("click", (e) => { e.stopPropagation(); menu.classList.toggle("open"); });
  document.addEventListener("click", () => menu.classList.remove("open"));
}

async function route() {
  document.getElementById("protocol-menu").classList.remove("open");
  if (cleanup) { try { cleanup(); } catch { /* page already gone */ } cleanup = null; }
  listeners.clear();
  const view = document.getElementById("view");
  const page = el("div");
  const shown = ++routeCount;
  const loading = setTimeout(() => {
    if (shown === routeCount) view.replaceChildren(el("div", { class: "empty" }, "Loading…"));
  }, 250);
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  try {
    // pages build off screen and replace the view once their data is there
    const show = {
      new: () => showForm(page, parts[1], params),
      run: () => showRun(page, Number(parts[1])),
      tomogram: () => showTomogram(page, Number(parts[1]), parts[2], parts[3]),
      tiltseries: () => showTiltSeries(page, Number(parts[1]), parts[2], parts[3]),
      ctf: () => showCtf(page, Number(parts[1]), parts[2], parts[3]),
      average: () => showAverage(page, Number(parts[1]), parts[2], parts[3]),
      isosurface: () => showIsosurface(page, Number(parts[1]), parts[2], parts[3]),
    }[parts[0]];
    if (parts.length === 0) await showGraph(page);
    else if (show) await show();
    else page.append(el("div", { class: "empty" }, "Nothing here. ", el("a", { href: "#/" }, "Back to the pipeline")));
  } catch (error) {
    page.append(el("div", { class: "panel error-text" }, `Could not show this page: ${error.message}`));
  }
  clearTimeout(loading);
  if (shown === routeCount) view.replaceChildren(page);
}

async function start() {
  const info = await api("/api/project");
  document.getElementById("project-name").textContent = info.root;
  document.title = `tomoweave · ${info.name}`;
  buildProtocolMenu();
  connectEvents();
  window.addEventListener("hashchange", route);
  route();
}

start();
