"""64 concurrent keep-alive clients on one hot account and on one seat; then exact invariants."""

import collections
import time
import unittest

from harness import SLOW, ServerTestCase, parse_rfc3339_ns, quote, run_threads, uid

CLIENTS = 64


class HotAccount(ServerTestCase):

    def test_concurrent_debits_and_credits_on_one_account(self):
        # hot starts at 10,000. 32 clients each try 10 debits of 100 (32,000 wanted), 32 clients
        # each make 10 deposits of 7 (2,240). Debits succeed only while the balance allows.
        hot = self.funded_account(10000)
        sink = self.create_account()["id"]
        source = self.issuer("KRW")
        start = self.get_account(hot)
        self.assertEqual((start["balance"], start["version"]), (10000, 2))

        def worker(i):
            client = self.server.client()
            out = []
            try:
                for n in range(10):
                    if i % 2 == 0:
                        body = {"id": "hot-d-%d-%d" % (i, n), "from": hot, "to": sink,
                                "amount": 100}
                    else:
                        body = {"id": "hot-c-%d-%d" % (i, n), "from": source, "to": hot,
                                "amount": 7}
                    r = client.post("/v1/transfers", body)
                    out.append((i % 2 == 0, r.status, r.json() if r.body else None,
                                r.header("Idempotent-Replayed")))
            finally:
                client.close()
            return out

        results = [x for part in run_threads(CLIENTS, worker) for x in part]
        self.assertEqual(len(results), CLIENTS * 10)
        debits_ok = credits_ok = 0
        hot_versions = []
        for is_debit, status, body, replayed in results:
            self.assertIsNone(replayed, "a fresh id answered as a replay: %r" % (body,))
            if status == 201:
                side = "from" if is_debit else "to"
                self.assertEqual(body["accounts"][side]["id"], hot)
                hot_versions.append(body["accounts"][side]["version"])
                # the reported balance is never outside the limits
                self.assertGreaterEqual(body["accounts"][side]["available"], 0)
                if is_debit:
                    debits_ok += 1
                else:
                    credits_ok += 1
            else:
                self.assertTrue(is_debit, "a deposit failed: %r %r" % (status, body))
                self.assertEqual((status, body["code"]), (409, "insufficient_balance"), body)
                self.assertLess(body["available"], 100)
        self.assertEqual(credits_ok, CLIENTS // 2 * 10)
        total_in = 10000 + credits_ok * 7
        # never more debits than the money allowed (each refusal above saw less than one debit
        # available at its moment; a credit arriving after the last debit attempt may leave
        # enough for another, so equality is not guaranteed)
        self.assertLessEqual(debits_ok, total_in // 100)
        self.assertGreaterEqual(debits_ok, 10000 // 100)  # the opening balance alone allowed 100
        final = self.get_account(hot)
        self.assertEqual(final["balance"], total_in - debits_ok * 100)
        self.assertEqual(final["available"], final["balance"])
        self.assertEqual(final["debits_posted"], debits_ok * 100)
        self.assertEqual(final["credits_posted"], total_in)
        successes = debits_ok + credits_ok
        self.assertEqual(final["version"], start["version"] + successes)
        # each success saw its own version: no two applied on the same state
        self.assertEqual(sorted(hot_versions),
                         list(range(start["version"] + 1, final["version"] + 1)))
        self.assertEqual(self.get_account(sink)["balance"], debits_ok * 100)
        # history has exactly one entry per success, versions consecutive
        entries = self.all_history(hot)
        self.assertEqual(len(entries), 1 + successes)
        self.assertEqual([e["version"] for e in entries], list(range(2, final["version"] + 1)))
        self.verify_ok()

    def test_concurrent_retries_of_one_payment(self):
        # Story 2 (examples/): every client sends the same 5 payments (same ids); each applies once.
        wallet = self.funded_account(100000)
        shop = self.create_account()["id"]
        ids = [uid("retry") for _ in range(5)]

        def worker(i):
            client = self.server.client()
            try:
                out = []
                for tid in ids:
                    r = client.post("/v1/transfers",
                                    {"id": tid, "from": wallet, "to": shop, "amount": 1000})
                    out.append((tid, r.status, r.replayed, r.json()))
                return out
            finally:
                client.close()

        results = [x for part in run_threads(CLIENTS, worker) for x in part]
        by_id = collections.defaultdict(list)
        for tid, status, replayed, body in results:
            by_id[tid].append((status, replayed, body))
        for tid in ids:
            answers = by_id[tid]
            self.assertEqual(len(answers), CLIENTS)
            self.assertEqual({s for s, _, _ in answers}, {201}, answers[:3])
            firsts = [a for a in answers if not a[1]]
            self.assertEqual(len(firsts), 1, "%d first answers for %s" % (len(firsts), tid))
            for _, _, body in answers:
                self.assertEqual(body, firsts[0][2], "a replay differs from the original")
        final = self.get_account(wallet)
        self.assertEqual((final["balance"], final["version"]), (100000 - 5000, 2 + 5))
        self.assertEqual(self.get_account(shop)["balance"], 5000)
        self.verify_ok()

    def test_compare_and_set_counter(self):
        # Each client does read-decide-write with expect.to_version, retrying on mismatch:
        # every increment lands exactly once.
        counter = self.create_account(currency="CNT")["id"]
        source = self.issuer("CNT")
        per_client = 3

        def worker(i):
            client = self.server.client()
            mismatches = 0
            try:
                for n in range(per_client):
                    deadline = time.monotonic() + 60 * SLOW
                    attempt = 0
                    while True:
                        self.assertLess(time.monotonic(), deadline, "CAS loop did not finish")
                        version = client.get("/v1/accounts/" + quote(counter)).json()["version"]
                        attempt += 1
                        r = client.post("/v1/transfers", {
                            "id": "cas-%d-%d-%d" % (i, n, attempt), "from": source,
                            "to": counter, "amount": 1, "expect": {"to_version": version}})
                        if r.status == 201:
                            self.assertEqual(r.json()["accounts"]["to"]["version"], version + 1)
                            break
                        self.assertEqual((r.status, r.json()["code"]), (409, "version_mismatch"),
                                         r)
                        self.assertGreater(r.json()["actual_version"], version)
                        mismatches += 1
            finally:
                client.close()
            return mismatches

        mismatches = run_threads(CLIENTS, worker, timeout=240)
        self.assertGreater(sum(mismatches), 0, "no CAS conflict at all: the clients did not race")
        final = self.get_account(counter)
        self.assertEqual((final["balance"], final["version"]),
                         (CLIENTS * per_client, 1 + CLIENTS * per_client))
        self.verify_ok()


class Seat(ServerTestCase):

    def test_one_hold_wins_a_seat(self):
        pool = self.funded_account(1, currency="SEAT")
        pool_before = self.get_account(pool)
        users = [self.create_account(currency="SEAT")["id"] for _ in range(CLIENTS)]

        def worker(i):
            client = self.server.client()
            try:
                r = client.post("/v1/transfers", {"id": "seat-%s-%d" % (pool, i), "from": pool,
                                                  "to": users[i], "amount": 1,
                                                  "hold": {"timeout_ms": 300000}})
                return r.status, r.json()
            finally:
                client.close()

        results = run_threads(CLIENTS, worker)
        winners = [i for i, (status, _) in enumerate(results) if status == 201]
        self.assertEqual(len(winners), 1, "%d holds won one seat" % len(winners))
        for i, (status, body) in enumerate(results):
            if i in winners:
                self.assertEqual(body["transfer"]["state"], "pending")
                continue
            self.assertEqual((status, body["code"], body["available"]),
                             (409, "insufficient_balance", 0), body)
        winner = winners[0]
        hold_id = "seat-%s-%d" % (pool, winner)
        p = self.get_account(pool)
        self.assertEqual((p["balance"], p["available"], p["debits_held"], p["version"]),
                         (1, 0, 1, pool_before["version"] + 1))
        for i, user in enumerate(users):
            a = self.get_account(user)
            self.assertEqual((a["credits_held"], a["version"]),
                             (1 if i == winner else 0, 2 if i == winner else 1))
        holds = self.client.get("/v1/holds?account=" + quote(pool)).json()["holds"]
        self.assertEqual([h["id"] for h in holds], [hold_id])

        # Now 64 clients race to post or void that hold: exactly one resolution wins.
        def resolver(i):
            client = self.server.client()
            action = "post" if i % 2 == 0 else "void"
            try:
                r = client.post("/v1/holds/%s/%s" % (quote(hold_id), action),
                                {"id": "resolve-%s-%d" % (pool, i)})
                return action, r.status, r.json()
            finally:
                client.close()

        outcomes = run_threads(CLIENTS, resolver)
        won = [(a, b) for a, s, b in outcomes if s == 201]
        self.assertEqual(len(won), 1, "%d resolutions of one hold succeeded" % len(won))
        action = won[0][0]
        loser_code = "hold_already_posted" if action == "post" else "hold_already_voided"
        for a, status, body in outcomes:
            if status != 201:
                self.assertEqual((status, body["code"]), (409, loser_code), body)
        state = self.get_transfer(hold_id).json()["state"]
        self.assertEqual(state, "captured" if action == "post" else "voided")
        p = self.get_account(pool)
        self.assertEqual((p["balance"], p["debits_held"], p["version"]),
                         (0 if action == "post" else 1, 0, pool_before["version"] + 2))
        u = self.get_account(users[winner])
        self.assertEqual((u["balance"], u["credits_held"], u["version"]),
                         (1 if action == "post" else 0, 0, 3))
        self.verify_ok()

    def test_many_seats_never_oversold(self):
        # 10 seats in one pool, 64 clients each try 3 holds of 1 seat: exactly 10 holds succeed.
        pool = self.funded_account(10, currency="SEAT")
        user = self.create_account(currency="SEAT")["id"]

        def worker(i):
            client = self.server.client()
            try:
                return [client.post("/v1/transfers", {
                    "id": "many-%s-%d-%d" % (pool, i, n), "from": pool, "to": user, "amount": 1,
                    "hold": {"timeout_ms": 300000}}).status for n in range(3)]
            finally:
                client.close()

        statuses = [s for part in run_threads(CLIENTS, worker) for s in part]
        self.assertEqual(statuses.count(201), 10)
        self.assertEqual(statuses.count(409), CLIENTS * 3 - 10)
        p = self.get_account(pool)
        self.assertEqual((p["available"], p["debits_held"], p["version"]), (0, 10, 2 + 10))
        self.assertEqual(len(self.client.get("/v1/holds?account=" + quote(pool)).json()["holds"]),
                         10)
        self.verify_ok()


class ExpiryRace(ServerTestCase):

    def test_post_races_expiry(self):
        # Story 5 (examples/): payment confirmation and hold expiry race; exactly one wins per hold,
        # and a payment is never taken for an expired hold.
        pool = self.funded_account(CLIENTS, currency="SEAT")
        user = self.create_account(currency="SEAT")["id"]
        holds = []
        for i in range(CLIENTS):
            hid = uid("race")
            r = self.transfer({"id": hid, "from": pool, "to": user, "amount": 1,
                               "hold": {"timeout_ms": 1500}})
            self.assertEqual(r.status, 201, r)
            holds.append((hid, parse_rfc3339_ns(r.json()["transfer"]["expires_at"])))

        def worker(i):
            hid, expires_ns = holds[i]
            client = self.server.client()
            try:
                # aim at the deadline, a little before or after
                target = expires_ns / 1e9 + ((i % 7) - 3) * 0.002
                delay = target - time.time()
                if delay > 0:
                    time.sleep(delay)
                r = client.post("/v1/holds/%s/post" % quote(hid), {"id": hid + "-post"})
                return r.status, r.json()
            finally:
                client.close()

        results = run_threads(CLIENTS, worker)
        posted = 0
        for i, (status, body) in enumerate(results):
            hid, expires_ns = holds[i]
            if status == 201:
                posted += 1
                self.assertLess(parse_rfc3339_ns(body["transfer"]["timestamp"]), expires_ns,
                                "a post at or after expires_at succeeded")
            else:
                self.assertEqual((status, body["code"]), (409, "hold_expired"), body)
        # wait for the sweep to expire the rest, then every hold has exactly one resolution
        deadline = time.monotonic() + 10 * SLOW
        while time.monotonic() < deadline:
            if self.get_account(pool)["debits_held"] == 0:
                break
            time.sleep(0.05)
        states = collections.Counter(self.get_transfer(h).json()["state"] for h, _ in holds)
        self.assertEqual(states, collections.Counter({"captured": posted,
                                                      "expired": CLIENTS - posted}))
        p = self.get_account(pool)
        self.assertEqual((p["balance"], p["debits_held"]), (CLIENTS - posted, 0))
        self.assertEqual(self.get_account(user)["balance"], posted)
        self.verify_ok()


if __name__ == "__main__":
    unittest.main()
