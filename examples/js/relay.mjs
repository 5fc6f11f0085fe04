// Relay's network layer with persisted documents: Relay's compiler (`persistConfig`) or the
// service's manifest gives each operation an id, and the fetch function sends only that id, as
// `doc_id`. With SESSION_SERVICE_TRUSTED_DOCUMENTS set, only such ids (and admin tokens) run.
//
// Usage: node relay.mjs --url http://127.0.0.1:8000/graphql --id <manifest id> [--variables {}]
// Prints the data as one JSON line.
import { parseArgs } from "node:util";

// README: relay begin
export async function fetchGraphQL(url, params, variables) {
  const response = await fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/graphql-response+json, application/json;q=0.9",
    },
    body: JSON.stringify({ doc_id: params.id, variables }),
  });
  return response.json();
}
// README: relay end

const { values: options } = parseArgs({
  options: {
    url: { type: "string", default: "http://127.0.0.1:8000/graphql" },
    id: { type: "string" },
    variables: { type: "string", default: "{}" },
  },
});
const result = await fetchGraphQL(options.url, { id: options.id }, JSON.parse(options.variables));
if (result.errors) throw new Error(JSON.stringify(result.errors));
process.stdout.write(`${JSON.stringify(result.data)}\n`);
