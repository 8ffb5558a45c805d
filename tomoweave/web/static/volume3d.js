// The 3D view of a volume (template, average, class average): an isosurface at a threshold in σ,
// ray-cast in the browser over the volume binned to ≤ 64³ (/api/volume/data), shaded by the
// gradient; drag to rotate. One component for every page that shows a map (issue 18.13).
import { api, el, fmt } from "./app.js";

const DEGREES_PER_PX = 0.5;
const SIZE_PX = 360;

function rotation(yawDeg, pitchDeg) {  // view = Rx(pitch) · Ry(yaw), rows are screen x, y, depth
  const a = (yawDeg * Math.PI) / 180, b = (pitchDeg * Math.PI) / 180;
  const ry = [[Math.cos(a), 0, Math.sin(a)], [0, 1, 0], [-Math.sin(a), 0, Math.cos(a)]];
  const rx = [[1, 0, 0], [0, Math.cos(b), -Math.sin(b)], [0, Math.sin(b), Math.cos(b)]];
  return rx.map((row) => [0, 1, 2].map((j) => row.reduce((s, v, k) => s + v * ry[k][j], 0)));
}

export class IsosurfaceView {
  constructor(path, { thresholdSigma = 2 } = {}) {
    this.path = path;
    this.st = { yaw: 0, pitch: 0, sigma: thresholdSigma };
    this.canvas = el("canvas", { id: "iso-canvas", width: SIZE_PX, height: SIZE_PX, class: "iso-canvas",
      title: "drag to rotate", "data-state": "loading" });
    this.slider = el("input", { type: "range", id: "iso-threshold", min: -3, max: 10, step: 0.1, value: thresholdSigma });
    this.value = el("span", { class: "value", id: "iso-threshold-value" });
    this.status = el("div", { class: "status-line", id: "iso-status" }, "Loading the map…");
    this.slider.addEventListener("input", () => { this.st.sigma = Number(this.slider.value); this.render(); });
    this.canvas.addEventListener("pointerdown", (event) => this.drag(event));
    this.node = el("div", { class: "iso-view" }, this.canvas,
      el("div", { class: "controls" }, el("label", { for: "iso-threshold" }, "Threshold ", this.value), this.slider,
        el("p", { class: "hint" }, "Surface where the map crosses mean + threshold × σ. Drag the picture to rotate it; x right, y up to start, as the slices."),
        this.status));
    this.load();
  }

  async load() {
    try {
      const response = await fetch(`/api/volume/data?path=${encodeURIComponent(this.path)}`);
      if (!response.ok) throw new Error(await response.text());
      this.size = response.headers.get("X-Size-Xyz").split(",").map(Number);
      this.mean = Number(response.headers.get("X-Mean"));
      this.std = Number(response.headers.get("X-Std"));
      this.binning = Number(response.headers.get("X-Binning"));
      this.data = new Float32Array(await response.arrayBuffer());
      this.render();
    } catch (error) {
      this.status.textContent = `Could not load the map: ${error.message}`;
      this.canvas.dataset.state = "error";
    }
  }

  drag(event) {
    const start = { x: event.clientX, y: event.clientY, yaw: this.st.yaw, pitch: this.st.pitch };
    const move = (e) => {
      this.st.yaw = start.yaw + (e.clientX - start.x) * DEGREES_PER_PX;
      this.st.pitch = start.pitch + (e.clientY - start.y) * DEGREES_PER_PX;
      this.render();
    };
    const up = () => { window.removeEventListener("pointermove", move); window.removeEventListener("pointerup", up); };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }

  sample(x, y, z) {  // nearest voxel, 0 outside
    const [nx, ny, nz] = this.size;
    const i = Math.round(x), j = Math.round(y), k = Math.round(z);
    if (i < 0 || j < 0 || k < 0 || i >= nx || j >= ny || k >= nz) return -Infinity;
    return this.data[(k * ny + j) * nx + i];
  }

  render() {
    if (!this.data) return;
    const { canvas, st, size } = this;
    const level = this.mean + st.sigma * this.std;
    this.value.textContent = `${fmt(st.sigma, 1)} σ (${fmt(level, 3)})`;
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(canvas.width, canvas.height);
    const [rx, ry, rd] = rotation(st.yaw, st.pitch);  // screen axes in volume coordinates: rows
    const centre = size.map((n) => n >> 1);
    const radius = Math.hypot(...size) / 2 + 1;
    const scale = (2 * radius) / canvas.width;  // voxels per screen pixel
    const light = [-0.35, 0.45, 0.82];  // from the top left, towards the viewer (screen frame)
    let hits = 0;
    for (let py = 0; py < canvas.height; py++) {
      for (let px = 0; px < canvas.width; px++) {
        const u = (px + 0.5) * scale - radius, v = radius - (py + 0.5) * scale;  // y up
        // right-handed: x right, y up, z towards the viewer; the ray runs from the viewer in
        for (let t = radius; t >= -radius; t -= 1) {
          // volume point = centre + u·rx + v·ry + t·rd (the rows of the view are its axes)
          const x = centre[0] + u * rx[0] + v * ry[0] + t * rd[0];
          const y = centre[1] + u * rx[1] + v * ry[1] + t * rd[1];
          const z = centre[2] + u * rx[2] + v * ry[2] + t * rd[2];
          if (this.sample(x, y, z) >= level) {
            const g = [this.sample(x + 1, y, z) - this.sample(x - 1, y, z), this.sample(x, y + 1, z) - this.sample(x, y - 1, z),
              this.sample(x, y, z + 1) - this.sample(x, y, z - 1)].map((c) => (Number.isFinite(c) ? c : 0));
            // outward normal = -gradient, in the screen frame
            const n = [rx, ry, rd].map((r) => -(r[0] * g[0] + r[1] * g[1] + r[2] * g[2]));
            const length = Math.hypot(...n) || 1;
            const lambert = Math.max(0, (n[0] * light[0] + n[1] * light[1] + n[2] * light[2]) / length);
            const shade = 60 + 195 * lambert;
            const o = 4 * (py * canvas.width + px);
            image.data[o] = shade * 0.93; image.data[o + 1] = shade * 0.86; image.data[o + 2] = shade * 0.55;
            image.data[o + 3] = 255;
            hits++;
            break;
          }
        }
      }
    }
    ctx.fillStyle = "#111";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const layer = document.createElement("canvas");
    layer.width = canvas.width; layer.height = canvas.height;
    layer.getContext("2d").putImageData(image, 0, 0);
    ctx.drawImage(layer, 0, 0);
    canvas.dataset.state = "drawn";
    canvas.dataset.hits = String(hits);
    canvas.dataset.voxelsPerPx = String(scale);
    canvas.dataset.yaw = String(st.yaw);
    this.status.textContent = `${size.join(" × ")} voxels shown${this.binning > 1 ? ` (binned by ${this.binning})` : ""} · ` +
      `${hits ? "" : "nothing above this threshold · "}drag to rotate`;
  }
}

// The page of one volume item's 3D view (#/isosurface/RUN/OUTPUT/KEY).
export async function showIsosurface(view, runId, output, key) {
  const run = await api(`/api/runs/${runId}`);
  const items = await api(`/api/runs/${runId}/outputs/${encodeURIComponent(output)}/items`);
  const item = items.find((i) => i.key === key);
  if (!item) throw new Error(`${key} is not in ${run.name}.${output}`);
  view.append(el("div", { class: "page-head" }, el("div", {}, el("h1", {}, `${item.type} ${key} · 3D`),
    el("p", {}, el("a", { href: `#/run/${runId}` }, `${run.name}.${output}`),
      item.size_xyz ? ` · ${item.size_xyz.join(" × ")} voxels` : "",
      item.pixel_size_a ? ` · ${fmt(item.pixel_size_a, 2)} Å/voxel` : ""))),
  el("div", { class: "panel" }, new IsosurfaceView(item.path).node));
}
