// The pipeline graph: runs as boxes coloured by state, outputs as arrows to the runs reading them.
import { api, el, fmt, onProjectEvent, setCleanup, stateBadge, STATE_COLOURS, STATES, WARNING_COLOUR, when } from "./app.js";

const NODE_W = 220, NODE_H = 70, COL_GAP = 150, ROW_GAP = 34, PAD = 24;
const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Columns by longest path from a source run, rows in creation order: reads left to right.
function layout(nodes, edges) {
  const depth = new Map(nodes.map((n) => [n.id, 0]));
  for (let pass = 0; pass < nodes.length; pass++) {
    let changed = false;
    for (const e of edges) {
      const d = depth.get(e.source) + 1;
      if (depth.has(e.target) && d > depth.get(e.target)) { depth.set(e.target, d); changed = true; }
    }
    if (!changed) break;
  }
  const rows = new Map();
  const positions = new Map();
  for (const n of nodes) {
    const column = depth.get(n.id);
    const row = rows.get(column) || 0;
    rows.set(column, row + 1);
    positions.set(n.id, { x: PAD + column * (NODE_W + COL_GAP), y: PAD + row * (NODE_H + ROW_GAP) });
  }
  const width = PAD * 2 + (Math.max(0, ...depth.values()) + 1) * (NODE_W + COL_GAP) - COL_GAP;
  const height = PAD * 2 + Math.max(1, ...rows.values()) * (NODE_H + ROW_GAP) - ROW_GAP;
  return { positions, width, height };
}

function truncate(text, limit) {
  return text.length > limit ? `${text.slice(0, limit - 1)}…` : text;
}

function drawGraph(container, data, labels) {
  const { nodes, edges } = data;
  if (!nodes.length) {
    container.replaceChildren(el("div", { class: "empty" },
      "No runs yet. Start with ", el("b", {}, "New run ▾"), " — e.g. Import tilt stacks, or `tomoweave demo`."));
    return;
  }
  const { positions, width, height } = layout(nodes, edges);
  const root = svg("svg", { class: "graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "pipeline graph" });
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#9aa5b1" }));
  defs.append(marker);
  root.append(defs);
  const fanIn = new Map();
  const labelled = new Set();
  for (const e of edges) {
    const a = positions.get(e.source), b = positions.get(e.target);
    if (!a || !b) continue;
    const k = fanIn.get(e.target) || 0;
    fanIn.set(e.target, k + 1);
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x - 2, y2 = b.y + NODE_H / 2 + k * 8 - 4;
    const mid = (x1 + x2) / 2;
    const path = svg("path", { class: "edge", d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`,
      "marker-end": "url(#arrow)" });
    path.append(svg("title", {}, `${e.output} (${e.type}) → input ${e.input}`));
    root.append(path);
    const labelKey = `${e.source}/${e.output}`;
    if (labelled.has(labelKey)) continue;  // one label per output, however many readers
    labelled.add(labelKey);
    const lx = x1 + COL_GAP / 2 - 8;
    const label = svg("text", { class: "edge-label", x: lx, y: y1 - 18, "text-anchor": "middle" });
    label.append(svg("tspan", { x: lx, "font-weight": 600 }, e.output));
    label.append(svg("tspan", { x: lx, dy: 12 }, e.type));
    root.append(label);
  }
  for (const n of nodes) {
    const p = positions.get(n.id);
    const colour = STATE_COLOURS[n.state] || "#8795a1";
    const group = svg("g", { class: `node ${n.state.replaceAll(" ", "-")}`, transform: `translate(${p.x},${p.y})`,
      "data-run": n.name, "data-state": n.state, tabindex: 0 });
    group.append(svg("rect", { class: "box", width: NODE_W, height: NODE_H, rx: 8, stroke: colour }));
    group.append(svg("rect", { class: "band", width: 6, height: NODE_H - 4, x: 2, y: 2, rx: 3, fill: colour }));
    group.append(svg("text", { class: "title", x: 16, y: 20 }, truncate(labels[n.protocol] || n.protocol, 25)));
    group.append(svg("text", { class: "sub", x: 16, y: 37 }, truncate(`#${n.id} ${n.name}`, 30)));
    const counts = Object.values(n.outputs).map((o) => o.count).reduce((a, b) => a + b, 0);
    const failed = n.items_failed ? ` · ${n.items_failed} failed` : "";
    group.append(svg("text", { class: "state", x: 16, y: 56, fill: colour }, n.state));
    if (n.warnings) {
      group.setAttribute("data-warnings", n.warnings);
      group.append(svg("text", { class: "warnings", x: NODE_W - 10, y: 20, "text-anchor": "end", fill: WARNING_COLOUR },
        `⚠ ${n.warnings}`));
      group.append(svg("rect", { class: "band warn", width: 6, height: (NODE_H - 4) / 2, x: 2, y: NODE_H / 2, rx: 3, fill: WARNING_COLOUR }));
    }
    group.append(svg("text", { class: "sub", x: NODE_W - 10, y: 56, "text-anchor": "end" },
      `${counts} item${counts === 1 ? "" : "s"}${failed}`));
    group.append(svg("title", {}, `${n.protocol} · ${n.name}\nstate: ${n.state}` +
      (n.warnings ? ` · ${n.warnings} warnings in ${n.items_warned} items` : "") + "\n" +
      Object.entries(n.outputs).map(([k, o]) => `${k}: ${o.count} ${o.type} (${o.state})`).join("\n")));
    group.addEventListener("click", () => { location.hash = `#/run/${n.id}`; });
    group.addEventListener("keydown", (e) => { if (e.key === "Enter") location.hash = `#/run/${n.id}`; });
    root.append(group);
  }
  container.replaceChildren(root);
}

function shortWhen(seconds) {
  if (!seconds) return "–";
  const date = new Date(seconds * 1000);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

function runTable(nodes) {
  const body = el("tbody");
  for (const n of [...nodes].reverse()) {
    const row = el("tr", { class: "clickable", "data-run": n.name, onclick: () => { location.hash = `#/run/${n.id}`; } },
      el("td", { class: "num" }, n.id),
      el("td", {}, el("b", {}, n.name), n.name.startsWith(n.protocol) ? "" : el("div", { class: "muted" }, n.protocol)),
      el("td", {}, stateBadge(n.state, n.warnings)),
      el("td", { class: "num", title: "items in the outputs (failed tasks)" },
        `${Object.values(n.outputs).reduce((a, o) => a + o.count, 0)}`,
        n.items_failed ? el("span", { class: "error-text" }, ` (${n.items_failed} failed)`) : ""),
      el("td", { class: "muted", title: when(n.finished || n.started || n.created) }, shortWhen(n.finished || n.started || n.created)));
    body.append(row);
  }
  return el("table", { class: "data" }, el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "run"),
    el("th", {}, "state"), el("th", {}, "items"), el("th", {}, "changed"))), body);
}

export async function showGraph(view) {
  const protocols = await api("/api/protocols");
  const labels = Object.fromEntries(protocols.map((p) => [p.name, p.label]));
  const legend = el("div", { class: "legend" }, STATES.map((s) =>
    el("span", {}, el("span", { class: "dot", style: `background:${STATE_COLOURS[s]}` }), s)));
  const graphBox = el("div", { class: "graph-wrap", id: "graph" });
  const tableBox = el("div", { id: "run-table" });
  view.append(
    el("div", { class: "page-head" },
      el("div", {}, el("h1", {}, "Pipeline"),
        el("p", {}, "Each box is a run; arrows carry its outputs to the runs that read them. Click a box for its parameters, log and results.")),
      legend),
    el("div", { class: "columns" },
      graphBox,
      el("div", { class: "panel" }, el("h2", {}, "Runs"), tableBox)));
  let pending = false;
  const refresh = async () => {
    if (pending) return;
    pending = true;
    try {
      const data = await api("/api/graph");
      drawGraph(graphBox, data, labels);
      tableBox.replaceChildren(runTable(data.nodes));
    } finally { pending = false; }
  };
  await refresh();
  onProjectEvent(() => refresh());
  const timer = setInterval(refresh, 5000);  // catches schedulers that died without a word
  setCleanup(() => clearInterval(timer));
  void fmt;
}
