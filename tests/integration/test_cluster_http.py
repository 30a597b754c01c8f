"""What the HTTP API says about the cluster, against a standalone `coffer serve`: GET /v1/cluster,
/readyz with the role, Coffer-Seq on every response (rising with the writes), and reads that wait
for ?min_seq / Coffer-Min-Seq: answered as soon as another client's write makes the seq applied,
503 seq_not_applied after the bound, 400 for a bad value. A standalone engine never refuses a
write, so the 307 / 503 no_leader answers are covered by tests/unit/test_cluster_http.c and
test_cluster.py (two instances sharing a log in PostgreSQL)."""

import http.server
import json
import subprocess
import threading
import time
import unittest

from harness import SLOW, ServerTestCase, coffer_binary, free_port, quote, uid

MIN_SEQ_WAIT_S = 5.0  # CLUSTER_MIN_SEQ_WAIT_MS


def seq_of(response):
    value = response.header("Coffer-Seq")
    if value is None or not value.isdigit():
        raise AssertionError("no Coffer-Seq in %r" % response)
    return int(value)


class ClusterStandalone(ServerTestCase):

    def test_cluster_of_a_standalone_instance(self):
        account = self.create_account()
        r = self.client.get("/v1/cluster")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.content_type, "application/json")
        body = r.json()
        self.assertEqual(list(body), ["role", "leader", "term", "applied_seq", "applied_hash",
                                      "ready", "members"])
        self.assertRegex(body["applied_hash"], r"^[0-9a-f]{64}$")  # the log's tail at applied_seq
        self.create_account()
        again = self.client.get("/v1/cluster").json()
        self.assertGreater(again["applied_seq"], body["applied_seq"])
        self.assertNotEqual(again["applied_hash"], body["applied_hash"])
        self.assertEqual(body["role"], "standalone")
        self.assertIsNone(body["leader"])
        self.assertEqual(body["term"], 0)
        self.assertIs(body["ready"], True)
        self.assertEqual(body["members"], [])
        self.assertGreaterEqual(body["applied_seq"], account["created_seq"])
        self.assertEqual(body["applied_seq"], seq_of(r))

    def test_readyz_names_the_role(self):
        r = self.client.get("/readyz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"status": "ready", "role": "standalone"})

    def test_every_response_carries_coffer_seq_rising_with_writes(self):
        before = seq_of(self.client.get("/healthz"))
        account = self.create_account()
        created = self.client.get("/v1/accounts/" + quote(account["id"]))
        self.assertEqual(created.status, 200, created)
        self.assertGreaterEqual(seq_of(created), account["created_seq"])
        self.assertGreater(account["created_seq"], before)
        r = self.transfer({"id": uid("pay"), "from": self.issuer(), "to": account["id"],
                           "amount": 5})
        self.assertEqual(r.status, 201, r)
        transfer_seq = r.json()["transfer"]["seq"]
        self.assertGreaterEqual(seq_of(r), transfer_seq)  # a write's own change is at or below
        for path in ("/v1/accounts/" + quote(account["id"]), "/v1/cluster", "/readyz",
                     "/v1/transfers/nothing-" + uid(), "/v1/no-such-route"):
            self.assertGreaterEqual(seq_of(self.client.get(path)), transfer_seq, path)
        problem = self.transfer({"id": uid("pay"), "from": account["id"], "to": account["id"],
                                 "amount": 1})
        self.assertEqual(problem.status, 422, problem)
        self.assertGreater(seq_of(problem), transfer_seq)  # a refusal is recorded too

    def test_min_seq_already_applied_answers_at_once(self):
        account = self.create_account()
        path = "/v1/accounts/%s?min_seq=%d" % (quote(account["id"]), account["created_seq"])
        started = time.monotonic()
        r = self.client.get(path)
        self.assertEqual(r.status, 200, r)
        self.assertLess(time.monotonic() - started, 1.0 * SLOW)
        r = self.client.get("/v1/accounts/" + quote(account["id"]),
                            headers={"Coffer-Min-Seq": "0"})
        self.assertEqual(r.status, 200, r)

    def test_min_seq_waits_until_another_client_writes(self):
        account = self.create_account()
        writer = self.server.client()
        written = {}

        def write_later():
            time.sleep(0.5)
            written["at"] = time.monotonic()
            written["response"] = writer.post("/v1/transfers", {
                "id": uid("pay"), "from": self.issuer(), "to": account["id"], "amount": 7})

        thread = threading.Thread(target=write_later)
        self.issuer()  # created before the wait, so that the write is the next seq
        current = seq_of(self.client.get("/v1/cluster"))
        started = time.monotonic()
        thread.start()
        try:
            r = self.client.get("/v1/accounts/%s?min_seq=%d" % (quote(account["id"]),
                                                                current + 1))
        finally:
            thread.join()
            writer.close()
        answered = time.monotonic()
        self.assertEqual(written["response"].status, 201, written["response"])
        self.assertEqual(r.status, 200, r)
        self.assertGreaterEqual(answered, written["at"])  # it did wait for the write
        self.assertLess(answered - started, MIN_SEQ_WAIT_S)  # and not for the bound
        self.assertEqual(r.json()["balance"], 7)  # the write it waited for is in the answer
        self.assertGreaterEqual(seq_of(r), current + 1)

    def test_min_seq_ahead_answers_seq_not_applied_after_the_bound(self):
        current = seq_of(self.client.get("/v1/cluster"))
        started = time.monotonic()
        r = self.client.get("/v1/cluster", headers={"Coffer-Min-Seq": str(current + 1000000)})
        waited = time.monotonic() - started
        self.assert_problem(r, 503, "seq_not_applied")
        self.assertEqual(r.header("Retry-After"), "1")
        self.assertGreaterEqual(waited, MIN_SEQ_WAIT_S - 0.1)
        self.assertLess(waited, MIN_SEQ_WAIT_S + 3.0 * SLOW)

    def test_bad_min_seq_is_a_400(self):
        for value in ("abc", "-1", "1.5", "", "99999999999999999999999"):
            r = self.client.get("/v1/cluster?min_seq=" + quote(value))
            self.assert_problem(r, 400, "invalid_field", field="/min_seq")
        r = self.client.get("/v1/cluster", headers={"Coffer-Min-Seq": "x"})
        self.assert_problem(r, 400, "invalid_field", field="Coffer-Min-Seq")
        r = self.client.get("/v1/cluster?min_seq=1", headers={"Coffer-Min-Seq": "2"})
        self.assert_problem(r, 400, "invalid_field", field="Coffer-Min-Seq")

    def test_waiting_reads_do_not_block_the_server(self):
        """Reads waiting for a seq hold no network thread: others are answered meanwhile."""
        current = seq_of(self.client.get("/v1/cluster"))
        waiters = [self.server.client() for _ in range(4)]
        results = []

        def wait(client):
            results.append(client.get("/v1/cluster?min_seq=%d" % (current + 1000000)))

        threads = [threading.Thread(target=wait, args=(c,)) for c in waiters]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            started = time.monotonic()
            r = self.client.get("/readyz")
            self.assertEqual(r.status, 200, r)
            self.assertLess(time.monotonic() - started, 1.0 * SLOW)
        finally:
            for t in threads:
                t.join()
            for c in waiters:
                c.close()
        self.assertEqual(sorted(r.status for r in results), [503] * 4)


class ClusterTokens(ServerTestCase):
    tokens = (("viewer", "read", None), ("shop", "read", "shop:"))

    def test_cluster_takes_a_read_token(self):
        self.assert_problem(self.client.get("/v1/cluster"), 401, "unauthorized")
        for name in ("viewer", "shop"):
            r = self.client.get("/v1/cluster",
                                headers={"Authorization": "Bearer " + self.secrets[name]})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["role"], "standalone")
        self.assertEqual(self.client.get("/readyz").status, 200)  # a probe needs none


class Stub:
    """An HTTP server on a free loopback port that answers every request with answer(handler,
    body) -> (status, headers, body), recording what it was sent; a follower to the CLI."""

    def __init__(self, answer):
        self.requests = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_one(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                stub.requests.append((self.command, self.path, body))
                status, headers, payload = answer(self, body)
                self.send_response(status)
                for name, value in headers + [("Content-Length", str(len(payload)))]:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = handle_one

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def problem(code, status, **extra):
    body = {"type": "urn:coffer:error:" + code, "title": code, "status": status, "code": code,
            "detail": code}
    body.update(extra)
    return json.dumps(body).encode()


class ClusterCli(ServerTestCase):
    """`coffer` with several servers: a 307 is followed with the same body, an instance that
    cannot be reached or knows no leader hands the request to the next."""

    def coffer(self, *args):
        return subprocess.run([coffer_binary()] + list(args), capture_output=True, text=True,
                              timeout=30 * SLOW)

    def leader(self):
        return "http://127.0.0.1:%d" % self.server.port

    def stub(self, answer):
        stub = Stub(answer)
        self.addCleanup(stub.close)
        return stub

    def test_a_write_sent_to_a_follower_is_redirected_with_its_body(self):
        leader = self.leader()
        follower = self.stub(lambda handler, body: (
            307, [("Location", leader + handler.path),
                  ("Content-Type", "application/problem+json")],
            problem("not_leader", 307, leader=leader)))
        account_id = uid("acct")
        run = self.coffer("--server", follower.url, "--json", "account", "create", account_id,
                          "--currency", "KRW")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(json.loads(run.stdout)["id"], account_id)
        self.assertEqual(len(follower.requests), 1)
        method, path, body = follower.requests[0]
        self.assertEqual((method, path), ("POST", "/v1/accounts"))
        self.assertEqual(json.loads(body)["id"], account_id)
        self.assertEqual(self.get_account(account_id)["id"], account_id)

    def test_redirects_are_bounded(self):
        loop = self.stub(lambda handler, body: (
            307, [("Location", "http://127.0.0.1:%d%s" % (handler.server.server_address[1],
                                                         handler.path)),
                  ("Content-Type", "application/problem+json")],
            problem("not_leader", 307, leader="elsewhere")))
        run = self.coffer("--server", loop.url, "account", "create", uid("acct"), "--currency",
                          "KRW")
        self.assertEqual(run.returncode, 1, run.stderr)
        self.assertIn("not_leader", run.stderr)
        self.assertEqual(len(loop.requests), 5)  # the first try and four hops

    def test_unreachable_and_leaderless_servers_are_skipped(self):
        dead = "http://127.0.0.1:%d" % free_port()
        leaderless = self.stub(lambda handler, body: (
            503, [("Retry-After", "1"), ("Content-Type", "application/problem+json")],
            problem("no_leader", 503)))
        account_id = uid("acct")
        run = self.coffer("--server", dead + "," + leaderless.url, "--server", self.leader(),
                          "--json", "account", "create", account_id, "--currency", "KRW")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("cannot be reached; trying the next server", run.stderr)
        self.assertIn("knows no leader; trying the next server", run.stderr)
        self.assertEqual(len(leaderless.requests), 1)
        self.assertEqual(self.get_account(account_id)["id"], account_id)
        run = self.coffer("cluster", "status", "--server", dead)
        self.assertEqual(run.returncode, 3, run.stderr)

    def test_cluster_status(self):
        run = self.coffer("cluster", "status", "--server", self.leader())
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("%s: standalone, ready" % self.leader(), run.stdout)
        run = self.coffer("--json", "cluster", "status", "--server", self.leader())
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(json.loads(run.stdout)["role"], "standalone")

    def test_bench_loads_the_leader_a_follower_names(self):
        leader = self.leader()
        follower = self.stub(lambda handler, body: (
            200, [("Content-Type", "application/json")],
            json.dumps({"role": "follower", "leader": leader, "term": 2, "applied_seq": 1,
                        "ready": True, "members": []}).encode()))
        run = self.coffer("bench", "--server", follower.url + "," + leader, "--duration", "1",
                          "--connections", "2", "--accounts", "10")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("the leader is " + leader, run.stderr)
        self.assertEqual([(m, p) for m, p, _ in follower.requests], [("GET", "/v1/cluster")])
        self.assertGreater(json.loads(run.stdout.splitlines()[-1])["requests"], 0)


if __name__ == "__main__":
    unittest.main()
