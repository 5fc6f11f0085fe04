// Follow session events with the graphql-ws client: a snapshot, then every event after its
// cursor, resumed from the last cursor after a disconnect (nothing missed, nothing twice).
//
// Usage: node subscribe.mjs [--url http://127.0.0.1:8000/graphql] [--data-source car-44]
//                           [--count N]          (token: SESSION_SERVICE_TOKEN)
// One JSON line per event on stdout; what the client does on stderr.
import { parseArgs } from "node:util";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const SNAPSHOT = `query Snapshot($dataSource: String) {
  sessionSnapshot(dataSource: $dataSource) { cursor sessions { key identifier } }
}`;
const EVENTS = `subscription Events($dataSource: String, $after: String) {
  sessionEvents(dataSource: $dataSource, after: $after) {
    cursor kind sessionKey dataSource occurredAt
    session { identifier status }
  }
}`;

const { values: options } = parseArgs({
  options: {
    url: { type: "string", default: "http://127.0.0.1:8000/graphql" },
    "data-source": { type: "string" },
    count: { type: "string", default: "-1" },
  },
});
const dataSource = options["data-source"] ?? null;
const token = process.env.SESSION_SERVICE_TOKEN;
const authorization = token ? `Bearer ${token}` : null;
let remaining = Number(options.count);

const say = (message) => process.stderr.write(`${message}\n`);

async function snapshot() {
  const response = await fetch(options.url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(authorization ? { authorization } : {}),
    },
    body: JSON.stringify({ query: SNAPSHOT, variables: { dataSource } }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(`snapshot refused: ${JSON.stringify(body.errors)}`);
  const { cursor, sessions } = body.data.sessionSnapshot;
  say(`snapshot: ${sessions.length} live sessions, cursor ${cursor}`);
  return cursor;
}

const client = createClient({
  url: options.url.replace(/^http/, "ws"),
  webSocketImpl: WebSocket,
  connectionParams: authorization ? { authorization } : {},
  lazy: true,
  // We resume ourselves: graphql-ws's own retry would subscribe again with the first cursor.
  retryAttempts: 0,
  keepAlive: 10_000,
});

function codeOf(error) {
  return Array.isArray(error) ? error[0]?.extensions?.code : undefined;
}

let cursor = null;
let attempt = 0;
while (remaining !== 0) {
  try {
    cursor ??= await snapshot();
    say(`subscribing after cursor ${cursor}`);
    const events = client.iterate({ query: EVENTS, variables: { dataSource, after: cursor } });
    for await (const result of events) {
      attempt = 0;
      if (result.errors) throw result.errors;
      const { session, ...event } = result.data.sessionEvents;
      console.log(JSON.stringify({ ...event, ...(session ?? {}) }));
      cursor = event.cursor;
      remaining -= 1;
      if (remaining === 0) break;
    }
  } catch (error) {
    if (codeOf(error) === "CURSOR_EXPIRED") {
      say(`cursor ${cursor} has expired: taking a new snapshot`);
      cursor = null;
      continue;
    }
    if (codeOf(error)) throw new Error(JSON.stringify(error)); // retrying would not help
    const delay = Math.min(5000, 250 * 2 ** attempt) * (0.5 + Math.random() / 2);
    attempt += 1;
    say(`disconnected (${error.code ?? error.message ?? error}): resuming in ${(delay / 1000).toFixed(1)} s`);
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}
await client.dispose();
