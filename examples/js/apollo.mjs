// Apollo Client with its default cache, unconfigured: a watched query of a session is updated
// by a mutation's result, because sessions carry Relay's global `id` and the cache normalises
// them by `__typename` and `id`. The result unions need only `possibleTypes`. Subscriptions go
// over GraphQLWsLink (graphql-ws), from a snapshot's cursor so that no event is missed.
//
// With --persisted, Apollo's persisted-queries link sends only each document's SHA-256 (queries
// by GET), and the text once when the service asks for it.
//
// Usage: node apollo.mjs --url http://127.0.0.1:8000/graphql --key <session key> --rename <text>
//                        [--persisted]
// One JSON line per result the watched query sees, then the subscription's event, on stdout.
import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { getMainDefinition } from "@apollo/client/utilities";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const SESSION = gql`
  query Session($key: ID!) {
    session(key: $key) { id key identifier revision }
  }
`;
const RENAME = gql`
  mutation Rename($key: ID!, $identifier: String!) {
    updateSessionIdentifier(input: { sessionKey: $key, identifier: $identifier }) {
      ... on SessionUpdated { session { id identifier revision } }
      ... on Error { code message }
    }
  }
`;

const SNAPSHOT = gql`
  query Snapshot {
    sessionSnapshot { cursor }
  }
`;
const CHANGES = gql`
  subscription Changes($key: ID!, $after: String) {
    sessionEvents(sessionKey: $key, kinds: [UPDATED], after: $after) {
      kind
      session { id identifier revision }
    }
  }
`;

const { values: options } = parseArgs({
  options: {
    url: { type: "string", default: "http://127.0.0.1:8000/graphql" },
    key: { type: "string" },
    rename: { type: "string" },
    persisted: { type: "boolean", default: false },
  },
});

// README: apollo-client begin
const sha256 = (text) => createHash("sha256").update(text).digest("hex");
const http = new HttpLink({ uri: options.url });
const sockets = createClient({ url: options.url.replace(/^http/, "ws"), webSocketImpl: WebSocket });
const isSubscription = ({ query }) => {
  const definition = getMainDefinition(query);
  return definition.kind === "OperationDefinition" && definition.operation === "subscription";
};
const client = new ApolloClient({
  link: ApolloLink.split(
    isSubscription,
    new GraphQLWsLink(sockets),
    options.persisted
      ? new PersistedQueryLink({ sha256, useGETForHashedQueries: true }).concat(http)
      : http,
  ),
  cache: new InMemoryCache({
    // What the result unions may be, so that fragments on `Error` match its members.
    possibleTypes: {
      Error: [
        "ValidationError",
        "SessionNotFoundError",
        "RevisionConflictError",
        "AssociationCycleError",
        "IdempotencyMismatchError",
        "SessionManagementDisabledError",
      ],
    },
  }),
});
// README: apollo-client end

const seen = [];
const watched = client.watchQuery({ query: SESSION, variables: { key: options.key } });
const first = new Promise((resolve, reject) => {
  watched.subscribe({
    next: ({ data }) => {
      if (!data?.session) return;
      seen.push(data.session.identifier);
      process.stdout.write(`${JSON.stringify(data.session)}\n`);
      resolve();
    },
    error: reject,
  });
});
await first;

const { data: snapshot } = await client.query({ query: SNAPSHOT, fetchPolicy: "network-only" });
const changed = new Promise((resolve, reject) => {
  client
    .subscribe({
      query: CHANGES,
      variables: { key: options.key, after: snapshot.sessionSnapshot.cursor },
    })
    .subscribe({ next: ({ data }) => resolve(data.sessionEvents), error: reject });
});

const { data } = await client.mutate({
  mutation: RENAME,
  variables: { key: options.key, identifier: options.rename },
});
if (!data.updateSessionIdentifier.session) {
  throw new Error(`rename refused: ${JSON.stringify(data.updateSessionIdentifier)}`);
}
// The watched query sees the new identifier from the cache alone: no refetch was asked for.
for (let waited = 0; seen.at(-1) !== options.rename && waited < 5000; waited += 50) {
  await new Promise((resolve) => setTimeout(resolve, 50));
}
const event = await changed;
process.stdout.write(`${JSON.stringify(event)}\n`);
await sockets.dispose();
process.exit(seen.at(-1) === options.rename ? 0 : 1);
