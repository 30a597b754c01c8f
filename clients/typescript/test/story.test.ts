// Story 5 (concert seats) run through a plain client generated from docs/openapi.yaml:
// openapi-typescript's types with openapi-fetch, nothing of @coffer/client on top. Five users try
// to hold one seat at once: one gets the 5-minute hold, four a clear conflict; the holder pays
// and confirms the seat in one atomic batch. A user with 10,000 points buys five 1,000-point
// items at once and ends at exactly 5,000.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import createClient from "openapi-fetch";
import type { paths } from "../src/generated/schema.js";
import { startServer, type RunningServer } from "./server.js";

let server: RunningServer;
let api: ReturnType<typeof createClient<paths>>;
const run = `s${process.pid}`;

before(async () => {
  server = await startServer();
  api = createClient<paths>({ baseUrl: server.url });
  for (const body of [
    { id: `${run}:points`, currency: "POINT", min_balance: null },
    { id: `${run}:venue`, currency: "POINT" },
    { id: `${run}:seats`, currency: "SEAT", min_balance: null },
    { id: `${run}:seat:A12`, currency: "SEAT" },
  ]) {
    assert.equal((await api.POST("/v1/accounts", { body })).response.status, 201);
  }
  await api.POST("/v1/transfers", { body: { id: `${run}:issue-A12`, from: `${run}:seats`, to: `${run}:seat:A12`, amount: 1 } });
});
after(() => server.stop());

async function user(name: string, points: number): Promise<string> {
  const id = `${run}:user:${name}`;
  const { error } = await api.POST("/v1/accounts", { body: { id, currency: "SEAT" } });
  assert.equal(error, undefined);
  const wallet = `${id}:points`;
  await api.POST("/v1/accounts", { body: { id: wallet, currency: "POINT" } });
  await api.POST("/v1/transfers", { body: { id: `${wallet}:grant`, from: `${run}:points`, to: wallet, amount: points } });
  return id;
}

test("five users, one seat: one hold, four conflicts; pay and confirm atomically", async () => {
  const users = await Promise.all(["a", "b", "c", "d", "e"].map((name) => user(name, 1000)));
  const attempts = await Promise.all(users.map((id) => api.POST("/v1/transfers", {
    body: { id: `${id}:hold-A12`, from: `${run}:seat:A12`, to: id, amount: 1, hold: { timeout_ms: 300_000 } },
  })));
  const held = attempts.filter((attempt) => attempt.response.status === 201);
  const refused = attempts.filter((attempt) => attempt.response.status === 409);
  assert.equal(held.length, 1);
  assert.equal(refused.length, 4);
  for (const attempt of refused) assert.equal(attempt.error?.code, "insufficient_balance");
  const answer = held[0].data!;
  // One endpoint answers a single transfer (201) or a batch (200): the type is their union.
  assert.ok("transfer" in answer);
  const hold = answer;
  assert.equal(hold.transfer.state, "pending");
  assert.match(hold.transfer.expires_at ?? "", /Z$/);

  const winner = hold.transfer.to;
  const paid = await api.POST("/v1/transfers", { body: { atomic: true, transfers: [
    { id: `${winner}:pay-A12`, from: `${winner}:points`, to: `${run}:venue`, amount: 1000 },
    { id: `${winner}:confirm-A12`, post: hold.transfer.id },
  ] } });
  assert.equal(paid.response.status, 200);
  assert.ok(paid.data && "results" in paid.data);
  assert.deepEqual(paid.data.results.map((item) => item.status), [201, 201]);
  const seat = await api.GET("/v1/accounts/{id}", { params: { path: { id: winner } } });
  assert.equal(seat.data?.balance, 1);
});

test("10,000 points, five 1,000-point items at once: exactly 5,000 left", async () => {
  const buyer = await user("f", 10_000);
  const buys = await Promise.all([1, 2, 3, 4, 5].map((item) => api.POST("/v1/transfers", {
    body: { id: `${buyer}:item-${item}`, from: `${buyer}:points`, to: `${run}:venue`, amount: 1000 },
  })));
  assert.deepEqual(buys.map((buy) => buy.response.status), [201, 201, 201, 201, 201]);
  const wallet = await api.GET("/v1/accounts/{id}", { params: { path: { id: `${buyer}:points` } } });
  assert.equal(wallet.data?.balance, 5000);
});
