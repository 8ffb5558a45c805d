// Tilt-series viewer: a tilt slider over the images in tilt order, with the tilt's alignment
// applied on the fly (in the canvas: image Å = Rz · aligned + shift, so aligned = Rz⁻¹ (p − shift)).
import { api, el, fixed, fmt, whenAttached } from "./app.js";

export async function showTiltSeries(view, runId, output, key) {
  const run = await api(`/api/runs/${runId}`);
  const items = await api(`/api/runs/${runId}/outputs/${encodeURIComponent(output)}/items`);
  const series = items.find((i) => i.key === key);
  if (!series) throw new Error(`${key} is not in ${run.name}.${output}`);
  const pix = series.acquisition.pixel_size_a;
  const order = series.tilts.map((t, i) => ({ ...t, stackIndex: i })).sort((a, b) => a.tilt_deg - b.tilt_deg);
  const aligned = series.tilts.some((t) => t.alignment);
  const st = { position: order.reduce((best, t, i) => (Math.abs(t.tilt_deg) < Math.abs(order[best].tilt_deg) ? i : best), 0),
    apply: aligned, seq: 0, binning: 1 };
  const canvas = el("canvas", { id: "tilt-canvas", width: 512, height: 512 });
  const wrap = el("div", { class: "canvas-wrap" }, canvas);
  const slider = el("input", { type: "range", id: "tilt-slider", min: 0, max: order.length - 1, step: 1, value: st.position });
  const tiltValue = el("span", { class: "value", id: "tilt-value" });
  const applyBox = el("input", { type: "checkbox", id: "apply-alignment", checked: st.apply, disabled: !aligned });
  const facts = el("dl", { class: "kv", id: "tilt-facts" });
  const image = new Image();

  function draw() {
    const tilt = order[st.position];
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#111";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const scale = Math.min(canvas.width / image.width, canvas.height / image.height);
    ctx.translate(canvas.width / 2, canvas.height / 2);
    ctx.scale(scale, scale);
    const a = tilt.alignment;
    if (st.apply && a) {
      ctx.scale(1 / (a.magnification || 1), 1 / (a.magnification || 1));
      ctx.rotate(-a.z_rot_deg * Math.PI / 180);
      ctx.translate(-a.shift_x_a / pix / st.binning, -a.shift_y_a / pix / st.binning);
    }
    // pixel N//2's centre (the geometry's origin) lands on the canvas centre
    ctx.drawImage(image, -Math.floor(image.width / 2) - 0.5, -Math.floor(image.height / 2) - 0.5);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    // the tilt axis: vertical once aligned, at the nominal angle otherwise
    const axisDeg = st.apply && a ? 0 : (a ? a.z_rot_deg : series.acquisition.tilt_axis_deg);
    const r = Math.max(canvas.width, canvas.height);
    const ux = -Math.sin(axisDeg * Math.PI / 180) * r, uy = Math.cos(axisDeg * Math.PI / 180) * r;
    ctx.strokeStyle = "rgba(99,179,237,.7)";
    ctx.setLineDash([6, 6]);
    ctx.beginPath();
    ctx.moveTo(canvas.width / 2 - ux, canvas.height / 2 - uy);
    ctx.lineTo(canvas.width / 2 + ux, canvas.height / 2 + uy);
    ctx.stroke();
    ctx.setLineDash([]);
    if (tilt.excluded) {
      ctx.fillStyle = "rgba(197,48,48,.85)";
      ctx.font = "bold 16px system-ui";
      ctx.fillText("EXCLUDED", 12, 24);
    }
  }

  function describe(tilt) {
    const a = tilt.alignment, c = tilt.ctf;
    const rows = [["nominal tilt", `${fixed(tilt.tilt_deg, 1)}°`], ["exposed", `#${tilt.acquisition_order + 1} of ${order.length}`],
      ["dose before", `${fmt(tilt.pre_exposure_e_a2, 1)} e/Å²`], ["stack slice", `${tilt.image_index}`],
      ["excluded", tilt.excluded ? "yes" : "no"]];
    if (a) rows.push(["aligned tilt", `${fmt(a.y_tilt_deg, 2)}°`], ["in-plane rotation", `${fmt(a.z_rot_deg, 2)}°`],
      ["shift x, y", `${fmt(a.shift_x_a, 1)}, ${fmt(a.shift_y_a, 1)} Å`], ["residual", a.residual_a == null ? "–" : `${fmt(a.residual_a, 1)} Å`]);
    if (c) rows.push(["defocus U / V", `${fmt(c.defocus_u_a / 1e4, 3)} / ${fmt(c.defocus_v_a / 1e4, 3)} µm`]);
    facts.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }

  function load() {
    const seq = ++st.seq;
    const tilt = order[st.position];
    tiltValue.textContent = `${fixed(tilt.tilt_deg, 1)}° (${st.position + 1} / ${order.length})`;
    describe(tilt);
    if (!tilt.image_path) { facts.append(el("dd", { class: "error-text" }, "this tilt has no image (movies only)")); return; }
    fetch(`/api/image?path=${encodeURIComponent(tilt.image_path)}&index=${tilt.image_index}`).then(async (response) => {
      if (!response.ok) throw new Error(await response.text());
      const binning = Number(response.headers.get("X-Binning") || 1);
      const blob = await response.blob();
      if (seq !== st.seq) return;
      const url = URL.createObjectURL(blob);
      image.onload = () => whenAttached(wrap, () => {
        URL.revokeObjectURL(url);
        if (seq !== st.seq) return;
        st.binning = binning;
        const side = Math.max(320, Math.min(wrap.clientWidth - 4, window.innerHeight * 0.78));
        const aspect = image.height / image.width;
        canvas.width = Math.round(aspect > 1 ? side / aspect : side);
        canvas.height = Math.round(aspect > 1 ? side : side * aspect);
        draw();
        canvas.dataset.tilt = String(tilt.tilt_deg);
        canvas.dataset.scale = String(Math.min(canvas.width / image.width, canvas.height / image.height) / binning);
      });
      image.src = url;
    }).catch((error) => { facts.append(el("dd", { class: "error-text" }, error.message)); });
  }

  slider.addEventListener("input", () => { st.position = Number(slider.value); load(); });
  applyBox.addEventListener("change", () => {
    st.apply = applyBox.checked;
    draw();
    canvas.dataset.aligned = String(st.apply);
  });
  view.append(
    el("div", { class: "page-head" }, el("div", {}, el("h1", {}, `Tilt series ${key}`),
      el("p", {}, el("a", { href: `#/run/${runId}` }, `${run.name}.${output}`),
        ` · ${series.tilts.length} tilts · ${fmt(pix, 3)} Å/px · ${series.image_size_xy.join(" × ")} px · tilt axis ${fmt(series.acquisition.tilt_axis_deg, 1)}°`))),
    el("div", { class: "viewer" }, wrap,
      el("div", { class: "panel controls" },
        el("label", { for: "tilt-slider" }, "Tilt ", tiltValue), slider,
        el("label", { title: aligned ? "shift and rotate each image by its alignment, in the browser" : "this series has no alignment yet" },
          applyBox, " Apply alignment"),
        el("p", { class: "hint" }, "Dashed line: the tilt axis."),
        facts)));
  load();
}
