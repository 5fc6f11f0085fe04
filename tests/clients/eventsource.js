// A browser page following session events with EventSource (run by tests/test_stream_clients.py
// in headless Chromium, on a page of the service's origin).
// README: eventsource begin
async function followSessionEvents(token, after, onEvent) {
  // The bearer token buys an HttpOnly stream cookie: no token in the URL, nor in any log.
  const issued = await fetch("/graphql/stream-cookie", {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
  });
  if (!issued.ok) throw new Error(`stream cookie refused: ${issued.status}`);
  const query = `subscription ($after: String) {
    sessionEvents(after: $after) { cursor kind sessionKey }
  }`;
  const params = new URLSearchParams({ query, variables: JSON.stringify({ after }) });
  const source = new EventSource(`/graphql?${params}`);
  // Each event's id is its cursor: after a dropped connection the browser reconnects by
  // itself with Last-Event-ID, and the server resumes right after it.
  source.addEventListener("next", (message) => {
    const { data, errors } = JSON.parse(message.data);
    if (errors) source.close(); // CURSOR_EXPIRED: take a new snapshot
    else onEvent(data.sessionEvents);
  });
  source.addEventListener("complete", () => source.close());
  return source;
}
// README: eventsource end
