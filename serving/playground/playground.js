// The rayformers playground: one form per served app, answered through the same API (and the same API key)
// as any client. The server says, per app, which form to show and how to read the answer (`playground` in
// GET /apps, from the app's task); this file knows those kinds, never a task by name. Everything a model
// or a user wrote is put into the page as text nodes, never as markup.
"use strict";

(() => {
  const KEY_STORE = "rayformers.apiKey";
  const ADAPTER_HEADER = "serve_multiplexed_model_id";
  const $ = (id) => document.getElementById(id);

  // --- DOM --------------------------------------------------------------------------------------------

  /** An element with attributes and children (strings become text nodes). */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === false || value === null || value === undefined) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const score = (value) => (typeof value === "number" ? value.toFixed(value !== 0 && Math.abs(value) < 0.001 ? 6 : 3) : "");

  // --- the API key --------------------------------------------------------------------------------------

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORE) || "";
    } catch {
      return "";
    }
  }

  function storeKey(key) {
    try {
      if (key) sessionStorage.setItem(KEY_STORE, key);
      else sessionStorage.removeItem(KEY_STORE);
    } catch {
      // Storage refused (a private window's policy): the key lives only as long as this page.
    }
    memoryKey = key;
    showKeyState();
  }

  let memoryKey = storedKey();

  function showKeyState() {
    $("key-state").textContent = memoryKey ? "a key is set for this tab" : "no key set";
  }

  // --- calls --------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, error) {
      super(error.message || `HTTP ${status}`);
      this.status = status;
      this.error = error;
    }
  }

  async function call(path, { method = "GET", body, headers = {} } = {}) {
    const sent = { Accept: "application/json", ...headers };
    if (memoryKey) sent.Authorization = `Bearer ${memoryKey}`;
    if (body !== undefined) sent["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers: sent, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new ApiError(0, { type: "network", message: `the server could not be reached (${err.message})` });
    }
    if (!response.ok) {
      let error = {};
      try {
        const parsed = await response.json();
        error = parsed && typeof parsed.error === "object" ? parsed.error : { message: JSON.stringify(parsed) };
      } catch {
        error = { message: `HTTP ${response.status} ${response.statusText}` };
      }
      throw new ApiError(response.status, error);
    }
    return response;
  }

  /** A readable account of a failed call: what went wrong, the field at fault and the request id. */
  function describeError(err) {
    if (!(err instanceof ApiError)) return el("p", {}, `Something went wrong in the page: ${err.message}`);
    if (err.status === 401) {
      return el(
        "p",
        {},
        memoryKey
          ? "The API key was not accepted. Enter one of the server's keys above and press Use key."
          : "This server needs an API key. Enter it above and press Use key.",
      );
    }
    const { type, message, field, request_id: requestId, fields } = err.error;
    // A status of 0: no answer came; null: the stream failed after its answer had begun.
    const heading = err.status === 0 ? "No answer" : [err.status, type || "error"].filter((x) => x !== null).join(" ");
    const parts = [el("p", {}, el("strong", {}, heading), ": ", message || "")];
    if (field) parts.push(el("p", { class: "muted" }, "Field: ", el("code", {}, field)));
    if (Array.isArray(fields) && fields.length > 1) {
      parts.push(el("ul", {}, fields.map((f) => el("li", {}, el("code", {}, f.field), ": ", f.message))));
    }
    if (err.status === 503) parts.push(el("p", { class: "muted" }, "The app is busy: try again in a moment."));
    if (requestId) parts.push(el("p", { class: "muted" }, "Request id: ", el("code", {}, requestId)));
    return el("div", {}, parts);
  }

  function notice(content) {
    const box = $("notice");
    box.replaceChildren(...(content ? [content] : []));
    box.hidden = !content;
  }

  // --- the app list ---------------------------------------------------------------------------------------

  let apps = [];
  let current = null;

  async function loadApps() {
    $("apps-state").textContent = "Loading the served apps…";
    $("apps-state").hidden = false;
    try {
      const index = await (await call("apps")).json();
      apps = index.apps;
      notice(null);
    } catch (err) {
      apps = [];
      $("apps").replaceChildren();
      $("apps-state").textContent = err.status === 401 ? "The list needs an API key." : "The apps could not be listed.";
      notice(describeError(err));
      if (err.status === 401) $("api-key").focus();
      return;
    }
    $("apps-state").hidden = apps.length > 0;
    $("apps-state").textContent = apps.length ? "" : "No app is served.";
    $("apps").replaceChildren(
      ...apps.map((app) =>
        el(
          "li",
          {},
          el(
            "button",
            { type: "button", class: "app-button", "data-app": app.name, "aria-pressed": "false" },
            el("span", { class: "app-name" }, app.name),
            el("span", { class: "app-task" }, app.task),
          ),
        ),
      ),
    );
    const wanted = decodeURIComponent(location.hash.slice(1));
    const chosen = apps.find((a) => a.name === wanted) || (current && apps.find((a) => a.name === current.name));
    if (chosen) select(chosen.name);
  }

  function select(name) {
    current = apps.find((a) => a.name === name) || null;
    for (const button of document.querySelectorAll(".app-button")) {
      button.setAttribute("aria-pressed", String(button.dataset.app === name));
    }
    if (!current) return;
    if (location.hash !== `#${encodeURIComponent(name)}`) history.replaceState(null, "", `#${encodeURIComponent(name)}`);
    $("app").hidden = false;
    $("app-title").textContent = current.name;
    $("app-summary").textContent = current.summary || "";
    $("app-facts").replaceChildren(...facts(current));
    $("fields").replaceChildren(...buildFields(current));
    $("result").hidden = true;
    $("result-body").replaceChildren();
    $("run-state").textContent = "";
    const first = $("fields").querySelector("textarea, input");
    if (first) first.focus();
  }

  function facts(app) {
    const rows = [["Task", app.task]];
    if (!app.available) rows.push(["Status", "no replica answered; requests may fail"]);
    if (app.base_model) rows.push(["Base model", app.base_model]);
    if (app.method) rows.push(["Fine-tuning", app.method]);
    if (Array.isArray(app.labels) && app.labels.length) rows.push(["Labels", chips(app.labels)]);
    if (app.adapters && app.adapters.length) rows.push(["Adapters", chips(app.adapters)]);
    const metrics = Object.entries(app.metrics || {});
    if (metrics.length) {
      rows.push(["Metrics", el("span", { class: "chips" }, metrics.map(([k, v]) => el("span", { class: "chip" }, `${k} ${typeof v === "number" ? score(v) : v}`)))]);
    }
    if (app.capabilities && app.capabilities.length) rows.push(["Can", app.capabilities.join(", ")]);
    return rows.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]);
  }

  const chips = (items) => el("span", { class: "chips" }, items.map((item) => el("span", { class: "chip" }, item)));

  // --- forms: one kind per task's kind of input -------------------------------------------------------------

  function field(label, control, help) {
    const id = `field-${control.dataset.name}`;
    control.id = id;
    const parts = [el("label", { for: id }, label), control];
    if (help) {
      const helpId = `${id}-help`;
      control.setAttribute("aria-describedby", helpId);
      parts.push(el("small", { id: helpId, class: "muted" }, help));
    }
    return el("div", { class: "field" }, parts);
  }

  const textArea = (name, rows, placeholder, required = true) =>
    el("textarea", { "data-name": name, name, rows, placeholder, required, spellcheck: "false" });
  const textInput = (name, placeholder, required = true) =>
    el("input", { "data-name": name, name, type: "text", placeholder, required, spellcheck: "false" });
  const numberInput = (name, value, min, max, step) =>
    el("input", { "data-name": name, name, type: "number", value, min, max, step, inputmode: "decimal" });

  const FORMS = {
    text: () => [field("Text", textArea("text", 4, "Type a text"))],
    "text-pair": () => [
      field("Text", textArea("text", 3, "Type a text")),
      field("Second text (optional)", textArea("text_pair", 2, "A second text, to classify the pair", false), "Leave empty to classify the first text alone."),
    ],
    "question-context": () => [
      field("Question", textInput("question", "Who led the team?")),
      field("Context", textArea("context", 6, "The passage the answer is taken from")),
    ],
    "text-labels": () => [
      field("Text", textArea("text", 3, "Type a text")),
      field("Candidate labels", textInput("candidate_labels", "sports, politics, cooking"), "Separate the labels with commas."),
    ],
    "query-documents": () => [
      field("Query", textInput("query", "What are the documents ranked for?")),
      field("Documents", textArea("texts", 6, "One document per line"), "One document per line."),
    ],
    prompt: () => [
      field("Prompt", textArea("text", 4, "Type a prompt")),
      el(
        "div",
        { class: "row" },
        field("Max new tokens", numberInput("max_new_tokens", 32, 1, 1024, 1)),
        field("Temperature", numberInput("temperature", 0, 0, 2, 0.1), "0 decodes greedily."),
      ),
    ],
    "two-texts": () => [
      field("First text", textArea("text", 2, "Type a text")),
      field("Second text", textArea("text_pair", 2, "Another text, to compare with the first")),
    ],
  };

  function buildFields(app) {
    const build = FORMS[app.playground.form] || FORMS.text;
    const fields = build();
    if (app.adapters && app.adapters.length) {
      const select = el(
        "select",
        { "data-name": "adapter", name: "adapter" },
        el("option", { value: "" }, "the base checkpoint"),
        app.adapters.map((a) => el("option", { value: a }, a)),
      );
      fields.push(field("Adapter", select));
    }
    return fields;
  }

  function values() {
    const out = {};
    for (const control of $("fields").querySelectorAll("[data-name]")) out[control.dataset.name] = control.value;
    return out;
  }

  /** The first required field left empty, to name it instead of sending a request bound to fail. */
  function missing() {
    return [...$("fields").querySelectorAll("[required]")].find((c) => !c.value.trim()) || null;
  }

  const lines = (text) => text.split("\n").map((l) => l.trim()).filter(Boolean);

  /** `{inputs, parameters}` for POST /{app}/predict, from the form's kind. */
  function predictBody(form, v) {
    const parameters = { ...current.playground.parameters };
    let inputs;
    switch (form) {
      case "text-pair":
        inputs = v.text_pair.trim() ? { text: v.text, text_pair: v.text_pair } : v.text;
        break;
      case "question-context":
        inputs = { question: v.question, context: v.context };
        break;
      case "text-labels":
        inputs = v.text;
        parameters.candidate_labels = v.candidate_labels.split(",").map((l) => l.trim()).filter(Boolean);
        break;
      case "query-documents":
        inputs = { query: v.query, texts: lines(v.texts) };
        break;
      case "prompt": {
        const temperature = Number(v.temperature) || 0;
        Object.assign(parameters, { max_new_tokens: Number(v.max_new_tokens) || 32, do_sample: temperature > 0 });
        if (temperature > 0) parameters.temperature = temperature;
        inputs = v.text;
        break;
      }
      case "two-texts":
        inputs = [v.text, v.text_pair];
        break;
      default:
        inputs = v.text;
    }
    return { inputs, parameters };
  }

  // --- running ---------------------------------------------------------------------------------------------

  async function run(event) {
    event.preventDefault();
    if (!current) return;
    const empty = missing();
    if (empty) {
      $("run-state").textContent = `${empty.labels[0].textContent} is empty.`;
      empty.focus();
      return;
    }
    const app = current;
    const v = values();
    const button = $("run");
    button.disabled = true;
    $("run-state").textContent = "Running…";
    $("result").hidden = false;
    $("result").setAttribute("aria-busy", "true");
    $("result-body").replaceChildren();
    const started = performance.now();
    try {
      if (app.playground.form === "prompt" && app.capabilities.includes("generate")) {
        await stream(app, v);
      } else {
        const headers = v.adapter ? { [ADAPTER_HEADER]: v.adapter } : {};
        const response = await call(`${encodeURIComponent(app.name)}/predict`, { method: "POST", body: predictBody(app.playground.form, v), headers });
        const output = await response.json();
        const batch = response.headers.get("X-Batch-Size");
        $("result-body").replaceChildren(render(app.playground.result, output, v));
        $("run-state").textContent = `Answered in ${Math.round(performance.now() - started)} ms${batch ? ` (batch of ${batch})` : ""}.`;
      }
    } catch (err) {
      $("result-body").replaceChildren(el("div", { class: "error" }, describeError(err)));
      $("run-state").textContent = "Failed.";
      if (err.status === 401) $("api-key").focus();
    } finally {
      button.disabled = false;
      $("result").removeAttribute("aria-busy");
    }
  }

  /** A generation streamed from POST /v1/completions as server-sent events, its text shown as it comes. */
  async function stream(app, v) {
    const temperature = Number(v.temperature) || 0;
    const body = {
      model: v.adapter ? `${app.name}/${v.adapter}` : app.name,
      prompt: v.text,
      max_tokens: Number(v.max_new_tokens) || 32,
      temperature,
      stream: true,
      stream_options: { include_usage: true },
    };
    const response = await call("v1/completions", { method: "POST", body, headers: { Accept: "text/event-stream" } });
    const prompt = el("span", { class: "prompt" }, v.text);
    const generated = el("span", { class: "generated", "data-streaming": "true" });
    const status = el("p", { class: "muted" }, "Streaming…");
    $("result-body").replaceChildren(el("p", { class: "text-output" }, prompt, generated), status);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let finish = null;
    let usage = null;
    const started = performance.now();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new ApiError(null, chunk.error);
          if (chunk.usage) usage = chunk.usage;
          for (const choice of chunk.choices || []) {
            if (choice.text) generated.append(choice.text);
            if (choice.finish_reason) finish = choice.finish_reason;
          }
        }
      }
    }
    generated.dataset.streaming = "false";
    const ms = Math.round(performance.now() - started);
    const tokens = usage ? `${usage.completion_tokens} tokens, ` : "";
    status.textContent = `Done (${tokens}${finish === "length" ? "stopped at max new tokens" : `finish: ${finish || "stop"}`}, ${ms} ms).`;
    $("run-state").textContent = "Streamed.";
  }

  // --- results: one view per kind of answer -------------------------------------------------------------------

  function scoreRow(label, value, min = 0, max = 1) {
    return el(
      "li",
      {},
      el("span", { class: "label" }, label),
      el("meter", { min, max, value: Math.min(Math.max(value, min), max), "aria-label": `${label}: ${score(value)}` }),
      el("span", { class: "score" }, score(value)),
    );
  }

  /** `{label, score}`, a list of them, or zero-shot's `{labels, scores}`: best first, each with a bar. */
  function labels(output) {
    let rows;
    if (Array.isArray(output)) rows = output;
    else if (Array.isArray(output.labels)) rows = output.labels.map((label, i) => ({ label, score: output.scores[i] }));
    else rows = [output];
    rows = [...rows].sort((a, b) => b.score - a.score);
    return el("ol", { class: "scores" }, rows.map((r) => scoreRow(r.label, r.score)));
  }

  function fills(output) {
    return el("ol", { class: "scores" }, output.map((f) => scoreRow(f.sequence ?? f.token_str, f.score)));
  }

  const GROUP_COLOURS = 6;
  const groupClass = (group) => {
    let h = 0;
    for (const c of String(group)) h = (h * 31 + c.codePointAt(0)) % 9973;
    return `tag-${h % GROUP_COLOURS}`;
  };

  /** `text` with the spans `[start, end)` marked, each with a small tag after its words. */
  function marked(text, spans) {
    const paragraph = el("p", { class: "marked" });
    let at = 0;
    for (const span of [...spans].sort((a, b) => a.start - b.start)) {
      if (span.start < at || span.end <= span.start || span.end > text.length) continue; // overlapping or out of range
      paragraph.append(text.slice(at, span.start));
      const mark = el("mark", { class: span.group ? groupClass(span.group) : "" }, text.slice(span.start, span.end));
      if (span.group) mark.append(el("span", { class: "tag" }, span.group));
      paragraph.append(mark);
      at = span.end;
    }
    paragraph.append(text.slice(at));
    return paragraph;
  }

  function entities(output, v) {
    const found = output.map((e) => ({ ...e, group: e.entity_group ?? e.entity }));
    if (!found.length) return el("p", {}, "No entities found in the text.");
    return el(
      "div",
      {},
      marked(v.text, found),
      el(
        "table",
        { class: "entities" },
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Entity"), el("th", { scope: "col" }, "Type"), el("th", { scope: "col" }, "Score"))),
        el("tbody", {}, found.map((e) => el("tr", {}, el("td", {}, e.word ?? v.text.slice(e.start, e.end)), el("td", {}, e.group), el("td", {}, score(e.score))))),
      ),
    );
  }

  function answer(output, v) {
    const best = Array.isArray(output) ? output[0] : output;
    if (!best || !best.answer) return el("p", {}, "No answer was found in the context.");
    return el(
      "div",
      {},
      el("p", { class: "answer" }, el("strong", {}, best.answer), el("span", { class: "muted" }, ` score ${score(best.score)}`)),
      marked(v.context, [{ start: best.start, end: best.end }]),
    );
  }

  function text(output) {
    const item = Array.isArray(output) ? output[0] : output;
    const value = typeof item === "string" ? item : Object.values(item || {}).find((x) => typeof x === "string");
    return el("p", { class: "text-output" }, el("span", { class: "generated" }, value ?? ""));
  }

  function ranking(output, v) {
    const documents = lines(v.texts);
    return el(
      "ol",
      { class: "ranking" },
      output.map((r) =>
        el("li", {}, el("div", { class: "ranked" }, el("span", { class: "document" }, documents[r.index] ?? `document ${r.index}`), el("span", { class: "score" }, score(r.score)))),
      ),
    );
  }

  const norm = (x) => Math.sqrt(x.reduce((s, a) => s + a * a, 0));

  function embedding(output) {
    const [a, b] = output;
    const cosine = a.reduce((s, x, i) => s + x * b[i], 0) / (norm(a) * norm(b) || 1);
    return el(
      "dl",
      { class: "facts" },
      el("dt", {}, "Dimension"),
      el("dd", {}, String(a.length)),
      el("dt", {}, "Norm (first, second)"),
      el("dd", {}, `${score(norm(a))}, ${score(norm(b))}`),
      el("dt", {}, "Cosine similarity"),
      el("dd", { class: "cosine" }, el("meter", { min: -1, max: 1, value: cosine, "aria-label": `cosine similarity ${score(cosine)}` }), el("span", { class: "score" }, score(cosine))),
    );
  }

  const json = (output) => el("pre", { class: "json" }, JSON.stringify(output, null, 2));
  const VIEWS = { labels, fills, entities, answer, text, ranking, embedding, json };

  function render(kind, output, v) {
    try {
      return (VIEWS[kind] || json)(output, v);
    } catch {
      return json(output); // an answer of a shape the view does not know is still shown
    }
  }

  // --- wiring ---------------------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    showKeyState();
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      storeKey($("api-key").value.trim());
      $("api-key").value = "";
      loadApps();
    });
    $("forget-key").addEventListener("click", () => {
      storeKey("");
      loadApps();
    });
    $("apps").addEventListener("click", (event) => {
      const button = event.target.closest(".app-button");
      if (button) select(button.dataset.app);
    });
    $("run-form").addEventListener("submit", run);
    // Ctrl+Enter (or Cmd+Enter) in a text area runs the form, as Enter does in a one-line field.
    $("fields").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("run-form").requestSubmit();
    });
    loadApps();
  });
})();
