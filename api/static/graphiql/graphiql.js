// GraphiQL for the session service: queries and mutations over HTTP, subscriptions over
// graphql-transport-ws, with the token from the headers editor or the dashboard's token field.
"use strict";
(function () {
  const DEFAULT_QUERY = `# Session service playground. Run with ▶ (Ctrl-Enter);
# with several operations here, ▶ asks which one.
# Subscriptions run over WebSocket: start LiveEvents,
# then run CreateSession in a new tab (+) and watch.
# With tokens configured, add under Headers below:
#   {"Authorization": "Bearer <token>"}

query LiveSessions {
  dataSources { name liveSessions totalSessions }
  sessionSnapshot {
    cursor
    sessions {
      key dataSource identifier type status createdAt streams
      details { name value }
      parents { key identifier }
      associates { key identifier }
    }
  }
}

subscription LiveEvents {
  sessionEvents {
    cursor kind sessionKey dataSource occurredAt
    session { identifier status revision details { name value } }
  }
}

mutation CreateSession {
  createSession(input: {
    dataSource: "car-44"
    identifier: "FP1 run 3"
    details: [{ name: "trackTemp", value: "22°C" }]
    streams: ["engine", "tyres"]
  }) {
    __typename
    ... on SessionCreated { session { key revision createdAt } }
    ... on Error { code message }
  }
}
`;

  const DASHBOARD_TOKEN = "session-service.token";
  const httpUrl = location.href.split(/[?#]/)[0];
  const wsUrl = httpUrl.replace(/^http/, "ws");

  // The Authorization value: the headers editor's (which GraphiQL keeps in localStorage), else
  // the token entered on the dashboard.
  function authorization() {
    try {
      const headers = JSON.parse(localStorage.getItem("graphiql:headers") || "{}");
      for (const [name, value] of Object.entries(headers)) {
        if (name.toLowerCase() === "authorization" && value) return String(value);
      }
    } catch (error) {
      // Headers that are not JSON yet (being typed): fall through.
    }
    const token = localStorage.getItem(DASHBOARD_TOKEN);
    return token ? "Bearer " + token : null;
  }

  const wsClient = graphqlWs.createClient({
    url: wsUrl,
    lazy: true,
    retryAttempts: 3,
    // Read at every (re)connection, so an edited token takes effect on the next subscription.
    connectionParams: () => {
      const value = authorization();
      return value ? { authorization: value } : {};
    },
  });

  const dashboardToken = localStorage.getItem(DASHBOARD_TOKEN);
  const fetcher = GraphiQL.createFetcher({
    url: httpUrl,
    wsClient,
    headers: dashboardToken ? { Authorization: "Bearer " + dashboardToken } : {},
  });

  const root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher,
      defaultQuery: DEFAULT_QUERY,
      defaultEditorToolsVisibility: true,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
    }),
  );
})();
