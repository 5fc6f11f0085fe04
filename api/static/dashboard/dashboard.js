// The live sessions dashboard: a snapshot, then every event after its cursor, resumed by cursor
// after any disconnect, so nothing is missed and nothing is applied twice.
import { subscribe } from "./transport-ws.js";

const SESSION_FIELDS = `
  key dataSource type version identifier status createdAt updatedAt endedAt revision streams
  details { name value }
  parents { key identifier }
  associates { key identifier }`;
const SNAPSHOT = `query DashboardSnapshot {
  sessionSnapshot { cursor sessions { ${SESSION_FIELDS} } }
}`;
const EVENTS = `subscription DashboardEvents($after: String) {
  sessionEvents(after: $after) {
    cursor kind sessionKey dataSource occurredAt
    session { ${SESSION_FIELDS} }
  }
}`;
const TOKEN_KEY = "session-service.token";
const KEEP_ENDED_MS = 60000; // an ended session stays on the board this long, marked ended
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 5000;
const SEEN_LIMIT = 10000;

const httpUrl = new URL("graphql", location.href).href;
const wsUrl = httpUrl.replace(/^http/, "ws");

const state = {
  sessions: new Map(), // key → session, live ones and those ended less than KEEP_ENDED_MS ago
  endedAt: new Map(), // key → when this page saw it end (for removal)
  cursor: null, // the cursor of the last event applied, or of the snapshot
  seen: new Set(), // cursors applied, a guard against ever applying one twice
  applied: [], // the cursors applied, in order (what the browser tests check)
  snapshots: 0,
  reconnects: 0,
  filter: new URLSearchParams(location.search).get("dataSource") || "",
};

class Refused extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

// -- talking to the service -------------------------------------------------------------------

function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

async function loadSnapshot() {
  const headers = { "content-type": "application/json" };
  if (token()) headers.authorization = `Bearer ${token()}`;
  const response = await fetch(httpUrl, {
    method: "POST",
    headers,
    body: JSON.stringify({ query: SNAPSHOT, operationName: "DashboardSnapshot" }),
  });
  const body = await response.json().catch(() => ({}));
  const error = body.errors?.[0];
  if (response.status === 401 || error) {
    const code = error?.extensions?.code || `HTTP ${response.status}`;
    throw new Refused(error?.message || `snapshot refused (${code})`, code);
  }
  const { cursor, sessions } = body.data.sessionSnapshot;
  state.sessions = new Map();
  state.endedAt = new Map();
  for (const session of sessions) state.sessions.set(session.key, session);
  state.cursor = cursor;
  state.snapshots += 1;
  scheduleRender();
}

function follow(signal, onAck) {
  return subscribe({
    url: wsUrl,
    connectionParams: token() ? { authorization: `Bearer ${token()}` } : {},
    query: EVENTS,
    variables: { after: state.cursor },
    onNext: (data) => apply(data.sessionEvents),
    onAck,
    signal,
  });
}

// -- the event loop: snapshot, subscribe after its cursor, resume, back off -------------------

let controller = null;
let wake = null;

function backoff(attempt) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}

// Waits `ms`, or less when the token changes or the browser comes back online.
function pause(ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });
}

async function run() {
  let attempt = 0;
  for (;;) {
    controller = new AbortController();
    try {
      if (state.cursor === null) {
        setConnection("connecting", "Loading the snapshot…");
        await loadSnapshot();
      }
      setConnection("connecting", "Subscribing…");
      await follow(controller.signal, () => {
        attempt = 0;
        setConnection("live", "Live");
      });
      // The server completed the subscription (it is going away): resume like after a drop.
      throw new Error("the server ended the subscription");
    } catch (error) {
      if (error.code === "ABORTED") {
        // The token changed: what it may read can differ, so start from a new snapshot.
        state.cursor = null;
        continue;
      }
      if (error.code === "CURSOR_EXPIRED") {
        // Our cursor is older than the event retention: only a new snapshot is complete.
        state.cursor = null;
        setConnection("connecting", "Cursor expired: reloading the snapshot…");
        continue;
      }
      if (["UNAUTHENTICATED", "FORBIDDEN", "HTTP 401"].includes(error.code) || error.closeCode === 4403) {
        state.cursor = null;
        // An identity provider's token ends the socket at its exp: ask for a fresh one.
        const expired = error.closeCode === 4403 && error.closeReason === "token expired";
        setConnection(
          "unauthorized",
          expired
            ? "The token expired: enter a new one above."
            : "The service refused the token: enter one above.",
        );
        await pause(60000);
        attempt = 0;
        continue;
      }
      const delay = backoff(attempt);
      attempt += 1;
      state.reconnects += 1;
      setConnection("reconnecting", `Disconnected (${error.message}); retrying in ${(delay / 1000).toFixed(1)} s`);
      await pause(delay);
    }
  }
}

function restart() {
  state.cursor = null;
  controller?.abort();
  wake?.();
}

// -- applying events ------------------------------------------------------------------------

function apply(event) {
  if (state.seen.has(event.cursor)) return;
  state.seen.add(event.cursor);
  state.applied.push(event.cursor);
  if (state.applied.length > SEEN_LIMIT) state.seen.delete(state.applied.shift());
  state.cursor = event.cursor;

  const session = event.session;
  const known = state.sessions.get(event.sessionKey);
  if (session === null) {
    // Deleted since (retention): nothing left to show.
    state.sessions.delete(event.sessionKey);
  } else if (known || session.status === "LIVE" || event.kind === "STARTED") {
    linkParents(known, session);
    state.sessions.set(session.key, session);
    if (session.status === "ENDED" && !state.endedAt.has(session.key)) {
      state.endedAt.set(session.key, Date.now());
    }
  }
  scheduleRender();
}

// The server sends an event for the parent only: keep its children's `parents` in step.
function linkParents(before, after) {
  const old = new Set((before?.associates || []).map((a) => a.key));
  const now = new Set(after.associates.map((a) => a.key));
  for (const [key, child] of state.sessions) {
    const listed = child.parents.some((p) => p.key === after.key);
    if (now.has(key) && !listed) {
      child.parents = [...child.parents, { key: after.key, identifier: after.identifier }];
    } else if (old.has(key) && !now.has(key) && listed) {
      child.parents = child.parents.filter((p) => p.key !== after.key);
    }
  }
}

function dropEnded() {
  const now = Date.now();
  let changed = false;
  for (const [key, at] of state.endedAt) {
    if (now - at > KEEP_ENDED_MS) {
      state.endedAt.delete(key);
      state.sessions.delete(key);
      changed = true;
    }
  }
  if (changed) scheduleRender();
}

// -- rendering (text only through textContent: session data is never parsed as HTML) ------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function age(session) {
  const end = session.endedAt ? Date.parse(session.endedAt) : Date.now();
  let seconds = Math.max(0, Math.floor((end - Date.parse(session.createdAt)) / 1000));
  const parts = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (seconds >= size || parts.length) {
      parts.push(`${Math.floor(seconds / size)}${unit}`);
      seconds %= size;
    }
  }
  parts.push(`${seconds}s`);
  return parts.slice(0, 2).join(" ");
}

function label(reference) {
  const known = state.sessions.get(reference.key);
  return (known ? known.identifier : reference.identifier) || reference.key.slice(0, 8);
}

function links(title, references, className) {
  if (!references.length) return null;
  const list = el("span", { class: "links" });
  for (const reference of references) {
    const known = state.sessions.has(reference.key);
    list.append(
      known
        ? el("a", { href: `#session-${reference.key}`, text: label(reference), title: reference.key })
        : el("span", { class: "unlisted", text: label(reference), title: reference.key }),
    );
  }
  return el("div", { class: `hierarchy ${className}` }, el("span", { class: "label", text: title }), list);
}

function card(session) {
  const details = el("dl", { class: "details" });
  for (const detail of session.details) {
    details.append(el("dt", { text: detail.name }), el("dd", { text: detail.value }));
  }
  const streams = el("ul", { class: "streams" });
  for (const stream of session.streams) streams.append(el("li", { text: stream }));
  return el(
    "article",
    {
      class: `session ${session.status.toLowerCase()}`,
      id: `session-${session.key}`,
      "data-key": session.key,
      "data-status": session.status,
      "data-revision": String(session.revision),
    },
    el(
      "header",
      {},
      el("h3", { class: "identifier", text: session.identifier || "(no identifier)" }),
      el("span", { class: "status", text: session.status }),
    ),
    el(
      "p",
      { class: "meta" },
      el("span", { class: "type", text: `${session.type} v${session.version}` }),
      el("span", { class: "age", "data-created": session.createdAt, text: age(session) }),
      el("span", { class: "revision", text: `rev ${session.revision}` }),
    ),
    session.details.length ? details : null,
    session.streams.length ? streams : null,
    links("parents", session.parents, "parents"),
    links("associates", session.associates, "associates"),
    el("p", { class: "key", text: session.key }),
  );
}

let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  setTimeout(render, 0);
}

function render() {
  renderPending = false;
  const groups = new Map();
  for (const session of state.sessions.values()) {
    if (!groups.has(session.dataSource)) groups.set(session.dataSource, []);
    groups.get(session.dataSource).push(session);
  }
  const names = [...groups.keys()].sort();
  const live = (sessions) => sessions.filter((s) => s.status === "LIVE").length;

  const select = document.getElementById("filter");
  const choices = [...new Set([...names, ...(state.filter ? [state.filter] : [])])].sort();
  const labels = choices.map((name) => `${name} (${live(groups.get(name) || [])})`);
  // Rebuilt only when it changes, so an open drop-down is not closed by every event.
  if (select.dataset.labels !== labels.join("\n")) {
    select.dataset.labels = labels.join("\n");
    select.replaceChildren(
      el("option", { value: "", text: "All data sources" }),
      ...choices.map((name, index) => el("option", { value: name, text: labels[index] })),
    );
  }
  select.value = state.filter;

  const board = document.getElementById("board");
  const sections = [];
  for (const name of names) {
    if (state.filter && name !== state.filter) continue;
    const sessions = groups.get(name).sort(
      (a, b) => (a.status === b.status ? a.createdAt.localeCompare(b.createdAt) : a.status === "LIVE" ? -1 : 1),
    );
    sections.push(
      el(
        "section",
        { class: "source", "data-source": name },
        el(
          "h2",
          {},
          el("span", { class: "name", text: name }),
          el("span", { class: "count", text: `${live(sessions)} live` }),
        ),
        el("div", { class: "cards" }, ...sessions.map(card)),
      ),
    );
  }
  if (!sections.length) sections.push(el("p", { class: "empty", text: "No live sessions." }));
  board.replaceChildren(...sections);

  const total = [...state.sessions.values()].filter((s) => s.status === "LIVE").length;
  document.getElementById("summary").textContent =
    `${total} live session${total === 1 ? "" : "s"} in ${names.length} data source${names.length === 1 ? "" : "s"}`;
  document.getElementById("cursor").textContent = state.cursor ?? "–";
}

function setConnection(name, message) {
  document.body.dataset.connection = name;
  document.getElementById("connection").textContent = message;
}

function tick() {
  for (const node of document.querySelectorAll("article.live .age")) {
    const session = state.sessions.get(node.closest("article").dataset.key);
    if (session) node.textContent = age(session);
  }
  dropEnded();
}

// -- controls ----------------------------------------------------------------------------------

function setUp() {
  const tokenField = document.getElementById("token");
  tokenField.value = token();
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (tokenField.value) localStorage.setItem(TOKEN_KEY, tokenField.value.trim());
    else localStorage.removeItem(TOKEN_KEY);
    restart();
  });
  document.getElementById("filter").addEventListener("change", (event) => {
    state.filter = event.target.value;
    const url = new URL(location.href);
    if (state.filter) url.searchParams.set("dataSource", state.filter);
    else url.searchParams.delete("dataSource");
    history.replaceState(null, "", url);
    scheduleRender();
  });
  window.addEventListener("online", () => wake?.());
  setInterval(tick, 1000);
  window.sessionDashboard = { state, restart };
  render();
  run();
}

setUp();
