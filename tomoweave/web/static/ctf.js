// Plots on a canvas, and the average viewer (central slices and the gold-standard FSC curve).
import { api, el, fmt } from "./app.js";
import { IsosurfaceView } from "./volume3d.js";

// A scatter/line plot on a canvas (exported for the CTF assistant); returns the pixel positions of the points for hit-testing.
export function plot(canvas, series, options) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, m = { l: 62, r: 16, t: 16, b: 44 };
  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, W, H);
  const xs = series.flatMap((s) => s.points.map((p) => p[0])), ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const [x0, x1] = options.xRange || [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = options.yRange || [Math.min(...ys), Math.max(...ys)];
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.08;
  if (!options.yRange) { y0 -= pad; y1 += pad; }
  const X = (x) => m.l + ((x - x0) / ((x1 - x0) || 1)) * (W - m.l - m.r);
  const Y = (y) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
  ctx.strokeStyle = "#d9dee4"; ctx.fillStyle = "#616e7c"; ctx.font = "11px system-ui"; ctx.lineWidth = 1;
  for (let i = 0; i <= 5; i++) {
    const yv = y0 + (i / 5) * (y1 - y0), xv = x0 + (i / 5) * (x1 - x0);
    ctx.beginPath(); ctx.moveTo(m.l, Y(yv)); ctx.lineTo(W - m.r, Y(yv)); ctx.stroke();
    ctx.textAlign = "right"; ctx.fillText(fmt(yv, 2), m.l - 6, Y(yv) + 4);
    ctx.textAlign = "center"; ctx.fillText(options.xTick ? options.xTick(xv) : fmt(xv, 1), X(xv), H - m.b + 16);
  }
  ctx.fillStyle = "#323f4b"; ctx.font = "12px system-ui"; ctx.textAlign = "center";
  ctx.fillText(options.xLabel, (m.l + W - m.r) / 2, H - 8);
  ctx.save(); ctx.translate(14, (m.t + H - m.b) / 2); ctx.rotate(-Math.PI / 2); ctx.fillText(options.yLabel, 0, 0); ctx.restore();
  for (const h of options.hLines || []) {
    ctx.strokeStyle = h.colour; ctx.setLineDash([5, 4]); ctx.beginPath(); ctx.moveTo(m.l, Y(h.y)); ctx.lineTo(W - m.r, Y(h.y)); ctx.stroke();
    ctx.setLineDash([]); ctx.fillStyle = h.colour; ctx.textAlign = "right"; ctx.fillText(h.label, W - m.r - 4, Y(h.y) - 4);
  }
  const hits = [];
  for (const s of series) {
    ctx.strokeStyle = s.colour; ctx.fillStyle = s.colour; ctx.lineWidth = 2;
    if (s.line) {
      ctx.beginPath();
      s.points.forEach((p, i) => (i ? ctx.lineTo(X(p[0]), Y(p[1])) : ctx.moveTo(X(p[0]), Y(p[1]))));
      ctx.stroke();
    }
    s.points.forEach((p, i) => {
      if (s.line) return;
      const colour = s.colourOf ? s.colourOf(i) : s.colour;
      ctx.fillStyle = colour; ctx.strokeStyle = colour;
      ctx.beginPath(); ctx.arc(X(p[0]), Y(p[1]), s.selected === i ? 7 : 4.5, 0, 2 * Math.PI);
      if (s.hollow && s.hollow(i)) ctx.stroke(); else ctx.fill();
      hits.push({ x: X(p[0]), y: Y(p[1]), index: i, series: s.name });
    });
  }
  return hits;
}

export async function showAverage(view, runId, output, key) {
  const run = await api(`/api/runs/${runId}`);
  const items = await api(`/api/runs/${runId}/outputs/${encodeURIComponent(output)}/items`);
  const average = items.find((i) => i.key === key);
  if (!average) throw new Error(`${key} is not in ${run.name}.${output}`);
  const slices = el("div", { class: "grid2", style: "grid-template-columns: repeat(3, minmax(0, 1fr))" },
    ["z", "y", "x"].map((axis) => el("figure", { style: "margin:0" },
      el("img", { src: `/api/volume/slice?path=${encodeURIComponent(average.path)}&axis=${axis}&binning=1&per_slice=true`,
        style: "width:100%;image-rendering:pixelated;border-radius:6px;background:#111", alt: `${axis} central slice`, "data-axis": axis }),
      el("figcaption", { class: "muted" }, `central ${{ z: "XY", y: "XZ", x: "YZ" }[axis]} slice`))));
  view.append(el("div", { class: "page-head" }, el("div", {}, el("h1", {}, `Average ${key}`),
    el("p", {}, el("a", { href: `#/run/${runId}` }, `${run.name}.${output}`),
      ` · ${average.size_xyz.join(" × ")} voxels · ${fmt(average.pixel_size_a, 2)} Å/voxel · ${average.symmetry}`,
      average.resolution_a ? ` · ${fmt(average.resolution_a, 1)} Å (FSC 0.143)` : "",
      average.particle_count ? ` · ${average.particle_count} particles` : ""))),
  el("div", { class: "panel" }, slices),
  el("div", { class: "panel" }, el("h2", {}, "3D"), new IsosurfaceView(average.path).node));
  if (average.fsc && average.fsc.length) {
    const canvas = el("canvas", { id: "fsc-plot", width: 760, height: 360, style: "width:100%;max-width:760px" });
    view.append(el("div", { class: "panel" }, el("h2", {}, "Gold-standard FSC"), canvas));
    const series = [{ name: "fsc", line: true, colour: "#2b6cb0", points: average.fsc.map((s) => [s.frequency_inv_a, s.fsc]) }];
    if (average.fsc.some((s) => s.fsc_phase_randomised !== null && s.fsc_phase_randomised !== undefined)) {
      series.push({ name: "phase-randomised", line: true, colour: "#a0aec0",
        points: average.fsc.filter((s) => s.fsc_phase_randomised !== null).map((s) => [s.frequency_inv_a, s.fsc_phase_randomised]) });
    }
    plot(canvas, series,
      { xLabel: "resolution (Å)", yLabel: "FSC", yRange: [-0.1, 1.05], xTick: (f) => (f > 0 ? fmt(1 / f, 1) : "∞"),
        hLines: [{ y: average.fsc_threshold || 0.143, colour: "#c53030", label: String(average.fsc_threshold || 0.143) }] });
  }
}
