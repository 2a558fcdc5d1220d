// Inputs and outputs, as the type engine encodes them (JSON), rendered for reading:
// scalars as they are, objects (dataclasses, pydantic models, dicts) as tables, lists of
// like objects as tables with a column per field, Files as download links.

import { API, enc } from "./api.js";
import { formatBytes, html, join } from "./dom.js";

const MAX_ITEMS = 200;
const MAX_DEPTH = 6;
const LONG_TEXT = 160;

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// encoded values that are not plain JSON carry a type tag (loom.wire.ValueKind): read it,
// never guess from a value's shape (a dict with a "path" key is just a dict)
const TAG = "__loom__";
const kindOf = (v) => (isObject(v) && typeof v[TAG] === "string" ? v[TAG] : null);

/** A File or Dir reference. */
function isFileRef(v) {
  const kind = kindOf(v);
  return (kind === "file" || kind === "dir") && typeof v.path === "string";
}

function fileLink(v, where) {
  const name = v.name || v.path.split("/").filter(Boolean).pop() || v.path;
  // only data in the server's object store can be downloaded through it
  if (!where || !v.path.startsWith("loom://data/")) {
    return html`<span class="file">${name} <small class="muted">${v.path}</small></span>`;
  }
  const href = `${API}/runs/${enc(where.run)}/actions/${enc(where.action)}/files?of=${where.of}&path=${enc(v.path)}`;
  return html`<span class="file"><a href="${href}" download="${name}">${name}</a> <small class="muted">${v.path}</small></span>`;
}

function scalar(v) {
  if (v === null) return html`<span class="muted">None</span>`;
  if (typeof v === "boolean") return html`<span class="kw">${v ? "True" : "False"}</span>`;
  if (typeof v === "number") return html`<span class="num">${String(v)}</span>`;
  const text = String(v);
  if (text.length > LONG_TEXT || text.includes("\n")) return html`<pre class="text" tabindex="0">${text}</pre>`;
  return html`<span class="str">${text}</span>`;
}

function more(n) {
  return n > 0 ? html`<div class="muted">… and ${n} more</div>` : "";
}

/** One value, recursively. */
export function renderValue(v, where, depth = 0) {
  if (v === null || typeof v !== "object") return scalar(v);
  if (depth >= MAX_DEPTH) return html`<code class="json">${JSON.stringify(v)}</code>`;
  if (Array.isArray(v)) return renderList(v, where, depth);
  if (isFileRef(v)) return fileLink(v, where);
  const keys = Object.keys(v);
  const kind = kindOf(v);
  if (kind === "pickle") {
    const size = typeof v.data === "string" ? ` (${formatBytes(Math.floor((v.data.length * 3) / 4))})` : "";
    return html`<span class="muted">a pickled Python object${size}</span>`;
  }
  if (kind === "dataframe") {
    const size = v.parquet_b64 ? formatBytes(Math.floor((v.parquet_b64.length * 3) / 4)) : "";
    return html`<span class="muted">a DataFrame (Parquet${size ? `, ${size}` : ""})</span>`;
  }
  if (keys.length === 2 && "union" in v && "value" in v && typeof v.union === "string") {
    return html`${renderValue(v.value, where, depth + 1)} <small class="muted">(${v.union})</small>`;
  }
  if (keys.length === 0) return html`<span class="muted">{}</span>`;
  return renderTable(v, where, depth);
}

function renderTable(obj, where, depth) {
  const keys = Object.keys(obj);
  const shown = keys.slice(0, MAX_ITEMS);
  return html`<table class="kv"><tbody>${join(
    shown.map((k) => html`<tr><th scope="row">${k}</th><td>${renderValue(obj[k], where, depth + 1)}</td></tr>`),
  )}</tbody></table>${more(keys.length - shown.length)}`;
}

function renderList(list, where, depth) {
  if (list.length === 0) return html`<span class="muted">[]</span>`;
  const shown = list.slice(0, MAX_ITEMS);
  const rest = more(list.length - shown.length);
  // a list of like records: one table, a column per field
  if (shown.every((x) => isObject(x) && !isFileRef(x))) {
    const columns = Object.keys(shown[0]);
    const same = shown.every((x) => {
      const k = Object.keys(x);
      return k.length === columns.length && k.every((c, i) => c === columns[i]);
    });
    if (same && columns.length > 0 && columns.length <= 20) {
      return html`<table class="grid"><thead><tr>${join(columns.map((c) => html`<th scope="col">${c}</th>`))}</tr></thead><tbody>${join(
        shown.map(
          (x) => html`<tr>${join(columns.map((c) => html`<td>${renderValue(x[c], where, depth + 1)}</td>`))}</tr>`,
        ),
      )}</tbody></table>${rest}`;
    }
  }
  // key/value pairs: how the type engine encodes a dict whose keys are not all strings
  if (shown.every((x) => Array.isArray(x) && x.length === 2 && (x[0] === null || typeof x[0] !== "object"))) {
    return html`<table class="kv pairs"><tbody>${join(
      shown.map((x) => html`<tr><th scope="row">${typeof x[0] === "string" ? x[0] : scalar(x[0])}</th><td>${renderValue(x[1], where, depth + 1)}</td></tr>`),
    )}</tbody></table>${rest}`;
  }
  if (shown.every((x) => x === null || typeof x !== "object")) {
    const short = shown.every((x) => String(x).length <= 40) && shown.length <= 50;
    if (short) {
      return html`<span class="list">[${join(shown.map((x, i) => html`${i ? ", " : ""}${typeof x === "string" ? JSON.stringify(x) : scalar(x)}`))}]</span>${rest}`;
    }
  }
  return html`<ol class="items" start="0">${join(shown.map((x) => html`<li>${renderValue(x, where, depth + 1)}</li>`))}</ol>${rest}`;
}

/** A task's inputs: one row per parameter. */
export function renderInputs(view, where) {
  if (view.truncated) return tooBig(view, where);
  const inputs = view.value || {};
  const names = Object.keys(inputs);
  if (names.length === 0) return html`<p class="muted">No inputs.</p>`;
  return html`<table class="kv inputs"><tbody>${join(
    names.map((k) => html`<tr><th scope="row">${k}</th><td>${renderValue(inputs[k], where, 1)}</td></tr>`),
  )}</tbody></table>${rawJson(inputs)}`;
}

export function renderOutputs(view, where) {
  if (view.truncated) return tooBig(view, where);
  return html`<div class="value">${renderValue(view.value, where, 0)}</div>${rawJson(view.value)}`;
}

function tooBig(view, where) {
  const what = where.of === "outputs" ? "outputs" : "spec";
  const href = `${API}/runs/${enc(where.run)}/actions/${enc(where.action)}/${what}`;
  return html`<p class="muted">Too large to show here (${formatBytes(view.size)} of JSON): <a href="${href}" target="_blank" rel="noopener">open the JSON</a>.</p>`;
}

function rawJson(value) {
  return html`<details class="raw"><summary>JSON</summary><pre tabindex="0" aria-label="JSON">${JSON.stringify(value, null, 2)}</pre></details>`;
}
