"""What the HTTP API says about the cluster, against a standalone `coffer serve`: GET /v1/cluster,
/readyz with the role, Coffer-Seq on every response (rising with the writes), and reads that wait
for ?min_seq / Coffer-Min-Seq: answered as soon as another client's write makes the seq applied,
503 seq_not_applied after the bound, 400 for a bad value. A standalone engine never refuses a
write, so the 307 / 503 no_leader answers are covered by tests/unit/test_cluster_http.c and
test_cluster.py (two instances sharing a log in PostgreSQL)."""

import threading
import time
import unittest

from harness import SLOW, ServerTestCase, quote, uid

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
        self.assertEqual(list(body), ["role", "leader", "term", "applied_seq", "ready", "members"])
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


if __name__ == "__main__":
    unittest.main()
