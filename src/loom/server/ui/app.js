// loom's web UI: a single-page app of plain ES modules, no framework and no build step.
//
// Routes (the server serves this page at each of them; the address bar is the state):
//   /login                  sign in with an API key, or as the local admin on loopback
//   /, /runs                the runs list (filters in the query string)
//   /runs/RUN[/ACTION]      a run: its action tree and timeline, one action in detail
//   /keys                   API keys
//   /secrets                secrets (names and scopes; values go in, never come out)
// Data comes from the JSON API under /api/v1 with the HTTP-only login cookie.

import { api, ApiError, caller, signIn } from "./api.js";
import { $, copyText, html, join, setHtml, toast } from "./dom.js";
import { RunPage } from "./run.js";
import { RunsPage } from "./runs.js";

const main = document.getElementById("main");
let current = null; // the mounted page: { key, unmount(), update?(params) }

// -- project and domain -------------------------------------------------------------------

const SCOPE_KEY = "loom.scope";

/** The project and domain the runs list shows ("" = all), kept across visits. */
export const scope = {
  project: "",
  domain: "",
  loaded: false,
  load() {
    if (this.loaded) return;
    this.loaded = true;
    try {
      Object.assign(this, JSON.parse(localStorage.getItem(SCOPE_KEY) || "{}"));
    } catch {
      // a broken entry: start from all
    }
  },
  save() {
    localStorage.setItem(SCOPE_KEY, JSON.stringify({ project: this.project, domain: this.domain }));
  },
};

async function loadShell() {
  document.body.classList.remove("signed-out");
  const [me, projects] = await Promise.all([api("/whoami"), api("/projects")]);
  // after the page's own first render: a fresh profile's first localStorage read is slow
  await new Promise((resolve) => (window.requestIdleCallback ? requestIdleCallback(resolve, { timeout: 500 }) : setTimeout(resolve, 0)));
  scope.load();
  Object.assign(caller, { loaded: true, name: me.name, admin: me.admin, projects: me.projects || {} });
  // the page loaded beside the header: it offers its buttons now that it knows who may
  if (current && current.callerLoaded) current.callerLoaded();
  setHtml($("#whoami"), html`Signed in as <strong>${me.name}</strong>${me.admin ? html` <span class="tag">admin</span>` : ""}`);
  // keys and secrets are an admin's: the pages say so, the menu need not offer them
  for (const link of document.querySelectorAll('#nav a[href="/keys"], #nav a[href="/secrets"]')) {
    link.hidden = !me.admin;
  }
  const projectSelect = $("#project");
  const domainSelect = $("#domain");
  const domains = projects.length ? projects[0].domains : ["development", "staging", "production"];
  if (scope.project && !projects.some((p) => p.name === scope.project)) scope.project = "";
  setHtml(
    projectSelect,
    html`<option value="">All projects</option>${join(projects.map((p) => html`<option value="${p.name}">${p.name}</option>`))}`,
  );
  setHtml(
    domainSelect,
    html`<option value="">All domains</option>${join(domains.map((d) => html`<option value="${d}">${d}</option>`))}`,
  );
  projectSelect.value = scope.project;
  domainSelect.value = scope.domain;
  const changed = () => {
    scope.project = projectSelect.value;
    scope.domain = domainSelect.value;
    scope.save();
    if (current && current.key === "runs") current.scopeChanged();
    else navigate("/runs");
  };
  projectSelect.onchange = changed;
  domainSelect.onchange = changed;
  $("#signout").onclick = async () => {
    await api("/logout", { method: "POST", auth: false });
    location.assign("/login");
  };
}

// -- routing ------------------------------------------------------------------------------

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  route();
}

function route() {
  const path = location.pathname;
  let match;
  if (path === "/login") return mount("login", () => loginPage());
  if (path === "/" || path === "/runs") {
    scope.load();
    return mount("runs", () => new RunsPage(main, { navigate, scope }));
  }
  if ((match = path.match(/^\/runs\/([^/]+)(?:\/([^/]+))?\/?$/))) {
    const run = decodeURIComponent(match[1]);
    const action = match[2] ? decodeURIComponent(match[2]) : null;
    const key = `run:${run}`;
    if (current && current.key === key) return current.update({ action });
    return mount(key, () => new RunPage(main, { run, action, navigate }));
  }
  if (path === "/keys") return mount("keys", () => keysPage());
  if (path === "/secrets") return mount("secrets", () => secretsPage());
  return mount("missing", () => {
    setHtml(main, html`<section class="page"><h1>Not found</h1><p>There is no page at ${path}. <a href="/runs" data-nav>See the runs</a>.</p></section>`);
    return {};
  });
}

function mount(key, make) {
  if (current && current.unmount) current.unmount();
  current = null;
  main.textContent = "";
  const page = make();
  page.key = key;
  current = page;
  updateNav();
}

function updateNav() {
  for (const link of document.querySelectorAll("#nav a")) {
    const here = location.pathname === link.getAttribute("href") ||
      (link.getAttribute("href") === "/runs" && (location.pathname === "/" || location.pathname.startsWith("/runs")));
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

// in-app links: <a href="/..." data-nav> navigate without reloading
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-nav]");
  if (!link || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  navigate(link.getAttribute("href"));
});
window.addEventListener("popstate", route);

// -- sign-in ------------------------------------------------------------------------------

/** Where to go after signing in: a page of this server only (never an open redirect). */
function safeNext() {
  const next = new URLSearchParams(location.search).get("next") || "/runs";
  try {
    const url = new URL(next, location.origin);
    if (url.origin === location.origin && !url.pathname.startsWith("/login")) {
      return url.pathname + url.search + url.hash;
    }
  } catch {
    // not a URL: the default below
  }
  return "/runs";
}

function loginPage() {
  document.body.classList.add("signed-out");
  document.title = "Sign in · loom";
  setHtml(
    main,
    html`<section class="login" aria-labelledby="login-title">
      <h1 id="login-title"><span class="logo" aria-hidden="true"></span>Sign in to loom</h1>
      <form id="login-form" novalidate>
        <label for="api-key">API key</label>
        <input id="api-key" name="api_key" type="password" autocomplete="current-password"
          spellcheck="false" required aria-describedby="key-hint login-error" placeholder="loom_…">
        <p id="key-hint" class="hint">The server's admin key is in its client configuration
          (<code>~/.loom/config.yaml</code>, <code>api_key</code>), written by
          <code>loom server start</code>. Create more with <code>loom create api-key NAME</code>.</p>
        <button type="submit" class="primary">Sign in</button>
        <p id="login-error" class="error-text" role="alert"></p>
      </form>
      <div id="local-login" class="local" hidden>
        <p>This browser runs on the server's machine.</p>
        <button type="button" id="local-button">Sign in as the local admin</button>
      </div>
    </section>`,
  );
  const error = $("#login-error");
  const done = () => location.assign(safeNext());
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("#api-key").value.trim();
    if (!key) {
      error.textContent = "Enter an API key.";
      $("#api-key").focus();
      return;
    }
    error.textContent = "";
    try {
      await api("/login", { method: "POST", body: { api_key: key }, auth: false });
      done();
    } catch (e) {
      error.textContent = e instanceof ApiError && e.status === 401 ? "That API key is not valid." : String(e.message || e);
      $("#api-key").select();
    }
  });
  $("#api-key").focus();
  // signed in already (another tab): straight on
  api("/whoami", { auth: false }).then(done, () => {});
  api("/login/local", { auth: false })
    .then((info) => {
      if (!info.available) return;
      $("#local-login").hidden = false;
      $("#local-button").addEventListener("click", async () => {
        error.textContent = "";
        try {
          await api("/login/local", { method: "POST", auth: false });
          done();
        } catch (e) {
          error.textContent = String(e.message || e);
        }
      });
    })
    .catch(() => {});
  return {};
}

// -- API keys -----------------------------------------------------------------------------

function keysPage() {
  document.title = "API keys · loom";
  setHtml(
    main,
    html`<section class="page" aria-labelledby="keys-title">
      <h1 id="keys-title">API keys</h1>
      <p class="hint">Keys sign in the CLI (<code>LOOM_API_KEY</code> or the config file), the
        SDK and this UI. The server keeps only a hash: a key is shown once, when it is created.</p>
      <form id="key-form" class="inline-form" aria-labelledby="new-key-title">
        <h2 id="new-key-title">New key</h2>
        <label for="key-name">Name</label>
        <input id="key-name" name="name" required pattern="[A-Za-z0-9][A-Za-z0-9_.\\-]{0,62}"
          aria-describedby="key-name-hint" autocomplete="off">
        <span id="key-name-hint" class="hint">letters, digits, <code>_ . -</code></span>
        <label class="check"><input id="key-admin" type="checkbox"> Admin (may do anything: keys, secrets, every project)</label>
        <fieldset id="key-grants" class="grants"><legend>Role in each project</legend>
          <p class="hint">A viewer reads runs, logs and values; a member also starts, aborts and debugs runs and opens their sessions.</p>
          <div id="key-projects"><p class="muted">Loading…</p></div>
        </fieldset>
        <button type="submit" class="primary">Create key</button>
      </form>
      <div id="key-created" role="status" aria-live="polite"></div>
      <p id="key-error" class="error-text" role="alert"></p>
      <div id="key-list"><p class="muted">Loading…</p></div>
    </section>`,
  );
  const error = $("#key-error");
  const grantsOf = (k) =>
    k.admin ? "admin" : Object.entries(k.projects || {}).map(([p, r]) => `${p}: ${r}`).join(", ");
  $("#key-admin").onchange = () => {
    $("#key-grants").disabled = $("#key-admin").checked;
  };
  api("/projects")
    .then((projects) =>
      setHtml(
        $("#key-projects"),
        join(
          projects.map(
            (p) => html`<label class="grant">${p.name}
              <select data-project="${p.name}" aria-label="Role in project ${p.name}">
                <option value="">none</option><option value="viewer">viewer</option><option value="member">member</option>
              </select></label>`,
          ),
        ),
      ),
    )
    .catch((e) => (error.textContent = String(e.message || e)));
  const refresh = async () => {
    try {
      const keys = await api("/api-keys");
      setHtml(
        $("#key-list"),
        html`<table class="table"><caption class="sr-only">API keys</caption>
          <thead><tr><th scope="col">Name</th><th scope="col">Rights</th><th scope="col">Created</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
          <tbody>${join(
            keys.map(
              (k) => html`<tr><td>${k.name}</td><td>${grantsOf(k)}</td>
                <td><time datetime="${k.created_at}">${new Date(k.created_at).toLocaleString()}</time></td>
                <td><button type="button" class="danger small" data-delete="${k.name}" aria-label="Delete key ${k.name}">Delete</button></td></tr>`,
            ),
          )}</tbody></table>`,
      );
    } catch (e) {
      if (e instanceof ApiError && e.status === 403) {
        setHtml($("#key-list"), html`<p>Only an admin key can list and manage API keys.</p>`);
        $("#key-form").hidden = true;
      } else {
        error.textContent = String(e.message || e);
      }
    }
  };
  $("#key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const name = $("#key-name").value.trim();
    if (!$("#key-name").checkValidity()) {
      error.textContent = "A key name is 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit.";
      $("#key-name").focus();
      return;
    }
    const admin = $("#key-admin").checked;
    const projects = {};
    for (const select of document.querySelectorAll("#key-projects select[data-project]")) {
      if (select.value) projects[select.dataset.project] = select.value;
    }
    if (!admin && !Object.keys(projects).length) {
      error.textContent = "Give the key a role in at least one project, or make it an admin key.";
      return;
    }
    try {
      const created = await api("/api-keys", { method: "POST", body: admin ? { name, admin } : { name, projects } });
      setHtml(
        $("#key-created"),
        html`<div class="notice"><p><strong>Key “${created.name}” created (${grantsOf(created)}).</strong> Copy it now: it is not shown again.</p>
          <p><code id="new-key" class="secret">${created.key}</code>
          <button type="button" id="copy-key">Copy</button></p></div>`,
      );
      $("#copy-key").onclick = () => copyText(created.key);
      $("#key-name").value = "";
      $("#key-admin").checked = false;
      $("#key-grants").disabled = false;
      for (const select of document.querySelectorAll("#key-projects select")) select.value = "";
      refresh();
    } catch (e) {
      error.textContent = String(e.message || e);
    }
  });
  $("#key-list").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-delete]");
    if (!button) return;
    const name = button.dataset.delete;
    if (!confirm(`Delete API key “${name}”? Everything using it (and its sign-ins) stops working.`)) return;
    try {
      await api(`/api-keys/${encodeURIComponent(name)}`, { method: "DELETE" });
      toast(`Deleted key ${name}`);
      refresh();
    } catch (e) {
      error.textContent = String(e.message || e);
    }
  });
  refresh();
  return {};
}

// -- secrets ------------------------------------------------------------------------------

const DOMAINS = ["development", "staging", "production"];

function secretsPage() {
  document.title = "Secrets · loom";
  setHtml(
    main,
    html`<section class="page" aria-labelledby="secrets-title">
      <h1 id="secrets-title">Secrets</h1>
      <p class="hint">Tasks that declare <code>Secret("KEY")</code> get the value as an
        environment variable or a file when they run on this server. Values are stored
        encrypted and never shown again; the most specific scope wins (project and domain,
        then project, then domain, then everywhere).</p>
      <form id="secret-form" class="inline-form" aria-labelledby="new-secret-title" autocomplete="off">
        <h2 id="new-secret-title">New secret</h2>
        <label for="secret-key">Key</label>
        <input id="secret-key" name="key" required pattern="[A-Za-z0-9_][A-Za-z0-9_.\\-]{0,254}">
        <label for="secret-value">Value</label>
        <input id="secret-value" name="value" type="password" required autocomplete="new-password">
        <label for="secret-project">Only for project</label>
        <select id="secret-project"><option value="">Every project</option></select>
        <label for="secret-domain">Only for domain</label>
        <select id="secret-domain"><option value="">Every domain</option>${join(
          DOMAINS.map((d) => html`<option value="${d}">${d}</option>`),
        )}</select>
        <label class="check"><input id="secret-overwrite" type="checkbox"> Replace an existing value</label>
        <button type="submit" class="primary">Store secret</button>
      </form>
      <p id="secret-error" class="error-text" role="alert"></p>
      <div id="secret-list"><p class="muted">Loading…</p></div>
    </section>`,
  );
  const error = $("#secret-error");
  let listed = []; // what the table shows, by row
  api("/projects")
    .then((projects) => {
      const select = $("#secret-project");
      if (!select) return; // left the page
      setHtml(
        select,
        html`<option value="">Every project</option>${join(projects.map((p) => html`<option value="${p.name}">${p.name}</option>`))}`,
      );
    })
    .catch(() => {});
  const scopeParams = (s) => {
    const params = new URLSearchParams();
    if (s.project) params.set("project", s.project);
    if (s.domain) params.set("domain", s.domain);
    const text = params.toString();
    return text ? `?${text}` : "";
  };
  const refresh = async () => {
    try {
      const found = await api("/secrets");
      setHtml(
        $("#secret-list"),
        found.length === 0
          ? html`<p class="muted">No secrets yet.</p>`
          : html`<table class="table"><caption class="sr-only">Secrets</caption>
          <thead><tr><th scope="col">Key</th><th scope="col">Project</th><th scope="col">Domain</th><th scope="col">Updated</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
          <tbody>${join(
            found.map(
              (s, i) => html`<tr><td>${s.key}</td><td>${s.project || "every project"}</td><td>${s.domain || "every domain"}</td>
                <td><time datetime="${s.updated_at}">${new Date(s.updated_at).toLocaleString()}</time></td>
                <td><button type="button" class="danger small" data-delete="${String(i)}" aria-label="Delete secret ${s.key} of ${s.project || "every project"}, ${s.domain || "every domain"}">Delete</button></td></tr>`,
            ),
          )}</tbody></table>`,
      );
      listed = found;
    } catch (e) {
      if (e instanceof ApiError && e.status === 403) {
        setHtml($("#secret-list"), html`<p>Only an admin key can list and manage secrets.</p>`);
        $("#secret-form").hidden = true;
      } else {
        error.textContent = String(e.message || e);
      }
    }
  };
  $("#secret-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const key = $("#secret-key").value.trim();
    if (!$("#secret-key").checkValidity()) {
      error.textContent = "A key is 1 to 255 letters, digits, '_', '.' or '-', not starting with '.' or '-'.";
      $("#secret-key").focus();
      return;
    }
    const body = {
      key,
      value: $("#secret-value").value,
      project: $("#secret-project").value || null,
      domain: $("#secret-domain").value || null,
      overwrite: $("#secret-overwrite").checked,
    };
    try {
      await api("/secrets", { method: "POST", body });
      $("#secret-value").value = ""; // the value leaves the page as soon as it is stored
      $("#secret-key").value = "";
      $("#secret-overwrite").checked = false;
      toast(`Stored secret ${key}`);
      refresh();
    } catch (e) {
      error.textContent =
        e instanceof ApiError && e.status === 409
          ? `Secret “${key}” already exists in that scope: tick “Replace an existing value” to replace it.`
          : String(e.message || e);
    }
  });
  $("#secret-list").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-delete]");
    if (!button) return;
    const s = listed[Number(button.dataset.delete)];
    const where = `${s.project || "every project"}, ${s.domain || "every domain"}`;
    if (!confirm(`Delete secret “${s.key}” (${where})? Tasks that need it fail until it is set again.`)) return;
    try {
      await api(`/secrets/${encodeURIComponent(s.key)}${scopeParams(s)}`, { method: "DELETE" });
      toast(`Deleted secret ${s.key}`);
      refresh();
    } catch (e) {
      error.textContent = String(e.message || e);
    }
  });
  refresh();
  return {};
}

// -- start --------------------------------------------------------------------------------

route(); // the page and the header load side by side
if (location.pathname !== "/login") {
  loadShell().catch((e) => {
    if (!(e instanceof ApiError && e.status === 401)) toast(`Cannot reach the server: ${e.message || e}`, "error");
  });
}
window.addEventListener("unhandledrejection", (event) => {
  const e = event.reason;
  if (e instanceof ApiError && e.status === 401) return;
  if (e && e.name === "AbortError") return;
  toast(String((e && e.message) || e), "error");
});
export { signIn };
