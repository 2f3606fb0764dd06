// Drives the official Node client (@clickhouse/client) through big and slow queries, as an application would,
// and prints what it got back as one JSON object for tests/test_clickhouse_http_streaming.py to check: a big
// result read as a stream of rows, an error in the middle of a stream, a query aborted by the application, and
// a query killed by its query_id from a second (admin) client.
// Usage: node clickhouse_streaming.mjs <url> <user> <password> <admin user> <admin password> <marker>
import { ClickHouseLogLevel, createClient } from "@clickhouse/client";

const [url, username, password, adminUser, adminPassword, marker] = process.argv.slice(2);
const log = { level: ClickHouseLogLevel.OFF };  // errors are checked below, not logged
const client = createClient({ url, username, password, log, request_timeout: 60_000 });
const admin = createClient({ url, username: adminUser, password: adminPassword, log });
const endless = (tag) => `SELECT count() FROM numbers(1000000000000) WHERE NOT ignore(sipHash64(number)) AND '${tag}' != ''`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const out = {};

// Two million rows, read as they come.
const big = await client.query({ query: "SELECT number FROM numbers(2000000)", format: "JSONCompactEachRow" });
out.big_tag = big.response_headers["x-clickhouse-exception-tag"] ?? null;
let rows = 0;
let sum = 0n;
for await (const batch of big.stream()) {
  for (const row of batch) {
    rows += 1;
    sum += BigInt(row.json()[0]);
  }
}
out.big = { rows, sum: sum.toString() };

// An error after three MiB of rows: the status is 200 by then; the client finds the exception in the stream.
try {
  const failing = await client.query({
    query: "SELECT number, throwIf(number = 1500000, 'boom at 1.5M') FROM numbers(2000000)",
    format: "JSONCompactEachRow",
  });
  for await (const _ of failing.stream()) { /* read it all */ }
  out.midway = null;
} catch (err) {
  out.midway = { code: err.code, type: err.type, message: err.message };
}

// The application gives up on a query: the client aborts its request.
const controller = new AbortController();
const aborted = client.query({ query: endless(`${marker}-abort`), format: "JSONEachRow", abort_signal: controller.signal });
await sleep(1000);
controller.abort();
try {
  await aborted;
  out.aborted = null;
} catch (err) {
  out.aborted = err.message;
}

// An admin kills a query by the query_id its client gave it.
const queryId = `node-${marker}`;
const victim = client.query({ query: endless(`${marker}-kill`), format: "JSONEachRow", query_id: queryId })
  .then(() => null, (err) => ({ code: err.code, type: err.type }));
await sleep(1000);
const killed = await admin.query({ query: `KILL QUERY WHERE query_id = {id:String} SYNC`, query_params: { id: queryId },
                                   format: "JSONEachRow" });
out.killed = await killed.json();
out.victim = await victim;

await client.close();
await admin.close();
console.log(JSON.stringify(out));
