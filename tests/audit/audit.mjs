// Runs graphql-http's GraphQL-over-HTTP server audit against the URL given as the only argument.
// Prints one JSON object per audit result ({"id","status","name","reason"}, then a summary line
// {"summary": {"ok","notice","warn","error"}}) and exits 1 when any result has status "error",
// 2 on a usage or fatal error.
import { auditServer } from 'graphql-http';

const [url, ...extra] = process.argv.slice(2);
if (!url || extra.length > 0) {
  console.error('usage: node audit.mjs <graphql-url>   (e.g. http://127.0.0.1:8000/graphql)');
  process.exit(2);
}

async function describe(result) {
  const line = { id: result.id, status: result.status, name: result.name };
  if (result.status !== 'ok') {
    line.reason = result.reason;
    // The response is a fetch Response: keep what helps reproduce the finding.
    const response = result.response;
    if (response && typeof response.status === 'number') {
      line.response = {
        status: response.status,
        contentType: response.headers.get('content-type'),
      };
      try {
        line.response.body = (await response.text()).slice(0, 2000);
      } catch {
        // Already read by the audit itself: status and content type still help.
      }
    }
  }
  return line;
}

let results;
try {
  results = await auditServer({ url });
} catch (error) {
  console.error(`audit could not run against ${url}: ${error?.stack ?? error}`);
  process.exit(2);
}

const counts = { ok: 0, notice: 0, warn: 0, error: 0 };
for (const result of results) {
  counts[result.status] = (counts[result.status] ?? 0) + 1;
  console.log(JSON.stringify(await describe(result)));
}
console.log(JSON.stringify({ summary: counts }));
process.exit(counts.error > 0 ? 1 : 0);
