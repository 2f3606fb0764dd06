// Drives the official Node client (@clickhouse/client) against a ClickHouse HTTP endpoint as an application
// would, and prints what it got back as one JSON object for tests/test_clickhouse_http_node.py to check.
// Usage: node clickhouse_client.mjs <url> <user> <password> <table>
import { ClickHouseLogLevel, createClient } from "@clickhouse/client";

const [url, username, password, table] = process.argv.slice(2);
const out = {};

// gzip both ways: the client's own compression settings, request compression on for the insert.
const log = { level: ClickHouseLogLevel.OFF };  // errors are checked below, not logged
const gzip = createClient({ url, username, password, log, compression: { request: true, response: true } });
await gzip.command({ query: `CREATE TABLE ${table} (id UInt32, name String, at DateTime) ENGINE = MergeTree ORDER BY id` });
const inserted = await gzip.insert({
  table,
  values: [
    { id: 1, name: "wechat_group_7", at: "2026-01-02 03:04:05" },
    { id: 2, name: "渠道码; DROP TABLE x", at: "2026-01-02 03:04:06" },
  ],
  format: "JSONEachRow",
});
out.insert_summary = inserted.summary;
const rows = await gzip.query({ query: `SELECT id, name, at FROM ${table} ORDER BY id`, format: "JSONEachRow" });
out.gzip_rows = await rows.json();
out.gzip_content_encoding = rows.response_headers["content-encoding"] ?? null;
out.gzip_summary = JSON.parse(rows.response_headers["x-clickhouse-summary"]);
await gzip.close();

// Brotli both ways.
const br = createClient({ url, username, password, log, compression: { request: { codec: "br" }, response: { codec: "br" } } });
await br.insert({ table, values: [{ id: 3, name: "br", at: "2026-01-02 03:04:07" }], format: "JSONEachRow" });
const brRows = await br.query({ query: `SELECT count() AS n FROM ${table}`, format: "JSONEachRow" });
out.br_count = await brRows.json();
out.br_content_encoding = brRows.response_headers["content-encoding"] ?? null;
// An error, compressed as its query's answer is: the client must still read ClickHouse's message and code.
try {
  await br.query({ query: `SELECT * FROM ${table}_missing`, format: "JSONEachRow" });
  out.error = null;
} catch (err) {
  out.error = { code: err.code, type: err.type, message: err.message };
}
await br.close();

// Query parameters in a multipart/form-data body, always and past 4 KB.
const multipart = createClient({ url, username, password, log, use_multipart_params: true });
const params = await multipart.query({
  query: "SELECT {name:String} AS name, length({long:String}) AS long_length, {ids:Array(UInt32)} AS ids",
  query_params: { name: "it's; here", long: "x".repeat(10000), ids: [1, 2, 3] },
  format: "JSONEachRow",
});
out.multipart = await params.json();
await multipart.close();
const auto = createClient({ url, username, password, log, use_multipart_params_auto: true });
const long = await auto.query({
  query: `SELECT count() AS n FROM ${table} WHERE name != {long:String}`,
  query_params: { long: "y".repeat(6000) },
  format: "JSONEachRow",
});
out.multipart_auto = await long.json();
await auto.close();

process.stdout.write(JSON.stringify(out));
