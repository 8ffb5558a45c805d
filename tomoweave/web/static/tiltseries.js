// Tilt-series viewer: a tilt slider over the images in tilt order, with the tilt's alignment
// applied on the fly (in the canvas: image Å = Rz · aligned + shift, so aligned = Rz⁻¹ (p − shift)).
import { api, el, fixed, fmt, whenAttached } from "./app.js";

class TiltSeriesViewer {
  constructor(series) {
    this.series = series;
    this.pix = series.acquisition.pixel_size_a;
    this.order = series.tilts.map((t, i) => ({ ...t, stackIndex: i })).sort((a, b) => a.tilt_deg - b.tilt_deg);
    this.aligned = series.tilts.some((t) => t.alignment);
    const nearestZero = this.order.reduce((best, t, i) =>
      (Math.abs(t.tilt_deg) < Math.abs(this.order[best].tilt_deg) ? i : best), 0);
    this.st = { position: nearestZero, apply: this.aligned, seq: 0, binning: 1 };
    this.canvas = el("canvas", { id: "tilt-canvas", width: 512, height: 512 });
    this.wrap = el("div", { class: "canvas-wrap" }, this.canvas);
    this.slider = el("input", { type: "range", id: "tilt-slider", min: 0, max: this.order.length - 1, step: 1, value: nearestZero });
    this.tiltValue = el("span", { class: "value", id: "tilt-value" });
    this.applyBox = el("input", { type: "checkbox", id: "apply-alignment", checked: this.st.apply, disabled: !this.aligned });
    this.facts = el("dl", { class: "kv", id: "tilt-facts" });
    this.image = new Image();
    this.slider.addEventListener("input", () => { this.st.position = Number(this.slider.value); this.load(); });
    this.canvas.addEventListener("wheel", (event) => {  // the wheel steps through the tilts
      event.preventDefault();
      const position = Math.max(0, Math.min(this.order.length - 1, this.st.position + (event.deltaY > 0 ? 1 : -1)));
      if (position === this.st.position) return;
      this.st.position = position;
      this.slider.value = position;
      this.load();
    }, { passive: false });
    this.applyBox.addEventListener("change", () => {
      this.st.apply = this.applyBox.checked;
      this.draw();
      this.canvas.dataset.aligned = String(this.st.apply);
    });
  }

  draw() {
    const { canvas, image, st } = this;
    const tilt = this.order[st.position];
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#111";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const scale = Math.min(canvas.width / image.width, canvas.height / image.height);
    ctx.translate(canvas.width / 2, canvas.height / 2);
    ctx.scale(scale, -scale);  // image pixels, y up (3dmod's convention, the run pictures')
    const a = tilt.alignment;
    if (st.apply && a) {
      ctx.scale(1 / (a.magnification || 1), 1 / (a.magnification || 1));
      ctx.rotate(-a.z_rot_deg * Math.PI / 180);
      ctx.translate(-a.shift_x_a / this.pix / st.binning, -a.shift_y_a / this.pix / st.binning);
    }
    // pixel N//2's centre (the geometry's origin) lands on the canvas centre; the PNG is
    // already y up (its last row is the image's row 0), so it is drawn unflipped
    ctx.scale(1, -1);
    ctx.drawImage(image, -Math.floor(image.width / 2) - 0.5, Math.floor(image.height / 2) + 0.5 - image.height);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    // the tilt axis: vertical once aligned, at the fitted (or nominal) angle otherwise
    this.drawAxis(ctx, st.apply && a ? 0 : (a ? a.z_rot_deg : this.series.acquisition.tilt_axis_deg));
    if (tilt.excluded) {
      ctx.fillStyle = "rgba(197,48,48,.85)";
      ctx.font = "bold 16px system-ui";
      ctx.fillText("EXCLUDED", 12, 24);
    }
  }

  drawAxis(ctx, axisDeg) {
    const { canvas } = this;
    const r = Math.max(canvas.width, canvas.height);
    // counter-clockwise from the image's Y axis, drawn y up (canvas y runs down)
    const ux = -Math.sin(axisDeg * Math.PI / 180) * r, uy = -Math.cos(axisDeg * Math.PI / 180) * r;
    ctx.strokeStyle = "rgba(99,179,237,.7)";
    ctx.setLineDash([6, 6]);
    ctx.beginPath();
    ctx.moveTo(canvas.width / 2 - ux, canvas.height / 2 - uy);
    ctx.lineTo(canvas.width / 2 + ux, canvas.height / 2 + uy);
    ctx.stroke();
    ctx.setLineDash([]);
  }

  describe(tilt) {
    const a = tilt.alignment, c = tilt.ctf;
    const rows = [["nominal tilt", `${fixed(tilt.tilt_deg, 1)}°`], ["exposed", `#${tilt.acquisition_order + 1} of ${this.order.length}`],
      ["dose before", `${fmt(tilt.pre_exposure_e_a2, 1)} e/Å²`], ["stack slice", `${tilt.image_index}`],
      ["excluded", tilt.excluded ? "yes" : "no"]];
    if (a) rows.push(["aligned tilt", `${fmt(a.y_tilt_deg, 2)}°`], ["in-plane rotation", `${fmt(a.z_rot_deg, 2)}°`],
      ["shift x, y", `${fmt(a.shift_x_a, 1)}, ${fmt(a.shift_y_a, 1)} Å`], ["residual", a.residual_a == null ? "–" : `${fmt(a.residual_a, 1)} Å`]);
    if (c) rows.push(["defocus U / V", `${fixed(c.defocus_u_a / 1e4, 3)} / ${fixed(c.defocus_v_a / 1e4, 3)} µm`]);
    this.facts.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }

  load() {
    const { st } = this;
    const seq = ++st.seq;
    const tilt = this.order[st.position];
    this.tiltValue.textContent = `${fixed(tilt.tilt_deg, 1)}° (${st.position + 1} / ${this.order.length})`;
    this.describe(tilt);
    if (!tilt.image_path) { this.facts.append(el("dd", { class: "error-text" }, "this tilt has no image (movies only)")); return; }
    fetch(`/api/image?path=${encodeURIComponent(tilt.image_path)}&index=${tilt.image_index}`).then(async (response) => {
      if (!response.ok) throw new Error(await response.text());
      const binning = Number(response.headers.get("X-Binning") || 1);
      const blob = await response.blob();
      if (seq !== st.seq) return;  // a newer tilt was asked for meanwhile
      const url = URL.createObjectURL(blob);
      this.image.onload = () => whenAttached(this.wrap, () => {
        URL.revokeObjectURL(url);
        if (seq === st.seq) this.fit(tilt, binning);
      });
      this.image.src = url;
    }).catch((error) => { this.facts.append(el("dd", { class: "error-text" }, error.message)); });
  }

  fit(tilt, binning) {
    const { canvas, image } = this;
    this.st.binning = binning;
    const side = Math.max(320, Math.min(this.wrap.clientWidth - 4, window.innerHeight * 0.78));
    const aspect = image.height / image.width;
    canvas.width = Math.round(aspect > 1 ? side / aspect : side);
    canvas.height = Math.round(aspect > 1 ? side : side * aspect);
    this.draw();
    canvas.dataset.tilt = String(tilt.tilt_deg);
    canvas.dataset.scale = String(Math.min(canvas.width / image.width, canvas.height / image.height) / binning);
  }

  layout() {
    return el("div", { class: "viewer" }, this.wrap,
      el("div", { class: "panel controls" },
        el("label", { for: "tilt-slider" }, "Tilt ", this.tiltValue), this.slider,
        el("label", { title: this.aligned ? "shift and rotate each image by its alignment, in the browser" : "this series has no alignment yet" },
          this.applyBox, " Apply alignment"),
        el("p", { class: "hint" }, "Dashed line: the tilt axis."),
        this.facts));
  }
}

export async function showTiltSeries(view, runId, output, key) {
  const run = await api(`/api/runs/${runId}`);
  const items = await api(`/api/runs/${runId}/outputs/${encodeURIComponent(output)}/items`);
  const series = items.find((i) => i.key === key);
  if (!series) throw new Error(`${key} is not in ${run.name}.${output}`);
  const viewer = new TiltSeriesViewer(series);
  view.append(
    el("div", { class: "page-head" }, el("div", {}, el("h1", {}, `Tilt series ${key}`),
      el("p", {}, el("a", { href: `#/run/${runId}` }, `${run.name}.${output}`),
        ` · ${series.tilts.length} tilts · ${fmt(viewer.pix, 3)} Å/px · ${series.image_size_xy.join(" × ")} px · ` +
        `tilt axis ${fmt(series.acquisition.tilt_axis_deg, 1)}°`))),
    viewer.layout());
  viewer.load();
}
