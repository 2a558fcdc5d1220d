// The JSON API, with the login cookie; and live events over server-sent events.

export const API = "/api/v1";

/**
 * Who is signed in (`GET /whoami`, loaded with the shell): the UI offers only what the
 * caller may do. The server decides all the same; this only spares a button that cannot work.
 */
export const caller = {
  loaded: false,
  name: "",
  admin: false,
  projects: {},
  /** Whether the caller may change runs of `project` (start, abort, debug, open sessions). */
  canChange(project) {
    return this.admin || this.projects[project] === "member";
  },
};

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** Where a signed-out page goes: the sign-in page, back here afterwards. */
export function signIn() {
  const next = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(next)}`);
}

/**
 * Call the API. JSON in and out; a 401 sends the browser to the sign-in page (unless
 * `auth: false`), any other error status throws an ApiError with the server's detail.
 */
export async function api(path, { method = "GET", body, signal, auth = true } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (signal) init.signal = signal;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, init);
  if (response.status === 401 && auth) {
    signIn();
    throw new ApiError(401, "signed out");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const data = await response.json();
      detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    } catch {
      // not JSON: keep the status text
    }
    throw new ApiError(response.status, detail);
  }
  if (response.status === 204) return null;
  return response.json();
}

export const enc = encodeURIComponent;

/**
 * Follow `/events` (all runs, or one with `run`), calling `onBatch(events)` at most every
 * `minGapMs`. Reconnects after an error from the last event seen, so nothing is missed;
 * `after` starts after that event seq. `onOpen` runs each time the stream (re)connects.
 * Returns a function that stops it.
 */
export function followEvents({ run = null, after = null, minGapMs = 300, onBatch, onOpen = null }) {
  let source = null;
  let last = after;
  let stopped = false;
  let pending = [];
  let timer = null;
  let lastFlush = 0;
  let retry = null;

  const flush = () => {
    timer = null;
    lastFlush = performance.now();
    const batch = pending;
    pending = [];
    if (batch.length && !stopped) onBatch(batch);
  };

  const open = () => {
    const params = new URLSearchParams();
    if (run) params.set("run", run);
    if (last !== null) params.set("after", String(last));
    const query = params.toString();
    source = new EventSource(`${API}/events${query ? `?${query}` : ""}`);
    if (onOpen) source.onopen = () => onOpen();
    source.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      last = event.seq;
      pending.push(event);
      if (timer === null) {
        const wait = Math.max(0, minGapMs - (performance.now() - lastFlush));
        timer = setTimeout(flush, wait);
      }
    };
    source.onerror = () => {
      // the browser would retry with the URL's `after`, replaying; reopen from `last`
      source.close();
      if (stopped) return;
      retry = setTimeout(async () => {
        try {
          await api("/whoami"); // signed out? then this goes to the sign-in page
        } catch {
          // the server is restarting: try again below
        }
        if (!stopped) open();
      }, 2000);
    };
  };
  open();
  return () => {
    stopped = true;
    clearTimeout(timer);
    clearTimeout(retry);
    if (source) source.close();
  };
}
