// The runs list: filters, pages, and live updates while runs progress.

import { api, enc, followEvents } from "./api.js";
import {
  $,
  durationCell,
  formatTime,
  html,
  isoTitle,
  join,
  parseTime,
  PHASES,
  phaseBadge,
  phaseLabel,
  setHtml,
  TERMINAL,
  tickDurations,
} from "./dom.js";

const PAGE_SIZE = 50;

export class RunsPage {
  constructor(root, { navigate, scope }) {
    this.root = root;
    this.navigate = navigate;
    this.scope = scope;
    this.loading = null;
    this.tasks = [];
    document.title = "Runs · loom";
    this.readUrl();
    this.renderFrame();
    this.load();
    // live: any event may concern a run on this page (or a new one): look again, at most
    // once a second
    // (a stream without `after` starts at the next event: look again once it is connected,
    // so a run created in between is not missed)
    this.stopEvents = followEvents({
      minGapMs: 1000,
      onBatch: () => this.load(),
      onOpen: () => this.load(),
    });
    this.ticker = setInterval(() => tickDurations(this.root), 1000);
  }

  unmount() {
    this.stopEvents();
    clearInterval(this.ticker);
    clearTimeout(this.typing);
  }

  readUrl() {
    const params = new URLSearchParams(location.search);
    this.filters = {
      q: params.get("q") || "",
      phase: params.get("phase") || "",
      task: params.get("task") || "",
      page: Math.max(1, Number(params.get("page")) || 1),
    };
    // a link with ?project= / ?domain= chooses the scope
    if (params.has("project")) this.scope.project = params.get("project");
    if (params.has("domain")) this.scope.domain = params.get("domain");
  }

  writeUrl() {
    const params = new URLSearchParams();
    const f = this.filters;
    if (f.q) params.set("q", f.q);
    if (f.phase) params.set("phase", f.phase);
    if (f.task) params.set("task", f.task);
    if (f.page > 1) params.set("page", String(f.page));
    const query = params.toString();
    history.replaceState(null, "", `/runs${query ? `?${query}` : ""}`);
  }

  scopeChanged() {
    this.filters.page = 1;
    this.filters.task = "";
    this.writeUrl();
    this.load();
  }

  renderFrame() {
    const f = this.filters;
    setHtml(
      this.root,
      html`<section class="page runs-page" aria-labelledby="runs-title">
        <div class="page-head"><h1 id="runs-title">Runs</h1><span id="runs-live" class="live-dot" title="Updates live">live</span></div>
        <form class="filters" role="search" aria-label="Filter runs">
          <label>Search <input id="f-q" type="search" value="${f.q}" placeholder="run or task name" autocomplete="off"></label>
          <label>Task <select id="f-task"><option value="">All tasks</option></select></label>
          <label>Phase <select id="f-phase"><option value="">All phases</option>${join(
            PHASES.map((p) => html`<option value="${p}" ${p === f.phase ? "selected" : ""}>${phaseLabel(p)}</option>`),
          )}</select></label>
        </form>
        <div id="runs-table" aria-live="off"><p class="muted">Loading…</p></div>
        <nav class="pager" aria-label="Pages of runs">
          <button type="button" id="prev">Previous</button>
          <span id="page-info" aria-live="polite"></span>
          <button type="button" id="next">Next</button>
        </nav>
      </section>`,
    );
    $("#f-q", this.root).addEventListener("input", (e) => {
      clearTimeout(this.typing);
      this.typing = setTimeout(() => {
        this.filters.q = e.target.value.trim();
        this.filters.page = 1;
        this.writeUrl();
        this.load();
      }, 250);
    });
    $("#f-phase", this.root).addEventListener("change", (e) => {
      this.filters.phase = e.target.value;
      this.filters.page = 1;
      this.writeUrl();
      this.load();
    });
    $("#f-task", this.root).addEventListener("change", (e) => {
      this.filters.task = e.target.value;
      this.filters.page = 1;
      this.writeUrl();
      this.load();
    });
    $("#prev", this.root).addEventListener("click", () => this.go(-1));
    $("#next", this.root).addEventListener("click", () => this.go(1));
    // a click anywhere on a row opens the run (the name is the keyboard's link)
    $("#runs-table", this.root).addEventListener("click", (event) => {
      const row = event.target.closest("tr[data-run]");
      if (!row || event.target.closest("a, button")) return;
      this.navigate(`/runs/${enc(row.dataset.run)}`);
    });
  }

  go(delta) {
    this.filters.page = Math.max(1, this.filters.page + delta);
    this.writeUrl();
    this.load();
  }

  async load() {
    // one request at a time; a change meanwhile asks again once it is back
    if (this.loading) {
      this.again = true;
      return;
    }
    const f = this.filters;
    const params = new URLSearchParams({ offset: String((f.page - 1) * PAGE_SIZE), limit: String(PAGE_SIZE) });
    if (this.scope.project) params.set("project", this.scope.project);
    if (this.scope.domain) params.set("domain", this.scope.domain);
    if (f.q) params.set("q", f.q);
    if (f.phase) params.set("phase", f.phase);
    if (f.task) params.set("task", f.task);
    this.loading = api(`/views/runs?${params}`);
    try {
      const page = await this.loading;
      this.render(page);
    } catch (e) {
      setHtml($("#runs-table", this.root), html`<p class="error-text" role="alert">${e.message || String(e)}</p>`);
    } finally {
      this.loading = null;
      if (this.again) {
        this.again = false;
        this.load();
      }
    }
  }

  render(page) {
    const table = $("#runs-table", this.root);
    if (!table) return;
    this.renderTasks(page.tasks);
    const f = this.filters;
    if (page.runs.length === 0 && page.total > 0 && f.page > 1) {
      this.filters.page = Math.max(1, Math.ceil(page.total / PAGE_SIZE));
      this.writeUrl();
      this.load();
      return;
    }
    if (page.runs.length === 0) {
      const filtered = f.q || f.phase || f.task || this.scope.project || this.scope.domain;
      setHtml(
        table,
        filtered
          ? html`<p class="empty">No runs match these filters.</p>`
          : html`<div class="empty"><p>No runs yet.</p><p>Start one with <code>loom run --remote FILE TASK</code>.</p></div>`,
      );
    } else {
      setHtml(
        table,
        html`<table class="table runs">
          <caption class="sr-only">Runs, newest first</caption>
          <thead><tr>
            <th scope="col">Run</th><th scope="col">Task</th><th scope="col">Project / domain</th>
            <th scope="col">Phase</th><th scope="col">Started</th><th scope="col">Duration</th>
            <th scope="col" class="num">Actions</th><th scope="col">Started by</th>
          </tr></thead>
          <tbody>${join(page.runs.map((r) => runRow(r)))}</tbody>
        </table>`,
      );
    }
    const first = page.total === 0 ? 0 : page.offset + 1;
    const last = page.offset + page.runs.length;
    $("#page-info", this.root).textContent = page.total === 0 ? "" : `${first}–${last} of ${page.total}`;
    $("#prev", this.root).disabled = page.offset === 0;
    $("#next", this.root).disabled = last >= page.total;
  }

  renderTasks(tasks) {
    const key = tasks.join("\n");
    if (key === this.tasksKey) return;
    this.tasksKey = key;
    const select = $("#f-task", this.root);
    const chosen = this.filters.task;
    const names = chosen && !tasks.includes(chosen) ? [chosen, ...tasks] : tasks;
    setHtml(
      select,
      html`<option value="">All tasks</option>${join(names.map((t) => html`<option value="${t}">${t}</option>`))}`,
    );
    select.value = chosen;
  }
}

function runRow(r) {
  const created = parseTime(r.created_at);
  const started = parseTime(r.started_at);
  const ended = parseTime(r.ended_at);
  const shown = started ?? created;
  return html`<tr data-run="${r.name}" class="clickable">
    <td><a href="/runs/${enc(r.name)}" data-nav class="run-link">${r.name}</a></td>
    <td class="task">${r.task}</td>
    <td>${r.project} / ${r.domain}</td>
    <td>${phaseBadge(r.phase)}</td>
    <td><time datetime="${isoTitle(shown)}" title="${isoTitle(shown)}" class="${started ? "" : "muted"}">${formatTime(shown)}</time></td>
    <td>${durationCell(started, ended, !TERMINAL.has(r.phase))}</td>
    <td class="num">${r.actions}</td>
    <td>${r.created_by}</td>
  </tr>`;
}
