"""Three `coffer serve` instances on one log in PostgreSQL (scripts/pg-cluster: a primary and a
synchronous standby), and the faults a cluster must survive, in order: kill -9 of the leader
under a write load, a leader paused (SIGSTOP) past its lease then resumed, and the loss of the
PostgreSQL primary followed by the promotion of its standby. Clients retry the same transfer id
on another instance until it is acknowledged; at the end every acknowledged transfer is on the
leader with its original seq, a retry gets the original outcome, the balances are exactly the
sum of the acknowledged amounts and every instance has applied the leader's seq. Each fault's
takeover time is printed. Loopback only; only the processes this test started are signalled,
by pid."""

import http.client
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

from harness import REPO, SLOW, json_exchange, uid
from test_cluster import PG_BIN, Member

LEASE_S = 2.0  # the default lease (pg_log.h)
TAKEOVER_BOUND_S = LEASE_S + 3.0  # a new leader within 3 s of the lease expiring
CLIENTS = 6
REQUEST_TIMEOUT_S = 5.0


def pg_cluster(*args):
    run = subprocess.run([os.path.join(REPO, "scripts", "pg-cluster")] + list(args),
                         capture_output=True, text=True, timeout=120 * SLOW)
    if run.returncode != 0:
        raise AssertionError("pg-cluster %s failed:\n%s" % (" ".join(args), run.stderr))
    return run.stdout


def member_at(members, url):
    """The member a Location (or a leader URL) names."""
    port = urllib.parse.urlsplit(url).port
    return next(m for m in members if m.port == port)


def request(member, method, path, body=None, timeout=REQUEST_TIMEOUT_S):
    """One request with a shorter timeout, for requests that may meet a dead or paused member."""
    return json_exchange(member.port, method, path, body, timeout=timeout)


class Load:
    """Client threads writing unique transfers from `bank` to a few users. Each transfer is
    retried, with the same id, until some instance acknowledges it (201): a 307 is followed, a
    503 or a connection error sends it to the next instance. `acknowledged` maps each id to
    (amount, to, seq, url of the instance that answered)."""

    def __init__(self, members, bank, users, give_up_s=30.0):
        self.members = members
        self.bank, self.users = bank, users
        self.give_up_s = give_up_s * SLOW
        self.acknowledged = {}
        self.failures = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(n,), daemon=True)
                        for n in range(CLIENTS)]

    def send(self, body, first):
        """(seq, member) once acknowledged, or None (recorded in failures) when given up."""
        member = first
        deadline = time.monotonic() + self.give_up_s
        answers = []
        while time.monotonic() < deadline:
            try:
                status, headers, answer = request(member, "POST", "/v1/transfers", body)
            except (OSError, http.client.HTTPException) as error:
                status, headers, answer = None, {}, str(error)
            if status == 201:
                return answer["transfer"]["seq"], member
            if status == 307:
                member = member_at(self.members, headers["location"])
                continue
            answers.append((member.url, status, answer))
            if status not in (None, 503):
                break  # an answer that no retry changes: the workload never asks for one
            member = self.members[(self.members.index(member) + 1) % len(self.members)]
            time.sleep(0.05)
        with self.lock:
            self.failures.append((body["id"], answers[-5:]))
        return None

    def client(self, number):
        member = self.members[number % len(self.members)]
        rng = random.Random(number)
        while not self.stopping.is_set():
            body = {"id": uid("pay%d" % number), "from": self.bank,
                    "to": rng.choice(self.users), "amount": rng.randint(1, 1000)}
            sent = self.send(body, member)
            if sent is None:
                return
            seq, member = sent
            with self.lock:
                self.acknowledged[body["id"]] = (body["amount"], body["to"], seq, member.url)

    def start(self):
        for thread in self.threads:
            thread.start()
        return self

    def count(self):
        with self.lock:
            return len(self.acknowledged)

    def stop(self, test):
        self.stopping.set()
        for thread in self.threads:
            thread.join(self.give_up_s + 10 * SLOW)
            test.assertFalse(thread.is_alive(), "a client thread did not finish")
        test.assertEqual(self.failures, [], "transfers never acknowledged")
        test.assertGreater(len(self.acknowledged), 0)


@unittest.skipUnless(os.path.isfile(os.path.join(PG_BIN, "initdb")),
                     "PostgreSQL 15 is not installed (scripts/install-deps installs it)")
class Failover(unittest.TestCase):
    """The tests run in the order of their names; the last one leaves PostgreSQL without its
    standby."""

    @classmethod
    def setUpClass(cls):
        cls.pg_dir = tempfile.mkdtemp(prefix="coffer-pg-")
        shutil.rmtree(cls.pg_dir)  # pg-cluster creates it
        started = pg_cluster("start", cls.pg_dir)
        env = dict(shlex.split(line)[0].split("=", 1)  # KEY='value' lines, shell-quoted
                   for line in started.splitlines() if "=" in line)
        cls.members, cls.loads = [], []
        try:
            for _ in range(3):
                member = Member(args=["--log", env["MULTI_CONNINFO"]])
                cls.members.append(member)
                member.start()
            cls.bank, cls.users = uid("bank"), [uid("user") for _ in range(4)]
            cls.create_accounts()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def create_accounts(cls):
        """On whichever instance leads (the first start leads unless the lease was slow)."""
        for body in [{"id": cls.bank, "currency": "EUR", "min_balance": None}] + [
                {"id": user, "currency": "EUR"} for user in cls.users]:
            member = cls.members[0]
            for _ in range(100):
                status, headers, answer = request(member, "POST", "/v1/accounts", body)
                if status == 201:
                    break
                if status != 307:
                    raise AssertionError("creating %s: %s %s" % (body["id"], status, answer))
                member = member_at(cls.members, headers["location"])
            else:
                raise AssertionError("creating %s: redirected in circles" % body["id"])

    @classmethod
    def tearDownClass(cls):
        try:
            for member in reversed(cls.members):
                if member.running():
                    member.send_signal(signal.SIGCONT)  # a paused one stops too
                    member.kill()
                member.cleanup()
        finally:
            pg_cluster("stop", cls.pg_dir)

    def setUp(self):
        for member in self.members:  # the previous test may have killed one
            if not member.running():
                self.start_again(member)

    def start_again(self, member):
        """On its port again, so that its advertised URL and the members table stay the same."""
        member.spawn(port=member.port)
        self.assertEqual(member.wait_ready(30 * SLOW), "ready", member.stderr(run=-1))

    # ---- what the instances say ------------------------------------------------------------

    def view(self, member):
        try:
            status, _, body = request(member, "GET", "/v1/cluster", timeout=2)
        except (OSError, http.client.HTTPException):
            return None
        return body if status == 200 else None

    def settled_leader(self, members, timeout_s):
        """The member every one of `members` names as leader (itself leading, the others
        following it), waited for, bounded."""
        deadline = time.monotonic() + timeout_s * SLOW
        while True:
            views = {m.url: self.view(m) for m in members}
            leaders = [m for m in members if views[m.url] and views[m.url]["role"] == "leader"]
            if len(leaders) == 1 and all(
                    v and v["leader"] == leaders[0].url and
                    v["role"] == ("leader" if url == leaders[0].url else "follower")
                    for url, v in views.items()):
                return leaders[0]
            if time.monotonic() > deadline:
                self.fail("no settled leader within %.0f s: %r" % (timeout_s * SLOW, views))
            time.sleep(0.05)

    def takeover(self, survivors, since, old_leader_url, what):
        """Waits (bounded) until a survivor reports itself leader of a term after the old
        leader's; prints and returns the time since `since`."""
        deadline = since + TAKEOVER_BOUND_S * SLOW
        while time.monotonic() < deadline + 5 * SLOW:  # past the bound only to report the time
            for member in survivors:
                view = self.view(member)
                if view and view["role"] == "leader" and view["leader"] != old_leader_url:
                    elapsed = time.monotonic() - since
                    print("\n%s: %s leads after %.2f s" % (what, member.url, elapsed),
                          file=sys.stderr)
                    self.assertLess(elapsed, TAKEOVER_BOUND_S * SLOW,
                                    "%s: takeover slower than lease + 3 s" % what)
                    return member
            time.sleep(0.02)
        self.fail("%s: no survivor leads %.0f s after the fault" % (what, TAKEOVER_BOUND_S + 5))

    # ---- what the ledger holds -------------------------------------------------------------

    def check_ledger(self, load, leader, members):
        """Every acknowledged transfer on the leader with its seq and amount; a retry gets the
        original outcome; balances are the acknowledged sums; every member has applied the
        leader's seq and shows the same balances."""
        for transfer_id, (amount, to, seq, _) in sorted(load.acknowledged.items()):
            status, _, found = request(leader, "GET", "/v1/transfers/" + transfer_id)
            self.assertEqual(status, 200, (transfer_id, found))
            self.assertEqual((found["seq"], found["amount"], found["to"]), (seq, amount, to),
                             transfer_id)
        for transfer_id, (amount, to, seq, _) in sorted(load.acknowledged.items())[::10]:
            body = {"id": transfer_id, "from": self.bank, "to": to, "amount": amount}
            status, headers, again = request(leader, "POST", "/v1/transfers", body)
            self.assertEqual((status, headers.get("idempotent-replayed")), (201, "true"),
                             (transfer_id, again))
            self.assertEqual((again["transfer"]["seq"], again["transfer"]["amount"]),
                             (seq, amount), transfer_id)
        print("%d acknowledged transfers checked" % len(load.acknowledged), file=sys.stderr)
        expected = {user: 0 for user in self.users}
        for amount, to, _, _ in load.acknowledged.values():
            expected[to] += amount
        status, headers, view = request(leader, "GET", "/v1/cluster")
        leader_seq = view["applied_seq"]
        for member in members:
            balances = {}
            for account in [self.bank] + self.users:
                status, _, found = request(member, "GET",
                                           "/v1/accounts/%s?min_seq=%d" % (account, leader_seq))
                self.assertEqual(status, 200, (member.url, account, found))
                balances[account] = found["balance"]
            self.assertEqual(sum(balances.values()), 0, (member.url, balances))
            self.assertEqual({u: balances[u] for u in self.users}, expected, member.url)
            self.assertGreaterEqual(self.view(member)["applied_seq"], leader_seq, member.url)
        return expected

    def run_load(self, seconds):
        """A load started now, kept in the class: every later check counts its transfers."""
        load = Load(self.members, self.bank, self.users).start()
        type(self).loads.append(load)
        time.sleep(seconds)
        return load

    def every_load(self):
        merged = Load(self.members, self.bank, self.users)
        for load in self.loads:
            merged.acknowledged.update(load.acknowledged)
        return merged

    # ---- the faults ------------------------------------------------------------------------

    def test_1_kill_9_of_the_leader_under_load(self):
        leader = self.settled_leader(self.members, 10)
        survivors = [m for m in self.members if m is not leader]
        load = self.run_load(1.5)
        before = load.count()
        killed_at = time.monotonic()
        leader.kill()  # SIGKILL, by pid
        new_leader = self.takeover(survivors, killed_at, leader.url, "kill -9 of the leader")
        time.sleep(1.5)
        load.stop(self)
        self.assertGreater(load.count(), before, "no write acknowledged after the takeover")
        self.assertIs(self.settled_leader(survivors, 10), new_leader)
        self.check_ledger(self.every_load(), new_leader, survivors)

    def test_2_a_paused_leader_acknowledges_nothing_and_follows(self):
        leader = self.settled_leader(self.members, 10)
        survivors = [m for m in self.members if m is not leader]
        load = self.run_load(0.5)
        load.stop(self)
        paused_at = time.monotonic()
        leader.send_signal(signal.SIGSTOP)
        try:
            # Sent while it is paused: the kernel queues the connection; it is read on resume.
            queued = {"id": uid("stale"), "from": self.bank, "to": self.users[0], "amount": 7}
            answers = []
            sender = threading.Thread(target=lambda: answers.append(
                request(leader, "POST", "/v1/transfers", queued, timeout=15)), daemon=True)
            sender.start()
            new_leader = self.takeover(survivors, paused_at, leader.url, "SIGSTOP of the leader")
        finally:
            leader.send_signal(signal.SIGCONT)
        sender.join(20 * SLOW)
        self.assertFalse(sender.is_alive(), "the resumed leader never answered")
        status, _, answer = answers[0]
        print("the resumed leader answered a write queued while it was paused: %d %s"
              % (status, answer.get("code")), file=sys.stderr)
        self.assertIn(status, (307, 503), answer)
        after = {"id": uid("stale"), "from": self.bank, "to": self.users[0], "amount": 9}
        status, _, answer = request(leader, "POST", "/v1/transfers", after)
        self.assertIn(status, (307, 503), answer)
        self.assertIs(self.settled_leader(self.members, 10), new_leader)
        for refused in (queued, after):
            status, _, answer = request(new_leader, "GET", "/v1/transfers/" + refused["id"])
            self.assertEqual(status, 404, answer)
        self.check_ledger(self.every_load(), new_leader, self.members)

    def test_3_the_postgresql_primary_lost_and_its_standby_promoted(self):
        self.settled_leader(self.members, 10)
        load = self.run_load(1.0)
        before = load.count()
        lost_at = time.monotonic()
        pg_cluster("kill", self.pg_dir, "primary")
        pg_cluster("promote", self.pg_dir)
        promoted_at = time.monotonic()
        new_leader = self.settled_leader(self.members, 15)
        print("\nPostgreSQL primary lost: the standby accepts writes %.2f s later; %s leads, "
              "followed by the others, %.2f s after that"
              % (promoted_at - lost_at, new_leader.url, time.monotonic() - promoted_at),
              file=sys.stderr)
        time.sleep(1.0)
        load.stop(self)
        self.assertGreater(load.count(), before, "no write acknowledged after the failover")
        self.assertIs(self.settled_leader(self.members, 10), new_leader)
        self.check_ledger(self.every_load(), new_leader, self.members)


if __name__ == "__main__":
    unittest.main()
