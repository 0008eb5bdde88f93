// dlmprompt playground: writes a Prompt (or picks a shipped template), streams POST /v1/generate
// and draws each `step` event's canvas as the server sent it, then the `result` event.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

const state = { mode: "write", templates: [], steps: [], result: null, running: null, follow: true };
window.playground = state; // read by the browser test, handy in the console

// ------------------------------------------------------------------ the slot syntax -> Prompt JSON
const OPTIONS = "max=N, tokens=N, then one of regex=..., choice=a|b|c, json={...}";

function lineOf(src, i) {
  return src.slice(0, i).split("\n").length;
}

// index just past the JSON object starting at src[i] (strings and escapes respected)
function jsonEnd(src, i, fail) {
  if (src[i] !== "{") fail("json= takes a JSON Schema object, starting with {");
  let depth = 0;
  for (let j = i, inString = false; j < src.length; j++) {
    const c = src[j];
    if (inString) {
      if (c === "\\") j++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === "{") depth++;
    else if (c === "}" && --depth === 0) return j + 1;
  }
  fail("its JSON Schema has no closing }");
}

function parseSlot(src, start) {
  let i = start + 2;
  let name = "";
  const fail = (msg) => {
    throw new Error(`line ${lineOf(src, start)}, slot ${name ? `'${name}'` : "{{...}}"}: ${msg}`);
  };
  const head = /^\s*([A-Za-z_][A-Za-z0-9_]*)/.exec(src.slice(i));
  if (!head) fail("a slot starts with its name (letters, digits and _), e.g. {{city}}");
  name = head[1];
  i += head[0].length;
  let length = null;
  let constraint = { type: "text" };
  for (;;) {
    i += /^\s*/.exec(src.slice(i))[0].length;
    if (src.startsWith("}}", i)) { i += 2; break; }
    const opt = /^(max|tokens|regex|choice|json)=/.exec(src.slice(i));
    if (!opt) fail(`unexpected ${JSON.stringify(src.slice(i, i + 16))}; options are ${OPTIONS}`);
    if (constraint.type !== "text" && !["max", "tokens"].includes(opt[1])) fail("give one of regex=, choice=, json=");
    i += opt[0].length;
    if (opt[1] === "max" || opt[1] === "tokens") {
      const n = /^[0-9]+/.exec(src.slice(i));
      if (!n || +n[0] < 1) fail(`${opt[1]}= takes a positive whole number of tokens`);
      length = { mode: opt[1] === "max" ? "at_most" : "exact", tokens: +n[0] };
      i += n[0].length;
    } else if (opt[1] === "json") {
      const end = jsonEnd(src, i, fail);
      try {
        constraint = { type: "json", schema: JSON.parse(src.slice(i, end)) };
      } catch (e) {
        fail(`json= is not valid JSON (${e.message})`);
      }
      i = end;
    } else { // regex= and choice= take the rest of the slot, up to the first }} not followed by }
      const close = /\}\}(?!\})/g;
      close.lastIndex = i;
      const m = close.exec(src);
      if (!m) fail("no closing }}");
      const value = src.slice(i, m.index);
      constraint = opt[1] === "regex" ? { type: "regex", pattern: value } : { type: "choice", options: value.split("|") };
      i = m.index + 2;
      break;
    }
  }
  if (constraint.type === "json" && length && length.mode === "exact") fail("a json slot takes max=N (each value's budget)");
  length = length || { mode: "at_most", tokens: constraint.type === "json" ? 16 : 8 };
  return [{ kind: "slot", name, constraint, length }, i];
}

function parsePrompt(src) {
  const parts = [];
  let i = 0;
  for (;;) {
    const open = src.indexOf("{{", i);
    const text = src.slice(i, open < 0 ? src.length : open);
    if (text) parts.push({ kind: "text", text });
    if (open < 0) break;
    const [slot, end] = parseSlot(src, open);
    parts.push(slot);
    i = end;
  }
  if (!parts.some((p) => p.kind === "slot")) throw new Error("the prompt has no slot; write one as {{name}}");
  return { parts };
}

// ------------------------------------------------------------------ templates
function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function apiMessage(status, body) {
  const err = body && body.error;
  if (!err) return `HTTP ${status}: the server sent no JSON error`;
  return `HTTP ${status}${err.code ? ` · ${err.code}` : ""}: ${err.message}`;
}

async function loadTemplates() {
  const pick = $("template");
  pick.replaceChildren();
  $("variables").replaceChildren();
  try {
    const resp = await fetch("v1/templates", { headers: headers() });
    const body = await resp.json().catch(() => null);
    if (!resp.ok) {
      $("template-description").textContent = apiMessage(resp.status, body) + (resp.status === 401 ? " (enter the API key above)" : "");
      return;
    }
    state.templates = body.data;
  } catch (e) {
    $("template-description").textContent = `could not list the templates: ${e.message}`;
    return;
  }
  for (const t of state.templates) pick.append(el("option", "", t.name));
  showTemplate();
}

function showTemplate() {
  const t = state.templates.find((x) => x.name === $("template").value);
  const box = $("variables");
  box.replaceChildren();
  if (!t) return;
  $("template-description").textContent = t.description || "";
  const example = t.example || {};
  for (const v of t.variables) {
    const label = el("label", "var");
    label.append(el("span", "name", v.name + (v.required ? " *" : "")), ` ${v.type}`);
    if (v.description) label.append(el("small", "", v.description));
    const value = v.name in example ? example[v.name] : v.default;
    let input;
    if (v.type === "boolean") {
      input = el("input");
      input.type = "checkbox";
      input.checked = Boolean(value);
    } else if (v.type === "integer" || v.type === "number") {
      input = el("input");
      input.type = "number";
      input.value = value === undefined || value === null ? "" : String(value);
    } else {
      input = el("textarea");
      input.spellcheck = false;
      input.value = value === undefined ? "" : v.type === "string" ? String(value) : JSON.stringify(value, null, 1);
      input.rows = Math.min(8, Math.max(1, input.value.split("\n").length));
    }
    input.dataset.name = v.name;
    input.dataset.type = v.type;
    input.dataset.required = v.required ? "1" : "";
    label.append(input);
    box.append(label);
  }
}

function templateVariables() {
  const out = {};
  for (const input of $("variables").querySelectorAll("[data-name]")) {
    const { name, type, required } = input.dataset;
    if (type === "boolean") { out[name] = input.checked; continue; }
    const raw = input.value;
    if (raw.trim() === "" && !required) continue; // the template's default
    if (type === "string") out[name] = raw;
    else if (type === "integer" || type === "number") {
      if (raw.trim() === "" || !Number.isFinite(Number(raw))) throw new Error(`variable '${name}': give a number`);
      out[name] = Number(raw);
    } else {
      try { out[name] = JSON.parse(raw); } catch (e) { throw new Error(`variable '${name}' (${type}): not valid JSON (${e.message})`); }
    }
  }
  return out;
}

// ------------------------------------------------------------------ drawing
function show(text) {
  return text === "" ? "∅" : text.replace(/\n/g, "↵").replace(/\t/g, "⇥");
}

function draw(k) {
  const step = state.steps[k];
  if (!step) return;
  const slotOf = step.slot_of || [];
  const names = step.slots || [];
  const commits = new Map(); // position -> [step, confidence], for the steps up to k
  for (let j = 0; j <= k; j++) {
    state.steps[j].committed.forEach((pos, n) => commits.set(pos, [j, state.steps[j].confidences[n]]));
  }
  const cells = [];
  let last = -1;
  step.pieces.forEach((piece, pos) => {
    const slot = slotOf[pos] === undefined ? -1 : slotOf[pos];
    const hue = String((slot * 67 + 210) % 360);
    if (slot >= 0 && slot !== last) {
      const label = el("span", "slot-label", names[slot] || `slot ${slot}`);
      label.style.setProperty("--hue", hue);
      cells.push(label);
    }
    last = slot;
    const commit = commits.get(pos);
    const cell = el("span", "cell", piece === null ? "_" : show(piece));
    const tip = [`position ${pos}`, slot >= 0 ? `slot ${names[slot] || slot}` : "anchor", `token ${step.canvas[pos]}`];
    if (piece === null) cell.classList.add("masked");
    else if (slot < 0 && !commit) cell.classList.add("anchor");
    else {
      cell.classList.add("committed");
      if (commit) {
        cell.style.setProperty("--conf", String(commit[1]));
        tip.push(`committed at step ${commit[0]}`, `confidence ${commit[1].toFixed(3)}`);
        if (commit[0] === k) cell.classList.add("fresh");
      }
    }
    if (piece === "") cell.classList.add("empty");
    if (slot >= 0) cell.style.setProperty("--hue", hue);
    cell.title = tip.join(" · ");
    cell.dataset.pos = String(pos);
    cells.push(cell);
    if (piece && piece.includes("\n")) cells.push(el("span", "br"));
  });
  $("canvas").replaceChildren(...cells);
  $("scrub").value = String(k);
  const made = step.committed.map((pos, n) => `${pos} ${JSON.stringify(step.pieces[pos])} (${step.confidences[n].toFixed(3)})`);
  $("step-info").textContent = `step ${k}: committed ${made.slice(0, 6).join(", ")}${made.length > 6 ? ", …" : ""}`;
  $("bars").querySelectorAll(".bar").forEach((b, j) => b.classList.toggle("current", j === k));
}

function addBar(step) {
  const confs = step.confidences;
  const mean = confs.length ? confs.reduce((a, b) => a + b, 0) / confs.length : 0;
  const bar = el("span", "bar");
  bar.style.height = `${Math.max(4, Math.round(mean * 100))}%`;
  bar.title = `step ${step.index}: ${confs.length} committed, mean confidence ${mean.toFixed(3)}`;
  const k = state.steps.length - 1;
  bar.addEventListener("click", () => { state.follow = false; draw(k); });
  $("bars").append(bar);
}

function showResult(result) {
  state.result = result;
  $("result-text").textContent = result.text;
  const rows = Object.entries(result.captures).map(([name, c]) => {
    const tr = el("tr");
    tr.append(el("td", "", name), el("td", "", JSON.stringify(c.value)));
    return tr;
  });
  $("captures").tBodies[0].replaceChildren(...rows);
}

// ------------------------------------------------------------------ running
function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
  if (message) document.body.dataset.state = "error";
}

function request() {
  const seed = $("seed").value.trim();
  const body = { seed: seed === "" ? null : Number(seed), stream: true };
  if (state.mode === "template") {
    body.template = $("template").value;
    body.variables = templateVariables();
    if (!body.template) throw new Error("no template picked (the list comes from GET /v1/templates)");
    return body;
  }
  const prompt = parsePrompt($("source").value);
  const sampling = { strategy: $("strategy").value, temperature: Number($("temperature").value || 0) };
  if ($("steps").value.trim()) sampling.steps = Number($("steps").value);
  body.prompt = { ...prompt, sampling };
  return body;
}

function handleEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  if (!data.length) return;
  const payload = JSON.parse(data.join("\n"));
  if (event === "step") {
    state.steps.push(payload);
    addBar(payload);
    const k = state.steps.length - 1;
    $("scrub").max = String(k);
    $("scrub").disabled = false;
    if (state.follow) draw(k);
    $("status").textContent = `running: step ${k + 1}, ${payload.forward_passes} forward passes`;
  } else if (event === "result") {
    showResult(payload);
    if (state.follow) draw(state.steps.length - 1);
    $("status").textContent = `done: ${payload.steps} steps, ${payload.forward_passes} forward passes`;
    document.body.dataset.state = "done";
  } else if (event === "error") {
    const err = payload.error || {};
    showError(`the run failed on the server (${err.type || "error"}): ${err.message || JSON.stringify(payload)}`);
    $("status").textContent = `failed after ${state.steps.length} steps`;
  }
}

async function run() {
  showError("");
  let body;
  try {
    body = request();
  } catch (e) {
    showError(e.message);
    $("status").textContent = "not sent: fix the prompt or the variables";
    return;
  }
  $("request").textContent = JSON.stringify(body, null, 2);
  Object.assign(state, { steps: [], result: null, follow: true, running: new AbortController() });
  for (const id of ["canvas", "bars", "result-text", "step-info"]) $(id).replaceChildren();
  $("captures").tBodies[0].replaceChildren();
  $("scrub").disabled = true;
  $("run").disabled = true;
  $("stop").disabled = false;
  document.body.dataset.state = "running";
  $("status").textContent = "waiting for the server…";
  const started = performance.now();
  try {
    const resp = await fetch("v1/generate", { method: "POST", headers: headers(), body: JSON.stringify(body), signal: state.running.signal });
    if (!resp.ok) {
      showError(apiMessage(resp.status, await resp.json().catch(() => null)));
      $("status").textContent = `refused by the server (HTTP ${resp.status})`;
      return;
    }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        handleEvent(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
      }
    }
    if (!state.result && document.body.dataset.state !== "error") showError("the stream ended without a result");
    else if (state.result) $("status").textContent += `, ${((performance.now() - started) / 1000).toFixed(2)} s`;
  } catch (e) {
    if (e.name === "AbortError") {
      $("status").textContent = `stopped after ${state.steps.length} steps`;
      document.body.dataset.state = "stopped";
    } else if (e instanceof TypeError) showError(`could not reach the server: ${e.message}`);
    else showError(`the stream broke: ${e.message}`);
  } finally {
    state.running = null;
    $("run").disabled = false;
    $("stop").disabled = true;
  }
}

function setMode(mode) {
  state.mode = mode;
  $("pane-write").hidden = mode !== "write";
  $("pane-template").hidden = mode !== "template";
  for (const [id, m] of [["tab-write", "write"], ["tab-template", "template"]]) {
    $(id).classList.toggle("active", m === mode);
    $(id).setAttribute("aria-selected", String(m === mode));
  }
}

async function start() {
  $("tab-write").addEventListener("click", () => setMode("write"));
  $("tab-template").addEventListener("click", () => setMode("template"));
  $("template").addEventListener("change", showTemplate);
  $("api-key").addEventListener("change", loadTemplates);
  $("run").addEventListener("click", run);
  $("stop").addEventListener("click", () => state.running && state.running.abort());
  $("scrub").addEventListener("input", () => {
    state.follow = $("scrub").value === $("scrub").max; // back at the newest step: follow the run again
    draw(Number($("scrub").value));
  });
  $("source").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run(); });
  try {
    const health = await (await fetch("health")).json();
    $("model").textContent = `model: ${health.model}`;
  } catch (e) {
    $("model").textContent = `the server does not answer (${e.message})`;
  }
  await loadTemplates();
  document.body.dataset.state = "ready";
}

start();
