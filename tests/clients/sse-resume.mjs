// The graphql-sse client, unchanged, in distinct connections mode: prints one JSON line per
// event and resumes after a dropped connection (a server restart) with Last-Event-ID.
// Usage: node sse-resume.mjs --url http://127.0.0.1:8000/graphql --after <cursor> --count N
import { parseArgs } from "node:util";
import { createClient } from "graphql-sse";

const { values: args } = parseArgs({
  options: { url: { type: "string" }, after: { type: "string" }, count: { type: "string" } },
});
const count = Number(args.count);
const token = process.env.SESSION_SERVICE_TOKEN;

// README: graphql-sse begin
let lastEventId = args.after; // a sessionSnapshot cursor, then the last event received
const client = createClient({
  url: args.url,
  // Called on every (re)connection: the server resumes after Last-Event-ID.
  headers: () => ({
    ...(token ? { authorization: `Bearer ${token}` } : {}),
    ...(lastEventId ? { "last-event-id": lastEventId } : {}),
  }),
  // Keep reconnecting, a quarter of a second apart: nothing is lost meanwhile.
  retryAttempts: Infinity,
  retry: () => new Promise((resolve) => setTimeout(resolve, 250)),
});
const events = client.iterate({
  query: "subscription { sessionEvents { cursor kind sessionKey } }",
});
for await (const { data, errors } of events) {
  if (errors) throw new Error(JSON.stringify(errors)); // CURSOR_EXPIRED: take a new snapshot
  lastEventId = data.sessionEvents.cursor;
  console.log(JSON.stringify(data.sessionEvents));
  // README: graphql-sse end
  if (Number(lastEventId) >= Number(args.after) + count) break;
}
client.dispose();
