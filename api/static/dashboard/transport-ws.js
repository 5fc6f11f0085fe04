// A small graphql-transport-ws client: one socket per subscription, ping/pong, close codes.
// https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md

const PROTOCOL = "graphql-transport-ws";
const PING_EVERY_MS = 15000; // a socket that stops answering is closed after twice this
const ACK_TIMEOUT_MS = 10000;

// Why a subscription ended without completing: a close code, or the GraphQL error's code.
export class SubscriptionEnded extends Error {
  constructor(message, { closeCode = null, closeReason = "", code = null, acknowledged = false } = {}) {
    super(message);
    this.closeCode = closeCode;
    this.closeReason = closeReason;
    this.code = code;
    this.acknowledged = acknowledged;
  }
}

// Runs one subscription on a socket of its own. `onNext(data)` gets each result; `onAck()` runs
// once the server has accepted connection_init. Resolves when the server completes the
// subscription, rejects with SubscriptionEnded otherwise. `signal` (an AbortSignal) closes it.
export function subscribe({ url, connectionParams, query, variables, onNext, onAck, signal }) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, PROTOCOL);
    const id = Math.random().toString(36).slice(2);
    let acknowledged = false;
    let settled = false;
    let awaitingPong = false;
    let pinger = null;

    const ackTimer = setTimeout(() => fail("no connection_ack", { closeCode: 4408 }), ACK_TIMEOUT_MS);

    function finish(callback, value) {
      if (settled) return;
      settled = true;
      clearTimeout(ackTimer);
      clearInterval(pinger);
      signal?.removeEventListener("abort", onAbort);
      if (socket.readyState <= WebSocket.OPEN) socket.close(1000, "Normal Closure");
      callback(value);
    }
    function fail(message, details) {
      finish(reject, new SubscriptionEnded(message, { acknowledged, ...details }));
    }
    function send(message) {
      socket.send(JSON.stringify(message));
    }
    function onAbort() {
      fail("aborted", { code: "ABORTED" });
    }
    if (signal?.aborted) return onAbort();
    signal?.addEventListener("abort", onAbort);

    socket.onopen = () => send({ type: "connection_init", payload: connectionParams || {} });
    socket.onerror = () => {}; // onclose follows with the code
    socket.onclose = (event) => {
      const reason = event.reason ? `: ${event.reason}` : "";
      fail(`socket closed with ${event.code}${reason}`, { closeCode: event.code, closeReason: event.reason });
    };
    socket.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return fail("the server sent a message that is not JSON", { closeCode: 4400 });
      }
      switch (message.type) {
        case "connection_ack":
          acknowledged = true;
          clearTimeout(ackTimer);
          send({ id, type: "subscribe", payload: { query, variables } });
          pinger = setInterval(() => {
            if (awaitingPong) return socket.close(4499, "no pong");
            awaitingPong = true;
            send({ type: "ping" });
          }, PING_EVERY_MS);
          onAck?.();
          break;
        case "ping":
          send({ type: "pong" });
          break;
        case "pong":
          awaitingPong = false;
          break;
        case "next":
          if (message.id !== id) break;
          if (message.payload?.errors?.length) {
            const error = message.payload.errors[0];
            return fail(error.message, { code: error.extensions?.code ?? null });
          }
          onNext(message.payload.data);
          break;
        case "error": {
          const error = (message.payload || [])[0] || {};
          return fail(error.message || "subscription refused", {
            code: error.extensions?.code ?? null,
          });
        }
        case "complete":
          if (message.id === id) finish(resolve);
          break;
        default:
          fail(`unexpected message type ${message.type}`, { closeCode: 4400 });
      }
    };
  });
}
