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

export async function showTomogram(view, runId, output, key) {
  const run = await api(`/api/runs/${runId}`);
  const items = await api(`/api/runs/${runId}/outputs/${encodeURIComponent(output)}/items`);
  const item = items.find((i) => i.key === key);
  if (!item) throw new Error(`${key} is not in ${run.name}.${output}`);
  const info = await api(`/api/volume/info?path=${encodeURIComponent(item.path)}`);
  const isTomogram = item.type === "Tomogram";
  const st = {
    axis: "z", index: { z: info.size_xyz[2] >> 1, y: info.size_xyz[1] >> 1, x: info.size_xyz[0] >> 1 },
    binning: 0, low: -3, high: 3, window: 4, markerA: Math.max(30, 6 * item.pixel_size_a),
    sets: [], hidden: new Set(), picking: false, target: null, picks: [], seq: 0, shownBinning: 1, scale: 1,
  };
  const size = info.size_xyz;  // voxels (x, y, z)
  const pix = item.pixel_size_a;
  const canvas = el("canvas", { id: "slice-canvas", width: 400, height: 400, "aria-label": "tomogram slice" });
  const wrap = el("div", { class: "canvas-wrap" }, canvas);
  const image = new Image();
  const readout = el("div", { class: "status-line", id: "cursor-readout" }, "Move over the slice for coordinates.");
  const sliceValue = el("span", { class: "value", id: "slice-value" });
  const slider = el("input", { type: "range", id: "slice-slider", min: 0, step: 1 });
  const planeButtons = el("div", { class: "seg", role: "group" }, Object.entries(PLANES).map(([axis, p]) =>
    el("button", { type: "button", "data-axis": axis, title: `slices normal to ${axis.toUpperCase()}`, onclick: () => { st.axis = axis; sync(); load(); } }, p.label)));
  const binning = el("select", { id: "binning-select", title: "average blocks of voxels: faster, smoother on big volumes" },
    [["0", "auto"], ["1", "1 (full)"], ["2", "2"], ["4", "4"], ["8", "8"]].map(([v, t]) => el("option", { value: v }, t)));
  const low = el("input", { type: "range", id: "contrast-low", min: -8, max: 2, step: 0.1, value: st.low });
  const high = el("input", { type: "range", id: "contrast-high", min: -2, max: 8, step: 0.1, value: st.high });
  const contrastValue = el("span", { class: "value" });
  const windowInput = el("input", { type: "range", min: 0, max: 40, step: 1, value: st.window, id: "depth-window" });
  const windowValue = el("span", { class: "value" });
  const markerInput = el("input", { type: "number", id: "marker-radius", min: 1, step: 10, value: Math.round(st.markerA), style: "width:90px" });
  markerInput.addEventListener("change", () => { st.markerA = Math.max(1, Number(markerInput.value) || st.markerA); draw(); });
  const setList = el("div", { id: "particle-sets" });
  const pickStatus = el("div", { class: "status-line", id: "pick-status" });
  const pickToggle = el("button", { type: "button", class: "secondary", id: "pick-toggle" }, "Start picking");
  const targetSelect = el("select", { id: "pick-target", title: "the pick.manual run the clicks are saved in" });

  const planeShape = () => {  // (width, height) in voxels of the current plane
    const [h, v] = PLANES[st.axis].axes;
    return [size[h], size[v]];
  };
  // Binned pixel i covers voxels [i*b, i*b+b): its centre is voxel i*b + (b-1)/2.
  const toDisplay = (voxel) => ((voxel - (st.shownBinning - 1) / 2) / st.shownBinning + 0.5) * st.scale;
  const toVoxel = (display) => (display / st.scale - 0.5) * st.shownBinning + (st.shownBinning - 1) / 2;
  const planeDepth = () => st.index[st.axis] + (Math.min(st.shownBinning, 1e9) - 1) / 2;

  function sync() {
    for (const b of planeButtons.children) b.classList.toggle("on", b.dataset.axis === st.axis);
    const depthAxis = PLANES[st.axis].axes[2];
    slider.max = size[depthAxis] - 1;
    slider.value = st.index[st.axis];
    const fromCentre = (st.index[st.axis] - (size[depthAxis] >> 1)) * pix;
    sliceValue.textContent = `${AXIS_NAMES[depthAxis]} = ${st.index[st.axis]} / ${size[depthAxis]} px · ${fromCentre >= 0 ? "+" : ""}${fmt(fromCentre / 10, 1)} nm`;
    contrastValue.textContent = `${fmt(st.low, 1)} σ … ${fmt(st.high, 1)} σ`;
    windowValue.textContent = `± ${st.window} px (${fmt(st.window * pix / 10, 1)} nm)`;
  }

  function load() {
    const seq = ++st.seq;
    const url = `/api/volume/slice?path=${encodeURIComponent(item.path)}&axis=${st.axis}&index=${st.index[st.axis]}` +
      `&binning=${st.binning}&low_sigma=${st.low}&high_sigma=${st.high}`;
    fetch(url).then(async (response) => {
      if (!response.ok) throw new Error(await response.text());
      const shown = Number(response.headers.get("X-Binning") || 1);
      const blob = await response.blob();
      if (seq !== st.seq) return;
      const objectUrl = URL.createObjectURL(blob);
      image.onload = () => whenAttached(wrap, () => {
        URL.revokeObjectURL(objectUrl);
        if (seq !== st.seq) return;
        st.shownBinning = shown;
        const maxW = Math.max(320, wrap.clientWidth - 4), maxH = Math.max(320, window.innerHeight * 0.78);
        st.scale = Math.min(maxW / image.width, maxH / image.height, 8);
        canvas.width = Math.round(image.width * st.scale);
        canvas.height = Math.round(image.height * st.scale);
        draw();
      });
      image.src = objectUrl;
    }).catch((error) => { readout.textContent = `Slice failed: ${error.message}`; });
  }

  function particlesToDraw() {
    const [h, v, d] = PLANES[st.axis].axes;
    const depth = planeDepth();
    const out = [];
    st.sets.forEach((set, index) => {
      if (st.hidden.has(set.reference)) return;
      const editing = st.picking && set.reference === st.target;
      const positions = editing ? st.picks.map((p) => ({ position_a: p, rotation: null })) : set.particles;
      for (const particle of positions) {
        const voxel = particle.position_a.map((a, axis) => a / pix + (size[axis] >> 1));
        const distance = Math.abs(voxel[d] - depth);
        if (distance > st.window + 0.5) continue;
        out.push({ x: toDisplay(voxel[h]), y: toDisplay(voxel[v]), distance, rotation: particle.rotation,
          colour: editing ? PICK_COLOUR : SET_COLOURS[index % SET_COLOURS.length], axes: [h, v] });
      }
    });
    return out;
  }

  function draw() {
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = st.scale < 1;
    ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
    const radius = Math.max(4, (st.markerA / pix / st.shownBinning) * st.scale);
    const drawn = particlesToDraw();
    for (const p of drawn) {
      ctx.globalAlpha = 1 - 0.6 * Math.min(1, p.distance / Math.max(1, st.window + 1));
      ctx.strokeStyle = p.colour;
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(p.x, p.y, radius, 0, 2 * Math.PI);
      ctx.stroke();
      if (p.rotation) {  // the particle's rotated Z axis (third column), projected on the plane
        const dx = p.rotation[p.axes[0]][2], dy = p.rotation[p.axes[1]][2];
        ctx.beginPath();
        ctx.moveTo(p.x, p.y);
        ctx.lineTo(p.x + dx * radius * 1.8, p.y + dy * radius * 1.8);
        ctx.stroke();
      }
      ctx.fillStyle = p.colour;
      ctx.fillRect(p.x - 1.5, p.y - 1.5, 3, 3);
    }
    ctx.globalAlpha = 1;
    canvas.dataset.drawn = String(drawn.length);
    canvas.dataset.scale = String(st.scale);
    canvas.dataset.binning = String(st.shownBinning);
    canvas.classList.toggle("pick-on", st.picking);
    sync();
  }

  async function loadParticles() {
    if (!isTomogram) return;
    st.sets = await api(`/api/particles?tomogram=${encodeURIComponent(key)}&source_run=${runId}&source_output=${encodeURIComponent(output)}`);
    setList.replaceChildren(...(st.sets.length ? st.sets.map((set, index) => {
      const box = el("input", { type: "checkbox", checked: !st.hidden.has(set.reference), onchange: () => {
        if (box.checked) st.hidden.delete(set.reference); else st.hidden.add(set.reference);
        draw();
      } });
      return el("label", { class: "set-row", title: `${set.protocol} · ${set.state}` }, box,
        el("span", { class: "swatch", style: "margin-right:4px;" +  `background:${SET_COLOURS[index % SET_COLOURS.length]}` }),
        el("a", { href: `#/run/${set.run_id}` }, set.run), el("span", { class: "muted" }, ` ${set.particles.length} particle${set.particles.length === 1 ? "" : "s"}`));
    }) : [el("p", { class: "muted" }, "No particles of this tomogram yet.")]));
    const editable = st.sets.filter((s) => s.editable);
    const current = st.target;
    targetSelect.replaceChildren(el("option", { value: "" }, "a new pick.manual run"),
      ...editable.map((s) => el("option", { value: s.reference, selected: s.reference === current }, `${s.run} (${s.particles.length})`)));
    if (!current && editable.length) targetSelect.value = editable[editable.length - 1].reference;
    selectTarget(targetSelect.value || null, false);
    draw();
  }

  function selectTarget(reference, redraw = true) {
    st.target = reference;
    const set = st.sets.find((s) => s.reference === reference);
    st.picks = set ? set.particles.map((p) => [...p.position_a]) : [];
    if (redraw) draw();
  }

  let saveTimer = null;
  function scheduleSave() {
    pickStatus.className = "status-line";
    pickStatus.textContent = `${st.picks.length} picks · saving…`;
    clearTimeout(saveTimer);
    saveTimer = setTimeout(save, 350);
  }

  async function save() {
    const set = st.sets.find((s) => s.reference === st.target);
    try {
      const result = await api("/api/picks", { json: { tomograms: `${run.name}.${output}`, tomogram: key,
        picks_a: st.picks, run: set ? set.run : null } });
      const reference = `${result.name}.particles`;
      st.target = reference;
      await loadParticles();
      targetSelect.value = reference;
      pickStatus.className = "status-line saved";
      pickStatus.textContent = `${st.picks.length} picks saved in run ${result.name} (${result.state})`;
      pickStatus.dataset.run = result.name;
    } catch (error) {
      pickStatus.className = "status-line error";
      pickStatus.textContent = `Not saved: ${error.message}`;
    }
  }

  function eventVoxel(event) {
    const rect = canvas.getBoundingClientRect();
    const dx = (event.clientX - rect.left) * (canvas.width / rect.width);
    const dy = (event.clientY - rect.top) * (canvas.height / rect.height);
    const [h, v, d] = PLANES[st.axis].axes;
    const voxel = [0, 0, 0];
    voxel[h] = toVoxel(dx);
    voxel[v] = toVoxel(dy);
    voxel[d] = planeDepth();
    return { voxel, dx, dy };
  }

  canvas.addEventListener("mousemove", (event) => {
    const { voxel } = eventVoxel(event);
    const a = voxel.map((x, i) => (x - (size[i] >> 1)) * pix);
    readout.textContent = `voxel (${voxel.map((x) => x.toFixed(0)).join(", ")}) · from centre (${a.map((x) => fmt(x / 10, 1)).join(", ")}) nm`;
  });
  canvas.addEventListener("click", (event) => {
    if (!st.picking) return;
    const { voxel, dx, dy } = eventVoxel(event);
    const [h, v, d] = PLANES[st.axis].axes;
    const radius = Math.max(6, (st.markerA / pix / st.shownBinning) * st.scale);
    const near = st.picks.findIndex((p) => {
      const q = p.map((a, axis) => a / pix + (size[axis] >> 1));
      return Math.hypot(toDisplay(q[h]) - dx, toDisplay(q[v]) - dy) <= radius && Math.abs(q[d] - voxel[d]) <= st.window + 0.5;
    });
    if (near >= 0) st.picks.splice(near, 1);
    else st.picks.push(voxel.map((x, axis) => Number(((x - (size[axis] >> 1)) * pix).toFixed(2))));
    draw();
    scheduleSave();
  });
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    const depthAxis = PLANES[st.axis].axes[2];
    st.index[st.axis] = Math.max(0, Math.min(size[depthAxis] - 1, st.index[st.axis] + (event.deltaY > 0 ? 1 : -1)));
    sync(); load();
  }, { passive: false });
  slider.addEventListener("input", () => { st.index[st.axis] = Number(slider.value); sync(); load(); });
  binning.addEventListener("change", () => { st.binning = Number(binning.value); load(); });
  for (const [input, keyName] of [[low, "low"], [high, "high"]]) {
    input.addEventListener("input", () => { st[keyName] = Number(input.value); sync(); });
    input.addEventListener("change", load);
  }
  windowInput.addEventListener("input", () => { st.window = Number(windowInput.value); draw(); });
  targetSelect.addEventListener("change", () => selectTarget(targetSelect.value || null));
  pickToggle.addEventListener("click", () => {
    st.picking = !st.picking;
    pickToggle.textContent = st.picking ? "Stop picking" : "Start picking";
    pickToggle.className = st.picking ? "primary" : "secondary";
    pickStatus.className = "status-line";
    pickStatus.textContent = st.picking ? "Click to add a particle on this slice; click a yellow one to remove it." : "";
    if (st.picking) selectTarget(st.target);
    draw();
  });
  const onKey = (event) => {
    if (event.target.tagName === "INPUT" || event.target.tagName === "SELECT") return;
    const step = { ArrowUp: 1, ArrowRight: 1, PageUp: 10, ArrowDown: -1, ArrowLeft: -1, PageDown: -10 }[event.key];
    if (!step) return;
    const depthAxis = PLANES[st.axis].axes[2];
    st.index[st.axis] = Math.max(0, Math.min(size[depthAxis] - 1, st.index[st.axis] + step));
    sync(); load();
  };
  document.addEventListener("keydown", onKey);
  setCleanup(() => document.removeEventListener("keydown", onKey));

  const details = `${size.join(" × ")} voxels · ${fmt(pix, 2)} Å/voxel · ${size.map((n) => fmt(n * pix / 10, 0)).join(" × ")} nm` +
    (item.method ? ` · ${item.method}` : "") + (item.binning && item.binning !== 1 ? ` · binning ${item.binning}` : "");
  view.append(
    el("div", { class: "page-head" }, el("div", {},
      el("h1", {}, `${isTomogram ? "Tomogram" : item.type} ${key}`),
      el("p", {}, el("a", { href: `#/run/${runId}` }, `${run.name}.${output}`), " · ", details))),
    el("div", { class: "viewer" },
      el("div", {}, wrap, readout),
      el("div", { class: "panel controls" },
        el("label", {}, "Plane"), planeButtons,
        el("label", { for: "slice-slider", title: "mouse wheel or arrow keys step one slice" }, "Slice ", sliceValue), slider,
        el("label", { for: "binning-select", title: "auto keeps the slice within 1024 pixels" }, "Binning ", el("span", { class: "unit" }, "(voxels per pixel)")), binning,
        el("label", { title: "grey range, in standard deviations around the volume mean: black at the first, white at the second" }, "Contrast ", contrastValue),
        el("div", { class: "hint" }, "black point"), low, el("div", { class: "hint" }, "white point"), high,
        isTomogram ? [
          el("h2", { style: "margin-top:16px" }, "Particles"),
          el("label", { for: "depth-window", title: "particles this close to the slice plane are drawn (fainter when farther)" }, "Show within ", windowValue), windowInput,
          el("label", { for: "marker-radius", title: "radius of the circle drawn around each particle" }, "Marker radius ", el("span", { class: "unit" }, "(Å)")), markerInput,
          el("div", { style: "margin-top:8px" }, setList),
          el("h2", { style: "margin-top:16px" }, "Manual picking"),
          el("p", { class: "hint" }, "Picks are saved through a pick.manual run, so they keep their provenance."),
          el("label", { for: "pick-target" }, "Save picks in"), targetSelect,
          el("div", { class: "buttons", style: "margin-top:8px" }, pickToggle), pickStatus] : [])));
  sync();
  load();
  await loadParticles();
}
