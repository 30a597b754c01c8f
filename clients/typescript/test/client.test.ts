// @coffer/client against a real `coffer serve`, and, for retries and redirects, a stub server in
// front of it (a lost answer, a follower that redirects to the leader).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { after, before, test } from "node:test";
import { BatchFailedError, CODES, CofferClient, ConflictError, NotFoundError,
  UnprocessableError, WebhookVerificationError, parseJsonExact, stringifyJsonExact,
  verifyWebhook } from "../src/index.js";
import { freePort, startServer, type RunningServer } from "./server.js";

let server: RunningServer;
let client: CofferClient;
let counter = 0;
const uid = (prefix: string) => `${prefix}-${process.pid}-${++counter}`;

before(async () => {
  server = await startServer();
  client = new CofferClient({ baseUrls: server.url, backoffMs: 5 });
  await client.createAccount({ id: "bank", currency: "KRW", min_balance: null });
});
after(() => server.stop());

async function funded(amount: number | bigint): Promise<string> {
  const id = uid("user");
  await client.createAccount({ id, currency: "KRW" });
  if (amount) await client.transfer({ from: "bank", to: id, amount });
  return id;
}

test("accounts and transfers, with RFC 3339 timestamps and no *_ns integers", async () => {
  const account = await client.createAccount({ id: uid("user"), currency: "KRW", metadata: { name: "Kim" } });
  assert.deepEqual(account.metadata, { name: "Kim" });
  const result = await client.transfer({ from: "bank", to: account.id, amount: 700 });
  assert.deepEqual(result.accounts.to, { id: account.id, balance: 700, available: 700, version: 2 });
  for (const body of [account, result.transfer, await client.getAccount(account.id)]) {
    assert.deepEqual(Object.keys(body).filter((key) => key.endsWith("_ns")), []);
  }
  assert.match(result.transfer.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
});

test("amounts beyond 2^53 are exact, both ways", async () => {
  const big = 2n ** 62n + 1n;
  const id = await funded(big);
  assert.equal((await client.getAccount(id)).balance, big);
  assert.deepEqual(parseJsonExact('{"a":9007199254740993,"b":"9007199254740993","c":-1.5e3}'),
    { a: 9007199254740993n, b: "9007199254740993", c: -1500 });
  assert.equal(stringifyJsonExact({ a: 2n ** 63n - 1n }), '{"a":9223372036854775807}');
});

test("problems are typed errors", async () => {
  const poor = await funded(10);
  await assert.rejects(client.transfer({ from: poor, to: "bank", amount: 11 }), (error: unknown) =>
    error instanceof ConflictError && error.code === "insufficient_balance" &&
    error.problem.available === 10);
  await assert.rejects(client.getAccount(uid("nobody")), NotFoundError);
  await assert.rejects(client.transfer({ from: "bank", to: uid("nobody"), amount: 1 }), UnprocessableError);
});

test("a failed atomic batch answers 409 and throws with every result", async () => {
  const poor = await funded(100);
  await assert.rejects(client.batch([{ from: poor, to: "bank", amount: 60 },
    { from: poor, to: "bank", amount: 60 }], true), (error: unknown) =>
    error instanceof BatchFailedError && error.status === 409 && error.code === "insufficient_balance" &&
    error.results.map((item) => item.code).join() === "batch_failed,insufficient_balance");
  assert.equal((await client.getAccount(poor)).balance, 100);
});

test("an id with a slash is one path segment", async () => {
  const seat = uid("seat") + "/C1/A12";
  await client.createAccount({ id: seat, currency: "KRW" });
  assert.equal((await client.getAccount(seat)).id, seat);
});

test("the code table is COFFER_CODE_MAP", () => {
  const header = readFileSync(new URL("../../../../include/coffer.h", import.meta.url), "utf8")
    .replace(/\\\n/g, " ");
  const names = [...header.matchAll(/X\(\s*[A-Z_]+,\s*(\w+),\s*(\d+),\s*(\d+),/g)]
    .map(([, name, value, status]) => `${name}=${value}/${status}`);
  assert.deepEqual(Object.entries(CODES).map(([name, row]) => `${name}=${row.value}/${row.status}`), names);
});

test("events pages and follow wakes on the next change", async () => {
  const start = (await client.events({ limit: 1 })).durable_seq;
  const account = await funded(300);
  const page = await client.events({ after: start, account });
  assert.deepEqual(page.events.map((change) => change.type), ["account.created", "transfer.posted"]);
  assert.equal(page.events[1].accounts?.to.balance, 300);
  const only = await client.events({ after: start, account, types: ["transfer.posted"] });
  assert.deepEqual(only.events.map((change) => change.seq), [page.events[1].seq]);
  const changes = client.follow({ after: page.next_after, account, waitMs: 5000 });
  setTimeout(() => void client.transfer({ from: "bank", to: account, amount: 9 }), 300);
  const began = Date.now();
  const { value } = await changes.next();
  assert.equal(value?.transfer?.amount, 9);
  assert.ok(Date.now() - began < 4000, "woken by the write, not the 5 s wait");
  await changes.return(undefined);
});

test("webhooks deliver signed changes, and the calls manage them", async () => {
  const deliveries: { headers: Record<string, string | string[] | undefined>; body: Buffer }[] = [];
  const receiver = await stub(async (request, body, response) => {
    deliveries.push({ headers: request.headers, body });
    response.writeHead(204).end();
  });
  const id = uid("hook");
  const secret = "whsec_" + Buffer.from("secret of the TypeScript test").toString("base64");
  const created = await client.createWebhook({ id, url: receiver.url + "/in", types: ["transfer.posted"], secret });
  assert.deepEqual([created.id, created.secret], [id, secret]);
  assert.ok((await client.webhooks()).some((hook) => hook.id === id));
  const account = await funded(0);
  await client.transfer({ from: "bank", to: account, amount: 41 });
  for (let waited = 0; deliveries.length === 0 && waited < 30_000; waited += 50) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  receiver.close();
  const payload = verifyWebhook(secret, deliveries[0].headers, deliveries[0].body);
  assert.deepEqual([payload.type, payload.data.accounts?.to.balance], ["transfer.posted", 41]);
  assert.equal(deliveries[0].headers["webhook-id"], `evt_${payload.data.seq}`);
  assert.throws(() => verifyWebhook("whsec_" + Buffer.from("another secret, 24 bytes").toString("base64"),
    deliveries[0].headers, deliveries[0].body), WebhookVerificationError);
  assert.equal((await client.enableWebhook(id)).state, "active");
  assert.equal((await client.getWebhook(id)).id, id);
  await client.deleteWebhook(id);
  await assert.rejects(client.getWebhook(id), (error: unknown) =>
    error instanceof NotFoundError && error.code === "webhook_not_found");
});

// -- verifyWebhook, against the example of the Standard Webhooks specification (its signature also
// checked with `openssl dgst -sha256 -mac HMAC`)

const SPEC = {
  secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
  body: '{"test": 2432232314}',
  sentAt: 1614265330,
  headers: (changes: Record<string, string | undefined> = {}) => Object.fromEntries(Object.entries({
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", ...changes,
  }).filter(([, value]) => value !== undefined)) as Record<string, string>,
};

test("verifyWebhook accepts the specification's example", () => {
  const now = SPEC.sentAt + 10;
  assert.deepEqual(verifyWebhook(SPEC.secret, SPEC.headers(), SPEC.body, { now }), { test: 2432232314 });
  assert.deepEqual(verifyWebhook(SPEC.secret, new Headers(SPEC.headers()), Buffer.from(SPEC.body), { now }),
    { test: 2432232314 });
  const rotated = SPEC.headers({ "webhook-signature": "v1,bm90IGl0 " + SPEC.headers()["webhook-signature"] });
  assert.deepEqual(verifyWebhook(SPEC.secret, rotated, SPEC.body, { now }), { test: 2432232314 });
  assert.deepEqual(verifyWebhook(SPEC.secret, SPEC.headers(), SPEC.body, { now: SPEC.sentAt - 300 }),
    { test: 2432232314 });
});

test("verifyWebhook refuses every change", () => {
  const signature = SPEC.headers()["webhook-signature"];
  const refused: [Record<string, string>, string, number][] = [
    [SPEC.headers(), '{"test": 2432232315}', SPEC.sentAt],
    [SPEC.headers({ "webhook-id": "msg_other" }), SPEC.body, SPEC.sentAt],
    [SPEC.headers({ "webhook-timestamp": String(SPEC.sentAt + 1) }), SPEC.body, SPEC.sentAt],
    [SPEC.headers({ "webhook-signature": "v2," + signature.slice(3) }), SPEC.body, SPEC.sentAt],
    [SPEC.headers({ "webhook-signature": undefined }), SPEC.body, SPEC.sentAt],
    [SPEC.headers({ "webhook-id": undefined }), SPEC.body, SPEC.sentAt],
    [SPEC.headers({ "webhook-timestamp": "1e9" }), SPEC.body, SPEC.sentAt],
    [SPEC.headers(), SPEC.body, SPEC.sentAt + 301],
    [SPEC.headers(), SPEC.body, SPEC.sentAt - 301],
  ];
  for (const [headers, body, now] of refused) {
    assert.throws(() => verifyWebhook(SPEC.secret, headers, body, { now }), WebhookVerificationError,
      JSON.stringify(headers));
  }
  assert.throws(() => verifyWebhook("whsec_" + "A".repeat(32), SPEC.headers(), SPEC.body, { now: SPEC.sentAt }),
    WebhookVerificationError);
});

// -- a stub in front of the real server

async function stub(answer: (request: IncomingMessage, body: Buffer, response: ServerResponse) => Promise<void>) {
  const port = await freePort();
  const requests: string[] = [];
  const http = createServer(async (request, response) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    requests.push(request.url ?? "");
    await answer(request, Buffer.concat(chunks), response);
  });
  await new Promise<void>((resolve) => http.listen(port, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${port}`, requests, close: () => { http.closeAllConnections(); http.close(); } };
}

async function forward(request: IncomingMessage, body: Buffer) {
  return fetch(server.url + request.url, { method: request.method, body: body.length ? body.toString("utf8") : undefined,
    headers: { "Content-Type": "application/json" } });
}

test("a lost answer is retried with the same id: applied once", async () => {
  let dropped = 0;
  const proxy = await stub(async (request, body, response) => {
    const answer = await forward(request, body);
    const text = await answer.text();
    if (dropped++ === 0) return void response.socket?.destroy(); // applied, never heard of
    response.writeHead(answer.status, { "Content-Type": answer.headers.get("content-type") ?? "" });
    response.end(text);
  });
  const account = await funded(0);
  const result = await new CofferClient({ baseUrls: proxy.url, backoffMs: 5 })
    .transfer({ from: "bank", to: account, amount: 5 });
  proxy.close();
  assert.equal(proxy.requests.length, 2);
  assert.equal((await client.getAccount(account)).balance, 5);
  assert.equal((await client.getTransfer(result.transfer.id)).amount, 5);
});

test("a 307 to the leader is followed and remembered", async () => {
  const follower = await stub(async (request, _body, response) => {
    response.writeHead(307, { Location: server.url + request.url });
    response.end();
  });
  const account = await funded(0);
  const viaFollower = new CofferClient({ baseUrls: [follower.url], backoffMs: 5 });
  await viaFollower.transfer({ from: "bank", to: account, amount: 4 });
  await viaFollower.transfer({ from: "bank", to: account, amount: 4 });
  follower.close();
  assert.equal(follower.requests.length, 1);
  assert.equal(viaFollower.baseUrl, server.url);
  assert.equal((await client.getAccount(account)).balance, 8);
});
