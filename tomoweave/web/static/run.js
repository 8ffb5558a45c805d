// The page of one run: state (live), parameters with units, inputs, outputs with viewers,
// per-item status with errors, the live log tail, and provenance.
import { api, el, fieldLabel, fmt, onProjectEvent, setCleanup, stateBadge, when } from "./app.js";

// "stopped": the run ended (Stop, a kill) before this output was complete
const OUTPUT_STATES = { open: "still growing", closed: "complete", stopped: "incomplete: the run stopped" };
const VIEWER_LABELS = { isosurface: "3D", tomogram: "slices", tiltseries: "tilts", ctf: "CTF assistant", average: "map & FSC" };

function paramTable(run) {
  const props = (run.protocol_info && run.protocol_info.params.properties) || {};
  const rows = Object.entries(run.params).map(([name, value]) => {
    const p = props[name] || {};
    const unit = p.unit || (p.anyOf && p.anyOf.find((x) => x.unit)?.unit) || "";
    return el("tr", {}, el("td", { title: p.description || "" }, fieldLabel(name),
      unit ? el("span", { class: "muted" }, ` (${unit})`) : ""),
    el("td", { class: "mono" }, typeof value === "object" && value !== null ? JSON.stringify(value) : fmt(value, 4)));
  });
  return rows.length ? el("table", { class: "data params" }, el("tbody", {}, rows)) : el("p", { class: "muted" }, "No parameters.");
}

function inputsBlock(run) {
  const entries = Object.entries(run.inputs);
  if (!entries.length) return el("p", { class: "muted" }, "No inputs (this run brings data in).");
  return el("dl", { class: "kv" }, entries.flatMap(([name, reference]) => {
    const sources = run.input_runs[name] || [];
    const links = sources.flatMap((s, i) => [i ? ", " : "", el("a", { href: `#/run/${s.run_id}`, class: "input-run" }, s.run)]);
    return [el("dt", {}, fieldLabel(name)), el("dd", {}, links, " ", el("span", { class: "muted mono" }, String(reference)))];
  }));
}

function outputsBlock(run) {
  const entries = Object.entries(run.outputs);
  if (!entries.length) return el("p", { class: "muted" }, "No outputs.");
  return el("div", {}, entries.map(([name, output]) => {
    const items = (output.items || []).slice(0, 200);
    return el("div", { style: "margin-bottom:10px" },
      el("b", {}, name), " ", el("span", { class: "muted" }, `${output.count} ${output.type} · ${OUTPUT_STATES[output.state] || output.state}`),
      el("div", { class: "item-list" }, items.map(({ key, viewers }) => viewers.length
        ? viewers.map((kind) => el("a", { href: `#/${kind}/${run.id}/${encodeURIComponent(name)}/${encodeURIComponent(key)}`,
          "data-viewer": kind, title: `open the ${VIEWER_LABELS[kind]} viewer` }, `${key} · ${VIEWER_LABELS[kind]}`))
        : el("span", { class: "muted mono" }, key))),
      output.items && output.items.length > items.length ? el("div", { class: "muted" }, `… and ${output.count - items.length} more`) : "");
  }));
}

function journalTable(run) {
  if (!run.journal.length) return el("p", { class: "muted" }, "No items processed yet.");
  const order = { failed: 0, running: 1, stopped: 2, done: 3 };
  const rows = [...run.journal].sort((a, b) => (order[a.state] ?? 3) - (order[b.state] ?? 3) ||
    (b.warnings || 0) - (a.warnings || 0) || a.task.localeCompare(b.task));
  return el("table", { class: "data", id: "journal" }, el("thead", {}, el("tr", {},
    el("th", {}, "item"), el("th", {}, "state"), el("th", {}, "attempts"), el("th", {}, "time (s)"), el("th", {}, "warnings"), el("th", {}, "error"))),
  el("tbody", {}, rows.map((j) => el("tr", { "data-task": j.task },
    el("td", {}, j.task), el("td", { class: "task-state", "data-state": j.state }, j.state === "failed" ? el("b", { class: "error-text" }, j.state) : j.state),
    el("td", { class: "num" }, j.attempts), el("td", { class: "num" }, j.seconds === null ? "–" : j.seconds.toFixed(1)),
    el("td", { class: `num${j.warnings ? " warning-text" : ""}`, "data-warnings": j.warnings || 0 }, j.warnings || ""),
    el("td", { class: "error-text" }, j.error || "")))));
}

function provenanceBlock(run) {
  const p = run.provenance || {};
  const versions = p.versions ? Object.entries(p.versions).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(", ") : "–";
  return el("details", {}, el("summary", {}, "Provenance: where and with what this ran"),
    el("dl", { class: "kv", style: "margin-top:8px" },
      el("dt", {}, "created"), el("dd", {}, when(run.created)),
      el("dt", {}, "started"), el("dd", {}, when(run.started)),
      el("dt", {}, "finished"), el("dd", {}, when(run.finished)),
      el("dt", {}, "host / user"), el("dd", {}, `${p.host || "–"} / ${p.user || "–"}`),
      el("dt", {}, "executor"), el("dd", {}, `${run.executor || "–"} (${p.executor || "–"})`),
      el("dt", {}, "python"), el("dd", {}, p.python || "–"),
      el("dt", {}, "versions"), el("dd", { class: "mono" }, versions),
      el("dt", {}, "command line"), el("dd", { class: "mono" }, (p.command_line || []).join(" ") || "–"),
      el("dt", {}, "folder"), el("dd", { class: "mono" }, run.folder)));
}

function picturesBlock(run) {
  if (!run.pictures.length) return "";
  return el("div", { class: "panel" }, el("h2", {}, "Pictures"),
    el("div", { class: "pictures" }, run.pictures.map((path) => el("figure", {},
      el("a", { href: `/api/file?path=${encodeURIComponent(path)}`, target: "_blank" },
        el("img", { src: `/api/file?path=${encodeURIComponent(path)}`, alt: path, loading: "lazy" })),
      el("figcaption", { class: "muted" }, path.split("/").pop())))));
}

function runHeader(run, act, message) {
  const label = run.protocol_info ? run.protocol_info.label : run.protocol;
  const running = run.state === "running" || run.state === "queued";
  return [
    el("div", {}, el("h1", {}, label, " ", el("span", { class: "muted" }, `#${run.id} ${run.name}`)),
      el("p", {}, stateBadge(run.state, run.warnings), " ", `${run.items_done} item(s) done`,
        run.warnings ? el("span", { class: "warning-text", id: "run-warnings" }, `, ${run.items_warned} with warnings (see the log)`) : "",
        run.items_failed ? el("span", { class: "error-text" }, `, ${run.items_failed} failed`) : "",
        run.error ? el("div", { class: "error-text" }, run.error) : "")),
    el("div", {}, el("div", { class: "buttons" },
      el("button", { class: "danger", id: "stop-button", disabled: run.state !== "running",
        onclick: () => act(`/api/runs/${run.id}/stop`, "Stopping") }, "Stop"),
      el("button", { class: "secondary", id: "resume-button", disabled: running, title: "continue: finished unchanged items are skipped",
        onclick: () => act(`/api/runs/${run.id}/resume`, "Resuming") }, "Resume"),
      el("button", { class: "secondary", id: "rerun-button", title: "open the form with this run's parameters",
        onclick: () => { location.hash = `#/new/${run.protocol}?from=${run.id}`; } }, "Re-run with changes…")), message)];
}

function runBody(run, log) {
  return [
    el("div", { class: "grid2" },
      el("div", { class: "panel" }, el("h2", {}, "Parameters"), paramTable(run)),
      el("div", {}, el("div", { class: "panel" }, el("h2", {}, "Inputs"), inputsBlock(run)),
        el("div", { class: "panel", id: "run-outputs" }, el("h2", {}, "Outputs"), outputsBlock(run)))),
    picturesBlock(run),
    el("div", { class: "panel" }, el("h2", {}, "Items"), journalTable(run)),
    el("div", { class: "panel" }, el("h2", {}, "Log ", el("span", { class: "muted" }, `${run.folder}/logs/run.log`)), log),
    el("div", { class: "panel" }, provenanceBlock(run))];
}

// The live tail of logs/run.log (or of the scheduler's output when the run died before logging).
class LogTail {
  constructor(runId) {
    this.runId = runId;
    this.offset = 0;
    this.busy = false;
    this.node = el("pre", { class: "log", id: "run-log" });
  }

  async update() {
    if (this.busy) return;
    this.busy = true;
    try { await this.fetchMore(); } finally { this.busy = false; }
  }

  async fetchMore() {
    const log = this.node;
    const chunk = await api(`/api/runs/${this.runId}/log?offset=${this.offset}`);
    if (chunk.text) {
      const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
      log.textContent += chunk.text;
      if (atBottom) log.scrollTop = log.scrollHeight;
    }
    this.offset = chunk.offset;
    if (!log.textContent) {
      const scheduler = await api(`/api/runs/${this.runId}/log?which=scheduler`);
      if (scheduler.text) log.textContent = scheduler.text;
    }
  }
}

export async function showRun(view, runId) {
  const head = el("div", { class: "page-head" });
  const body = el("div");
  const log = new LogTail(runId);
  view.append(head, body);
  let lastText = "";
  let lastState = null;
  const render = async () => {
    const run = await api(`/api/runs/${runId}`);
    const text = JSON.stringify(run);
    log.update();
    if (text === lastText) return;  // nothing new: keep the page as it is
    lastText = text;
    lastState = run.state;
    const message = el("div", { class: "status-line", id: "action-status" });
    const act = async (path, verb) => {
      message.textContent = `${verb}…`;
      try {
        await api(path, { method: "POST" });
        message.textContent = `${verb}: done`;
        render();
      } catch (e) { message.textContent = e.message; message.className = "status-line error"; }
    };
    head.replaceChildren(...runHeader(run, act, message));
    body.replaceChildren(...runBody(run, log.node));
  };
  await render();
  onProjectEvent((event) => { if (event.run_id === runId) render(); });
  const fast = setInterval(() => { if (lastState === "running" || lastState === "queued") log.update(); }, 1000);
  const slow = setInterval(render, 5000);
  setCleanup(() => { clearInterval(fast); clearInterval(slow); });
}
