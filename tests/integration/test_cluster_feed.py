"""The change feed and webhooks with the log in PostgreSQL (scripts/pg-cluster: a primary and a
synchronous standby on free loopback ports, stopped at the end), two instances sharing it and a
standalone server beside them: one workload of every kind of change written through the leader
and the same one written to the standalone server; GET /v1/events on the leader and on the
follower (min_seq set to the leader's seq) give the same changes in the same order, and the
same as the standalone server's but for their timestamps; an event stream from the follower
resumed from Last-Event-ID gives the suffix; a long-poll and a stream on the follower wake when
the follower applies a write made on the leader; `coffer events` given the follower prints the
leader's changes; a webhook registered on the follower and one on the leader each receive every
change once in order, signed; a long-poll whose read waits for PostgreSQL (coffer_log locked)
does not stop the network thread from serving other requests."""

import json
import os
import subprocess
import threading
import time
import unittest

from harness import (PG_BIN, SLOW, Member, Server, coffer_binary, json_exchange, pg_cluster_start,
                     pg_cluster_stop, requires_postgresql)
from test_events import TYPES, Stream, events_path
from test_webhooks import Receiver

ALL_TYPES = ",".join(TYPES)


def exchange(server, method, path, body=None, headers=None):
    return json_exchange(server.port, method, path, body, headers)


def workload(server, prefix):
    """The same writes on any server (ids made from `prefix`, so the same on each): accounts,
    transfers, a rejection, an atomic batch and a refused one, holds posted, voided and left
    pending (long timeouts: nothing expires while the test runs, so the order is the writes')."""
    def post(path, body, expected=(200, 201, 409, 422)):
        status, _, answer = exchange(server, "POST", path, body)
        assert status in expected, (path, body, status, answer)
        return answer

    bank, alice, bob = prefix + "bank", prefix + "alice", prefix + "bob"
    post("/v1/accounts", {"id": bank, "currency": "KRW", "min_balance": None})
    post("/v1/accounts", {"id": alice, "currency": "KRW"})
    post("/v1/accounts", {"id": bob, "currency": "KRW", "max_balance": 5000})
    for i in range(40):
        post("/v1/transfers", {"id": "%spay%d" % (prefix, i), "from": bank,
                               "to": alice if i % 2 else bob, "amount": 10 + i})
    post("/v1/transfers", {"id": prefix + "toomuch", "from": alice, "to": bob, "amount": 10 ** 9})
    post("/v1/transfers", {"atomic": True, "transfers": [
        {"id": "%sa%d" % (prefix, i), "from": bank, "to": alice, "amount": 5} for i in range(5)]})
    post("/v1/transfers", {"atomic": True, "transfers": [
        {"id": prefix + "b0", "from": bank, "to": alice, "amount": 5},
        {"id": prefix + "b1", "from": alice, "to": bob, "amount": 10 ** 9}]})
    post("/v1/transfers", {"transfers": [
        {"id": "%sm%d" % (prefix, i), "from": alice, "to": bob, "amount": 1 + i * 400}
        for i in range(6)]})
    for i in range(6):
        post("/v1/transfers", {"id": "%sh%d" % (prefix, i), "from": bank, "to": alice,
                               "amount": 100, "hold": {"timeout_ms": 600000}})
    post("/v1/holds/%sh0/post" % prefix, {"id": prefix + "h0p"})
    post("/v1/holds/%sh1/post" % prefix, {"id": prefix + "h1p", "amount": 40})
    post("/v1/holds/%sh2/void" % prefix, {"id": prefix + "h2v"})
    post("/v1/holds/%sh3/post" % prefix, {"id": prefix + "h3p", "amount": 1000})  # rejected
    post("/v1/holds/%sh2/post" % prefix, {"id": prefix + "h2p"})  # voided already: rejected


def all_events(server, min_seq=None, limit=1000, **query):
    """Every change by pages (checking each page's form), and the last durable_seq."""
    events, after = [], 0
    while True:
        path = events_path(after=after, limit=limit, types=ALL_TYPES, **query)
        if min_seq is not None:
            path += "&min_seq=%d" % min_seq
        status, headers, body = exchange(server, "GET", path)
        assert status == 200, (path, status, body)
        assert sorted(body) == ["durable_seq", "events", "next_after"], body
        assert int(headers["coffer-seq"]) >= body["durable_seq"] >= body["next_after"], (headers,
                                                                                         body)
        events += body["events"]
        if body["next_after"] >= body["durable_seq"]:
            return events, body["durable_seq"]
        assert body["next_after"] > after, body
        after = body["next_after"]


def without_times(value, prefix):
    """A change with its timestamps left out and the workload's prefix taken off its ids, to
    compare runs on two ledgers written at other times."""
    if isinstance(value, dict):
        return {key: without_times(item, prefix) for key, item in value.items()
                if key not in ("timestamp", "expires_at", "created_at")}
    if isinstance(value, list):
        return [without_times(item, prefix) for item in value]
    if isinstance(value, str) and value.startswith(prefix):
        return value[len(prefix):]
    return value


@requires_postgresql
class FeedWithThePostgresLog(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.pg_dir, env = pg_cluster_start()
        cls.pg_env = env
        cls.servers = []
        cls.receivers = []
        try:
            cls.standalone = Server(args=["--sse-keepalive-ms", "200"])
            cls.servers.append(cls.standalone)
            cls.standalone.start()
            cls.members = []
            for _ in range(2):
                member = Member(args=["--log", env["MULTI_CONNINFO"], "--sse-keepalive-ms",
                                      "200", "--webhook-timeout-ms", "1000"])
                cls.servers.append(member)
                cls.members.append(member)
                member.start()
            cls.leader, cls.follower = cls.roles()
            # Webhooks registered before the workload, one on each instance.
            cls.hooks = {}
            for member in (cls.follower, cls.leader):
                receiver = Receiver()
                cls.receivers.append(receiver)
                status, _, created = exchange(member, "POST", "/v1/webhooks",
                                              {"id": "every", "url": receiver.url, "after": 0})
                if status != 201:
                    raise AssertionError("webhook refused: %r %r" % (status, created))
                receiver.secret = created["secret"]
                cls.hooks[member.url] = receiver
            workload(cls.leader, "pg-")
            workload(cls.standalone, "local-")
            # Other tests write more: this one compares the workload's changes only.
            cls.workload_seq = int(exchange(cls.leader, "GET", "/v1/cluster")[1]["coffer-seq"])
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            for receiver in cls.receivers:
                receiver.close()
            for server in reversed(cls.servers):
                if server.running():
                    server.stop()
                server.cleanup()
        finally:
            pg_cluster_stop(cls.pg_dir)

    @classmethod
    def roles(cls):
        deadline = time.monotonic() + 20 * SLOW
        while True:
            roles = {}
            for member in cls.members:
                status, _, view = exchange(member, "GET", "/v1/cluster")
                roles[member.url] = view.get("role") if status == 200 else None
            leaders = [m for m in cls.members if roles[m.url] == "leader"]
            followers = [m for m in cls.members if roles[m.url] == "follower"]
            if len(leaders) == 1 and len(followers) == 1:
                return leaders[0], followers[0]
            if time.monotonic() > deadline:
                raise AssertionError("no leader and follower: %r" % roles)
            time.sleep(0.2)

    def leader_seq(self):
        status, headers, _ = exchange(self.leader, "GET", "/v1/cluster")
        self.assertEqual(status, 200)
        return int(headers["coffer-seq"])

    def test_leader_follower_and_standalone_feeds_agree(self):
        seq = self.leader_seq()
        on_leader, leader_durable = all_events(self.leader)
        on_follower, follower_durable = all_events(self.follower, min_seq=seq)
        self.assertGreaterEqual(follower_durable, seq)
        self.assertGreater(len(on_leader), 60)
        self.assertEqual(on_follower, on_leader)  # the same records: timestamps too
        # Small pages from the follower give the same sequence.
        self.assertEqual(all_events(self.follower, limit=7)[0], on_leader)
        # Filters work there as on the leader.
        posted = all_events(self.follower, limit=1000)[0]
        self.assertEqual([e for e in posted if e["type"] == "hold.posted"],
                         [e for e in on_leader if e["type"] == "hold.posted"])
        status, _, page = exchange(self.follower, "GET", events_path(
            types="transfer.rejected", limit=1000))
        self.assertEqual(status, 200, page)
        self.assertEqual(page["events"], [e for e in on_leader
                                          if e["type"] == "transfer.rejected"])
        status, _, page = exchange(self.follower, "GET", events_path(
            account="pg-bob", types=ALL_TYPES, limit=1000))
        self.assertEqual(status, 200, page)
        self.assertEqual([e["seq"] for e in page["events"]],
                         [e["seq"] for e in on_leader if "pg-bob" in str(e)])
        local, _ = all_events(self.standalone)
        # The term row holds no seq: the seqs are the standalone server's too.
        workload_changes = [e for e in on_leader if e["seq"] <= self.workload_seq]
        self.assertEqual([e["seq"] for e in workload_changes], [e["seq"] for e in local])
        self.assertEqual([without_times(e, "pg-") for e in workload_changes],
                         [without_times(e, "local-") for e in local])
        self.assertEqual(sorted(set(e["type"] for e in local)), sorted(set(TYPES) - {
            "hold.expired"}))

    def test_coffer_events_on_the_follower_prints_the_leaders_changes(self):
        seq = self.leader_seq()
        on_leader, _ = all_events(self.leader)
        all_events(self.follower, min_seq=seq)  # applied there
        run = subprocess.run([coffer_binary(), "--server", self.follower.url, "--json", "events",
                              "--types", ALL_TYPES, "--limit", "25"],
                             capture_output=True, text=True, timeout=30 * SLOW)
        self.assertEqual(run.returncode, 0, run.stderr)
        printed = [json.loads(line) for line in run.stdout.splitlines()]
        self.assertEqual([e for e in printed if e["seq"] <= seq],
                         [e for e in on_leader if e["seq"] <= seq])

    def test_a_follower_stream_resumes_from_each_last_event_id(self):
        seq = self.leader_seq()
        run, _ = all_events(self.follower, min_seq=seq)
        last = run[-1]["seq"]
        for index in range(0, len(run), 9):
            stream = Stream(self.follower.port, events_path(types=ALL_TYPES),
                            last_event_id=run[index]["seq"])
            try:
                until = last if run[index]["seq"] < last else None
                self.assertEqual(stream.events_until(until), run[index + 1:], run[index]["seq"])
            finally:
                stream.close()

    def test_a_follower_long_poll_and_stream_wake_on_the_leaders_write(self):
        seq = self.leader_seq()
        _, durable = all_events(self.follower, min_seq=seq)
        stream = Stream(self.follower.port, events_path(types=ALL_TYPES),
                        last_event_id=durable, timeout=20)
        answers = {}

        def poll():
            answers["poll"] = exchange(self.follower, "GET", events_path(
                after=durable, wait_ms=15000, types=ALL_TYPES))

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            time.sleep(0.3)  # the long-poll waits
            account = "wake-%d" % durable
            status, headers, _ = exchange(self.leader, "POST", "/v1/accounts",
                                          {"id": account, "currency": "KRW"})
            self.assertEqual(status, 201)
            written = int(headers["coffer-seq"])
            poller.join(20 * SLOW)
            self.assertFalse(poller.is_alive(), "the long-poll did not return")
            status, headers, body = answers["poll"]
            self.assertEqual(status, 200, body)
            self.assertEqual([(e["seq"], e["type"], e["account"]["id"]) for e in body["events"]],
                             [(written, "account.created", account)])
            self.assertGreaterEqual(int(headers["coffer-seq"]), written)
            streamed = stream.events_until(written)
            self.assertEqual([(e["seq"], e["type"]) for e in streamed],
                             [(written, "account.created")])
        finally:
            stream.close()
            poller.join(20 * SLOW)

    def test_webhooks_on_each_instance_deliver_every_change_in_order(self):
        seq = self.leader_seq()
        all_events(self.follower, min_seq=seq)
        for member in (self.follower, self.leader):
            receiver = self.hooks[member.url]
            deadline = time.monotonic() + 60 * SLOW
            while True:
                status, _, shown = exchange(member, "GET", "/v1/webhooks/every")
                self.assertEqual(status, 200, shown)
                if shown["cursor"] >= seq:
                    break
                self.assertLess(time.monotonic(), deadline,
                                "the webhook on %s is stuck: %r" % (member.url, shown))
                time.sleep(0.1)
            self.assertEqual(shown["state"], "active", shown)
            expected = [e["seq"] for e in all_events(member)[0]
                        if e["type"] != "transfer.rejected" and e["seq"] <= seq]
            delivered = [s for s in receiver.delivered() if s <= seq]
            self.assertEqual(delivered, expected, member.url)
            self.assertEqual([a for a in receiver.attempts if not a[2]], [],
                             "attempts with a wrong signature or envelope")

    def test_a_long_poll_waiting_for_postgresql_blocks_no_other_request(self):
        seq = self.leader_seq()
        all_events(self.follower, min_seq=seq)
        # A session holds coffer_log locked: every read of it waits (for at most the feed
        # sessions' statement timeout, 10 s), the feed's first.
        locker = subprocess.Popen([os.path.join(PG_BIN, "psql"), "-X", "-q", "-At", "-v",
                                   "ON_ERROR_STOP=1", self.pg_env["CONNINFO"]],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        answers = {}
        poller = threading.Thread(target=lambda: answers.setdefault("poll", exchange(
            self.follower, "GET", events_path(after=0, limit=1, wait_ms=1000,
                                              types=ALL_TYPES))))
        try:
            locker.stdin.write("BEGIN;\nLOCK TABLE coffer_log IN ACCESS EXCLUSIVE MODE;\n"
                               "SELECT 'locked';\n")
            locker.stdin.flush()
            self.assertEqual(locker.stdout.readline().strip(), "locked")
            poller.start()
            time.sleep(0.3)  # the long-poll's read waits for the lock
            # The instance's only network thread still answers (one thread: --threads 1).
            status, _, _ = json_exchange(self.follower.port, "GET", "/healthz", timeout=3.0)
            self.assertEqual(status, 200)
            self.assertTrue(poller.is_alive(), "the long-poll did not wait for the lock")
        finally:
            locker.stdin.write("COMMIT;\n")
            locker.stdin.close()
            locker.wait(timeout=20 * SLOW)
            if poller.ident is not None:
                poller.join(20 * SLOW)
        self.assertFalse(poller.is_alive(), "the long-poll did not return")
        status, _, body = answers["poll"]
        self.assertEqual(status, 200, body)
        self.assertEqual([e["seq"] for e in body["events"]], [1])


if __name__ == "__main__":
    unittest.main()
