// CTF assistant: defocus against tilt with the tilts flagged by ctf.assess's own rule, each
// tilt's diagnostic picture on click, and accept/reject, which runs ctf.assess with the
// person's choice (good and bad subsets, with provenance).
import { api, el, fixed, fmt } from "./app.js";
import { plot } from "./ctf.js";

const ASSESS_PROTOCOL = "ctf.assess";
const COLOURS = { kept: "#2b6cb0", flaggedKept: "#c27c0e", rejected: "#c53030", mean: "#2f855a" };

const meanDefocusUm = (t) => (t.ctf.defocus_u_a + t.ctf.defocus_v_a) / 2e4;
// a fit that found no Thon rings kept a stand-in defocus (e.g. the nominal one): always flagged
const noRings = (t) => t.ctf.reliable === false;

class CtfAssistant {
  constructor(run, output, key, tilts, assess) {
    Object.assign(this, { run, output, key, tilts, assess });
    this.st = { tolerance: 0.2, selected: null, keep: new Map(), flags: new Map(), meanU: 0, meanV: 0 };
    this.hits = [];
    this.canvas = el("canvas", { id: "ctf-plot", width: 900, height: 400, style: "width:100%;cursor:pointer" });
    this.detail = el("div", { class: "diagnostic", id: "ctf-detail" },
      el("p", { class: "muted" }, "Click a point to see that tilt's spectrum and fit."));
    this.thresholdInput = el("input", { type: "number", id: "ctf-threshold", min: 1, max: 500, step: 1,
      value: this.st.tolerance * 100, style: "width:90px" });
    this.table = el("tbody");
    this.message = el("div", { class: "status-line", id: "assess-status" });
    this.canvas.addEventListener("click", (event) => this.clickPlot(event));
    this.thresholdInput.addEventListener("change", () => {
      this.st.tolerance = Math.max(0.01, (Number(this.thresholdInput.value) || 20) / 100);
      this.assessRule();
      this.redraw();
    });
    this.assessRule();
  }

  // ctf.assess's rule: U or V deviating from the mean of the unflagged tilts by more than the
  // tolerance (relative), iterated until the flags settle
  assessRule() {
    const { st, tilts } = this;
    // as ctf.assess: tilts without rings are flagged when other tilts of the series have them
    const ringsSomewhere = tilts.some((t) => !noRings(t));
    const unfit = (t) => ringsSomewhere && noRings(t);
    let flags = tilts.map((t) => t.excluded || unfit(t));
    for (let iteration = 0; iteration < 20; iteration++) {
      const kept = tilts.filter((_, i) => !flags[i]);
      const pool = kept.length ? kept : tilts;
      st.meanU = pool.reduce((a, t) => a + t.ctf.defocus_u_a, 0) / pool.length;
      st.meanV = pool.reduce((a, t) => a + t.ctf.defocus_v_a, 0) / pool.length;
      const next = tilts.map((t) => t.excluded || unfit(t) || Math.abs(t.ctf.defocus_u_a - st.meanU) / st.meanU > st.tolerance ||
        Math.abs(t.ctf.defocus_v_a - st.meanV) / st.meanV > st.tolerance);
      const same = next.every((f, i) => f === flags[i]);
      flags = next;
      if (same) break;
    }
    tilts.forEach((t, i) => { st.flags.set(t.stackIndex, flags[i]); st.keep.set(t.stackIndex, !flags[i]); });
  }

  flagged(t) { return this.st.flags.get(t.stackIndex); }

  colourOf(t) {
    if (!this.st.keep.get(t.stackIndex)) return COLOURS.rejected;
    return this.flagged(t) ? COLOURS.flaggedKept : COLOURS.kept;
  }

  redraw() {
    const { st, tilts } = this;
    const points = tilts.map((t) => [t.tilt_deg, meanDefocusUm(t)]);
    const centre = (st.meanU + st.meanV) / 2e4;
    const values = points.map((p) => p[1]).concat([centre * (1 - st.tolerance), centre * (1 + st.tolerance)]);
    const span = Math.max(...values) - Math.min(...values);
    const yRange = [Math.min(...values) - 0.06 * span, Math.max(...values) + 0.06 * span];
    const percent = fmt(st.tolerance * 100, 0);
    this.hits = plot(this.canvas, [{ name: "mean", points, colour: COLOURS.kept, selected: st.selected,
      colourOf: (i) => this.colourOf(tilts[i]), hollow: (i) => this.flagged(tilts[i]) }],
    { xLabel: "tilt (°)", yLabel: "mean defocus (µm, underfocus +)", yRange,
      hLines: [{ y: centre, colour: COLOURS.mean, label: `mean ${fmt(centre, 2)} µm` },
        { y: centre * (1 + st.tolerance), colour: COLOURS.flaggedKept, label: `+${percent} %` },
        { y: centre * (1 - st.tolerance), colour: COLOURS.flaggedKept, label: `−${percent} %` }] });
    const byAngle = tilts.map((t, i) => [t, i]).sort((a, b) => a[0].tilt_deg - b[0].tilt_deg);
    this.table.replaceChildren(...byAngle.map(([t, i]) => this.tiltRow(t, i)));
  }

  tiltRow(t, i) {
    const { st } = this;
    const box = el("input", { type: "checkbox", checked: st.keep.get(t.stackIndex), "data-tilt": t.tilt_deg,
      "data-index": t.stackIndex, title: "keep this tilt (in the good set)",
      onchange: () => { st.keep.set(t.stackIndex, box.checked); this.redraw(); } });
    return el("tr", { class: `clickable${st.selected === i ? " selected" : ""}`, "data-index": t.stackIndex,
      onclick: (e) => { if (e.target !== box) this.select(i); } },
    el("td", {}, box), el("td", { class: "num" }, `${fixed(t.tilt_deg, 1)}°`),
    el("td", { class: "num" }, fixed(t.ctf.defocus_u_a / 1e4, 3)), el("td", { class: "num" }, fixed(t.ctf.defocus_v_a / 1e4, 3)),
    el("td", { class: "num" }, t.ctf.fit_resolution_a == null ? "–" : fmt(t.ctf.fit_resolution_a, 1)),
    el("td", { class: "flag" }, this.flagged(t) ? el("b", { style: `color:${COLOURS.flaggedKept}` },
      t.excluded ? "excluded" : noRings(t) ? "no Thon rings" : "deviates") : ""));
  }

  select(i) {
    this.st.selected = i;
    const t = this.tilts[i];
    const c = t.ctf;
    this.detail.replaceChildren(el("h2", {}, `Tilt ${fixed(t.tilt_deg, 1)}° (stack slice ${t.stackIndex})`),
      el("dl", { class: "kv" },
        el("dt", {}, "defocus U / V"), el("dd", {}, `${fixed(c.defocus_u_a / 1e4, 3)} / ${fixed(c.defocus_v_a / 1e4, 3)} µm`),
        el("dt", {}, "astigmatism angle"), el("dd", {}, `${fmt(c.astigmatism_angle_deg, 1)}°`),
        el("dt", {}, "phase shift"), el("dd", {}, `${fmt(c.phase_shift_deg, 1)}°`),
        el("dt", {}, "fit resolution"), el("dd", {}, c.fit_resolution_a == null ? "–" : `${fmt(c.fit_resolution_a, 1)} Å`),
        el("dt", {}, "score"), el("dd", {}, fmt(c.score, 3))),
      c.diagnostic_path ? el("img", { src: `/api/file?path=${encodeURIComponent(c.diagnostic_path)}`, alt: "spectrum and fit", id: "ctf-diagnostic" })
        : el("p", { class: "muted" }, "No diagnostic image for this tilt."));
    this.redraw();
  }

  clickPlot(event) {
    const rect = this.canvas.getBoundingClientRect();
    const x = (event.clientX - rect.left) * (this.canvas.width / rect.width);
    const y = (event.clientY - rect.top) * (this.canvas.height / rect.height);
    let best = null;
    for (const h of this.hits) {
      const d = Math.hypot(h.x - x, h.y - y);
      if (d < 14 && (!best || d < best.d)) best = { ...h, d };
    }
    if (best) this.select(best.index);
  }

  async runAssessment() {
    const { st, tilts, assess, message } = this;
    // the person's choice is final: every checked tilt kept, every other dropped (by stack index)
    const kept = tilts.filter((t) => st.keep.get(t.stackIndex)).map((t) => t.stackIndex);
    const dropped = tilts.filter((t) => !st.keep.get(t.stackIndex)).map((t) => t.stackIndex);
    // ... of this series only: the other series of the input follow the rules (issue 18.1)
    const wanted = { tolerance: st.tolerance, keep_tilts: kept, drop_tilts: dropped, by: "index", series: [this.key] };
    const declared = assess.params.properties || {};
    if (!("series" in declared)) {
      message.className = "status-line error";
      message.textContent = `${ASSESS_PROTOCOL} here cannot limit a choice to one series: not launched`;
      return;
    }
    const params = Object.fromEntries(Object.entries(wanted).filter(([name]) => name in declared));
    // a few numbers per series: inline avoids starting a worker pool
    const body = { protocol: ASSESS_PROTOCOL, inputs: {}, params, executor: "inline" };
    const tiltInput = Object.entries(assess.inputs).find(([, s]) => s.type === "TiltSeries");
    if (tiltInput) body.inputs[tiltInput[0]] = `${this.run.name}.${this.output}`;
    message.className = "status-line";
    message.textContent = "Launching ctf.assess…";
    try {
      const created = await api("/api/runs", { json: body });
      location.hash = `#/run/${created.id}`;
    } catch (error) { message.className = "status-line error"; message.textContent = error.message; }
  }

  layout() {
    const { assess } = this;
    const head = ["keep", "tilt", "defocus U (µm)", "defocus V (µm)", "fit res. (Å)", "flag"];
    return el("div", { class: "viewer" },
      el("div", {}, el("div", { class: "panel" }, this.canvas,
        el("p", { class: "hint" }, "Filled: within the threshold · hollow: flagged · red: rejected. Click a point for its spectrum.")),
      el("div", { class: "panel" }, el("table", { class: "data" },
        el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))), this.table))),
      el("div", {}, el("div", { class: "panel controls" },
        el("label", { for: "ctf-threshold", title: "as ctf.assess: defocus U or V farther than this from the series mean (of unflagged tilts)" },
          "Flag defocus deviating from the mean by more than ", el("span", { class: "unit" }, "(%)")), this.thresholdInput,
        el("div", { class: "buttons", style: "margin-top:12px" },
          el("button", { class: "primary", id: "assess-button", disabled: !assess, onclick: () => this.runAssessment(),
            title: assess ? "make good/bad subsets with ctf.assess" : "the ctf.assess protocol is not installed" },
          "Accept checked, reject the rest")),
        el("p", { class: "hint" }, assess ? `Runs ${assess.label} (${ASSESS_PROTOCOL}): checked tilts go to its good set, ` +
          "the others to its bad set, with provenance." : "ctf.assess is not available in this installation."),
        this.message),
      el("div", { class: "panel" }, this.detail)));
  }
}

export async function showCtf(view, runId, output, key) {
  const run = await api(`/api/runs/${runId}`);
  const items = await api(`/api/runs/${runId}/outputs/${encodeURIComponent(output)}/items`);
  const series = items.find((i) => i.key === key);
  if (!series) throw new Error(`${key} is not in ${run.name}.${output}`);
  const tilts = series.tilts.map((t, i) => ({ ...t, stackIndex: i })).filter((t) => t.ctf);
  view.append(el("div", { class: "page-head" }, el("div", {}, el("h1", {}, `CTF assistant · ${key}`),
    el("p", {}, el("a", { href: `#/run/${runId}` }, `${run.name}.${output}`),
      ` · ${tilts.length} of ${series.tilts.length} tilts have a CTF fit`,
      tilts.some(noRings) ? el("span", { class: "warning-text", id: "ctf-no-rings" },
        ` · ${tilts.filter(noRings).length} without usable Thon rings (flagged)`) : ""))));
  if (!tilts.length) {
    view.append(el("div", { class: "panel empty" }, "No CTF estimates in this tilt series yet: run a CTF estimation protocol on it first."));
    return;
  }
  const protocols = await api("/api/protocols");
  const assistant = new CtfAssistant(run, output, key, tilts, protocols.find((p) => p.name === ASSESS_PROTOCOL));
  view.append(assistant.layout());
  assistant.redraw();
}
