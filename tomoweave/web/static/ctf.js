// CTF assistant (defocus against tilt, flagged tilts, diagnostics, accept/reject through the
// ctf.assess protocol) and the average viewer (central slices and the FSC curve).
import { api, el, fixed, fmt } from "./app.js";

const ASSESS_PROTOCOL = "ctf.assess";

// A scatter/line plot on a canvas; returns the pixel positions of the points for hit-testing.
function plot(canvas, series, options) {
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

export async function showCtf(view, runId, output, key) {
  const run = await api(`/api/runs/${runId}`);
  const items = await api(`/api/runs/${runId}/outputs/${encodeURIComponent(output)}/items`);
  const series = items.find((i) => i.key === key);
  if (!series) throw new Error(`${key} is not in ${run.name}.${output}`);
  const tilts = series.tilts.map((t, i) => ({ ...t, stackIndex: i })).filter((t) => t.ctf);
  view.append(el("div", { class: "page-head" }, el("div", {}, el("h1", {}, `CTF assistant · ${key}`),
    el("p", {}, el("a", { href: `#/run/${runId}` }, `${run.name}.${output}`),
      ` · ${tilts.length} of ${series.tilts.length} tilts have a CTF fit`))));
  if (!tilts.length) {
    view.append(el("div", { class: "panel empty" }, "No CTF estimates in this tilt series yet: run a CTF estimation protocol on it first."));
    return;
  }
  const protocols = await api("/api/protocols");
  const assess = protocols.find((p) => p.name === ASSESS_PROTOCOL);
  const mean = (t) => (t.ctf.defocus_u_a + t.ctf.defocus_v_a) / 2e4;  // µm
  // the same rule as ctf.assess: relative deviation of U or V from the mean of the unflagged tilts
  const st = { tolerance: 0.2, selected: null, keep: new Map(), flags: new Map(), meanU: 0, meanV: 0 };
  function assessRule() {
    let flags = tilts.map((t) => t.excluded);
    for (let iteration = 0; iteration < 20; iteration++) {
      const kept = tilts.filter((_, i) => !flags[i]);
      const pool = kept.length ? kept : tilts;
      st.meanU = pool.reduce((a, t) => a + t.ctf.defocus_u_a, 0) / pool.length;
      st.meanV = pool.reduce((a, t) => a + t.ctf.defocus_v_a, 0) / pool.length;
      const next = tilts.map((t) => t.excluded || Math.abs(t.ctf.defocus_u_a - st.meanU) / st.meanU > st.tolerance ||
        Math.abs(t.ctf.defocus_v_a - st.meanV) / st.meanV > st.tolerance);
      const same = next.every((f, i) => f === flags[i]);
      flags = next;
      if (same) break;
    }
    tilts.forEach((t, i) => { st.flags.set(t.stackIndex, flags[i]); st.keep.set(t.stackIndex, !flags[i]); });
  }
  const flagged = (t) => st.flags.get(t.stackIndex);
  assessRule();
  const canvas = el("canvas", { id: "ctf-plot", width: 900, height: 400, style: "width:100%;cursor:pointer" });
  const detail = el("div", { class: "diagnostic", id: "ctf-detail" }, el("p", { class: "muted" }, "Click a point to see that tilt's spectrum and fit."));
  const thresholdInput = el("input", { type: "number", id: "ctf-threshold", min: 1, max: 500, step: 1, value: st.tolerance * 100, style: "width:90px" });
  const table = el("tbody");
  const message = el("div", { class: "status-line", id: "assess-status" });
  let hits = [];

  function redraw() {
    const points = tilts.map((t) => [t.tilt_deg, mean(t)]);
    const centre = (st.meanU + st.meanV) / 2e4;
    const values = points.map((p) => p[1]).concat([centre * (1 - st.tolerance), centre * (1 + st.tolerance)]);
    const span = Math.max(...values) - Math.min(...values);
    const yRange = [Math.min(...values) - 0.06 * span, Math.max(...values) + 0.06 * span];
    hits = plot(canvas, [
      { name: "mean", points, colour: "#2b6cb0", selected: st.selected,
        colourOf: (i) => (st.keep.get(tilts[i].stackIndex) ? (flagged(tilts[i]) ? "#c27c0e" : "#2b6cb0") : "#c53030"),
        hollow: (i) => flagged(tilts[i]) },
    ], { xLabel: "tilt (°)", yLabel: "mean defocus (µm, underfocus +)", yRange,
      hLines: [{ y: centre, colour: "#2f855a", label: `mean ${fmt(centre, 2)} µm` },
        { y: centre * (1 + st.tolerance), colour: "#c27c0e", label: `+${fmt(st.tolerance * 100, 0)} %` },
        { y: centre * (1 - st.tolerance), colour: "#c27c0e", label: `−${fmt(st.tolerance * 100, 0)} %` }] });
    const byAngle = tilts.map((t, i) => [t, i]).sort((a, b) => a[0].tilt_deg - b[0].tilt_deg);
    table.replaceChildren(...byAngle.map(([t, i]) => {
      const box = el("input", { type: "checkbox", checked: st.keep.get(t.stackIndex), "data-tilt": t.tilt_deg,
        "data-index": t.stackIndex, title: "keep this tilt (in the good set)",
        onchange: () => { st.keep.set(t.stackIndex, box.checked); redraw(); } });
      return el("tr", { class: `clickable${st.selected === i ? " selected" : ""}`, "data-index": t.stackIndex,
        onclick: (e) => { if (e.target !== box) select(i); } },
        el("td", {}, box), el("td", { class: "num" }, `${fixed(t.tilt_deg, 1)}°`),
        el("td", { class: "num" }, fmt(t.ctf.defocus_u_a / 1e4, 3)), el("td", { class: "num" }, fmt(t.ctf.defocus_v_a / 1e4, 3)),
        el("td", { class: "num" }, t.ctf.fit_resolution_a == null ? "–" : fmt(t.ctf.fit_resolution_a, 1)),
        el("td", {}, flagged(t) ? el("b", { style: "color:#c27c0e" }, t.excluded ? "excluded" : "deviates") : ""));
    }));
  }

  function select(i) {
    st.selected = i;
    const t = tilts[i];
    detail.replaceChildren(el("h2", {}, `Tilt ${fixed(t.tilt_deg, 1)}° (stack slice ${t.stackIndex})`),
      el("dl", { class: "kv" }, el("dt", {}, "defocus U / V"), el("dd", {}, `${fmt(t.ctf.defocus_u_a / 1e4, 3)} / ${fmt(t.ctf.defocus_v_a / 1e4, 3)} µm`),
        el("dt", {}, "astigmatism angle"), el("dd", {}, `${fmt(t.ctf.astigmatism_angle_deg, 1)}°`),
        el("dt", {}, "phase shift"), el("dd", {}, `${fmt(t.ctf.phase_shift_deg, 1)}°`),
        el("dt", {}, "fit resolution"), el("dd", {}, t.ctf.fit_resolution_a == null ? "–" : `${fmt(t.ctf.fit_resolution_a, 1)} Å`),
        el("dt", {}, "score"), el("dd", {}, fmt(t.ctf.score, 3))),
      t.ctf.diagnostic_path ? el("img", { src: `/api/file?path=${encodeURIComponent(t.ctf.diagnostic_path)}`, alt: "spectrum and fit", id: "ctf-diagnostic" })
        : el("p", { class: "muted" }, "No diagnostic image for this tilt."));
    redraw();
  }

  canvas.addEventListener("click", (event) => {
    const rect = canvas.getBoundingClientRect();
    const x = (event.clientX - rect.left) * (canvas.width / rect.width), y = (event.clientY - rect.top) * (canvas.height / rect.height);
    let best = null;
    for (const h of hits) { const d = Math.hypot(h.x - x, h.y - y); if (d < 14 && (!best || d < best.d)) best = { ...h, d }; }
    if (best) select(best.index);
  });
  thresholdInput.addEventListener("change", () => {
    st.tolerance = Math.max(0.01, (Number(thresholdInput.value) || 20) / 100);
    assessRule();
    redraw();
  });

  async function runAssessment() {
    // the person's choice is final: every checked tilt kept, every other dropped (by stack index)
    const kept = tilts.filter((t) => st.keep.get(t.stackIndex)).map((t) => t.stackIndex);
    const dropped = tilts.filter((t) => !st.keep.get(t.stackIndex)).map((t) => t.stackIndex);
    const wanted = { tolerance: st.tolerance, keep_tilts: kept, drop_tilts: dropped, by: "index" };
    const declared = assess.params.properties || {};
    const params = Object.fromEntries(Object.entries(wanted).filter(([name]) => name in declared));
    // a few numbers per series: inline avoids starting a worker pool
    const body = { protocol: ASSESS_PROTOCOL, inputs: {}, params, executor: "inline" };
    const tiltInput = Object.entries(assess.inputs).find(([, s]) => s.type === "TiltSeries");
    if (tiltInput) body.inputs[tiltInput[0]] = `${run.name}.${output}`;
    message.className = "status-line";
    message.textContent = "Launching ctf.assess…";
    try {
      const created = await api("/api/runs", { json: body });
      location.hash = `#/run/${created.id}`;
    } catch (error) { message.className = "status-line error"; message.textContent = error.message; }
  }

  view.append(el("div", { class: "viewer" },
    el("div", {}, el("div", { class: "panel" }, canvas,
      el("p", { class: "hint" }, "Filled: within the threshold · hollow: flagged · red: rejected. Click a point for its spectrum.")),
    el("div", { class: "panel" }, el("table", { class: "data" }, el("thead", {}, el("tr", {}, el("th", {}, "keep"), el("th", {}, "tilt"),
      el("th", {}, "defocus U (µm)"), el("th", {}, "defocus V (µm)"), el("th", {}, "fit res. (Å)"), el("th", {}, "flag"))), table))),
    el("div", {}, el("div", { class: "panel controls" },
      el("label", { for: "ctf-threshold", title: "as ctf.assess: defocus U or V farther than this from the series mean (of unflagged tilts)" },
        "Flag defocus deviating from the mean by more than ", el("span", { class: "unit" }, "(%)")), thresholdInput,
      el("div", { class: "buttons", style: "margin-top:12px" },
        el("button", { class: "primary", id: "assess-button", disabled: !assess, onclick: runAssessment,
          title: assess ? "make good/bad subsets with ctf.assess" : "the ctf.assess protocol is not installed" },
          "Accept checked, reject the rest")),
      assess ? el("p", { class: "hint" }, `Runs ${assess.label} (${ASSESS_PROTOCOL}): checked tilts go to its good set, `,
        "the others to its bad set, with provenance.") : el("p", { class: "hint" }, "ctf.assess is not available in this installation."),
      message),
    el("div", { class: "panel" }, detail))));
  redraw();
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
  el("div", { class: "panel" }, slices));
  if (average.fsc && average.fsc_frequency_inv_a) {
    const canvas = el("canvas", { id: "fsc-plot", width: 760, height: 360, style: "width:100%;max-width:760px" });
    view.append(el("div", { class: "panel" }, el("h2", {}, "Gold-standard FSC"), canvas));
    plot(canvas, [{ name: "fsc", line: true, colour: "#2b6cb0", points: average.fsc_frequency_inv_a.map((f, i) => [f, average.fsc[i]]) }],
      { xLabel: "resolution (Å)", yLabel: "FSC", yRange: [-0.1, 1.05], xTick: (f) => (f > 0 ? fmt(1 / f, 1) : "∞"),
        hLines: [{ y: 0.143, colour: "#c53030", label: "0.143" }] });
  }
}
