"""Three `coffer serve` instances on one log in PostgreSQL (scripts/pg-cluster: a primary and a
synchronous standby), and the faults a cluster must survive, in order: kill -9 of the leader
under a write load, a leader paused (SIGSTOP) past its lease under the same load then resumed,
and the loss of the PostgreSQL primary followed by the promotion of its standby (which
`pg-cluster rejoin` then gives a new synchronous standby). 32 clients retry each transfer with
the same id, on another instance, until it is acknowledged. After each fault: a new leader
within the lease + 3 s; every acknowledged transfer on the leader with its original seq, a retry
gets the original outcome, each user's history holds every acknowledged transfer to it exactly
once and nothing else, the balances are the acknowledged sums and sum to 0; every instance
reports the same (applied_seq, applied_hash) and passes GET /v1/verify. Each fault's takeover
time is printed.

COFFER_FAILOVER_ROUNDS=N repeats each fault N times (default 1; `make soak` runs 50).
Loopback only; only the processes this test started are signalled, by pid."""

import collections
import http.client
import os
import random
import signal
import sys
import threading
import time
import unittest
import urllib.parse

from harness import (SLOW, Cluster, json_exchange, pg_cluster, pg_sql, requires_postgresql, tail,
                     uid)

LEASE_S = 2.0  # the default lease (pg_log.h)
TAKEOVER_BOUND_S = LEASE_S + 3.0  # a new leader within 3 s of the lease expiring
CLIENTS = 32
REQUEST_TIMEOUT_S = 5.0
ROUNDS = int(os.environ.get("COFFER_FAILOVER_ROUNDS", "1"))
# Answers after which a retry with the same id may succeed: none was applied, or the same id is
# still being applied on the leader a timed-out attempt reached.
RETRIABLE = {None: "no answer", 503: "unavailable", 409: "request_in_progress"}


def wall(seconds):
    """A time.time() as HH:MM:SS.mmm UTC, to set beside the servers' timestamps."""
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) + (".%03d" % (seconds % 1 * 1000))


def member_at(members, url):
    """The member a Location (or a leader URL) names."""
    port = urllib.parse.urlsplit(url).port
    return next(m for m in members if m.port == port)


def threads_stopped(pid, bound_s=2.0):
    """Seconds until every thread of `pid` is stopped, bounded; raises when one still runs at
    the bound. Each thread stops on its own, and on this project's virtual machines the last
    took up to 27 ms after kill() returned (docs/cluster.md)."""
    started = time.monotonic()
    while True:
        states = {}
        for task in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/stat" % (pid, task)) as stat:
                    fields = stat.read()
            except FileNotFoundError:
                continue  # a thread that has just exited
            name = fields[fields.index("(") + 1:fields.rindex(")")]
            states[name + "/" + task] = fields[fields.rindex(")") + 2]
        # T, t: stopped; Z, X: a thread that has exited, not yet reaped.
        running = {thread: state for thread, state in states.items() if state not in "TtZX"}
        elapsed = time.monotonic() - started
        if not running:
            return elapsed
        if elapsed > bound_s * SLOW:
            raise AssertionError("threads not stopped %.1f s after SIGSTOP: %s"
                                 % (elapsed, running))
        time.sleep(0.0005)


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
            if status not in RETRIABLE or (status == 409 and (answer or {}).get("code") !=
                                           "request_in_progress"):
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


@requires_postgresql
class Failover(unittest.TestCase):
    """The tests run in the order of their names, each fault ROUNDS times; every check counts
    the transfers of every load so far."""

    member_args = ()  # for each `coffer serve` (test_failover_evict sets a memory budget)

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(3, member_args=cls.member_args).start()
        cls.members, cls.loads = cls.cluster.members, []
        cls.pg_dir = cls.cluster.pg_dir
        try:
            cls.bank, cls.users = uid("bank"), [uid("user") for _ in range(4)]
            cls.create_accounts()
        except BaseException:
            cls.cluster.stop(check=False)
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
        for member in cls.members:  # resumed if paused, so that SIGTERM can stop it
            if member.running():
                member.send_signal(signal.SIGCONT)
        cls.cluster.stop()  # SIGTERM: each exits 0, the restarted ones and the old leaders too

    def setUp(self):
        for member in self.members:  # the previous round may have killed one
            if not member.running():
                self.start_again(member)

    def start_again(self, member):
        """On its port again, so that its advertised URL and the members table stay the same."""
        member.spawn(port=member.port)
        self.assertEqual(member.wait_ready(30 * SLOW), "ready", member.stderr(run=-1))

    # ---- what the instances say ------------------------------------------------------------

    def view(self, member):
        return self.cluster.view(member)

    def settled_leader(self, members, timeout_s):
        """The member every one of `members` names as leader, waited for, bounded."""
        try:
            return self.cluster.settled_leader(timeout_s, members)
        except AssertionError as error:
            self.fail(str(error))

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
        """The transfers of `load` (this round's) on the leader with their seq and amount, a
        retry of some getting the original outcome; then, over every load so far, each user's
        history holding each acknowledged transfer to it exactly once and nothing else, the
        balances the acknowledged sums and their sum 0 on every member; then every member at
        the same (applied_seq, applied_hash) and passing GET /v1/verify."""
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
        every = self.every_load().acknowledged
        expected = {user: 0 for user in self.users}
        ids_to = {user: collections.Counter() for user in self.users}
        for transfer_id, (amount, to, _, _) in every.items():
            expected[to] += amount
            ids_to[to][transfer_id] += 1
        for user in self.users:
            entries = self.history(leader, user)
            self.assertEqual(collections.Counter(e["transfer_id"] for e in entries), ids_to[user],
                             "%s: the history is not the acknowledged transfers, each once" % user)
        print("%d acknowledged transfers checked (%d this round)" % (len(every),
                                                                     len(load.acknowledged)),
              file=sys.stderr)
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
        self.same_tip_and_verified(members)
        return expected

    def history(self, member, account):
        """Every history entry of `account` on `member`, page by page (bounded)."""
        entries, after = [], 0
        for _ in range(100000):
            status, _, page = request(member, "GET", "/v1/accounts/%s/history?after=%d&limit=1000"
                                      % (account, after), timeout=30)
            self.assertEqual(status, 200, page)
            entries += page["entries"]
            if page["next_after"] is None:
                return entries
            after = page["next_after"]
        self.fail("the history of %s did not end" % account)

    def same_tip_and_verified(self, members):
        """Every member at one (applied_seq, applied_hash), waited for (bounded), and GET
        /v1/verify ok on each."""
        deadline = time.monotonic() + 15 * SLOW
        while True:
            views = {m.url: self.view(m) for m in members}
            tips = {url: (v["applied_seq"], v["applied_hash"]) if v else None
                    for url, v in views.items()}
            if None not in tips.values() and len(set(tips.values())) == 1:
                break
            self.assertLess(time.monotonic(), deadline,
                            "the instances do not report one (seq, hash): %r" % tips)
            time.sleep(0.05)
        seq, tip_hash = next(iter(tips.values()))
        self.assertRegex(tip_hash, r"^[0-9a-f]{64}$")
        for member in members:
            status, _, report = request(member, "GET", "/v1/verify", timeout=60)
            self.assertEqual(status, 200, (member.url, report))
            self.assertEqual((report["ok"], report["problems"]), (True, []), member.url)
        print("%d instances at seq %d, hash %s…; verify ok on each"
              % (len(members), seq, tip_hash[:16]), file=sys.stderr)

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

    def rounds(self, what):
        """1..ROUNDS, each a subTest, the instances all running at its start."""
        for number in range(1, ROUNDS + 1):
            if ROUNDS > 1:
                print("\n%s: round %d of %d" % (what, number, ROUNDS), file=sys.stderr)
                self.setUp()
            yield number

    # ---- the faults ------------------------------------------------------------------------

    def test_1_kill_9_of_the_leader_under_load(self):
        for _ in self.rounds("kill -9 of the leader"):
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
            self.check_ledger(load, new_leader, survivors)

    def test_2_a_paused_leader_acknowledges_nothing_and_follows(self):
        for _ in self.rounds("SIGSTOP of the leader"):
            leader = self.settled_leader(self.members, 10)
            survivors = [m for m in self.members if m is not leader]
            load = self.run_load(1.0)
            before = load.count()
            paused_at = time.monotonic()
            paused_wall = time.time()
            leader.send_signal(signal.SIGSTOP)
            stopped_after = threads_stopped(leader.pid)
            try:
                # Sent while it is paused: the kernel queues the connection; it is read on
                # resume.
                queued = {"id": uid("stale"), "from": self.bank, "to": self.users[0], "amount": 7}
                answers = []
                sender = threading.Thread(target=lambda: answers.append(
                    request(leader, "POST", "/v1/transfers", queued, timeout=15)), daemon=True)
                sender.start()
                new_leader = self.takeover(survivors, paused_at, leader.url,
                                           "SIGSTOP of the leader")
            finally:
                leader.send_signal(signal.SIGCONT)
                resumed_wall = time.time()
            sender.join(20 * SLOW)
            self.assertFalse(sender.is_alive(), "the resumed leader never answered")
            status, _, answer = answers[0]
            print("the resumed leader answered a write queued while it was paused: %d %s"
                  " (paused at %s, every thread stopped %.1f ms later, resumed at %s UTC)"
                  % (status, answer.get("code"), wall(paused_wall), stopped_after * 1000,
                     wall(resumed_wall)), file=sys.stderr)
            if status not in (307, 503) or answer.get("code") == "storage_failed":
                self.explain(queued["id"], leader, new_leader)
            self.assertIn(status, (307, 503), answer)
            after = {"id": uid("stale"), "from": self.bank, "to": self.users[0], "amount": 9}
            status, _, answer = request(leader, "POST", "/v1/transfers", after)
            self.assertIn(status, (307, 503), answer)
            time.sleep(1.0)
            load.stop(self)
            self.assertGreater(load.count(), before, "no write acknowledged after the takeover")
            self.assertIs(self.settled_leader(self.members, 10), new_leader)
            for refused in (queued, after):
                status, _, answer = request(new_leader, "GET", "/v1/transfers/" + refused["id"])
                self.assertEqual(status, 404, answer)
            self.check_ledger(load, new_leader, self.members)

    def explain(self, transfer_id, old_leader, new_leader):
        """Prints where a transfer is in the log, the rows around it, and both leaders' last
        lines: what a failed SIGSTOP round needs to be understood."""
        status, _, found = request(new_leader, "GET", "/v1/transfers/" + transfer_id)
        print("%s on the new leader: %d %s" % (transfer_id, status, found), file=sys.stderr)
        seq = found.get("seq", 0) if status == 200 else 0
        rows = pg_sql(self.cluster.env["MULTI_CONNINFO"],
                      "SELECT position, kind, seq, last_seq, term,"
                      " to_char(written_at, 'HH24:MI:SS.MS'), CASE WHEN kind = 2 THEN"
                      " convert_from(record, 'UTF8') ELSE '' END FROM coffer_log"
                      " WHERE last_seq >= %d - 2000 ORDER BY position DESC LIMIT 16" % seq)
        print("the log's last rows (position|kind|seq|last_seq|term|written|leader):\n%s"
              % rows, file=sys.stderr)
        for name, member in (("old", old_leader), ("new", new_leader)):
            print("the %s leader's last lines:\n%s" % (name, tail(member.stderr(run=-1), 25)),
                  file=sys.stderr)

    def test_3_the_postgresql_primary_lost_and_its_standby_promoted(self):
        for _ in self.rounds("loss of the PostgreSQL primary"):
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
            self.check_ledger(load, new_leader, self.members)
            # The lost node comes back as the new primary's synchronous standby: the next
            # round (and anything after) has a standby to fail over to again.
            pg_cluster("rejoin", self.pg_dir)


if __name__ == "__main__":
    unittest.main()
