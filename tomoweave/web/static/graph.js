// The pipeline graph: runs as boxes coloured by state, outputs as arrows to the runs reading them.
import { api, el, fmt, onProjectEvent, setCleanup, stateBadge, STATE_COLOURS, STATES, WARNING_COLOUR, when, whenAttached } from "./app.js";

// Two sizes of box: full (title, name, state, counts) and compact (title and state) for long projects.
const SIZES = {
  full: { w: 220, h: 70, colGap: 110, rowGap: 30, bandGap: 56 },
  compact: { w: 150, h: 42, colGap: 56, rowGap: 14, bandGap: 36 },
};
const PAD = 24;
const MIN_ZOOM = 0.2, MAX_ZOOM = 4;
const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Columns by longest path from a source run, rows in creation order: reads left to right. A chain
// longer than the view is wide wraps into bands, one under the other (issue 18.8: the demo's
// graph was 4708 px wide, squeezed into 904), so boxes keep their size and their text stays legible.
function layout(nodes, edges, size, widthPx) {
  const depth = new Map(nodes.map((n) => [n.id, 0]));
  for (let pass = 0; pass < nodes.length; pass++) {
    let changed = false;
    for (const e of edges) {
      const d = depth.get(e.source) + 1;
      if (depth.has(e.target) && d > depth.get(e.target)) { depth.set(e.target, d); changed = true; }
    }
    if (!changed) break;
  }
  const columns = Math.max(0, ...depth.values()) + 1;
  const perBand = Math.max(1, Math.min(columns, Math.floor((widthPx - 2 * PAD + size.colGap) / (size.w + size.colGap))));
  const rowsOf = new Map();  // column -> boxes in it
  for (const n of nodes) rowsOf.set(depth.get(n.id), (rowsOf.get(depth.get(n.id)) || 0) + 1);
  const bands = Math.ceil(columns / perBand);
  const bandTop = [PAD];
  for (let b = 0; b < bands; b++) {
    let tallest = 1;
    for (let c = b * perBand; c < Math.min(columns, (b + 1) * perBand); c++) tallest = Math.max(tallest, rowsOf.get(c) || 0);
    bandTop.push(bandTop[b] + tallest * (size.h + size.rowGap) - size.rowGap + size.bandGap);
  }
  const filled = new Map();
  const positions = new Map();
  for (const n of nodes) {
    const column = depth.get(n.id);
    const row = filled.get(column) || 0;
    filled.set(column, row + 1);
    const band = Math.floor(column / perBand);
    positions.set(n.id, { x: PAD + (column % perBand) * (size.w + size.colGap),
      y: bandTop[band] + row * (size.h + size.rowGap), band });
  }
  const width = PAD * 2 + perBand * (size.w + size.colGap) - size.colGap;
  const height = bandTop[bands] - size.bandGap + PAD;
  return { positions, width, height, bands };
}

function truncate(text, limit) {
  return text.length > limit ? `${text.slice(0, limit - 1)}…` : text;
}

function edgePath(a, b, size, k) {
  const x1 = a.x + size.w, y1 = a.y + size.h / 2, x2 = b.x - 2, y2 = b.y + size.h / 2 + k * 6 - 3;
  if (b.band === a.band && x2 > x1) {
    const mid = (x1 + x2) / 2;
    return { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, label: [x1 + size.colGap / 2 - 8, y1 - 14] };
  }
  // into a later band (or backwards): down the right side, then in from the left
  const drop = a.y + size.h + size.rowGap / 2 + 4;
  const below = b.y - size.bandGap / 2;
  const yTurn = b.band > a.band ? below : drop;
  return { d: `M${x1},${y1} C${x1 + 40},${y1} ${x1 + 40},${yTurn} ${x1},${yTurn} L${Math.max(PAD / 2, x2 - 40)},${yTurn} ` +
    `C${x2 - 60},${yTurn} ${x2 - 40},${y2} ${x2},${y2}`, label: [x1 + 30, y1 - 14] };
}

function drawNode(n, p, size, labels, compact) {
  const colour = STATE_COLOURS[n.state] || "#8795a1";
  const group = svg("g", { class: `node ${n.state.replaceAll(" ", "-")}`, transform: `translate(${p.x},${p.y})`,
    "data-run": n.name, "data-state": n.state, tabindex: 0 });
  group.append(svg("rect", { class: "box", width: size.w, height: size.h, rx: 8, stroke: colour }));
  group.append(svg("rect", { class: "band", width: 6, height: size.h - 4, x: 2, y: 2, rx: 3, fill: colour }));
  const title = labels[n.protocol] || n.protocol;
  const counts = Object.values(n.outputs).map((o) => o.count).reduce((a, b) => a + b, 0);
  if (compact) {
    group.append(svg("text", { class: "title", x: 14, y: 17 }, truncate(`#${n.id} ${title}`, 19)));
    group.append(svg("text", { class: "state", x: 14, y: 33, fill: colour }, `${n.state} · ${counts}`));
  } else {
    const failed = n.items_failed ? ` · ${n.items_failed} failed` : "";
    group.append(svg("text", { class: "title", x: 16, y: 20 }, truncate(title, n.warnings ? 21 : 25)));
    group.append(svg("text", { class: "sub", x: 16, y: 37 }, truncate(`#${n.id} ${n.name}`, 30)));
    group.append(svg("text", { class: "state", x: 16, y: 56, fill: colour }, n.state));
    group.append(svg("text", { class: "sub", x: size.w - 10, y: 56, "text-anchor": "end" },
      `${counts} item${counts === 1 ? "" : "s"}${failed}`));
  }
  if (n.warnings) {
    group.setAttribute("data-warnings", n.warnings);
    group.append(svg("text", { class: "warnings", x: size.w - 8, y: compact ? 17 : 20, "text-anchor": "end", fill: WARNING_COLOUR },
      `⚠ ${n.warnings}`));
    group.append(svg("rect", { class: "band warn", width: 6, height: (size.h - 4) / 2, x: 2, y: size.h / 2, rx: 3, fill: WARNING_COLOUR }));
  }
  group.append(svg("title", {}, `${n.protocol} · ${n.name}\nstate: ${n.state}` +
    (n.warnings ? ` · ${n.warnings} warnings in ${n.items_warned} items` : "") + "\n" +
    Object.entries(n.outputs).map(([k, o]) => `${k}: ${o.count} ${o.type} (${o.state})`).join("\n")));
  group.addEventListener("click", () => { if (!group.dataset.dragged) location.hash = `#/run/${n.id}`; });
  group.addEventListener("keydown", (e) => { if (e.key === "Enter") location.hash = `#/run/${n.id}`; });
  return group;
}

function drawGraph(container, data, labels, view) {
  const { nodes, edges } = data;
  if (!nodes.length) {
    container.replaceChildren(el("div", { class: "empty" },
      "No runs yet. Start with ", el("b", {}, "New run ▾"), " — e.g. Import tilt stacks, or `tomoweave demo`."));
    return null;
  }
  const size = SIZES[view.compact ? "compact" : "full"];
  const { positions, width, height, bands } = layout(nodes, edges, size, container.clientWidth || 900);
  const root = svg("svg", { class: `graph${view.compact ? " compact" : ""}`, role: "img", "aria-label": "pipeline graph",
    "data-bands": bands, "data-layout-width": width, "data-layout-height": height });
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
    const { d, label: [lx, ly] } = edgePath(a, b, size, k);
    const path = svg("path", { class: "edge", d, "marker-end": "url(#arrow)" });
    path.append(svg("title", {}, `${e.output} (${e.type}) → input ${e.input}`));
    root.append(path);
    const labelKey = `${e.source}/${e.output}`;
    if (view.compact || labelled.has(labelKey)) continue;  // one label per output, however many readers
    labelled.add(labelKey);
    const text = svg("text", { class: "edge-label", x: lx, y: ly, "text-anchor": "middle" });
    text.append(svg("tspan", { x: lx, "font-weight": 600 }, e.output));
    text.append(svg("tspan", { x: lx, dy: 12 }, e.type));
    root.append(text);
  }
  for (const n of nodes) root.append(drawNode(n, positions.get(n.id), size, labels, view.compact));
  container.replaceChildren(root);
  return { root, width, height };
}

// Zoom (wheel, buttons) and pan (drag) by the viewBox; 1:1 means one layout unit per screen pixel.
class GraphView {
  constructor(box) {
    this.box = box;
    this.compact = false;
    this.zoom = 1;
    this.x = 0; this.y = 0;
    this.drawn = null;
    box.addEventListener("wheel", (event) => {
      event.preventDefault();
      const rect = box.getBoundingClientRect();
      this.zoomAt(event.deltaY < 0 ? 1.2 : 1 / 1.2, event.clientX - rect.left, event.clientY - rect.top);
    }, { passive: false });
    box.addEventListener("pointerdown", (event) => this.startDrag(event));
  }

  startDrag(event) {
    if (event.button !== 0 || !this.drawn) return;
    const start = { cx: event.clientX, cy: event.clientY, x: this.x, y: this.y };
    let moved = false;
    const move = (e) => {
      const dx = e.clientX - start.cx, dy = e.clientY - start.cy;
      if (!moved && Math.hypot(dx, dy) < 4) return;
      moved = true;
      this.box.classList.add("dragging");
      this.x = start.x - dx / this.zoom;
      this.y = start.y - dy / this.zoom;
      this.apply();
    };
    const up = () => {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
      this.box.classList.remove("dragging");
      if (moved) {  // a drag is not a click on the box it ends on
        for (const g of this.box.querySelectorAll("g.node")) g.dataset.dragged = "1";
        setTimeout(() => { for (const g of this.box.querySelectorAll("g.node")) delete g.dataset.dragged; }, 0);
      }
    };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }

  zoomAt(factor, px, py) {
    const zoom = Math.max(MIN_ZOOM, Math.min(MAX_ZOOM, this.zoom * factor));
    this.x += px / this.zoom - px / zoom;
    this.y += py / this.zoom - py / zoom;
    this.zoom = zoom;
    this.apply();
  }

  fit() {
    if (!this.drawn) return;
    const w = this.box.clientWidth || this.drawn.width;
    this.zoom = Math.min(1, w / this.drawn.width);
    this.x = 0; this.y = 0;
    this.apply();
  }

  apply() {
    if (!this.drawn) return;
    const { root, width, height } = this.drawn;
    const w = this.box.clientWidth || width;
    const h = Math.min(Math.max(260, height * this.zoom), window.innerHeight * 0.75);
    root.setAttribute("width", w);
    root.setAttribute("height", h);
    root.setAttribute("viewBox", `${this.x} ${this.y} ${w / this.zoom} ${h / this.zoom}`);
    root.dataset.zoom = this.zoom.toFixed(3);
    this.box.dataset.zoom = this.zoom.toFixed(3);
  }

  draw(data, labels) {
    const keep = this.drawn !== null;
    this.drawn = drawGraph(this.box, data, labels, this);
    if (keep) this.apply(); else this.fit();
  }
}

function graphToolbar(view, redraw) {
  const button = (id, text, title, action) => el("button", { type: "button", class: "secondary", id, title, onclick: action }, text);
  const compact = el("input", { type: "checkbox", id: "graph-compact" });
  compact.addEventListener("change", () => { view.compact = compact.checked; view.drawn = null; redraw(); });
  return { compact, node: el("div", { class: "graph-tools" },
    button("graph-zoom-in", "+", "zoom in (or the mouse wheel)", () => view.zoomAt(1.25, 0, 0)),
    button("graph-zoom-out", "−", "zoom out", () => view.zoomAt(0.8, 0, 0)),
    button("graph-fit", "fit", "the whole graph, at most 1:1", () => view.fit()),
    el("label", { title: "smaller boxes: title and state only" }, compact, " compact"),
    el("span", { class: "hint" }, "drag to pan")) };
}

function shortWhen(seconds) {
  if (!seconds) return "–";
  const date = new Date(seconds * 1000);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

// Long run names wrap after . - _ (between words), never inside one (issue 18.15).
function breakable(text) {
  return text.split(/(?<=[._-])/).flatMap((part, i) => (i ? [el("wbr"), part] : [part]));
}

function runTable(nodes) {
  const body = el("tbody");
  for (const n of [...nodes].reverse()) {
    const row = el("tr", { class: "clickable", "data-run": n.name, onclick: () => { location.hash = `#/run/${n.id}`; } },
      el("td", { class: "num" }, n.id),
      el("td", {}, el("b", {}, breakable(n.name)), n.name.startsWith(n.protocol) ? "" : el("div", { class: "muted" }, breakable(n.protocol))),
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
  const graphView = new GraphView(graphBox);
  let latest = null;
  const tools = graphToolbar(graphView, () => { if (latest) graphView.draw(latest, labels); });
  const tableBox = el("div", { id: "run-table" });
  view.append(
    el("div", { class: "page-head" },
      el("div", {}, el("h1", {}, "Pipeline"),
        el("p", {}, "Each box is a run; arrows carry its outputs to the runs that read them. Click a box for its parameters, log and results.")),
      legend),
    el("div", { class: "columns" },
      el("div", {}, tools.node, graphBox),
      el("div", { class: "panel" }, el("h2", {}, "Runs"), tableBox)));
  let pending = false;
  const refresh = async () => {
    if (pending) return;
    pending = true;
    try {
      const data = await api("/api/graph");
      const first = latest === null;
      latest = data;
      // a long project starts compact; the person's choice is kept afterwards
      if (first && data.nodes.length > 12) { graphView.compact = true; tools.compact.checked = true; }
      whenAttached(graphBox, () => graphView.draw(data, labels));
      tableBox.replaceChildren(runTable(data.nodes));
    } finally { pending = false; }
  };
  await refresh();
  onProjectEvent(() => refresh());
  const timer = setInterval(refresh, 5000);  // catches schedulers that died without a word
  setCleanup(() => clearInterval(timer));
  void fmt;
}
