"""Process lifecycle: SIGTERM drains in-flight requests and exits 0; a restart keeps everything
(accounts, transfers, holds, history, idempotent replays); snapshots; the data dir lock; the
memory budget (--memory-max) reached, and raised by a restart; the disk's reserve
(--disk-reserve) reached, and room given back."""

import http.client
import os
import re
import signal
import subprocess
import threading
import time
import unittest

from harness import (BATCH_MAX, SLOW, ApiAssertions, Server, coffer_binary, parse_rfc3339_ns,
                     quote, tail, uid)


class LifecycleCase(unittest.TestCase, ApiAssertions):
    """Each test owns its server(s); tearDown kills whatever is still running (by pid)."""

    def setUp(self):
        self.servers = []

    def tearDown(self):
        for server in self.servers:
            server.cleanup()

    def new_server(self, **options):
        server = Server(**options)
        self.servers.append(server)
        server.start()
        return server

    # small helpers on a given client
    def create(self, client, account_id, **fields):
        body = {"id": account_id, "currency": "KRW"}
        body.update(fields)
        r = client.post("/v1/accounts", body)
        self.assertEqual(r.status, 201, r)
        return r

    def xfer(self, client, body, status=201):
        r = client.post("/v1/transfers", body)
        self.assertEqual(r.status, status, r)
        return r

    def snapshot(self, client, accounts, transfers):
        """Everything observable about these accounts and transfers, for before/after checks."""
        state = {"accounts": {}, "history": {}, "transfers": {}, "holds": {}}
        for a in accounts:
            r = client.get("/v1/accounts/" + quote(a))
            self.assertEqual(r.status, 200, r)
            state["accounts"][a] = r.json()
            entries, after = [], 0
            while True:
                r = client.get("/v1/accounts/%s/history?after=%d&limit=1000" % (quote(a), after))
                self.assertEqual(r.status, 200, r)
                entries += r.json()["entries"]
                if r.json()["next_after"] is None:
                    break
                after = r.json()["next_after"]
            state["history"][a] = entries
            r = client.get("/v1/holds?account=%s&limit=1000" % quote(a))
            self.assertEqual(r.status, 200, r)
            state["holds"][a] = r.json()["holds"]
        for t in transfers:
            r = client.get("/v1/transfers/" + quote(t))
            state["transfers"][t] = (r.status, r.json())
        return state

    def verify_ok(self, client):
        r = client.get("/v1/verify")
        self.assertEqual(r.status, 200, r)
        self.assertIs(r.json().get("ok"), True, r.json())
        return r.json()

    def offline_verify(self, server):
        """`coffer verify DIR` on the stopped server's data: exit 0."""
        proc = subprocess.run([coffer_binary(), "verify", server.data_dir], capture_output=True,
                              timeout=120 * SLOW)
        self.assertEqual(proc.returncode, 0, "coffer verify: %s %s"
                         % (proc.stdout.decode(errors="replace")[-2000:],
                            proc.stderr.decode(errors="replace")[-2000:]))


class Restart(LifecycleCase):

    def build_state(self, client):
        """A ledger with every kind of thing in it; returns (accounts, transfers, requests)."""
        bank, alice, bob, usd = (uid("bank"), uid("alice"), uid("bob"), uid("usd"))
        self.create(client, bank, min_balance=None, metadata={"kind": "funding"})
        self.create(client, alice, min_balance=-100, max_balance=100000, metadata={"name": "A"})
        self.create(client, bob)
        self.create(client, usd, currency="USD")
        requests = {}  # id -> (path, body, first response)

        def remember(path, body):
            r = client.post(path, body)
            requests[body["id"]] = (path, body, r)
            return r

        ids = {}
        ids["deposit"] = uid("deposit")
        self.assertEqual(remember("/v1/transfers", {"id": ids["deposit"], "from": bank,
                                                    "to": alice, "amount": 5000,
                                                    "metadata": {"ref": "d1"}}).status, 201)
        ids["pay"] = uid("pay")
        self.assertEqual(remember("/v1/transfers", {"id": ids["pay"], "from": alice, "to": bob,
                                                    "amount": 1200}).status, 201)
        ids["rejected"] = uid("rej")
        self.assertEqual(remember("/v1/transfers", {"id": ids["rejected"], "from": alice,
                                                    "to": bob, "amount": 999999}).status, 409)
        ids["mismatch"] = uid("cur")
        self.assertEqual(remember("/v1/transfers", {"id": ids["mismatch"], "from": alice,
                                                    "to": usd, "amount": 1}).status, 422)
        for name, amount in (("pending", 300), ("captured", 400), ("voided", 500),
                             ("partial", 600)):
            ids[name] = uid(name)
            self.assertEqual(remember("/v1/transfers", {
                "id": ids[name], "from": alice, "to": bob, "amount": amount,
                "hold": {"timeout_ms": 3600000}}).status, 201)
        ids["post"] = uid("post")
        self.assertEqual(remember("/v1/holds/%s/post" % ids["captured"],
                                  {"id": ids["post"]}).status, 201)
        ids["partial_post"] = uid("ppost")
        self.assertEqual(remember("/v1/holds/%s/post" % ids["partial"],
                                  {"id": ids["partial_post"], "amount": 100}).status, 201)
        ids["void"] = uid("void")
        self.assertEqual(remember("/v1/holds/%s/void" % ids["voided"],
                                  {"id": ids["void"]}).status, 201)
        ids["batch"] = [uid("batch") for _ in range(3)]
        r = client.post("/v1/transfers", {"atomic": True, "transfers": [
            {"id": ids["batch"][0], "from": bank, "to": bob, "amount": 10},
            {"id": ids["batch"][1], "from": bob, "to": alice, "amount": 5},
            {"id": ids["batch"][2], "from": bank, "to": alice, "amount": 1}]})
        self.assertEqual(r.status, 200, r)
        transfers = [v for k, v in ids.items() if k != "batch"] + ids["batch"]
        return [bank, alice, bob, usd], transfers, requests, ids

    def test_restart_keeps_everything(self):
        server = self.new_server(fsync="always")
        client = server.client()
        accounts, transfers, requests, ids = self.build_state(client)
        before = self.snapshot(client, accounts, transfers)
        self.assertEqual(before["transfers"][ids["pending"]][1]["state"], "pending")
        client.close()
        for run in range(2):  # twice: a restarted server restarts again
            server.restart()
            client = server.client()
            after = self.snapshot(client, accounts, transfers)
            for part in ("accounts", "history", "holds", "transfers"):
                self.assertEqual(after[part], before[part], "%s differ after restart %d"
                                 % (part, run + 1))
            # replays across the restart: original status and body, marked replayed
            for tid, (path, body, first) in requests.items():
                with self.subTest(id=tid, run=run):
                    again = client.post(path, body)
                    self.assert_replay_of(again, first)
            # id_reused still names the field
            path, body, _ = requests[ids["pay"]]
            r = client.post(path, dict(body, amount=1201))
            self.assert_problem(r, 422, "id_reused", field="/amount")
            # the pending hold still works after the restart... on the second run only
            self.verify_ok(client)
            client.close()
        client = server.client()
        r = client.post("/v1/holds/%s/post" % ids["pending"], {"id": uid("late")})
        self.assertEqual(r.status, 201, r)
        client.close()
        server.stop()
        self.offline_verify(server)
        log = server.stderr(run=-1)
        self.assertIn("SIGTERM received: draining", log)
        self.assertIn("stopped cleanly", log)

    def test_writes_after_restart_continue_the_sequence(self):
        server = self.new_server()
        client = server.client()
        a, b = uid("a"), uid("b")
        self.create(client, a, min_balance=None)
        self.create(client, b)
        last = self.xfer(client, {"id": uid(), "from": a, "to": b, "amount": 1}).json()
        client.close()
        server.restart()
        client = server.client()
        nxt = self.xfer(client, {"id": uid(), "from": a, "to": b, "amount": 1}).json()
        self.assertGreater(nxt["transfer"]["seq"], last["transfer"]["seq"])
        self.assertGreater(parse_rfc3339_ns(nxt["transfer"]["timestamp"]),
                           parse_rfc3339_ns(last["transfer"]["timestamp"]))
        self.assertEqual(nxt["accounts"]["to"]["version"], last["accounts"]["to"]["version"] + 1)
        r = client.get("/v1/accounts/%s/history" % b)
        seqs = [e["seq"] for e in r.json()["entries"]]
        self.assertEqual(seqs, sorted(set(seqs)))
        client.close()

    def test_hold_expires_while_the_server_is_down(self):
        server = self.new_server()
        client = server.client()
        a, b = uid("a"), uid("b")
        self.create(client, a, min_balance=None)
        self.create(client, b)
        hold = uid("hold")
        r = self.xfer(client, {"id": hold, "from": a, "to": b, "amount": 70,
                               "hold": {"timeout_ms": 1000}})
        expires_ns = parse_rfc3339_ns(r.json()["transfer"]["expires_at"])
        client.close()
        server.stop()
        while time.time_ns() < expires_ns + 200_000_000:
            time.sleep(0.1)
        server.start()
        client = server.client()
        r = client.post("/v1/holds/%s/post" % hold, {"id": uid("post")})
        self.assert_problem(r, 409, "hold_expired")
        deadline = time.monotonic() + 10 * SLOW
        while time.monotonic() < deadline:
            if client.get("/v1/transfers/" + hold).json()["state"] == "expired":
                break
            time.sleep(0.05)
        self.assertEqual(client.get("/v1/transfers/" + hold).json()["state"], "expired")
        acct = client.get("/v1/accounts/" + a).json()
        self.assertEqual((acct["debits_held"], acct["balance"]), (0, 0))
        self.verify_ok(client)
        client.close()

    def test_snapshots_and_log_replay(self):
        server = self.new_server(snapshot_every=7)
        client = server.client()
        src, dst = uid("src"), uid("dst")
        self.create(client, src, min_balance=None)
        self.create(client, dst)
        tids = []
        for i in range(60):
            tid = uid("s")
            tids.append(tid)
            self.xfer(client, {"id": tid, "from": src, "to": dst, "amount": i + 1})
        # and a big batch so a snapshot lands mid-stream
        batch = [{"id": uid("sb"), "from": src, "to": dst, "amount": 1} for _ in range(500)]
        self.assertEqual(client.post("/v1/transfers", {"atomic": False,
                                                       "transfers": batch}).status, 200)
        tids += [x["id"] for x in batch]
        before = self.snapshot(client, [src, dst], tids[:80] + tids[-5:])
        client.close()
        server.restart()
        client = server.client()
        after = self.snapshot(client, [src, dst], tids[:80] + tids[-5:])
        self.assertEqual(after, before)
        self.assertEqual(after["accounts"][dst]["balance"], 60 * 61 // 2 + 500)
        self.verify_ok(client)
        client.close()
        server.stop()
        self.offline_verify(server)


class Shutdown(LifecycleCase):

    # After the signal the server may finish what it has; it must not keep taking new work.
    GRACE = 1.0     # s after the signal: a request sent later than this must not get a 2xx
    EXIT_WITHIN = 5.0  # s after the signal, with clients still sending
    STOP_AFTER = 10.0  # s after the signal the clients give up (bounds the test)

    def load(self, server, src, dst, clients, batch, stop):
        """Starts `clients` threads that write until the server goes away (or `stop` is set).
        Returns (threads, records); a record is (ids, Response or exception, sent, answered)."""
        records = []
        lock = threading.Lock()
        go = threading.Event()
        item = '{"id":"%s","from":"' + src + '","to":"' + dst + '","amount":1}'

        def worker(i):
            client = server.client(timeout=30)
            n = 0
            go.wait(10)
            try:
                while not stop.is_set():
                    n += 1
                    ids = ["drain-%s-%d-%d-%d" % (src, i, n, k) for k in range(batch)]
                    if batch == 1:
                        body = (item % ids[0]).encode()
                    else:
                        body = ('{"atomic":true,"transfers":[%s]}'
                                % ",".join(item % x for x in ids)).encode()
                    sent = time.monotonic()
                    try:
                        outcome = client.post("/v1/transfers", body)
                    except (OSError, http.client.HTTPException) as e:
                        outcome = e
                    with lock:
                        records.append((ids, outcome, sent, time.monotonic()))
                    if isinstance(outcome, Exception) or outcome.status >= 500:
                        return  # gone or shutting down: stop
            finally:
                client.close()

        threads = [threading.Thread(target=worker, args=(i,), daemon=True)
                   for i in range(clients)]
        for t in threads:
            t.start()
        go.set()
        return threads, records

    def drain_and_check(self, sig, batch):
        name = signal.Signals(sig).name
        server = self.new_server(fsync="always")
        client = server.client()
        src, dst = uid("src"), uid("dst")
        self.create(client, src, min_balance=None)
        self.create(client, dst)
        client.close()
        stop = threading.Event()
        threads, records = self.load(server, src, dst, clients=32, batch=batch, stop=stop)
        signalled = None
        readyz_after = []

        def poll_readyz():
            # one more keep-alive client asks /readyz until the server is gone
            poller = server.client(timeout=10)
            try:
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        r = poller.get("/readyz")
                    except (OSError, http.client.HTTPException):
                        return
                    if signalled is not None and sent > signalled + 0.05:
                        readyz_after.append(r)
                    time.sleep(0.01)
            finally:
                poller.close()

        threads.append(threading.Thread(target=poll_readyz, daemon=True))
        threads[-1].start()
        try:
            time.sleep(1.0 * SLOW)  # let the load build up
            signalled = time.monotonic()
            server.send_signal(sig)
            exit_deadline = signalled + self.STOP_AFTER * SLOW
            while server.running() and time.monotonic() < exit_deadline:
                time.sleep(0.01)
            exited_after = time.monotonic() - signalled
        finally:
            stop.set()
        rc = server.wait(timeout=60)
        for t in threads:
            t.join(30 * SLOW)
        self.assertFalse(any(t.is_alive() for t in threads), "clients hung after shutdown")
        self.assertEqual(rc, 0, "exit status after %s; stderr:\n%s"
                         % (name, tail(server.stderr(run=-1))))
        acknowledged, answered_after, refused, late = [], 0, [], []
        for ids, outcome, sent, answered in records:
            if isinstance(outcome, Exception):
                continue
            if 200 <= outcome.status < 300:
                if batch > 1:
                    body = outcome.json()
                    self.assertTrue(all(x["code"] == "created" for x in body["results"]), body)
                acknowledged.append(ids)
                if answered > signalled:
                    answered_after += 1
                if sent > signalled + self.GRACE * SLOW:
                    late.append(sent - signalled)
            else:
                refused.append(outcome)
        self.assertGreater(len(acknowledged), 0, "nothing was acknowledged under load")
        # in-flight requests were answered, not dropped: some answers came after the signal
        self.assertGreater(answered_after, 0, "no request was answered after %s: nothing drained"
                           % name)
        for r in refused:  # the only refusal allowed while stopping
            self.assert_problem(r, 503, "shutting_down")
        # every acknowledged write survives the restart (an atomic batch is all or none, so
        # its first and last ids stand for it)
        server.start()
        client = server.client()
        for ids in acknowledged:
            for tid in {ids[0], ids[-1]}:
                r = client.get("/v1/transfers/" + tid)
                self.assertEqual(r.status, 200, "acknowledged %s lost after restart: %r" % (tid, r))
                self.assertEqual(r.json()["code"], "created", r)
        # and nothing else moved money: the balance is every recorded transfer, no more
        recorded = 0
        for ids, outcome, _, _ in records:
            r = client.get("/v1/transfers/" + ids[0])
            if r.status == 200 and r.json()["code"] == "created":
                recorded += len(ids)
            else:
                self.assertEqual(r.status, 404, r)
        self.assertEqual(client.get("/v1/accounts/" + dst).json()["balance"], recorded)
        self.assertGreaterEqual(recorded, sum(len(ids) for ids in acknowledged))
        self.verify_ok(client)
        client.close()
        server.stop()
        # Shutting down means no new work: bounded exit while clients keep sending on their
        # open keep-alive connections, and no 2xx for requests sent well after the signal.
        self.assertLess(exited_after, self.EXIT_WITHIN * SLOW,
                        "%s: the server took %.1f s to exit while clients kept sending; "
                        "%d requests "
                        "sent more than %.0f s after the signal got a 2xx (the last %.1f s after)"
                        % (name, exited_after, len(late), self.GRACE * SLOW,
                           max(late) if late else 0.0))
        if late:
            self.fail("%s: %d requests sent more than %.0f s after the signal were accepted "
                      "(2xx), the last %.1f s after it"
                      % (name, len(late), self.GRACE * SLOW, max(late)))
        # /readyz on an open connection while stopping: 503 shutting_down (when answered)
        for r in readyz_after:
            self.assert_problem(r, 503, "shutting_down")

    def test_sigterm_drains_single_transfers(self):
        self.drain_and_check(signal.SIGTERM, batch=1)

    def test_sigterm_drains_batches(self):
        self.drain_and_check(signal.SIGTERM, batch=BATCH_MAX // 8)

    def test_sigint_drains_and_exits_zero(self):
        self.drain_and_check(signal.SIGINT, batch=1)

    def test_idle_sigterm_exits_zero_quickly(self):
        server = self.new_server()
        client = server.client()
        self.assertEqual(client.get("/healthz").status, 200)  # an open keep-alive connection
        started = time.monotonic()
        server.stop(timeout=10)
        self.assertLess(time.monotonic() - started, 10 * SLOW)
        client.close()

    def test_second_server_on_the_same_dir_is_refused(self):
        first = self.new_server()
        second = Server(data_dir=first.data_dir)
        self.servers.append(second)
        second.spawn()
        try:
            rc = second.wait(timeout=15)
        except AssertionError:
            self.fail("a second server on a locked data dir kept running")
        self.assertNotEqual(rc, 0)
        self.assertTrue(second.stderr().strip(), "refused without saying why")
        client = first.client()
        self.assertEqual(client.get("/readyz").status, 200)
        client.close()

    def test_bad_usage_exits_2(self):
        for args in (["--listen", "nonsense"], ["--fsync", "sometimes"], ["--timeout", "-1"],
                     ["--timeout", "0"], ["--max-connections", "0"], ["--queue-events", "x"],
                     ["--no-such-flag"]):
            with self.subTest(args=args):
                proc = subprocess.run([coffer_binary(), "serve"] + args, capture_output=True,
                                      timeout=10 * SLOW, stdin=subprocess.DEVNULL)
                self.assertEqual(proc.returncode, 2, proc)
                self.assertTrue(proc.stderr.strip())
        proc = subprocess.run([coffer_binary(), "serve", "--help"], capture_output=True,
                              timeout=10 * SLOW)
        self.assertEqual(proc.returncode, 0)
        help_text = proc.stdout.decode()
        for flag in ("--listen", "--data", "--fsync", "--queue-events", "--max-connections",
                     "--timeout", "--snapshot-every", "--memory-max"):
            self.assertIn(flag, help_text)


class MemoryBudget(LifecycleCase):
    """A server whose --memory-max is small enough to fill in a second: without the index it
    refuses writes once full; with it (the default) memory evicts what the index holds."""

    def fill(self, client, prefix):
        """Batches of 1000 transfers until one is refused; returns (refusal, transfers made)."""
        made = 0
        for batch in range(500):
            body = {"transfers": [{"id": "%s-%d-%d" % (prefix, batch, i), "from": "bank",
                                   "to": "shop", "amount": 1} for i in range(1000)]}
            r = client.post("/v1/transfers", body)
            if r.status == 503:
                return r, made
            self.assertEqual(r.status, 200, r)
            made += 1000
        self.fail("500,000 transfers fit in a 16 MiB budget")

    def metric(self, client, name):
        r = client.get("/metrics")
        self.assertEqual(r.status, 200, r)
        for line in r.body.decode().splitlines():
            if line.startswith(name + " "):
                return int(line.split()[1])
        self.fail("no %s in /metrics" % name)

    def test_budget_reached_then_raised(self):
        server = self.new_server(args=["--memory-max", "16M", "--index", "off"], fsync="never")
        self.assertRegex(server.stderr(), r"memory budget 16 MiB \(as configured\)")
        client = server.client()
        self.create(client, "bank", min_balance=None)
        self.create(client, "shop")
        refused, made = self.fill(client, "first")
        self.assertGreater(made, 40000)
        self.assertEqual(refused.json()["code"], "capacity_exceeded")
        self.assertEqual(refused.json()["detail"],
                         "memory budget of 16 MiB reached: 2 accounts, %d transfers held" % made)
        self.assertEqual(self.metric(client, "coffer_memory_budget_bytes"), 16 << 20)
        used = self.metric(client, "coffer_memory_used_bytes")
        self.assertLessEqual(used, 16 << 20)
        self.assertGreater(used, 15 << 20)
        # Nothing of the refused batch was applied; reads go on.
        self.assertEqual(client.get("/v1/transfers/first-0-0").status, 200)
        missing = client.get("/v1/transfers/" + refused_id(made))
        self.assertEqual(missing.status, 404, missing)
        self.assertEqual(client.get("/v1/accounts/shop").json()["balance"], made)
        # Room is checked for a whole submission: an atomic batch as large is refused whole.
        r = client.post("/v1/transfers", {"atomic": True, "transfers": [
            {"id": "atomic-%d" % i, "from": "bank", "to": "shop", "amount": 1}
            for i in range(1000)]})
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.json()["code"], "capacity_exceeded")
        self.assertEqual(client.get("/v1/transfers/atomic-0").status, 404)
        self.assertEqual(client.get("/v1/accounts/shop").json()["balance"], made)
        client.close()
        # A restart with a larger budget takes writes again.
        server.args[server.args.index("16M")] = "32M"
        server.restart()
        client = server.client()
        self.assertEqual(client.get("/v1/accounts/shop").json()["balance"], made)
        self.xfer(client, {"id": "after-restart", "from": "bank", "to": "shop", "amount": 5})
        self.assertEqual(client.get("/v1/accounts/shop").json()["balance"], made + 5)
        self.assertEqual(self.metric(client, "coffer_memory_budget_bytes"), 32 << 20)
        client.close()

    def test_budget_evicts_with_the_index(self):
        server = self.new_server(args=["--memory-max", "16M"], fsync="never")
        client = server.client()
        self.create(client, "bank", min_balance=None)
        self.create(client, "shop")
        batches, overloaded = 300, 0
        for batch in range(batches):
            body = {"transfers": [{"id": "t-%d-%d" % (batch, i), "from": "bank", "to": "shop",
                                   "amount": 1 + i % 7} for i in range(1000)]}
            for attempt in range(2000):
                r = client.post("/v1/transfers", body)
                if r.status != 503:
                    break
                # Memory is full until the index catches up: refused whole, retried.
                self.assertEqual(r.json()["code"], "overloaded", r)
                self.assertEqual(r.header("Retry-After"), "1")
                overloaded += 1
                time.sleep(0.02)
            self.assertEqual(r.status, 200, r)
        made = batches * 1000
        total = batches * sum(1 + i % 7 for i in range(1000))
        self.assertEqual(client.get("/v1/accounts/shop").json()["balance"], total)
        # Far more than 16 MiB holds: memory evicted, and stayed within its budget.
        self.assertGreater(self.metric(client, "coffer_evictions_total"), 0)
        self.assertGreater(self.metric(client, "coffer_evicted_transfers_total"), made // 2)
        self.assertEqual(self.metric(client, "coffer_overloaded_memory_total"), overloaded)
        used = self.metric(client, "coffer_memory_used_bytes")
        self.assertLessEqual(used + self.metric(client, "coffer_index_filter_bytes"), 16 << 20)
        self.assertRegex(server.stderr(), r"memory: evicted \d+ transfers")
        # An evicted transfer reads back, its retry replays, a changed retry is id_reused.
        old = {"id": "t-0-3", "from": "bank", "to": "shop", "amount": 4}
        r = client.get("/v1/transfers/t-0-3")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["amount"], 4)
        r = client.post("/v1/transfers", old)
        self.assertEqual(r.status, 201, r)  # the original answer, again
        self.assertEqual(r.json()["transfer"]["seq"], 6)
        self.assertEqual(r.header("Idempotent-Replayed"), "true")
        r = client.post("/v1/transfers", dict(old, amount=5))
        self.assertEqual(r.status, 422, r)
        self.assertEqual(r.json()["code"], "id_reused")
        history = client.get("/v1/accounts/shop/history?limit=3").json()
        self.assertEqual([e["transfer_id"] for e in history["entries"]], ["t-0-0", "t-0-1", "t-0-2"])
        self.assertEqual(client.get("/v1/verify").status, 200)
        client.close()
        # kill -9 and a restart: nothing lost, old ids still replay.
        server.kill()
        server.start()
        client = server.client()
        self.assertEqual(client.get("/v1/accounts/shop").json()["balance"], total)
        r = client.post("/v1/transfers", old)
        self.assertEqual(r.status, 201, r)  # the original answer, again
        self.assertEqual(r.json()["transfer"]["seq"], 6)
        self.assertEqual(r.header("Idempotent-Replayed"), "true")
        client.close()

    def bad_sizes_exit_2(self, flag, sizes, message):
        """`coffer serve FLAG SIZE` for each of `sizes`: usage, exit 2, `message` on stderr."""
        for size in sizes:
            with self.subTest(flag=flag, size=size):
                proc = subprocess.run([coffer_binary(), "serve", flag, size],
                                      capture_output=True, timeout=10 * SLOW,
                                      stdin=subprocess.DEVNULL)
                self.assertEqual(proc.returncode, 2, proc)
                self.assertIn(message, proc.stderr)

    def test_bad_sizes_exit_2(self):
        self.bad_sizes_exit_2("--memory-max", ("48MB", "1M", "5T", "-48M", "4.5G", ""),
                              b"--memory-max needs a size from 16M to 4T")


class DiskReserve(LifecycleCase):
    """--disk-reserve: below that much free space on the data directory's filesystem, writes
    are refused (503 capacity_exceeded, naming the disk) and reads go on; once there is room
    again they are taken, without a restart. The room is taken away for real: a file of 2 GiB
    allocated (not written) beside the data directory, with a reserve 1 GiB under what was free."""

    metric = MemoryBudget.metric
    bad_sizes_exit_2 = MemoryBudget.bad_sizes_exit_2

    def refused(self, client, seconds=10):
        """Transfers of 1 under fresh ids until one is refused (the writer looks at the disk at
        most every 100 ms, so the first may still be taken): the refusal, and how many were
        taken before it."""
        deadline = time.monotonic() + seconds * SLOW
        for taken in range(100000):
            r = client.post("/v1/transfers", {"id": "probe-%d" % taken, "from": "bank",
                                              "to": "shop", "amount": 1})
            if r.status != 201:
                return r, taken
            self.assertLess(time.monotonic(), deadline, "no refusal within %d s" % seconds)
            time.sleep(0.02)
        self.fail("never refused")

    def test_writes_refused_below_the_reserve_then_taken_again(self):
        server = self.new_server(fsync="never")
        client = server.client()
        fs = os.statvfs(server.data_dir)
        self.assertEqual(self.metric(client, "coffer_disk_reserve_bytes"),
                         min(256 << 20, fs.f_blocks * fs.f_frsize // 20))
        self.assertRegex(server.stderr(), r"disk: .* free on the filesystem of .*; writes are "
                         r"refused while less than .* \(the default reserve\) is free")
        self.create(client, "bank", min_balance=None)
        self.create(client, "shop")
        self.xfer(client, {"id": "before", "from": "bank", "to": "shop", "amount": 3})
        client.close()
        free = os.statvfs(server.data_dir).f_bavail * fs.f_frsize
        if free < (4 << 30) or not hasattr(os, "posix_fallocate"):
            self.skipTest("needs 4 GiB free beside the data directory (%d bytes)" % free)
        server.stop()
        server.args += ["--disk-reserve", str(free - (1 << 30))]
        server.start()
        client = server.client()
        self.xfer(client, {"id": "room", "from": "bank", "to": "shop", "amount": 4})
        ballast = os.path.join(server.tmp, "ballast")
        with open(ballast, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, 2 << 30)
        try:
            taken_now = os.statvfs(server.data_dir)
            if taken_now.f_bavail * taken_now.f_frsize > free - (1 << 30):
                self.skipTest("the filesystem did not give up the space a file allocated")
            r, taken = self.refused(client)
            self.assert_problem(r, 503, "capacity_exceeded")
            self.assertRegex(r.json()["detail"], r"^disk reserve of .* reached: .* free on the "
                             r"filesystem of " + re.escape(server.data_dir) + "$")
            # Nothing of it applied; reads go on.
            self.assertEqual(client.get("/v1/transfers/probe-%d" % taken).status, 404)
            self.assertEqual(client.get("/v1/accounts/shop").json()["balance"], 7 + taken)
            self.assertEqual(self.metric(client, "coffer_refused_disk_total"), 1)
            self.assertLess(self.metric(client, "coffer_disk_free_bytes"),
                            self.metric(client, "coffer_disk_reserve_bytes"))
            # Refused again while the disk stays full.
            again = client.post("/v1/transfers", {"id": "probe-%d" % taken, "from": "bank",
                                                  "to": "shop", "amount": 1})
            self.assert_problem(again, 503, "capacity_exceeded")
        finally:
            os.unlink(ballast)
        # Room again: the refused id is taken as new, with no restart.
        deadline = time.monotonic() + 10 * SLOW
        while True:
            r = client.post("/v1/transfers", {"id": "probe-%d" % taken, "from": "bank",
                                              "to": "shop", "amount": 1})
            if r.status != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        self.assert_created(r)
        self.assertEqual(client.get("/v1/accounts/shop").json()["balance"], 8 + taken)
        self.assertEqual(client.get("/v1/verify").json()["ok"], True)
        client.close()
        log = server.stderr()
        self.assertRegex(log, r"below the reserve of .*: refusing writes \(capacity_exceeded\)")
        self.assertRegex(log, r"above the reserve of .* again: taking writes")

    def test_bad_reserve_exits_2(self):
        self.bad_sizes_exit_2("--disk-reserve", ("256MB", "-1", "1.5G", ""),
                              b"--disk-reserve needs a size")


def refused_id(made):
    """The id of the first transfer of the batch refused after `made` transfers."""
    return "first-%d-0" % (made // 1000)


if __name__ == "__main__":
    unittest.main()
