// The run page: the action tree (as a list and as a timeline) and one action in detail, its
// error, session, inputs, outputs and live log. Everything updates from the run's events.

import { api, ApiError, caller, enc, followEvents } from "./api.js";
import {
  $,
  copyText,
  durationCell,
  formatDuration,
  formatTime,
  html,
  isoTitle,
  join,
  parseTime,
  PHASES,
  phaseBadge,
  phaseIcon,
  phaseLabel,
  setHtml,
  TERMINAL,
  tickDurations,
  toast,
} from "./dom.js";
import { renderInputs, renderOutputs } from "./values.js";

const ROOT = "a0";
const MAX_DEPTH_CLASS = 15;
const FEW_CHANGES = 30; // more changed actions than this: reload the whole run
const FULL_RELOAD_GAP_MS = 1500;
const SESSION_POLL_MS = 10000;
const MAX_LOG_CHARS = 2_000_000;
// the cache states that need more words than their name
const CACHE_TEXT = { waiting: "waiting for an identical call (serialized cache)" };

const shortTask = (task) => task.slice(task.lastIndexOf(".") + 1);
const actionKey = (name) => `a:${name}`;

export class RunPage {
  constructor(root, { run, action, navigate }) {
    this.root = root;
    this.runName = run;
    this.navigate = navigate;
    this.selected = action || ROOT;
    this.actions = new Map(); // name -> ActionInfo
    this.order = []; // action names in creation order
    this.collapsed = new Set();
    this.mode = "list";
    this.filterText = "";
    this.filterPhase = "";
    this.dirty = new Set();
    this.runDirty = false;
    this.lastFull = 0;
    this.detail = null;
    this.detailToken = 0;
    this.resumeStatus = new Map(); // action -> fragment shown in its session box
    this.logs = null;
    this.firstRender = true;
    document.title = `${run} · loom`;
    this.renderFrame();
    this.start();
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  unmount() {
    this.stopped = true;
    if (this.stopEvents) this.stopEvents();
    clearInterval(this.ticker);
    clearTimeout(this.flushTimer);
    clearTimeout(this.selectTimer);
    if (this.logs) this.logs.stop();
  }

  /** The router moved within this run (another action, or back/forward). */
  update({ action }) {
    this.select(action || ROOT, { fromUrl: true });
  }

  // -- loading ----------------------------------------------------------------------------

  async start() {
    this.loadDetail(); // side by side with the run
    let view;
    try {
      view = await this.fetchView();
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        setHtml(this.root, html`<section class="page"><h1>Run not found</h1><p>There is no run named <strong>${this.runName}</strong>. <a href="/runs" data-nav>See all runs</a>.</p></section>`);
        return;
      }
      throw e;
    }
    if (this.stopped) return;
    this.applyView(view);
    this.renderHead();
    this.renderTree();
    this.stopEvents = followEvents({
      run: this.runName,
      after: view.seq,
      minGapMs: 250,
      onBatch: (batch) => this.onEvents(batch),
    });
  }

  fetchView() {
    return api(`/views/runs/${enc(this.runName)}`);
  }

  applyView(view) {
    this.run = view.run;
    this.actions = new Map(view.actions.map((a) => [a.name, a]));
    this.order = view.actions.map((a) => a.name);
  }

  onEvents(batch) {
    for (const event of batch) {
      if (event.kind === "run") this.runDirty = true;
      else if (event.action) this.dirty.add(event.action);
    }
    this.flushSoon(0);
  }

  flushSoon(delay) {
    if (this.flushTimer || this.flushing) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.flush();
    }, delay);
  }

  async flush() {
    if (this.stopped || (!this.dirty.size && !this.runDirty)) return;
    const names = [...this.dirty];
    const full = names.length > FEW_CHANGES;
    if (full) {
      const wait = FULL_RELOAD_GAP_MS - (performance.now() - this.lastFull);
      if (wait > 0) return this.flushSoon(wait); // a busy run: look at most every 1.5 s
    }
    this.dirty.clear();
    const runDirty = this.runDirty;
    this.runDirty = false;
    this.flushing = true;
    try {
      if (full) {
        this.lastFull = performance.now();
        this.applyView(await this.fetchView());
      } else {
        const base = `/runs/${enc(this.runName)}`;
        const [infos, run] = await Promise.all([
          Promise.all(names.map((n) => api(`${base}/actions/${enc(n)}`).catch(() => null))),
          runDirty || names.some((n) => !this.actions.has(n)) ? api(base) : null,
        ]);
        for (const info of infos) {
          if (!info) continue;
          if (!this.actions.has(info.name)) this.order.push(info.name);
          this.actions.set(info.name, info);
        }
        if (run) this.run = run;
      }
      if (this.stopped) return;
      this.renderHead();
      this.renderTree();
      if (full || names.includes(this.selected)) this.loadDetail();
    } finally {
      this.flushing = false;
      if (this.dirty.size || this.runDirty) this.flushSoon(250);
    }
  }

  // -- the frame and the header -----------------------------------------------------------

  renderFrame() {
    setHtml(
      this.root,
      html`<section class="run-page" aria-labelledby="run-title">
        <div id="run-head" class="run-head"><h1 id="run-title">${this.runName}</h1><p class="muted">Loading…</p></div>
        <div class="split">
          <section class="tree-pane" aria-label="Actions">
            <div class="toolbar">
              <div class="segmented" role="group" aria-label="Show actions as">
                <button type="button" id="mode-list" aria-pressed="true">List</button>
                <button type="button" id="mode-timeline" aria-pressed="false">Timeline</button>
              </div>
              <label class="compact">Filter <input id="t-filter" type="search" placeholder="task or action" autocomplete="off"></label>
              <label class="compact">Phase <select id="t-phase"><option value="">All</option>${join(
                PHASES.map((p) => html`<option value="${p}">${phaseLabel(p)}</option>`),
              )}</select></label>
              <button type="button" id="expand-all" class="small">Expand all</button>
              <button type="button" id="collapse-all" class="small">Collapse all</button>
            </div>
            <div id="tree-head" class="tree-head" aria-hidden="true"></div>
            <div id="tree" class="tree list" role="tree" aria-label="Actions of run ${this.runName}"></div>
          </section>
          <section id="detail" class="detail-pane" aria-labelledby="detail-title">
            <div id="d-head"><h2 id="detail-title" class="sr-only">Action</h2></div>
            <div id="d-values"></div>
            <div id="d-logs"></div>
            <div id="d-rest"></div>
          </section>
        </div>
      </section>`,
    );
    this.tree = $("#tree", this.root);
    $("#mode-list", this.root).onclick = () => this.setMode("list");
    $("#mode-timeline", this.root).onclick = () => this.setMode("timeline");
    $("#t-filter", this.root).addEventListener("input", (e) => {
      clearTimeout(this.typing);
      this.typing = setTimeout(() => {
        this.filterText = e.target.value.trim().toLowerCase();
        this.renderTree();
      }, 150);
    });
    $("#t-phase", this.root).addEventListener("change", (e) => {
      this.filterPhase = e.target.value;
      this.renderTree();
    });
    $("#expand-all", this.root).onclick = () => {
      this.collapsed.clear();
      this.renderTree();
    };
    $("#collapse-all", this.root).onclick = () => {
      for (const [key, node] of this.nodes) if (node.children.length && key !== actionKey(ROOT)) this.collapsed.add(key);
      this.renderTree();
    };
    this.tree.addEventListener("click", (e) => this.onTreeClick(e));
    this.tree.addEventListener("keydown", (e) => this.onTreeKey(e));
    this.root.addEventListener("click", (e) => this.onButton(e));
  }

  renderHead() {
    const r = this.run;
    const started = parseTime(r.started_at);
    const ended = parseTime(r.ended_at);
    const created = parseTime(r.created_at);
    const live = !TERMINAL.has(r.phase);
    const error = r.error
      ? html`<p class="run-error"><span class="err-type">${r.error.type}</span>: ${r.error.message.split("\n")[0]}</p>`
      : "";
    setHtml(
      $("#run-head", this.root),
      html`<nav class="crumbs" aria-label="Breadcrumb"><a href="/runs" data-nav>Runs</a> <span aria-hidden="true">›</span></nav>
      <div class="title-row">
        <h1 id="run-title">${r.name}</h1> ${phaseBadge(r.phase)}
        <div class="buttons">
          <button type="button" data-do="copy-rerun" title="Copy a loom run command that runs the root task again with the same inputs">Copy rerun command</button>
          ${live && this.mayChange() ? html`<button type="button" class="danger" data-do="abort-run">Abort run</button>` : ""}
        </div>
      </div>
      <dl class="facts inline">
        <div><dt>Task</dt><dd>${r.task}</dd></div>
        <div><dt>Project / domain</dt><dd>${r.project} / ${r.domain}</dd></div>
        <div><dt>Started by</dt><dd>${r.created_by}</dd></div>
        <div><dt>Started</dt><dd><time datetime="${isoTitle(started ?? created)}" title="${isoTitle(started ?? created)}">${formatTime(started ?? created)}</time></dd></div>
        <div><dt>Duration</dt><dd>${durationCell(started, ended, live)}</dd></div>
        <div><dt>Actions</dt><dd>${String(Math.max(r.actions, this.order.length))}</dd></div>
      </dl>
      ${error}`,
    );
  }

  // -- the tree ---------------------------------------------------------------------------

  /** Nodes for actions and groups: children of an action are grouped by their group path. */
  buildTree() {
    const nodes = new Map();
    const roots = [];
    for (const name of this.order) {
      nodes.set(actionKey(name), { key: actionKey(name), kind: "action", name, children: [], parent: null });
    }
    for (const name of this.order) {
      const a = this.actions.get(name);
      const parentKey = a.parent && nodes.has(actionKey(a.parent)) ? actionKey(a.parent) : null;
      let list = parentKey ? nodes.get(parentKey).children : roots;
      let owner = parentKey;
      let groupKey = parentKey || "";
      for (const g of a.group) {
        groupKey = `${groupKey}\u241f${g}`;
        const key = `g:${groupKey}`;
        if (!nodes.has(key)) {
          nodes.set(key, { key, kind: "group", label: g, children: [], parent: owner });
          list.push(key);
        }
        list = nodes.get(key).children;
        owner = key;
      }
      nodes.get(actionKey(name)).parent = owner;
      list.push(actionKey(name));
    }
    this.nodes = nodes;
    this.roots = roots;
  }

  /** What a group spans: counts by phase, first start, last end (null while one runs). */
  summarize(key) {
    const node = this.nodes.get(key);
    if (node.summary) return node.summary;
    const counts = {};
    let start = null;
    let end = 0;
    let open = false;
    const stack = [...node.children];
    while (stack.length) {
      const child = this.nodes.get(stack.pop());
      if (child.kind === "action") {
        const a = this.actions.get(child.name);
        counts[a.phase] = (counts[a.phase] || 0) + 1;
        const s = parseTime(a.started_at);
        if (s !== null && (start === null || s < start)) start = s;
        const e = parseTime(a.ended_at);
        if (e === null) open = true;
        else if (e > end) end = e;
      }
      stack.push(...child.children);
    }
    node.summary = { counts, start, end: open ? null : end || null, open };
    return node.summary;
  }

  matches(name) {
    const a = this.actions.get(name);
    if (this.filterPhase && a.phase !== this.filterPhase) return false;
    if (this.filterText && !(a.task.toLowerCase().includes(this.filterText) || name.toLowerCase().includes(this.filterText))) return false;
    return true;
  }

  /** The rows to show, in order: [key, depth]. */
  visibleRows() {
    const filtering = Boolean(this.filterText || this.filterPhase);
    let keep = null;
    if (filtering) {
      keep = new Set();
      for (const name of this.order) {
        if (!this.matches(name)) continue;
        for (let key = actionKey(name); key && !keep.has(key); key = this.nodes.get(key).parent) keep.add(key);
      }
    }
    const rows = [];
    const walk = (keys, depth) => {
      for (const key of keys) {
        if (keep && !keep.has(key)) continue;
        rows.push([key, depth]);
        const node = this.nodes.get(key);
        if (node.children.length && (filtering || !this.collapsed.has(key))) walk(node.children, depth + 1);
      }
    };
    walk(this.roots, 0);
    return rows;
  }

  renderTree() {
    if (!this.run) return;
    this.buildTree();
    const focused = this.tree.contains(document.activeElement) ? document.activeElement.dataset.key : null;
    const rows = this.visibleRows();
    this.visible = rows.map(([key]) => key);
    const selectedKey = actionKey(this.selected);
    const tabKey = this.visible.includes(focused) ? focused : this.visible.includes(selectedKey) ? selectedKey : this.visible[0];
    const timeline = this.mode === "timeline";
    if (timeline) this.window = this.timeWindow();
    const out = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) out[i] = this.rowHtml(rows[i][0], rows[i][1], tabKey, selectedKey, timeline);
    this.renderTreeHead(timeline);
    if (rows.length === 0) {
      setHtml(this.tree, html`<p class="empty">${this.order.length ? "No actions match the filter." : "No actions yet."}</p>`);
    } else {
      setHtml(this.tree, join(out));
    }
    if (timeline) this.placeBars();
    if (focused) {
      const row = this.rowEl(focused);
      if (row) row.focus({ preventScroll: true });
    }
    if (this.firstRender) {
      this.firstRender = false;
      this.tree.dataset.rendered = String(rows.length);
      // for bench/ui_render.py: the action list is on screen by the next frame
      requestAnimationFrame(() => performance.mark("loom:actions-rendered"));
      if (this.selected !== ROOT) {
        const selected = this.rowEl(selectedKey);
        if (selected) selected.scrollIntoView({ block: "nearest" });
      }
    }
  }

  renderTreeHead(timeline) {
    const head = $("#tree-head", this.root);
    if (!timeline) {
      setHtml(head, html`<span class="h-label">Action</span><span class="h-att">Attempts</span><span class="h-start">Started</span><span class="h-dur">Duration</span>`);
      return;
    }
    const { start, end } = this.window;
    const span = end - start;
    const ticks = [];
    for (let i = 0; i <= 4; i++) ticks.push(html`<span class="tick" data-pos="${i / 4}">${i === 0 ? formatTime(start) : `+${formatDuration((span * i) / 4)}`}</span>`);
    setHtml(head, html`<span class="h-label">Action</span><span class="axis">${join(ticks)}</span>`);
    for (const tick of head.querySelectorAll(".tick")) {
      const pos = Number(tick.dataset.pos);
      tick.style.left = `${pos * 100}%`;
      if (pos === 1) tick.classList.add("last");
    }
  }

  rowHtml(key, depth, tabKey, selectedKey, timeline) {
    const node = this.nodes.get(key);
    const expandable = node.children.length > 0;
    const expanded = expandable && (this.filterText || this.filterPhase || !this.collapsed.has(key));
    const level = Math.min(depth, MAX_DEPTH_CLASS);
    const twisty = expandable ? (expanded ? "▾" : "▸") : "";
    const common = `role="treeitem" aria-level="${depth + 1}" ${expandable ? `aria-expanded="${expanded}"` : ""} tabindex="${key === tabKey ? 0 : -1}"`;
    if (node.kind === "group") {
      const s = this.summarize(key);
      const counts = PHASES.filter((p) => s.counts[p]).map(
        (p) => html`<span class="count ph-${p}" title="${phaseLabel(p)}">${phaseIcon(p)} ${String(s.counts[p])}</span>`,
      );
      const right = timeline
        ? html`<span class="track"><span class="bar group-bar" data-s="${s.start ?? ""}" data-e="${s.end ?? ""}"></span></span>`
        : html`<span class="att"></span><span class="start">${formatTime(s.start)}</span>${durationCell(s.start, s.end, s.open)}`;
      return html`<div class="row group d${level}" ${unsafeAttrs(common)} aria-selected="false" data-key="${key}"><span class="label"><span class="twisty" aria-hidden="true">${twisty}</span><span class="gicon" aria-hidden="true">▤</span><span class="gname">${node.label}</span><span class="counts">${join(counts)}</span></span>${right}</div>`;
    }
    const a = this.actions.get(node.name);
    const started = parseTime(a.started_at);
    const ended = parseTime(a.ended_at);
    const selected = key === selectedKey;
    const attempts = a.attempts.length > 1 ? `×${a.attempts.length}` : "";
    let right;
    if (timeline) {
      const created = parseTime(a.created_at);
      right = html`<span class="track"><span class="bar wait" data-s="${created}" data-e="${started ?? ended ?? ""}"></span><span class="bar ph-${a.phase}" data-s="${started ?? ""}" data-e="${ended ?? ""}"></span></span>`;
    } else {
      right = html`<span class="att" title="${a.attempts.length} attempt(s)">${attempts}</span><span class="start"><time datetime="${isoTitle(started)}">${formatTime(started)}</time></span>${durationCell(started, ended, !TERMINAL.has(a.phase))}`;
    }
    return html`<div class="row d${level}${selected ? " selected" : ""}" ${unsafeAttrs(common)} aria-selected="${selected}" data-key="${key}"><span class="label"><span class="twisty" aria-hidden="true">${twisty}</span>${phaseIcon(a.phase)}<span class="tname">${shortTask(a.task)}</span><span class="aname">${node.name}</span>${a.session && !a.session.ended_at ? html`<span class="tag">${a.session.kind === "jupyter" ? "Jupyter" : "VS Code"}</span>` : ""}</span>${right}</div>`;
  }

  rowEl(key) {
    return key ? this.tree.querySelector(`[data-key="${CSS.escape(key)}"]`) : null;
  }

  timeWindow() {
    let start = parseTime(this.run.started_at) ?? parseTime(this.run.created_at);
    let end = parseTime(this.run.ended_at);
    let open = !TERMINAL.has(this.run.phase);
    for (const a of this.actions.values()) {
      const c = parseTime(a.created_at);
      if (c !== null && c < start) start = c;
      const e = parseTime(a.ended_at);
      if (e === null && !TERMINAL.has(a.phase)) open = true;
      else if (e !== null && (end === null || e > end)) end = e;
    }
    if (open || end === null) end = Date.now();
    return { start, end: Math.max(end, start + 1000) };
  }

  /** Position the timeline's bars (styles set from script: the CSP forbids inline ones). */
  placeBars() {
    const { start, end } = this.window;
    const span = end - start;
    const now = Date.now();
    for (const bar of this.tree.querySelectorAll(".bar")) {
      const s = bar.dataset.s ? Number(bar.dataset.s) : null;
      if (s === null) {
        bar.hidden = true;
        continue;
      }
      const e = bar.dataset.e ? Number(bar.dataset.e) : now;
      bar.hidden = false;
      bar.style.left = `${((s - start) / span) * 100}%`;
      bar.style.width = `${Math.max(((e - s) / span) * 100, 0.3)}%`;
      bar.title = formatDuration(e - s);
    }
  }

  setMode(mode) {
    this.mode = mode;
    $("#mode-list", this.root).setAttribute("aria-pressed", String(mode === "list"));
    $("#mode-timeline", this.root).setAttribute("aria-pressed", String(mode === "timeline"));
    this.tree.classList.toggle("timeline", mode === "timeline");
    this.tree.classList.toggle("list", mode === "list");
    this.renderTree();
  }

  toggle(key) {
    if (this.collapsed.has(key)) this.collapsed.delete(key);
    else this.collapsed.add(key);
    this.renderTree();
    const row = this.rowEl(key);
    if (row) this.focusRow(row);
  }

  focusRow(row) {
    for (const other of this.tree.querySelectorAll('[tabindex="0"]')) other.tabIndex = -1;
    row.tabIndex = 0;
    row.focus();
  }

  onTreeClick(event) {
    const row = event.target.closest(".row");
    if (!row) return;
    const key = row.dataset.key;
    const node = this.nodes.get(key);
    if (event.target.closest(".twisty") && node.children.length) return this.toggle(key);
    this.focusRow(row);
    if (node.kind === "group") return this.toggle(key);
    this.select(node.name);
  }

  onTreeKey(event) {
    const row = event.target.closest(".row");
    if (!row) return;
    const key = row.dataset.key;
    const node = this.nodes.get(key);
    const index = this.visible.indexOf(key);
    const expandable = node.children.length > 0;
    const expanded = expandable && (this.filterText || this.filterPhase || !this.collapsed.has(key));
    let target = null;
    switch (event.key) {
      case "ArrowDown":
        target = this.visible[index + 1];
        break;
      case "ArrowUp":
        target = this.visible[index - 1];
        break;
      case "Home":
        target = this.visible[0];
        break;
      case "End":
        target = this.visible[this.visible.length - 1];
        break;
      case "ArrowRight":
        if (expandable && !expanded) {
          event.preventDefault();
          return this.toggle(key);
        }
        if (expanded) target = this.visible[index + 1];
        break;
      case "ArrowLeft":
        if (expanded && !this.filterText && !this.filterPhase) {
          event.preventDefault();
          return this.toggle(key);
        }
        target = node.parent;
        break;
      case "Enter":
      case " ":
        event.preventDefault();
        if (node.kind === "group") return this.toggle(key);
        return this.select(node.name);
      default:
        return;
    }
    event.preventDefault();
    const next = this.rowEl(target);
    if (!next) return;
    this.focusRow(next);
    const nextNode = this.nodes.get(target);
    if (nextNode.kind === "action") {
      // selection follows focus, once the keys rest
      clearTimeout(this.selectTimer);
      this.selectTimer = setTimeout(() => this.select(nextNode.name), 150);
    }
  }

  select(name, { fromUrl = false } = {}) {
    if (name === this.selected && this.detail && this.detail.action.name === name) return;
    this.selected = name;
    if (!fromUrl) {
      const path = `/runs/${enc(this.runName)}${name === ROOT ? "" : `/${enc(name)}`}`;
      if (location.pathname !== path) history.replaceState(null, "", path);
    }
    for (const row of this.tree.querySelectorAll(".row.selected")) {
      row.classList.remove("selected");
      row.setAttribute("aria-selected", "false");
    }
    const row = this.rowEl(actionKey(name));
    if (row) {
      row.classList.add("selected");
      row.setAttribute("aria-selected", "true");
    }
    this.loadDetail();
  }

  // -- the selected action ----------------------------------------------------------------

  async loadDetail() {
    const name = this.selected;
    const token = ++this.detailToken;
    let detail;
    try {
      detail = await api(`/views/runs/${enc(this.runName)}/actions/${enc(name)}`);
    } catch (e) {
      if (token !== this.detailToken || this.stopped) return;
      if (e instanceof ApiError && e.status === 404) {
        const head = $("#d-head", this.root);
        if (head) setHtml(head, html`<h2 id="detail-title">${name}</h2><p class="muted">This run has no action named ${name}.</p>`);
        return;
      }
      if (!(e instanceof ApiError && e.status === 401)) toast(String(e.message || e), "error");
      return;
    }
    if (token !== this.detailToken || this.stopped) return;
    this.detail = detail;
    if (name === ROOT) this.rootDetail = detail;
    this.actions.set(name, detail.action); // the freshest view of it
    this.renderDetail();
  }

  renderDetail() {
    const d = this.detail;
    const a = d.action;
    const where = (of) => ({ run: this.runName, action: a.name, of });
    const started = parseTime(a.started_at);
    const ended = parseTime(a.ended_at);
    const terminal = TERMINAL.has(a.phase);
    const session = a.session;
    const interactive = a.phase === "INTERACTIVE" && session && !session.ended_at;
    const buttons = [];
    const may = this.mayChange();
    if (may && !terminal && !interactive) buttons.push(html`<button type="button" class="danger" data-do="abort-action">Abort action</button>`);
    if (may && terminal) {
      buttons.push(html`<button type="button" data-do="debug" data-kind="vscode" title="Run this task again with the same inputs, in a VS Code session">Debug in VS Code</button>`);
      buttons.push(html`<button type="button" data-do="debug" data-kind="jupyter" title="Run this task again with the same inputs, in a JupyterLab session">Debug in Jupyter</button>`);
    }
    const facts = [
      html`<div><dt>Phase</dt><dd>${phaseBadge(a.phase)}</dd></div>`,
      html`<div><dt>Task</dt><dd>${a.task}</dd></div>`,
      html`<div><dt>Attempts</dt><dd>${String(a.attempts.length)}</dd></div>`,
      html`<div><dt>Started</dt><dd><time datetime="${isoTitle(started)}" title="${isoTitle(started)}">${started ? formatTime(started) : "not yet"}</time></dd></div>`,
      html`<div><dt>Duration</dt><dd>${durationCell(started, ended, !terminal)}</dd></div>`,
    ];
    if (a.cache !== "disabled") facts.push(html`<div><dt>Cache</dt><dd>${CACHE_TEXT[a.cache] ?? a.cache}</dd></div>`);
    if (a.parent) facts.push(html`<div><dt>Parent</dt><dd><a href="/runs/${enc(this.runName)}/${enc(a.parent)}" data-nav>${a.parent}</a></dd></div>`);
    if (a.group.length) facts.push(html`<div><dt>Group</dt><dd>${a.group.join(" › ")}</dd></div>`);
    setHtml(
      $("#d-head", this.root),
      html`<div class="detail-title">
        <h2 id="detail-title">${phaseIcon(a.phase)} ${shortTask(a.task)} <span class="aname">${a.name}</span></h2>
        <div class="buttons">${join(buttons)}</div>
      </div>
      <dl class="facts">${join(facts)}</dl>
      ${a.error ? errorBox(a.error, "Error") : ""}
      ${session || d.task.interactive ? this.sessionBox(a, d.task) : ""}
      ${d.task.image ? environmentBox(d.task.image, d.environment, a.phase) : ""}`,
    );
    setHtml(
      $("#d-values", this.root),
      html`<section class="box" aria-labelledby="inputs-title"><h3 id="inputs-title">Inputs</h3>${renderInputs(d.inputs, where("inputs"))}</section>
      ${d.outputs ? html`<section class="box" aria-labelledby="outputs-title"><h3 id="outputs-title">Outputs</h3>${renderOutputs(d.outputs, where("outputs"))}</section>` : ""}`,
    );
    setHtml(
      $("#d-rest", this.root),
      html`${a.attempts.length ? attemptsBox(a) : ""}
      <section class="box" aria-labelledby="again-title"><h3 id="again-title">Run it again</h3>
        <p class="hint">From the directory that holds the code (the root of the bundle):</p>
        <div class="command"><code id="rerun-command">${d.rerun}</code><button type="button" class="small" data-do="copy" data-text="${d.rerun}" aria-label="Copy the rerun command">Copy</button></div>
        ${d.rerun_note ? html`<p class="hint">${d.rerun_note}</p>` : ""}
        <p class="hint">Or interactively, in an IDE with these inputs:</p>
        <div class="command"><code>${d.debug}</code><button type="button" class="small" data-do="copy" data-text="${d.debug}" aria-label="Copy the debug command">Copy</button></div>
      </section>`,
    );
    if (!this.logs || this.logs.action !== a.name) {
      if (this.logs) this.logs.stop();
      this.logs = new LogView($("#d-logs", this.root), this.runName, a.name);
    }
    this.logs.setAttempts(a);
    this.updateIdle();
    clearTimeout(this.sessionTimer);
    if (interactive) this.sessionTimer = setTimeout(() => this.selected === a.name && this.loadDetail(), SESSION_POLL_MS);
  }

  /** Whether the caller may change this run (a viewer gets no buttons that would be refused;
   * none until the header knows who is signed in: see callerLoaded). */
  mayChange() {
    return caller.loaded && !!this.run && caller.canChange(this.run.project);
  }

  /** The header learned who is signed in: offer the buttons this caller may use. */
  callerLoaded() {
    if (this.run) this.renderHead();
    if (this.detail) this.renderDetail();
  }

  sessionBox(a, task) {
    const s = a.session;
    const kind = (s ? s.kind : task.interactive.kind) === "jupyter" ? "Jupyter" : "VS Code";
    const status = this.resumeStatus.get(a.name) || "";
    if (!s) {
      return html`<section class="box session" aria-labelledby="session-title"><h3 id="session-title">Interactive session · ${kind}</h3>
        <p class="muted">${TERMINAL.has(a.phase) ? "No session was opened." : "The session opens once the action runs."}</p>${status}</section>`;
    }
    const open = !s.ended_at;
    const usable = open && a.phase === "INTERACTIVE" && s.state === "ready";
    const idle = open && s.idle_deadline
      ? html`<p class="idle"><span id="idle-left" data-deadline="${Date.parse(s.idle_deadline)}"></span></p>`
      : open ? html`<p class="idle muted">No idle limit.</p>` : "";
    return html`<section class="box session" aria-labelledby="session-title">
      <h3 id="session-title">Interactive session · ${kind}</h3>
      <p>State: <strong class="session-state">${sessionState(s, a)}</strong>${s.end_reason ? html` — ${s.end_reason}` : ""}</p>
      ${idle}
      ${open && this.mayChange() ? html`<div class="buttons">
        ${usable ? html`<button type="button" class="primary" data-do="open-session" data-session-link>Open ${kind}<span class="sr-only"> (opens in a new tab)</span> <span aria-hidden="true">↗</span></button>` : ""}
        <button type="button" class="primary" data-do="resume" ${usable ? "" : "disabled"}>Resume</button>
        <button type="button" class="danger" data-do="abort-action">Abort</button>
      </div>
      <p class="hint">Resume runs the task with the code as edited in the session, records its outputs and closes the session.</p>` : ""}
      <p class="hint">Workspace: <code>${s.workspace}</code></p>
      <div class="resume-status" role="status" aria-live="polite">${status}</div>
    </section>`;
  }

  updateIdle() {
    const el = $("#idle-left", this.root);
    if (!el) return;
    const left = Number(el.dataset.deadline) - Date.now();
    el.textContent = left > 0 ? `Closes after ${formatDuration(left)} more without use.` : "Idle limit reached: closing.";
  }

  tick() {
    tickDurations(this.root);
    this.updateIdle();
    if (this.mode === "timeline" && this.run && !TERMINAL.has(this.run.phase)) {
      this.window = this.timeWindow();
      this.placeBars();
    }
  }

  // -- buttons ----------------------------------------------------------------------------

  async onButton(event) {
    const button = event.target.closest("button[data-do]");
    if (!button || button.disabled) return;
    const what = button.dataset.do;
    const a = this.detail ? this.detail.action : null;
    const base = `/runs/${enc(this.runName)}`;
    try {
      if (what === "copy") await copyText(button.dataset.text);
      else if (what === "copy-rerun") {
        const root = this.rootDetail || (await api(`/views/runs/${enc(this.runName)}/actions/${ROOT}`));
        this.rootDetail = root;
        await copyText(root.rerun);
      } else if (what === "abort-run") {
        if (!confirm(`Abort run ${this.runName}? Every action that has not ended is stopped.`)) return;
        button.disabled = true;
        this.run = await api(`${base}/abort`, { method: "POST" });
        toast(`Run ${this.runName} aborted`);
        this.renderHead();
      } else if (what === "abort-action" && a) {
        if (!confirm(`Abort action ${a.name}? It and the actions it started are stopped.`)) return;
        button.disabled = true;
        await api(`${base}/actions/${enc(a.name)}/abort`, { method: "POST" });
        toast(`Action ${a.name} aborted`);
        this.loadDetail();
      } else if (what === "debug" && a) {
        button.disabled = true;
        const run = await api(`${base}/actions/${enc(a.name)}/debug?kind=${button.dataset.kind}`, { method: "POST" });
        toast(`Started run ${run.name}: its session opens shortly`);
        this.navigate(`/runs/${enc(run.name)}`);
      } else if (what === "resume" && a) {
        await this.resume(a, button);
      } else if (what === "open-session" && a) {
        // sessions live on their own origin: a one-time link signs this browser in there.
        // The tab opens now, while the click still counts (a pop-up blocker would stop a
        // window opened after the request), and goes to the link once it is here.
        const tab = window.open("about:blank", "_blank");
        try {
          const opened = await api(`${base}/actions/${enc(a.name)}/session/open`, { method: "POST" });
          if (tab) {
            tab.opener = null;
            tab.location.href = opened.url;
          } else {
            window.location.href = opened.url;
          }
        } catch (e) {
          if (tab) tab.close();
          throw e;
        }
      }
    } catch (e) {
      button.disabled = false;
      if (!(e instanceof ApiError && e.status === 401)) toast(String(e.message || e), "error");
    }
  }

  async resume(a, button) {
    const name = a.name;
    button.disabled = true;
    const show = (fragment) => {
      this.resumeStatus.set(name, fragment);
      const box = this.selected === name ? $(".resume-status", this.root) : null;
      if (box) setHtml(box, fragment);
    };
    show(html`<p class="pending">Resuming: running the task with the code as edited…</p>`);
    let outcome;
    try {
      outcome = await api(`/runs/${enc(this.runName)}/actions/${enc(name)}/session/resume`, { method: "POST", body: {} });
    } catch (e) {
      show(html`<p class="error-text">Could not resume: ${e.message || String(e)}</p>`);
      button.disabled = false;
      return;
    }
    if (outcome.ok) show(html`<p class="ok">Resumed: the task ran with your edits and the session closed.</p>`);
    else show(html`<div class="error-text"><p>The resumed code failed; the session stays open for another try.</p>${outcome.error ? errorBox(outcome.error, "Resume error") : ""}</div>`);
    if (this.selected === name) this.loadDetail();
  }
}

/** Attribute text built here from numbers and fixed words only. */
function unsafeAttrs(text) {
  return html([text]);
}

function sessionState(s, a) {
  if (s.ended_at) return "ended";
  if (s.state === "resuming" || a.phase === "RUNNING") return "resuming";
  if (s.state === "starting") return "starting";
  return "ready";
}

// Frames of loom's own machinery (and asyncio's): hidden from a traceback by default, as the
// CLI does, so the user's frames stand out.
const INTERNAL_FRAME = /\/(site-packages|src)\/loom\/|\/asyncio\/|\/concurrent\/futures\/|\/threading\.py$/;

const BUNDLE_PATH = /"[^"]*\/bundles\/[0-9a-f]{64}\//;

/** The traceback without internal frames, and how many it hid. */
export function userFrames(traceback) {
  const out = [];
  let hidden = 0;
  let skipping = false;
  for (const line of traceback.split("\n")) {
    const frame = line.match(/^\s*File "([^"]+)", line \d+/);
    if (frame) {
      skipping = INTERNAL_FRAME.test(frame[1]);
      if (skipping) hidden++;
      else out.push(line.replace(BUNDLE_PATH, '"')); // paths in the code, as the user knows them
      continue;
    }
    if (skipping && /^\s{4,}\S/.test(line)) continue; // the hidden frame's source and carets
    skipping = false;
    out.push(line);
  }
  return { text: out.join("\n"), hidden };
}

function errorBox(error, title) {
  const id = `err-${title.replace(/\W/g, "").toLowerCase()}`;
  let trace = "";
  if (error.traceback) {
    const mine = userFrames(error.traceback);
    trace = mine.hidden
      ? html`<pre class="trace" tabindex="0" aria-label="Traceback">${mine.text}</pre><details class="full-trace"><summary>Full traceback (${mine.hidden} frame(s) of loom and asyncio hidden above)</summary><pre class="trace" tabindex="0" aria-label="Traceback">${error.traceback}</pre></details>`
      : html`<pre class="trace" tabindex="0" aria-label="Traceback">${error.traceback}</pre>`;
  }
  return html`<section class="box error-box" aria-labelledby="${id}">
    <h3 id="${id}">${title}${error.kind !== "user" ? html` <span class="tag">${error.kind.replace("_", " ")}</span>` : ""}</h3>
    <p class="err-line"><span class="err-type">${error.type}</span>: <span class="err-msg">${error.message}</span></p>
    ${trace}
  </section>`;
}

/** The task's image: what its environment holds, its key, and the end of its build log. */
function environmentBox(image, env, phase) {
  const noCredentials = (url) => url.replace(/(\w+:\/\/)[^/\s:@]+(?::[^/\s@]*)?@/g, "$1***@");
  const facts = [html`<div><dt>Python</dt><dd>${image.python}</dd></div>`];
  if (image.packages.length) facts.push(html`<div><dt>Packages</dt><dd>${image.packages.join(", ")}</dd></div>`);
  if (image.requirements.length) facts.push(html`<div><dt>Requirements</dt><dd>${image.requirements.map((r) => r.name).join(", ")}</dd></div>`);
  if (image.index_url) facts.push(html`<div><dt>Index</dt><dd>${noCredentials(image.index_url)}</dd></div>`);
  const vars = Object.keys(image.env_vars);
  if (vars.length) facts.push(html`<div><dt>Variables</dt><dd>${vars.join(", ")}</dd></div>`);
  let built = "not built yet";
  if (env && env.built) built = "built";
  else if (phase === "RUNNING") built = "being built: the action starts once it is";
  const state = env
    ? html`<p>Environment <code>${env.key}</code>: <strong class="env-state">${built}</strong>.</p>`
    : html`<p class="muted">Nothing to build: it runs in the server's own environment.</p>`;
  const log = env && env.log
    ? html`<details><summary>Build log</summary><pre class="log">${env.log}</pre></details>`
    : "";
  return html`<section class="box environment" aria-labelledby="environment-title"><h3 id="environment-title">Image</h3>
    <dl class="facts">${join(facts)}</dl>${state}${log}</section>`;
}

function attemptsBox(a) {
  return html`<section class="box" aria-labelledby="attempts-title"><h3 id="attempts-title">Attempts</h3>
    <table class="table compact"><thead><tr><th scope="col">#</th><th scope="col">Phase</th><th scope="col">Started</th><th scope="col">Duration</th><th scope="col">Error</th></tr></thead>
    <tbody>${join(
      a.attempts.map((t) => {
        const s = parseTime(t.started_at);
        const e = parseTime(t.ended_at);
        return html`<tr><td>${String(t.number)}</td><td>${phaseBadge(t.phase)}</td><td>${formatTime(s)}</td><td>${durationCell(s, e, !TERMINAL.has(t.phase))}</td>
          <td>${t.error ? html`<span class="err-type">${t.error.type}</span>: ${t.error.message.split("\n")[0]}` : ""}</td></tr>`;
      }),
    )}</tbody></table></section>`;
}

/** One attempt's log, fetched (and followed while the attempt runs) into a <pre>. */
class LogView {
  constructor(container, run, action) {
    this.run = run;
    this.action = action;
    this.attempt = null;
    this.chosen = false; // the person picked an attempt: stay on it
    this.controller = null;
    setHtml(
      container,
      html`<section class="box logs" aria-labelledby="logs-title">
        <div class="section-head">
          <h3 id="logs-title">Logs</h3>
          <label class="compact">Attempt <select id="log-attempt"></select></label>
          <label class="check compact"><input type="checkbox" id="log-wrap"> Wrap lines</label>
          <span id="log-status" class="muted" aria-live="polite"></span>
        </div>
        <pre id="log" class="log" tabindex="0" aria-labelledby="logs-title"></pre>
      </section>`,
    );
    this.pre = $("#log", container);
    this.select = $("#log-attempt", container);
    this.status = $("#log-status", container);
    this.select.addEventListener("change", () => {
      this.chosen = true;
      this.show(Number(this.select.value));
    });
    $("#log-wrap", container).addEventListener("change", (e) => this.pre.classList.toggle("wrap", e.target.checked));
  }

  setAttempts(action) {
    this.info = action;
    const numbers = action.attempts.map((t) => t.number);
    const key = numbers.join(",");
    if (key !== this.optionsKey) {
      this.optionsKey = key;
      setHtml(this.select, join(numbers.map((n) => html`<option value="${n}">${String(n)}</option>`)));
    }
    if (!numbers.length) {
      this.status.textContent = TERMINAL.has(action.phase) ? "No attempt ran." : "Waiting for the first attempt…";
      this.select.disabled = true;
      return;
    }
    this.select.disabled = numbers.length < 2;
    const wanted = this.chosen && numbers.includes(this.attempt) ? this.attempt : numbers[numbers.length - 1];
    this.select.value = String(wanted);
    const attempt = action.attempts.find((t) => t.number === wanted);
    const over = TERMINAL.has(attempt.phase);
    // (re)start when the attempt changes, or when one that was followed has ended and the
    // stream stopped early
    if (wanted !== this.attempt || (over && this.failedStream)) this.show(wanted);
  }

  async show(number) {
    this.stop();
    this.attempt = number;
    this.failedStream = false;
    const attempt = this.info.attempts.find((t) => t.number === number);
    const follow = attempt ? !TERMINAL.has(attempt.phase) : true;
    const controller = new AbortController();
    this.controller = controller;
    this.pre.textContent = "";
    this.size = 0;
    this.status.textContent = follow ? "Following…" : "Loading…";
    const url = `/api/v1/runs/${enc(this.run)}/actions/${enc(this.action)}/logs?attempt=${number}&follow=${follow}`;
    try {
      const response = await fetch(url, { credentials: "same-origin", signal: controller.signal });
      if (!response.ok) throw new Error(`cannot read the log (${response.status})`);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        this.append(decoder.decode(value, { stream: true }));
      }
      this.append(decoder.decode());
      if (this.controller !== controller) return;
      this.status.textContent = this.size ? "End of log." : "";
      if (!this.size) this.pre.textContent = "(no output)";
    } catch (e) {
      if (e.name === "AbortError" || this.controller !== controller) return;
      this.failedStream = true;
      this.status.textContent = String(e.message || e);
    }
  }

  append(text) {
    if (!text) return;
    const pre = this.pre;
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 24;
    this.size += text.length;
    if (this.size > MAX_LOG_CHARS) {
      const kept = (pre.textContent + text).slice(-MAX_LOG_CHARS / 2);
      pre.textContent = `[… earlier output not shown: download the full log from the API]\n${kept}`;
      this.size = pre.textContent.length;
    } else {
      pre.appendChild(document.createTextNode(text));
    }
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  stop() {
    if (this.controller) this.controller.abort();
    this.controller = null;
  }
}
