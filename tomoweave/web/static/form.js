// A form for any protocol, generated from Protocol.describe(): parameters with units, bounds and
// help; input selectors offering only outputs of the right item type; server-side validation
// errors shown beside the field they name.
import { api, el, fieldLabel, plural } from "./app.js";

function schemaOf(property) {
  // Optional[X] is anyOf [X, null]: the form shows X and an empty box means "not set".
  if (property.anyOf) {
    const real = property.anyOf.find((s) => s.type !== "null") || {};
    return { ...property, ...real, nullable: property.anyOf.some((s) => s.type === "null") };
  }
  return property;
}

function boundsText(s) {
  const low = s.minimum ?? s.exclusiveMinimum, high = s.maximum ?? s.exclusiveMaximum;
  if (low === undefined && high === undefined) return "";
  const lo = low === undefined ? "" : `${low}${s.exclusiveMinimum !== undefined ? " <" : " ≤"} `;
  const hi = high === undefined ? "" : ` ${s.exclusiveMaximum !== undefined ? "<" : "≤"} ${high}`;
  return `${lo}value${hi}`;
}

function makeControl(name, s, value) {
  const id = `param-${name}`;
  const choices = s.enum || s.choices;
  // an optional (None) value means "let the protocol decide": it must stay distinguishable
  const notSet = s.nullable ? [el("option", { value: "", selected: value === null || value === undefined }, "not set (default)")] : [];
  if (choices) {
    return el("select", { id, name }, notSet, choices.map((c) => el("option", { value: c, selected: c === value }, c)));
  }
  if (s.type === "boolean" && s.nullable) {
    return el("select", { id, name, "data-kind": "boolean" }, notSet,
      el("option", { value: "yes", selected: value === true }, "yes"),
      el("option", { value: "no", selected: value === false }, "no"));
  }
  if (s.type === "boolean") {
    return el("input", { id, name, type: "checkbox", checked: Boolean(value) });
  }
  if (s.type === "number" || s.type === "integer") {
    return el("input", { id, name, type: "number", step: s.type === "integer" ? 1 : "any",
      min: s.minimum, max: s.maximum, value: value ?? "", placeholder: s.nullable ? "not set" : "" });
  }
  if (s.type === "array" && s.items && ["number", "integer", "string"].includes(s.items.type)) {
    const text = (value || []).join(s.items.type === "string" ? "\n" : ", ");
    return el("textarea", { id, name, rows: 2, placeholder: s.items.type === "string" ? "one per line" : "e.g. -60, 60" }, text);
  }
  if (s.type === "object" || s.type === "array") {
    return el("textarea", { id, name, rows: 3 }, value === undefined ? "" : JSON.stringify(value));
  }
  return el("input", { id, name, type: "text", value: value ?? "", placeholder: s.nullable ? "not set" : "" });
}

function readControl(control, s) {
  if (control.type === "checkbox") return control.checked;
  const raw = control.value.trim();
  if (raw === "" && s.nullable) return null;
  if (raw === "" && (s.type === "array")) return [];
  if (control.dataset.kind === "boolean") return raw === "yes";
  if (control.tagName === "SELECT") return raw;
  if (s.type === "number" || s.type === "integer") return raw === "" ? raw : Number(raw);
  if (s.type === "array" && s.items && s.items.type === "string") return raw.split(/\n+/).map((x) => x.trim()).filter(Boolean);
  if (s.type === "array" && s.items && ["number", "integer"].includes(s.items.type)) {
    return raw.split(/[\s,;]+/).filter(Boolean).map(Number);
  }
  if (s.type === "object" || s.type === "array") {
    try { return JSON.parse(raw); } catch { return raw; }
  }
  return raw;
}

function row(field, labelNode, control, helpText, extra) {
  return el("div", { class: "form-row", "data-field": field },
    labelNode, el("div", {}, control, extra || "", helpText ? el("div", { class: "help" }, helpText) : "",
      el("div", { class: "field-error", "data-error-for": field })));
}

async function inputRow(name, spec, chosen) {
  const options = await api(`/api/outputs?type=${encodeURIComponent(spec.type)}`);
  const missing = chosen && !options.some((o) => o.reference === chosen);
  const select = el("select", { id: `input-${name}`, name },
    el("option", { value: "" }, options.length ? `— choose ${spec.type} —` : `no ${spec.type} outputs in this project yet`),
    missing ? el("option", { value: "", selected: true, disabled: true }, `${chosen} (read before, no longer in the project)`) : "",
    options.map((o) => el("option", { value: o.reference, selected: o.reference === chosen },
      `${o.run} · ${o.output} — ${plural(o.count, o.type)} (${{ open: "still growing", stopped: "incomplete, run stopped" }[o.state] || o.run_state})`)));
  // newest output first: the usual next step reads what was made last
  if (!chosen && options.length && !spec.optional) select.value = options[0].reference;
  const label = el("label", { for: `input-${name}`, title: spec.help || "" }, fieldLabel(name), " ",
    el("span", { class: "unit" }, `(${spec.type}${spec.multiple ? ", several" : ""})`),
    spec.optional ? "" : el("span", { class: "req", title: "required" }, " *"));
  return { node: row(`inputs.${name}`, label, select, spec.help || (spec.mapped ? "processed item by item" : "")), select };
}

function paramRow(name, property, required, value) {
  const s = schemaOf(property);
  const control = makeControl(name, s, value === undefined ? s.default : value);
  const unit = s.unit ? el("span", { class: "unit" }, ` (${s.unit})`) : "";
  const label = el("label", { for: control.id, title: s.description || "" }, fieldLabel(name), unit,
    required ? el("span", { class: "req", title: "required" }, " *") : "");
  const bounds = boundsText(s);
  return { node: row(`params.${name}`, label, control, s.description, bounds ? el("span", { class: "bounds" }, bounds) : ""),
    control, schema: s };
}

export function showFieldErrors(form, detail) {
  for (const node of form.querySelectorAll(".form-row.invalid")) node.classList.remove("invalid");
  for (const node of form.querySelectorAll(".field-error")) node.textContent = "";
  const errors = (detail && detail.errors) || [];
  let shown = false;
  for (const e of errors) {
    const target = e.field && form.querySelector(`[data-error-for="${CSS.escape(e.field)}"]`);
    if (target) {
      target.textContent = e.message;
      target.closest(".form-row").classList.add("invalid");
      if (!shown) target.closest(".form-row").scrollIntoView({ block: "center", behavior: "smooth" });
      shown = true;
    }
  }
  return shown;
}

async function inputsPanel(info, previousInputs) {
  const selects = {};
  if (!Object.keys(info.inputs).length) return { node: "", selects };
  const box = el("div", { class: "panel" }, el("h2", {}, "Inputs"));
  for (const [name, spec] of Object.entries(info.inputs)) {
    const { node, select } = await inputRow(name, spec, previousInputs[name]);
    selects[name] = select;
    box.append(node);
  }
  return { node: box, selects };
}

function paramsPanel(info, previous) {
  const props = info.params.properties || {};
  const required = new Set(info.params.required || []);
  const built = {};
  const box = el("div", { class: "panel" }, el("h2", {}, "Parameters"));
  if (!Object.keys(props).length) box.append(el("p", { class: "muted" }, "This protocol has no parameters."));
  for (const [name, property] of Object.entries(props)) {
    built[name] = paramRow(name, property, required.has(name), previous[name]);
    box.append(built[name].node);
  }
  return { node: box, built, required };
}

function runPanel(info, fromRun) {
  const nameInput = el("input", { id: "run-name", type: "text", value: fromRun ? fromRun.name : "",
    placeholder: `default: ${info.name}` });
  const executor = el("select", { id: "run-executor" }, ["local", "inline", "dask"].map((x) =>
    el("option", { value: x, selected: x === ((fromRun && fromRun.executor) || "local") }, x)));
  const message = el("div", { class: "form-message" });
  const launch = el("button", { type: "submit", class: "primary", id: "launch-button" },
    fromRun ? "Re-run with these parameters" : "Launch");
  const node = el("div", { class: "panel" }, el("h2", {}, "Run"),
    row("name", el("label", { for: "run-name", title: "an existing run's name re-runs it: unchanged items are skipped" }, "Run name"),
      nameInput, fromRun ? "Keeping the name re-runs that run (unchanged items are skipped); a new name makes a new run." : "Leave empty for an automatic name."),
    row("executor", el("label", { for: "run-executor", title: "where the items are computed" }, "Executor"), executor,
      "local: a process pool on this machine · inline: one by one (debugging) · dask: a distributed cluster"),
    el("div", { class: "buttons", style: "margin-top:12px" }, launch,
      el("a", { href: "#/", class: "secondary", style: "padding:6px 10px" }, "Cancel")),
    message);
  return { node, nameInput, executor, message, launch };
}

// A cleared number box is an error, never silently the default (issue 18.5).
function emptyNumberError(built) {
  const s = built.schema;
  if (!["number", "integer"].includes(s.type) || s.nullable || built.control.value.trim() !== "") return null;
  const fallback = s.default === undefined ? "" : ` (the default is ${s.default})`;
  return `enter a number${fallback}`;
}

function requestBody(info, inputs, params, run) {
  const body = { protocol: info.name, inputs: {}, params: {}, executor: run.executor.value };
  const errors = [];
  for (const [name, select] of Object.entries(inputs.selects)) if (select.value) body.inputs[name] = select.value;
  for (const [name, built] of Object.entries(params.built)) {
    const empty = emptyNumberError(built);
    if (empty) { errors.push({ field: `params.${name}`, message: empty }); continue; }
    const value = readControl(built.control, built.schema);
    if (value === "" && !params.required.has(name)) continue;
    body.params[name] = value;
  }
  if (run.nameInput.value.trim()) body.name = run.nameInput.value.trim();
  return { body, errors };
}

function showFormErrors(form, run, detail) {
  const placed = showFieldErrors(form, detail);
  run.message.replaceChildren(el("div", { class: "error-text", id: "form-error" },
    placed ? "Please correct the highlighted field." : detail.message));
  if (placed && detail.message) run.message.firstChild.append(el("div", { class: "muted" }, detail.message));
}

async function submit(form, { body, errors }, run) {
  run.message.textContent = "";
  if (errors.length) {
    showFormErrors(form, run, { errors, message: `${errors[0].field}: ${errors[0].message}` });
    return;
  }
  run.launch.disabled = true;
  try {
    const created = await api("/api/runs", { json: body });
    location.hash = `#/run/${created.id}`;
  } catch (error) {
    const detail = error.detail && typeof error.detail === "object" ? error.detail : {};
    showFormErrors(form, run, { ...detail, message: error.message });
  } finally { run.launch.disabled = false; }
}

export async function showForm(view, protocolName, query) {
  const info = await api(`/api/protocols/${encodeURIComponent(protocolName)}`);
  const fromRun = query.get("from") ? await api(`/api/runs/${Number(query.get("from"))}`) : null;
  // the sets the run read, as RUN.OUTPUT (a CLI or workflow run may have been given just "RUN")
  const previousInputs = fromRun ? Object.fromEntries(Object.entries(fromRun.input_references || {})
    .map(([name, refs]) => [name, refs[0] ?? fromRun.inputs[name]])) : {};
  const inputs = await inputsPanel(info, previousInputs);
  const params = paramsPanel(info, fromRun ? fromRun.params : {});
  const run = runPanel(info, fromRun);
  const form = el("form", { id: "protocol-form", novalidate: true }, inputs.node, params.node, run.node);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit(form, requestBody(info, inputs, params, run), run);
  });
  const citations = info.citations.length ? el("div", { class: "panel" }, el("h2", {}, "Please cite"),
    el("ul", { class: "citations" }, info.citations.map((c) => el("li", {}, c)))) : "";
  const outputs = Object.entries(info.outputs).map(([n, o]) => `${n} (${o.type})`).join(", ");
  view.append(el("div", { class: "page-head" }, el("div", {},
    el("h1", {}, info.label, " ", el("code", { class: "muted" }, info.name)),
    el("p", {}, info.description),
    outputs ? el("p", {}, "Produces: ", outputs) : "")), form, citations);
}
