// Markup, escaping and formatting shared by every page.
//
// Everything the API returns is untrusted (names, values, error messages, logs): it reaches
// the page only through `html` templates, which escape every interpolated value unless it is
// itself the result of an `html` template. Nothing here parses HTML that came from data.

class Safe {
  constructor(text) {
    this.text = text;
  }
  toString() {
    return this.text;
  }
}

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

function part(value) {
  if (value === null || value === undefined || value === false) return "";
  if (value instanceof Safe) return value.text;
  if (Array.isArray(value)) return value.map(part).join("");
  return esc(value);
}

/** A template tag: `html\`<b>${name}</b>\`` escapes `name`; nested templates stay markup. */
export function html(strings, ...values) {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) out += part(values[i]) + strings[i + 1];
  return new Safe(out);
}

/** Join already-safe fragments (a faster `html` for big lists). */
export function join(fragments) {
  return new Safe(fragments.map(part).join(""));
}

export function setHtml(element, fragment) {
  element.innerHTML = part(fragment);
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

// -- phases -------------------------------------------------------------------------------

export const PHASES = [
  "QUEUED",
  "RUNNING",
  "INTERACTIVE",
  "RETRYING",
  "SUCCEEDED",
  "FAILED",
  "ABORTED",
];
export const TERMINAL = new Set(["SUCCEEDED", "FAILED", "ABORTED"]);
const PHASE_LABELS = {
  QUEUED: "Queued",
  RUNNING: "Running",
  INTERACTIVE: "Interactive",
  RETRYING: "Retrying",
  SUCCEEDED: "Succeeded",
  FAILED: "Failed",
  ABORTED: "Aborted",
};
const PHASE_ICONS = {
  QUEUED: "○",
  RUNNING: "◔",
  INTERACTIVE: "◆",
  RETRYING: "↻",
  SUCCEEDED: "✓",
  FAILED: "✕",
  ABORTED: "■",
};

export function phaseLabel(phase) {
  return PHASE_LABELS[phase] || phase;
}

/** A phase badge: an icon and the word, so the colour is never the only signal. */
export function phaseBadge(phase) {
  return html`<span class="badge ph-${phase}" data-phase="${phase}"><span class="icon" aria-hidden="true">${PHASE_ICONS[phase] || "?"}</span>${phaseLabel(phase)}</span>`;
}

/** Just the icon, labelled for assistive technology. */
export function phaseIcon(phase) {
  return html`<span class="picon ph-${phase}" role="img" aria-label="${phaseLabel(phase)}" title="${phaseLabel(phase)}">${PHASE_ICONS[phase] || "?"}</span>`;
}

// -- time ---------------------------------------------------------------------------------

export function parseTime(value) {
  return value ? Date.parse(value) : null;
}

const pad = (n) => String(n).padStart(2, "0");

/** A start time: the time of day today, else the date too. */
export function formatTime(ms) {
  if (ms === null || ms === undefined) return "";
  const d = new Date(ms);
  const now = new Date();
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === now.toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

export function isoTitle(ms) {
  return ms === null || ms === undefined ? "" : new Date(ms).toISOString();
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} m ${pad(Math.floor(s % 60))} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${pad(m % 60)} m`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** A duration cell that keeps counting while it runs (see `tickDurations`). */
export function durationCell(startMs, endMs, running) {
  if (startMs === null) return html`<span class="dur"></span>`;
  if (running && endMs === null) {
    return html`<span class="dur live" data-since="${startMs}">${formatDuration(Date.now() - startMs)}</span>`;
  }
  return html`<span class="dur">${formatDuration((endMs ?? Date.now()) - startMs)}</span>`;
}

/** Update every counting duration under `root`. */
export function tickDurations(root) {
  const now = Date.now();
  for (const el of root.querySelectorAll(".dur.live")) {
    el.textContent = formatDuration(now - Number(el.dataset.since));
  }
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// -- feedback -----------------------------------------------------------------------------

let toastTimer = null;

/** A short message in the page's polite live region. */
export function toast(message, kind = "info") {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = message;
  el.className = `toast show ${kind}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.className = "toast";
  }, 4000);
}

/** Copy `text` to the clipboard (a hidden text area where the async API is unavailable). */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  toast("Copied to the clipboard");
}
