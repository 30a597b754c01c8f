"""test_failover's faults (kill -9 and SIGSTOP of the leader under load, the loss of the
PostgreSQL primary) on three instances whose memory budget (`--memory-max 16M`) is far smaller
than the ledger. Before the faults, batches of 1,000 write PRELOAD transfers between accounts of
their own, so that every instance has evicted most of them to its on-disk index. After each
fault, besides test_failover's checks: every instance reports an eviction; a sample of the
preloaded transfers reads back on every instance, and replays on the new leader with its
original seq, and the same id with another amount is id_reused there.

Loopback only; only the processes this test started are signalled, by pid."""

import http.client
import time

import test_failover
from harness import requires_postgresql, uid

PRELOAD = 120000  # about twice what 16 MiB holds
BATCH = 1000
SAMPLE_EVERY = 997


@requires_postgresql
class FailoverEvicting(test_failover.Failover):
    member_args = ("--memory-max", "16M")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.preload()
        except BaseException:
            cls.cluster.stop(check=False)
            raise

    @classmethod
    def post(cls, body):
        """Posts to whichever instance leads, following 307s; waits out 503 (a full memory
        whose index is catching up answers overloaded). The answer of the 2xx."""
        member = cls.members[0]
        for _ in range(2000):
            status, headers, answer = test_failover.request(member, "POST", body[0], body[1],
                                                            timeout=30)
            if 200 <= status < 300:
                return answer
            if status == 307:
                member = test_failover.member_at(cls.members, headers["location"])
            elif status == 503:
                time.sleep(0.05)
            else:
                raise AssertionError("%s: %s %s" % (body[0], status, answer))
        raise AssertionError("%s: not accepted" % body[0])

    @classmethod
    def preload(cls):
        cls.pre_bank, cls.pre_users = uid("pre-bank"), [uid("pre-user") for _ in range(8)]
        cls.post(("/v1/accounts", {"id": cls.pre_bank, "currency": "EUR", "min_balance": None}))
        for user in cls.pre_users:
            cls.post(("/v1/accounts", {"id": user, "currency": "EUR"}))
        cls.preloaded = {}  # id -> (amount, to, seq), a sample
        for start in range(0, PRELOAD, BATCH):
            items = [{"id": "%s-%d" % (cls.pre_bank, n), "from": cls.pre_bank,
                      "to": cls.pre_users[n % len(cls.pre_users)], "amount": 1 + n % 7}
                     for n in range(start, start + BATCH)]
            answer = cls.post(("/v1/transfers", {"transfers": items}))
            for n, (item, result) in enumerate(zip(items, answer["results"]), start):
                if result["status"] != 201:
                    raise AssertionError("preload %s: %s" % (item["id"], result))
                if n % SAMPLE_EVERY == 0:
                    cls.preloaded[item["id"]] = (item["amount"], item["to"],
                                                 result["transfer"]["seq"])

    def metric(self, member, name):
        conn = http.client.HTTPConnection("127.0.0.1", member.port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            self.assertEqual(response.status, 200)
            text = response.read().decode()
        finally:
            conn.close()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        self.fail("%s: no %s in /metrics" % (member.url, name))

    def check_ledger(self, load, leader, members):
        expected = super().check_ledger(load, leader, members)
        for member in members:
            self.assertGreater(self.metric(member, "coffer_evicted_seq"), 0,
                               "%s evicted nothing" % member.url)
            for transfer_id, (amount, to, seq) in sorted(self.preloaded.items()):
                status, _, found = test_failover.request(member, "GET",
                                                         "/v1/transfers/" + transfer_id)
                self.assertEqual(status, 200, (member.url, transfer_id, found))
                self.assertEqual((found["seq"], found["amount"], found["to"]), (seq, amount, to))
        for transfer_id, (amount, to, seq) in sorted(self.preloaded.items())[::5]:
            body = {"id": transfer_id, "from": self.pre_bank, "to": to, "amount": amount}
            status, headers, again = test_failover.request(leader, "POST", "/v1/transfers", body)
            self.assertEqual((status, headers.get("idempotent-replayed")), (201, "true"),
                             (transfer_id, again))
            self.assertEqual(again["transfer"]["seq"], seq, transfer_id)
            body["amount"] += 1
            status, _, again = test_failover.request(leader, "POST", "/v1/transfers", body)
            self.assertEqual((status, again.get("code")), (422, "id_reused"), transfer_id)
        return expected


if __name__ == "__main__":
    import unittest
    unittest.main()
