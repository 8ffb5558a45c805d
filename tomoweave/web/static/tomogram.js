// Tomogram (or any volume) viewer: XY/XZ/YZ slices served as PNG with binning and contrast,
// particles drawn near the slice plane with their orientation, and manual picking saved through
// a pick.manual run (so every click has provenance).
import { api, el, fmt, setCleanup, whenAttached } from "./app.js";

const PLANES = {  // slice normal -> [horizontal axis, vertical axis, depth axis] as x=0, y=1, z=2
  z: { label: "XY", axes: [0, 1, 2] }, y: { label: "XZ", axes: [0, 2, 1] }, x: { label: "YZ", axes: [1, 2, 0] },
};
const AXIS_NAMES = ["x", "y", "z"];
const SET_COLOURS = ["#f6ad55", "#68d391", "#63b3ed", "#f687b3", "#b794f4", "#fc8181", "#4fd1c5"];
const PICK_COLOUR = "#ffe066";
const SLICE_CACHE = 12;
const STEP_KEYS = { ArrowUp: 1, ArrowRight: 1, PageUp: 10, ArrowDown: -1, ArrowLeft: -1, PageDown: -10 };

class TomogramViewer {
  constructor(run, output, key, item, info) {
    Object.assign(this, { run, output, key, item });
    this.size = info.size_xyz;  // voxels (x, y, z)
    this.pix = item.pixel_size_a;
    this.isTomogram = item.type === "Tomogram";
    this.st = {
      axis: "z", index: { z: this.size[2] >> 1, y: this.size[1] >> 1, x: this.size[0] >> 1 },
      binning: 0, low: -3, high: 3, window: 4, markerA: Math.max(30, 6 * this.pix),
      sets: [], hidden: new Set(), picking: false, target: null, picks: [], seq: 0, shownBinning: 1, scale: 1,
    };
    this.image = new Image();
    this.slices = new Map();  // slice URL -> pending {shown binning, PNG blob}, oldest first
    this.saveTimer = null;
    this.buildSliceControls();
    this.buildParticleControls();
  }

  buildSliceControls() {
    this.canvas = el("canvas", { id: "slice-canvas", width: 400, height: 400, "aria-label": "tomogram slice" });
    this.wrap = el("div", { class: "canvas-wrap" }, this.canvas);
    this.readout = el("div", { class: "status-line", id: "cursor-readout" }, "Move over the slice for coordinates.");
    this.sliceValue = el("span", { class: "value", id: "slice-value" });
    this.slider = el("input", { type: "range", id: "slice-slider", min: 0, step: 1 });
    this.planeButtons = el("div", { class: "seg", role: "group" }, Object.entries(PLANES).map(([axis, p]) =>
      el("button", { type: "button", "data-axis": axis, title: `slices normal to ${axis.toUpperCase()}`,
        onclick: () => { this.st.axis = axis; this.refresh(); } }, p.label)));
    this.binning = el("select", { id: "binning-select", title: "average blocks of voxels: faster, smoother on big volumes" },
      [["0", "auto"], ["1", "1 (full)"], ["2", "2"], ["4", "4"], ["8", "8"]].map(([v, t]) => el("option", { value: v }, t)));
    this.low = el("input", { type: "range", id: "contrast-low", min: -8, max: 2, step: 0.1, value: this.st.low });
    this.high = el("input", { type: "range", id: "contrast-high", min: -2, max: 8, step: 0.1, value: this.st.high });
    this.contrastValue = el("span", { class: "value" });
    this.slider.addEventListener("input", () => { this.st.index[this.st.axis] = Number(this.slider.value); this.refresh(); });
    this.binning.addEventListener("change", () => { this.st.binning = Number(this.binning.value); this.load(); });
    for (const [input, name] of [[this.low, "low"], [this.high, "high"]]) {
      input.addEventListener("input", () => { this.st[name] = Number(input.value); this.sync(); });
      input.addEventListener("change", () => this.load());
    }
    this.canvas.addEventListener("mousemove", (event) => this.showCursor(event));
    this.canvas.addEventListener("click", (event) => this.togglePickAt(event));
    this.canvas.addEventListener("wheel", (event) => { event.preventDefault(); this.step(event.deltaY > 0 ? 1 : -1); },
      { passive: false });
  }

  buildParticleControls() {
    this.windowInput = el("input", { type: "range", min: 0, max: 40, step: 1, value: this.st.window, id: "depth-window" });
    this.windowValue = el("span", { class: "value" });
    this.markerInput = el("input", { type: "number", id: "marker-radius", min: 1, step: 10,
      value: Math.round(this.st.markerA), style: "width:90px" });
    this.setList = el("div", { id: "particle-sets" });
    this.pickStatus = el("div", { class: "status-line", id: "pick-status" });
    this.pickToggle = el("button", { type: "button", class: "secondary", id: "pick-toggle" }, "Start picking");
    this.targetSelect = el("select", { id: "pick-target", title: "the pick.manual run the clicks are saved in" });
    this.windowInput.addEventListener("input", () => { this.st.window = Number(this.windowInput.value); this.draw(); });
    this.markerInput.addEventListener("change", () => {
      this.st.markerA = Math.max(1, Number(this.markerInput.value) || this.st.markerA);
      this.draw();
    });
    this.targetSelect.addEventListener("change", () => this.selectTarget(this.targetSelect.value || null));
    this.pickToggle.addEventListener("click", () => this.togglePicking());
  }

  // Binned pixel i covers voxels [i*b, i*b+b): its centre is voxel i*b + (b-1)/2.
  toDisplay(voxel) { return ((voxel - (this.st.shownBinning - 1) / 2) / this.st.shownBinning + 0.5) * this.st.scale; }
  toVoxel(display) { return (display / this.st.scale - 0.5) * this.st.shownBinning + (this.st.shownBinning - 1) / 2; }
  // Slices are drawn y up (3dmod's convention, the run pictures'): the vertical axis counts from the bottom.
  toDisplayV(voxel) { return this.image.height * this.st.scale - this.toDisplay(voxel); }
  toVoxelV(display) { return this.toVoxel(this.image.height * this.st.scale - display); }
  planeDepth() { return this.st.index[this.st.axis] + (this.st.shownBinning - 1) / 2; }
  voxelOf(positionA) { return positionA.map((a, axis) => a / this.pix + (this.size[axis] >> 1)); }
  markerRadius(minimum) { return Math.max(minimum, (this.st.markerA / this.pix / this.st.shownBinning) * this.st.scale); }

  refresh() {
    this.readout.textContent = "Move over the slice for coordinates.";  // the old one is of another plane
    this.sync();
    this.load();
  }

  step(delta) {
    this.stepStarted = performance.now();
    const depthAxis = PLANES[this.st.axis].axes[2];
    const index = this.st.index[this.st.axis] + delta;
    this.st.index[this.st.axis] = Math.max(0, Math.min(this.size[depthAxis] - 1, index));
    this.refresh();
  }

  sync() {
    const { st, size, pix } = this;
    for (const b of this.planeButtons.children) b.classList.toggle("on", b.dataset.axis === st.axis);
    const depthAxis = PLANES[st.axis].axes[2];
    this.slider.max = size[depthAxis] - 1;
    this.slider.value = st.index[st.axis];
    const fromCentre = (st.index[st.axis] - (size[depthAxis] >> 1)) * pix;
    this.sliceValue.textContent = `${AXIS_NAMES[depthAxis]} = ${st.index[st.axis]} / ${size[depthAxis]} px · ` +
      `${fromCentre >= 0 ? "+" : ""}${fmt(fromCentre / 10, 1)} nm`;
    this.contrastValue.textContent = `${fmt(st.low, 1)} σ … ${fmt(st.high, 1)} σ`;
    this.windowValue.textContent = `± ${st.window} px (${fmt(st.window * pix / 10, 1)} nm)`;
  }

  sliceUrl(index) {
    const { st } = this;
    return `/api/volume/slice?path=${encodeURIComponent(this.item.path)}&axis=${st.axis}` +
      `&index=${index}&binning=${st.binning}&low_sigma=${st.low}&high_sigma=${st.high}`;
  }

  // Slices are fetched once: the neighbours of the shown one are fetched ahead, so a step
  // with the wheel or the arrow keys only decodes and draws.
  fetchSlice(url) {
    if (!this.slices.has(url)) {
      const pending = fetch(url).then(async (response) => {
        if (!response.ok) throw new Error(await response.text());
        return { shown: Number(response.headers.get("X-Binning") || 1), blob: await response.blob() };
      });
      pending.catch(() => this.slices.delete(url));
      this.slices.set(url, pending);
      while (this.slices.size > SLICE_CACHE) this.slices.delete(this.slices.keys().next().value);
    }
    return this.slices.get(url);
  }

  prefetch() {
    const { st, size } = this;
    const depth = size[PLANES[st.axis].axes[2]];
    for (const delta of [1, -1, 2, -2]) {
      const index = st.index[st.axis] + delta;
      if (index >= 0 && index < depth) this.fetchSlice(this.sliceUrl(index)).catch(() => {});
    }
  }

  load() {
    const { st } = this;
    const seq = ++st.seq;
    const asked = `${st.axis}:${st.index[st.axis]}`;
    this.fetchSlice(this.sliceUrl(st.index[st.axis])).then(({ shown, blob }) => {
      if (seq !== st.seq) return;  // a newer slice was asked for meanwhile
      const objectUrl = URL.createObjectURL(blob);
      this.image.onload = () => whenAttached(this.wrap, () => {
        URL.revokeObjectURL(objectUrl);
        if (seq === st.seq) { this.shownSlice = asked; this.fit(shown); this.prefetch(); }
      });
      this.image.src = objectUrl;
    }).catch((error) => { this.readout.textContent = `Slice failed: ${error.message}`; });
  }

  fit(shownBinning) {
    const { image, canvas, st } = this;
    st.shownBinning = shownBinning;
    const maxW = Math.max(320, this.wrap.clientWidth - 4), maxH = Math.max(320, window.innerHeight * 0.78);
    st.scale = Math.min(maxW / image.width, maxH / image.height, 8);
    canvas.width = Math.round(image.width * st.scale);
    canvas.height = Math.round(image.height * st.scale);
    this.draw();
  }

  particlesToDraw() {
    const { st } = this;
    const [h, v, d] = PLANES[st.axis].axes;
    const depth = this.planeDepth();
    const out = [];
    st.sets.forEach((set, index) => {
      if (st.hidden.has(set.reference)) return;
      const editing = st.picking && set.reference === st.target;
      const columns = editing ? picksColumns(st.picks) : set.columns;
      const count = columns.length / COLUMNS;
      const colour = editing ? PICK_COLOUR : SET_COLOURS[index % SET_COLOURS.length];
      const centre = this.size.map((n) => n >> 1);
      for (let i = 0, o = 0; i < count; i++, o += COLUMNS) {
        // the depth test first, on the raw column: 10⁵ particles per slice step
        const depthVoxel = columns[o + d] / this.pix + centre[d];
        const distance = Math.abs(depthVoxel - depth);
        if (distance > st.window + 0.5) continue;
        const hv = columns[o + h] / this.pix + centre[h], vv = columns[o + v] / this.pix + centre[v];
        const zAxis = editing ? null : [columns[o + 3], columns[o + 4], columns[o + 5]];
        out.push({ x: this.toDisplay(hv), y: this.toDisplayV(vv), distance, zAxis, colour, axes: [h, v] });
      }
    });
    return out;
  }

  draw() {
    const { canvas, st } = this;
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = st.scale < 1;
    ctx.drawImage(this.image, 0, 0, canvas.width, canvas.height);
    const radius = this.markerRadius(4);
    const started = performance.now();
    const drawn = this.particlesToDraw();
    const selected = performance.now();
    drawParticles(ctx, drawn, radius, st.window);
    this.drawScaleBar(ctx);
    canvas.dataset.selectMs = (selected - started).toFixed(1);  // for the benchmark
    canvas.dataset.markMs = (performance.now() - selected).toFixed(1);
    if (this.stepStarted) canvas.dataset.stepMs = (performance.now() - this.stepStarted).toFixed(1);
    canvas.dataset.drawn = String(drawn.length);
    canvas.dataset.slice = this.shownSlice || "";  // the plane on the canvas now (axis:index)
    canvas.dataset.sets = String(this.setsLoaded ? st.sets.length : -1);
    canvas.dataset.scale = String(st.scale);
    canvas.dataset.binning = String(st.shownBinning);
    canvas.classList.toggle("pick-on", st.picking);
    this.sync();
  }

  // A scale bar in nm, bottom left: a round length near a fifth of the width (issue 18.9).
  drawScaleBar(ctx) {
    const { canvas, st } = this;
    const pxPerNm = (10 / this.pix / st.shownBinning) * st.scale;
    const wanted = canvas.width / 5 / pxPerNm;
    const magnitude = 10 ** Math.floor(Math.log10(wanted));
    const nm = [1, 2, 5, 10].map((m) => m * magnitude).filter((v) => v <= wanted).pop() || magnitude;
    const length = nm * pxPerNm;
    const x = 12, y = canvas.height - 14;
    ctx.fillStyle = "#fff";
    ctx.fillRect(x, y, length, 4);
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillText(`${nm >= 1 ? nm : nm.toFixed(1)} nm`, x, y - 5);
    Object.assign(canvas.dataset, { scaleBarNm: String(nm), scaleBarPx: length.toFixed(2) });
  }

  async loadParticles() {
    if (!this.isTomogram) return;
    const { st } = this;
    const sets = await api(`/api/particles?tomogram=${encodeURIComponent(this.key)}&source_run=${this.run.id}` +
      `&source_output=${encodeURIComponent(this.output)}`);
    await Promise.all(sets.map(async (set) => {
      if (set.particles) { set.columns = particleColumns(set.particles); return; }
      const response = await fetch(`/api/particles/columns?set_id=${set.set_id}&tomogram=${encodeURIComponent(this.key)}`);
      if (!response.ok) throw new Error(await response.text());
      set.columns = new Float32Array(await response.arrayBuffer());
    }));
    if (!this.setsLoaded) {  // the newest set is drawn at first, the others on request
      for (const set of sets.slice(0, -1)) if (!set.editable) st.hidden.add(set.reference);
    }
    st.sets = sets;
    this.setsLoaded = true;
    this.setList.replaceChildren(...(st.sets.length ? st.sets.map((set, index) => this.setRow(set, index))
      : [el("p", { class: "muted" }, "No particles of this tomogram yet.")]));
    const editable = st.sets.filter((s) => s.editable);
    const current = st.target;
    this.targetSelect.replaceChildren(el("option", { value: "" }, "a new pick.manual run"),
      ...editable.map((s) => el("option", { value: s.reference, selected: s.reference === current }, `${s.run} (${s.count})`)));
    if (!current && editable.length) this.targetSelect.value = editable[editable.length - 1].reference;
    this.selectTarget(this.targetSelect.value || null, false);
    this.draw();
  }

  setRow(set, index) {
    const { hidden } = this.st;
    const box = el("input", { type: "checkbox", checked: !hidden.has(set.reference), onchange: () => {
      if (box.checked) hidden.delete(set.reference); else hidden.add(set.reference);
      this.draw();
    } });
    const count = set.count;
    return el("label", { class: "set-row", title: `${set.protocol} · ${set.state}` }, box,
      el("span", { class: "swatch", style: `margin-right:4px;background:${SET_COLOURS[index % SET_COLOURS.length]}` }),
      el("a", { href: `#/run/${set.run_id}` }, set.run), el("span", { class: "muted" }, ` ${count} particle${count === 1 ? "" : "s"}`));
  }

  selectTarget(reference, redraw = true) {
    this.st.target = reference;
    const set = this.st.sets.find((s) => s.reference === reference);
    this.st.picks = set ? set.particles.map((p) => [...p.position_a]) : [];
    if (redraw) this.draw();
  }

  togglePicking() {
    const { st, pickToggle, pickStatus } = this;
    st.picking = !st.picking;
    pickToggle.textContent = st.picking ? "Stop picking" : "Start picking";
    pickToggle.className = st.picking ? "primary" : "secondary";
    pickStatus.className = "status-line";
    pickStatus.textContent = st.picking ? "Click to add a particle on this slice; click a yellow one to remove it." : "";
    if (st.picking) this.selectTarget(st.target);
    this.draw();
  }

  eventVoxel(event) {
    const rect = this.canvas.getBoundingClientRect();
    const dx = (event.clientX - rect.left) * (this.canvas.width / rect.width);
    const dy = (event.clientY - rect.top) * (this.canvas.height / rect.height);
    const [h, v, d] = PLANES[this.st.axis].axes;
    const voxel = [0, 0, 0];
    voxel[h] = this.toVoxel(dx);
    voxel[v] = this.toVoxelV(dy);
    voxel[d] = this.planeDepth();
    return { voxel, dx, dy };
  }

  showCursor(event) {
    const { voxel } = this.eventVoxel(event);
    const a = voxel.map((x, i) => (x - (this.size[i] >> 1)) * this.pix);
    this.readout.textContent = `voxel (${voxel.map((x) => x.toFixed(0)).join(", ")}) · ` +
      `from centre (${a.map((x) => fmt(x / 10, 1)).join(", ")}) nm`;
  }

  togglePickAt(event) {
    const { st } = this;
    if (!st.picking) return;
    const { voxel, dx, dy } = this.eventVoxel(event);
    const [h, v, d] = PLANES[st.axis].axes;
    const radius = this.markerRadius(6);
    const near = st.picks.findIndex((p) => {
      const q = this.voxelOf(p);
      return Math.hypot(this.toDisplay(q[h]) - dx, this.toDisplayV(q[v]) - dy) <= radius &&
        Math.abs(q[d] - voxel[d]) <= st.window + 0.5;
    });
    if (near >= 0) st.picks.splice(near, 1);  // a click on a pick removes it
    else st.picks.push(voxel.map((x, axis) => Number(((x - (this.size[axis] >> 1)) * this.pix).toFixed(2))));
    this.draw();
    this.scheduleSave();
  }

  scheduleSave() {
    this.pickStatus.className = "status-line";
    this.pickStatus.textContent = `${this.st.picks.length} picks · saving…`;
    clearTimeout(this.saveTimer);
    this.saveTimer = setTimeout(() => this.save(), 350);
  }

  async save() {
    const { st, pickStatus } = this;
    const set = st.sets.find((s) => s.reference === st.target);
    try {
      const result = await api("/api/picks", { json: { tomograms: `${this.run.name}.${this.output}`,
        tomogram: this.key, picks_a: st.picks, run: set ? set.run : null } });
      const reference = `${result.name}.particles`;
      st.target = reference;
      await this.loadParticles();
      this.targetSelect.value = reference;
      pickStatus.className = "status-line saved";
      pickStatus.textContent = `${st.picks.length} picks saved in run ${result.name} (${result.state})`;
      pickStatus.dataset.run = result.name;
    } catch (error) {
      pickStatus.className = "status-line error";
      pickStatus.textContent = `Not saved: ${error.message}`;
    }
  }

  layout() {
    const { size, pix, item } = this;
    const details = `${size.join(" × ")} voxels · ${fmt(pix, 2)} Å/voxel · ${size.map((n) => fmt(n * pix / 10, 0)).join(" × ")} nm` +
      (item.method ? ` · ${item.method}` : "") + (item.binning && item.binning !== 1 ? ` · binning ${item.binning}` : "");
    return [
      el("div", { class: "page-head" }, el("div", {},
        el("h1", {}, `${this.isTomogram ? "Tomogram" : item.type} ${this.key}`),
        el("p", {}, el("a", { href: `#/run/${this.run.id}` }, `${this.run.name}.${this.output}`), " · ", details))),
      el("div", { class: "viewer" }, el("div", {}, this.wrap, this.readout),
        el("div", { class: "panel controls" }, this.sliceControls(), this.isTomogram ? this.particleControls() : []))];
  }

  sliceControls() {
    return [
      el("label", {}, "Plane"), this.planeButtons,
      el("label", { for: "slice-slider", title: "mouse wheel or arrow keys step one slice" }, "Slice ", this.sliceValue), this.slider,
      el("label", { for: "binning-select", title: "auto keeps the slice within 1024 pixels" }, "Binning ",
        el("span", { class: "unit" }, "(voxels per pixel)")), this.binning,
      el("label", { title: "grey range, in standard deviations around the volume mean: black at the first, white at the second" },
        "Contrast ", this.contrastValue),
      el("div", { class: "hint" }, "black point"), this.low, el("div", { class: "hint" }, "white point"), this.high];
  }

  particleControls() {
    return [
      el("h2", { style: "margin-top:16px" }, "Particles"),
      el("label", { for: "depth-window", title: "particles this close to the slice plane are drawn (fainter when farther)" },
        "Show within ", this.windowValue), this.windowInput,
      el("label", { for: "marker-radius", title: "radius of the circle drawn around each particle" }, "Marker radius ",
        el("span", { class: "unit" }, "(Å)")), this.markerInput,
      el("div", { style: "margin-top:8px" }, this.setList),
      el("h2", { style: "margin-top:16px" }, "Manual picking"),
      el("p", { class: "hint" }, "Picks are saved through a pick.manual run, so they keep their provenance."),
      el("label", { for: "pick-target" }, "Save picks in"), this.targetSelect,
      el("div", { class: "buttons", style: "margin-top:8px" }, this.pickToggle), this.pickStatus];
  }
}

// Particles as one Float32Array, COLUMNS per particle: x, y, z (Å), rotated Z axis, score.
const COLUMNS = 7;

function particleColumns(particles) {
  const columns = new Float32Array(particles.length * COLUMNS);
  particles.forEach((p, i) => {
    columns.set(p.position_a, i * COLUMNS);
    columns.set(p.rotation ? [p.rotation[0][2], p.rotation[1][2], p.rotation[2][2]] : [0, 0, 1], i * COLUMNS + 3);
    columns[i * COLUMNS + 6] = p.score ?? NaN;
  });
  return columns;
}

function picksColumns(picks) {
  return particleColumns(picks.map((p) => ({ position_a: p, rotation: null })));
}

// One path per colour and fading step (fainter when farther from the plane): thousands of
// markers on a slice of a 10⁵-particle set are a few stroke() calls, not thousands.
const FADE_STEPS = 4;

function drawParticles(ctx, drawn, radius, window) {
  const groups = new Map();
  for (const p of drawn) {
    const fade = Math.min(FADE_STEPS - 1, Math.floor((FADE_STEPS * p.distance) / (window + 1.5)));
    const key = `${p.colour}|${fade}`;
    if (!groups.has(key)) groups.set(key, { colour: p.colour, alpha: 1 - (0.6 * fade) / (FADE_STEPS - 1), items: [] });
    groups.get(key).items.push(p);
  }
  ctx.lineWidth = 2;
  for (const { colour, alpha, items } of groups.values()) {
    ctx.globalAlpha = alpha;
    ctx.strokeStyle = colour;
    ctx.fillStyle = colour;
    ctx.beginPath();
    for (const p of items) {
      ctx.moveTo(p.x + radius, p.y);
      ctx.arc(p.x, p.y, radius, 0, 2 * Math.PI);
      if (p.zAxis) {  // the particle's rotated Z axis (third column), projected on the plane
        ctx.moveTo(p.x, p.y);
        ctx.lineTo(p.x + p.zAxis[p.axes[0]] * radius * 1.8, p.y - p.zAxis[p.axes[1]] * radius * 1.8);  // canvas y runs down
      }
    }
    ctx.stroke();
    ctx.beginPath();
    for (const p of items) ctx.rect(p.x - 1.5, p.y - 1.5, 3, 3);
    ctx.fill();
  }
  ctx.globalAlpha = 1;
}

export async function showTomogram(view, runId, output, key) {
  const run = await api(`/api/runs/${runId}`);
  const items = await api(`/api/runs/${runId}/outputs/${encodeURIComponent(output)}/items`);
  const item = items.find((i) => i.key === key);
  if (!item) throw new Error(`${key} is not in ${run.name}.${output}`);
  const info = await api(`/api/volume/info?path=${encodeURIComponent(item.path)}`);
  const viewer = new TomogramViewer(run, output, key, item, info);
  const onKey = (event) => {
    if (event.target.tagName === "INPUT" || event.target.tagName === "SELECT") return;
    if (STEP_KEYS[event.key]) viewer.step(STEP_KEYS[event.key]);
  };
  document.addEventListener("keydown", onKey);
  setCleanup(() => document.removeEventListener("keydown", onKey));
  view.append(...viewer.layout());
  viewer.refresh();
  await viewer.loadParticles();
}
