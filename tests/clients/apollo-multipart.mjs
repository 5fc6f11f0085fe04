// Apollo Client subscribing through its plain HttpLink (multipart subscriptions over HTTP):
// prints one JSON line per event, then exits after --count events.
// Usage: node apollo-multipart.mjs --url http://127.0.0.1:8000/graphql --after <cursor> --count N
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: { url: { type: "string" }, after: { type: "string" }, count: { type: "string" } },
});
let left = Number(args.count);

// README: apollo begin
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";

const client = new ApolloClient({
  link: new HttpLink({ uri: args.url }),
  cache: new InMemoryCache(),
});
const subscription = client
  .subscribe({
    query: gql`subscription ($after: String) {
      sessionEvents(after: $after) { cursor kind sessionKey }
    }`,
    variables: { after: args.after }, // a sessionSnapshot cursor
  })
  .subscribe({
    next: ({ data }) => {
      console.log(JSON.stringify(data.sessionEvents));
      // README: apollo end
      if (--left === 0) subscription.unsubscribe();
    },
    error: (error) => {
      console.error(error);
      process.exit(1);
    },
  });
console.error("subscribed");
