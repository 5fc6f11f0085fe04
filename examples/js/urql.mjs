// urql out of the box: its client sends queries by GET (within the URL limit), which the
// service answers. With --persisted, urql's persisted exchange sends only the document's
// SHA-256 (by GET), and the text once when the service asks for it.
//
// Usage: node urql.mjs --url http://127.0.0.1:8000/graphql [--persisted]
// Prints the live sessions as one JSON line, twice: the second answer is a fresh request.
import { parseArgs } from "node:util";
import { Client, cacheExchange, fetchExchange, gql } from "@urql/core";
import { persistedExchange } from "@urql/exchange-persisted";

const LIVE = gql`
  query Live {
    currentSessions { id key identifier }
  }
`;

const { values: options } = parseArgs({
  options: {
    url: { type: "string", default: "http://127.0.0.1:8000/graphql" },
    persisted: { type: "boolean", default: false },
  },
});

// README: urql begin
const client = new Client({
  url: options.url,
  exchanges: options.persisted
    ? [cacheExchange, persistedExchange({ preferGetForPersistedQueries: true }), fetchExchange]
    : [cacheExchange, fetchExchange],
});
// README: urql end

for (let request = 0; request < 2; request += 1) {
  const { data, error } = await client.query(LIVE, {}, { requestPolicy: "network-only" });
  if (error) throw error;
  process.stdout.write(`${JSON.stringify(data.currentSessions)}\n`);
}
