"""Webhooks against a real `coffer serve` and receivers on loopback ports: the CRUD answers, every
change delivered at least once and in order to a receiver that fails, times out and answers
slowly at random (across a kill -9 and a restart), every signature valid, a webhook marked
failing and enabled again, and a receiver that never answers costing the writer nothing.
"""

import base64
import hashlib
import hmac
import http.server
import json
import os
import random
import re
import socket
import statistics
import threading
import time
import unittest

from harness import SLOW, Server, ServerTestCase, thread_nices, uid


class Receiver:
    """An HTTP receiver on a free loopback port. `behave(seq, attempt)` picks what it does with
    an attempt: "ok", "fail" (500), "slow" (answers 200 after a while) or "hang" (answers after
    `hang_seconds`, past the server's timeout). It records every attempt it read."""

    def __init__(self, secret=None, behave=None, hang_seconds=1.0):
        self.secret = secret
        self.behave = behave or (lambda seq, attempt: "ok")
        self.hang_seconds = hang_seconds
        self.lock = threading.Lock()
        self.attempts = []  # (webhook-id, seq, signature ok, answered 2xx), one per change
        self.batches = []  # the seqs of each batch POST
        self.tries = {}
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.handle(self, body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hook" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def verify(self, headers, body):
        message_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
        key = base64.b64decode(self.secret[len("whsec_"):])
        mac = hmac.new(key, ("%s.%s." % (message_id, stamp)).encode() + body, hashlib.sha256)
        expected = "v1," + base64.b64encode(mac.digest()).decode()
        return any(hmac.compare_digest(expected, given)
                   for given in headers["webhook-signature"].split(" "))

    @staticmethod
    def envelope_ok(change):
        return (change["type"] == change["data"]["type"]
                and change["timestamp"] == change["data"]["timestamp"])

    def handle(self, handler, body):
        payload = json.loads(body)
        if payload["type"] == "batch":  # a webhook with "batch": {first_seq, last_seq, changes}
            changes = payload["data"]["changes"]
            seqs = [change["data"]["seq"] for change in changes]
            expected_id = "evt_%d-%d" % (seqs[0], seqs[-1])
            shape_ok = (all(map(self.envelope_ok, changes))
                        and payload["data"]["first_seq"] == seqs[0]
                        and payload["data"]["last_seq"] == seqs[-1]
                        and payload["timestamp"] == changes[-1]["timestamp"])
            with self.lock:
                self.batches.append(seqs)
        else:
            seqs = [payload["data"]["seq"]]
            expected_id = "evt_%d" % seqs[0]
            shape_ok = self.envelope_ok(payload)
        seq = seqs[0]
        with self.lock:
            attempt = self.tries.get(seq, 0)
            self.tries[seq] = attempt + 1
        action = self.behave(seq, attempt)
        ok = (self.verify(handler.headers, body) and handler.headers["webhook-id"] == expected_id
              and shape_ok and handler.headers["Content-Type"] == "application/json"
              and handler.headers["User-Agent"].startswith("coffer/"))
        if action == "slow":
            time.sleep(0.1)
        if action == "hang":
            time.sleep(self.hang_seconds)
        status = 500 if action == "fail" else 200
        with self.lock:
            for seq in seqs:
                self.attempts.append((handler.headers["webhook-id"], seq, ok, status == 200
                                      and action != "hang"))
        try:
            handler.send_response(status)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        except OSError:
            pass  # the server gave up on a hung attempt

    def delivered(self):
        """The seqs answered 2xx, first deliveries only, in arrival order."""
        seen, order = set(), []
        with self.lock:
            for _, seq, _, answered in self.attempts:
                if answered and seq not in seen:
                    seen.add(seq)
                    order.append(seq)
        return order

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def durable_seq(client):
    r = client.get("/metrics")
    return int(re.search(r"^coffer_durable_seq (\d+)$", r.body.decode(), re.M).group(1))


class WebhookCrudTest(ServerTestCase):
    """The answers of /v1/webhooks."""

    def test_create_replay_conflict_get_list_delete(self):
        webhook_id = uid("hook")
        body = {"id": webhook_id, "url": "http://127.0.0.1:9/never", "types": ["hold.expired"]}
        created = self.client.post("/v1/webhooks", body)
        self.assertEqual(created.status, 201, created)
        shown = created.json()
        self.assertTrue(shown["secret"].startswith("whsec_"))
        self.assertEqual(len(base64.b64decode(shown["secret"][6:])), 32)
        self.assertEqual((shown["id"], shown["types"], shown["state"], shown["account"],
                          shown["batch"], shown["batch_wait_ms"]),
                         (webhook_id, ["hold.expired"], "active", None, 1, 0))
        self.assertEqual(shown["cursor"], durable_seq(self.client))
        replay = self.client.post("/v1/webhooks", body)
        self.assertEqual(replay.status, 200, replay)
        self.assertTrue(replay.replayed)
        self.assertNotIn("secret", replay.json())
        other = self.client.post("/v1/webhooks", dict(body, url="http://127.0.0.1:9/other"))
        self.assert_problem(other, 422, "id_reused", field="/id")
        batched = self.client.post("/v1/webhooks", dict(body, batch=10))
        self.assert_problem(batched, 422, "id_reused", field="/id")
        paced = dict(body, id=uid("paced"), batch=10, batch_wait_ms=250)
        self.assertEqual(self.client.post("/v1/webhooks", paced).status, 201)
        self.assertEqual(self.client.post("/v1/webhooks", paced).status, 200)
        self.assert_problem(self.client.post("/v1/webhooks", dict(paced, batch_wait_ms=251)), 422,
                            "id_reused", field="/id")
        self.assertEqual(self.client.get("/v1/webhooks/" + paced["id"]).json()["batch_wait_ms"],
                         250)
        self.assertEqual(self.client.request("DELETE", "/v1/webhooks/" + paced["id"]).status, 204)
        got = self.client.get("/v1/webhooks/" + webhook_id)
        self.assertEqual(got.status, 200, got)
        self.assertNotIn("secret", got.json())
        for key in ("lag_events", "lag_seconds", "deliveries", "failures", "last_error",
                    "last_attempt_at", "next_attempt_at"):
            self.assertIn(key, got.json())
        listed = self.client.get("/v1/webhooks").json()["webhooks"]
        self.assertIn(webhook_id, [w["id"] for w in listed])
        self.assertTrue(all("secret" not in w for w in listed))
        self.assertEqual(self.client.request("DELETE", "/v1/webhooks/" + webhook_id).status, 204)
        for gone in (self.client.request("DELETE", "/v1/webhooks/" + webhook_id),
                     self.client.get("/v1/webhooks/" + webhook_id)):
            self.assertEqual((gone.status, gone.json()["code"]), (404, "webhook_not_found"))

    def test_refuses_what_a_webhook_may_not_be(self):
        for body, field in (({"id": "x", "url": "ftp://h"}, "/url"),
                            ({"id": "x y", "url": "http://h"}, "/id"),
                            ({"id": "x", "url": "http://h", "types": ["nope"]}, "/types"),
                            ({"id": "x", "url": "http://h", "secret": "whsec_AAAA"}, "/secret"),
                            ({"id": "x", "url": "http://h", "after": 10**12}, "/after"),
                            ({"id": "x", "url": "http://h", "batch": 0}, "/batch"),
                            ({"id": "x", "url": "http://h", "batch": 1001}, "/batch"),
                            ({"id": "x", "url": "http://h", "batch": "10"}, "/batch"),
                            ({"id": "x", "url": "http://h", "batch_wait_ms": 50}, "/batch_wait_ms"),
                            ({"id": "x", "url": "http://h", "batch": 9, "batch_wait_ms": 10001},
                             "/batch_wait_ms"),
                            ({"id": "x", "url": "http://h", "extra": 1}, "/extra")):
            self.assert_problem(self.client.post("/v1/webhooks", body), 400, "invalid_field",
                                field=field)
        r = self.client.request("PUT", "/v1/webhooks")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.header("Allow"), "GET, POST")


class WebhookDeliveryTest(unittest.TestCase):

    def setUp(self):
        self.receivers = []
        self.servers = []
        self.clients = []

    def tearDown(self):
        for client in self.clients:
            client.close()
        for server in self.servers:
            server.cleanup()
        for receiver in self.receivers:
            receiver.close()

    def start(self, *args):
        server = Server(args=list(args))
        self.servers.append(server)
        server.start()
        return server

    def client_of(self, server):
        client = server.client()
        self.clients.append(client)
        return client

    def receiver(self, **kw):
        receiver = Receiver(**kw)
        self.receivers.append(receiver)
        return receiver

    def wait_caught_up(self, client, webhook_id, seq, timeout):
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            shown = client.get("/v1/webhooks/" + webhook_id).json()
            if shown["cursor"] >= seq:
                return shown
            time.sleep(0.1)
        self.fail("webhook %s not caught up with seq %d: %r" % (webhook_id, seq, shown))

    def workload(self, client, count, prefix):
        client.post("/v1/accounts", {"id": prefix + "-from", "currency": "EUR",
                                     "min_balance": None})
        client.post("/v1/accounts", {"id": prefix + "-to", "currency": "EUR"})
        for i in range(count):
            r = client.post("/v1/transfers", {"id": "%s-%d" % (prefix, i), "from": prefix + "-from",
                                              "to": prefix + "-to", "amount": 1 + i})
            self.assertEqual(r.status, 201, r)

    def test_every_change_in_order_through_failures_and_a_kill(self):
        self.chaos(batch=None)

    def test_batches_carry_every_change_in_order_through_failures_and_a_kill(self):
        receiver = self.chaos(batch=5)
        sizes = [len(seqs) for seqs in receiver.batches]
        self.assertEqual(max(sizes), 5, sizes)  # changes piled up during failures: full batches
        for seqs in receiver.batches:
            self.assertEqual(seqs, list(range(seqs[0], seqs[-1] + 1)))

    def test_a_paced_batch_webhook_gathers_a_stream_into_fewer_posts(self):
        """With batch_wait_ms, a caught-up batch webhook waits between POSTs: changes written one
        at a time go out in a few POSTs, not one each, every one of them still delivered in order;
        a lone change after a quiet spell goes out at once; the setting survives a kill -9."""
        wait_ms = 2000
        server = self.start()
        client = self.client_of(server)
        receiver = self.receiver()
        created = client.post("/v1/webhooks", {"id": "paced", "url": receiver.url, "after": 0,
                                               "batch": 100, "batch_wait_ms": wait_ms})
        self.assertEqual(created.status, 201, created)
        receiver.secret = created.json()["secret"]
        started = time.monotonic()
        self.workload(client, 40, "paced")
        writing = time.monotonic() - started
        last = durable_seq(client)
        self.wait_caught_up(client, "paced", last, 30)
        self.assertEqual(receiver.delivered(), list(range(1, last + 1)))
        self.assertEqual([a for a in receiver.attempts if not a[2]], [], "bad signatures")
        # One POST at once, then at most one per wait while the writes went on, and the last.
        posts = len(receiver.batches)
        self.assertLessEqual(posts, writing / (wait_ms / 1000) + 3,
                             "%d POSTs for %d changes written in %.2f s" % (posts, last, writing))
        time.sleep(wait_ms / 1000 + 0.5)  # quiet: the wait after the last POST is over
        started = time.monotonic()
        r = client.post("/v1/transfers", {"id": "lone", "from": "paced-from", "to": "paced-to",
                                          "amount": 1})
        self.assertEqual(r.status, 201, r)
        while last + 1 not in receiver.delivered() and time.monotonic() - started < 10:
            time.sleep(0.01)
        self.assertLess(time.monotonic() - started, wait_ms / 1000 / 2, "the lone change waited")
        server.kill()
        server.start()
        shown = self.client_of(server).get("/v1/webhooks/paced").json()
        self.assertEqual((shown["batch"], shown["batch_wait_ms"]), (100, wait_ms))

    def test_a_paced_webhook_never_waits_while_behind(self):
        """A filtered batch webhook with the longest wait, started from 0 behind more changes than
        one read of the feed scans (65,536): a read that stops at that bound with a partial batch
        is not caught up, so the webhook reads on at once instead of waiting 10 s."""
        server = self.start()
        client = self.client_of(server)
        for account in ("x", "y", "z"):
            self.assertIn(client.post("/v1/accounts", {"id": account, "currency": "EUR",
                                                       "min_balance": None}).status, (200, 201))
        self.assertEqual(client.post("/v1/transfers", {"id": "x-0", "from": "x", "to": "y",
                                                       "amount": 1}).status, 201)
        for k in range(9):  # 73,710 transfers between y and z, none touching x
            batch = [{"id": "yz-%d-%d" % (k, i), "from": "y", "to": "z", "amount": 1}
                     for i in range(8190)]
            r = client.post("/v1/transfers", {"atomic": False, "transfers": batch})
            self.assertEqual(r.status, 200, r)
        self.assertEqual(client.post("/v1/transfers", {"id": "x-1", "from": "x", "to": "y",
                                                       "amount": 1}).status, 201)
        receiver = self.receiver()
        created = client.post("/v1/webhooks", {"id": "behind", "url": receiver.url, "after": 0,
                                               "account": "x", "batch": 3,
                                               "batch_wait_ms": 10000})
        self.assertEqual(created.status, 201, created)
        receiver.secret = created.json()["secret"]
        last = durable_seq(client)
        started = time.monotonic()
        self.wait_caught_up(client, "behind", last, 3)  # 3 s (times SLOW) < the 10 s wait
        seqs = [seq for batch in receiver.batches for seq in batch]
        self.assertEqual(len(seqs), 3, seqs)  # x's creation and its two transfers
        print("\ncaught up with %d changes in %.2f s" % (last, time.monotonic() - started))

    def chaos(self, batch):
        """Every change delivered, in order, signed, to a receiver that fails, hangs and answers
        slowly at random, across a kill -9 and a restart; `batch`: the webhook's batch size."""
        rng = random.Random(int(os.environ.get("COFFER_TEST_SEED", "15")))
        choices = ["ok"] * 6 + ["fail"] * 2 + ["hang"] + ["slow"] * 2

        def behave(seq, attempt):
            # At most two bad answers per change, so that the backoff stays short.
            return rng.choice(choices) if attempt < 2 else "ok"

        server = self.start("--webhook-timeout-ms", "300", "--webhook-max-failures", "1000")
        client = self.client_of(server)
        receiver = self.receiver(behave=behave, hang_seconds=0.6)
        asked = {"id": "chaos", "url": receiver.url, "after": 0}
        if batch:
            asked["batch"] = batch
        created = client.post("/v1/webhooks", asked)
        self.assertEqual(created.status, 201, created)
        receiver.secret = created.json()["secret"]
        self.workload(client, 25, "before")
        time.sleep(1.0)  # some delivered, some not: the kill lands mid-stream
        server.kill()
        server.start()
        client = self.client_of(server)
        survived = client.get("/v1/webhooks/chaos")  # it survived the kill, batch size too
        self.assertEqual((survived.status, survived.json()["batch"]), (200, batch or 1))
        self.workload(client, 25, "after")
        last = durable_seq(client)
        shown = self.wait_caught_up(client, "chaos", last, 90)
        self.assertEqual(shown["lag_events"], 0)
        self.assertEqual(shown["state"], "active")
        self.assertEqual(receiver.delivered(), list(range(1, last + 1)))
        bad = [a for a in receiver.attempts if not a[2]]
        self.assertEqual(bad, [], "attempts with a wrong signature or envelope")
        self.assertGreater(len(receiver.attempts), last)  # failures were retried
        answered = sum(1 for attempt in receiver.attempts if attempt[3])
        print("\n%d changes: %d attempts, %d answered 2xx (%d redeliveries)"
              % (last, len(receiver.attempts), answered, answered - last))
        server.stop()
        return receiver

    def test_failing_after_the_bound_then_enabled(self):
        state = {"answer": "fail"}
        receiver = self.receiver(behave=lambda seq, attempt: state["answer"])
        server = self.start("--webhook-max-failures", "2", "--metrics-open")
        client = self.client_of(server)
        created = client.post("/v1/webhooks", {"id": "flaky", "url": receiver.url})
        receiver.secret = created.json()["secret"]
        self.workload(client, 1, "f")
        deadline = time.monotonic() + 10 * SLOW
        while client.get("/v1/webhooks/flaky").json()["state"] != "failing":
            self.assertLess(time.monotonic(), deadline, "never marked failing")
            time.sleep(0.05)
        shown = client.get("/v1/webhooks/flaky").json()
        self.assertEqual((shown["failures"], shown["last_error"]), (2, "HTTP 500"))
        self.assertIn('coffer_webhook_failing{webhook="flaky"} 1', client.get("/metrics").body.decode())
        attempts = len(receiver.attempts)
        time.sleep(1.0)
        self.assertEqual(len(receiver.attempts), attempts, "a failing webhook still delivers")
        state["answer"] = "ok"
        enabled = client.post("/v1/webhooks/flaky/enable")
        self.assertEqual(enabled.status, 200, enabled)
        self.assertEqual(enabled.json()["state"], "active")
        shown = self.wait_caught_up(client, "flaky", durable_seq(client), 20)
        self.assertEqual(receiver.delivered(), list(range(shown["cursor"] - 2, shown["cursor"] + 1)))
        metrics = client.get("/metrics").body.decode()
        self.assertIn('coffer_webhook_failing{webhook="flaky"} 0', metrics)
        self.assertIn('coffer_webhook_deliveries_total{webhook="flaky"} 3', metrics)
        self.assertIn('coffer_webhook_lag_events{webhook="flaky"} 0', metrics)
        server.stop()

    def write_latencies(self, client, count, prefix):
        client.post("/v1/accounts", {"id": prefix + "-from", "currency": "EUR",
                                     "min_balance": None})
        client.post("/v1/accounts", {"id": prefix + "-to", "currency": "EUR"})
        latencies = []
        for i in range(count):
            started = time.monotonic()
            r = client.post("/v1/transfers", {"id": "%s-%d" % (prefix, i), "from": prefix + "-from",
                                              "to": prefix + "-to", "amount": 1})
            latencies.append(time.monotonic() - started)
            self.assertEqual(r.status, 201, r)
        latencies.sort()
        return statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]

    def test_a_receiver_that_never_answers_costs_the_writer_nothing(self):
        # A socket that listens and never accepts: connections wait in its backlog for ever.
        silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        self.addCleanup(silent.close)
        server = self.start()
        client = self.client_of(server)
        alone = self.write_latencies(client, 300, "alone")
        for i in range(4):
            r = client.post("/v1/webhooks", {"id": "silent-%d" % i,
                                             "url": "http://127.0.0.1:%d/" % silent.getsockname()[1]})
            self.assertEqual(r.status, 201, r)
        beside = self.write_latencies(client, 300, "beside")
        print("\nwrite latency ms p50/p99: alone %.2f/%.2f, with 4 silent webhooks %.2f/%.2f"
              % (alone[0] * 1e3, alone[1] * 1e3, beside[0] * 1e3, beside[1] * 1e3))
        self.assertLess(beside[0], alone[0] * 5 + 0.005)
        self.assertLess(beside[1], alone[1] * 10 + 0.05)
        shown = client.get("/v1/webhooks/silent-0").json()
        self.assertGreater(shown["lag_events"], 0)
        # Each delivery thread runs at nice 10, below the writer's priority (a server started
        # at a nice above 10 keeps it for all its threads).
        [writer] = thread_nices(server.pid, "coffer-writer")
        self.assertEqual(thread_nices(server.pid, "coffer-webhook"), [max(10, writer)] * 4)
        # Shutdown aborts the exchanges in progress rather than wait for their 10 s timeout.
        started = time.monotonic()
        server.stop()
        self.assertLess(time.monotonic() - started, 5 * SLOW)


if __name__ == "__main__":
    unittest.main()
