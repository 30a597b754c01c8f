"""Two `coffer serve` instances sharing one log in PostgreSQL (scripts/pg-cluster: a primary and a
synchronous standby on free loopback ports, in a fresh directory, stopped at the end): exactly one
leads and the other follows it; /v1/cluster says so on both; a write sent to the follower is
answered 307 with Location on the leader (same path and query) and a not_leader problem naming it;
sent there with the same body it is applied, and a read of the follower with min_seq set to the
write's Coffer-Seq shows it; the CLI given the follower first gets its write applied through the
redirect; /readyz names each role; `coffer verify` and `coffer dump` read the log in PostgreSQL
(key=value conninfo and URI, a password never printed) while the instances run, and a member's
directory is refused alone and checked with --log."""

import json
import subprocess
import time
import unittest
import urllib.parse

from harness import (SLOW, Member, coffer_binary, json_exchange, pg_cluster_start, pg_cluster_stop,
                     requires_postgresql, uid)


def exchange(member, method, path, body=None, headers=None):
    """One request, redirects not followed: (status, headers by lower-case name, JSON body)."""
    return json_exchange(member.port, method, path, body, headers)


@requires_postgresql
class TwoInstances(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.pg_dir, env = pg_cluster_start()
        cls.env = env
        cls.members = []
        try:
            for _ in range(2):
                member = Member(args=["--log", env["MULTI_CONNINFO"]])
                cls.members.append(member)
                member.start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            for member in reversed(cls.members):
                if member.running():
                    member.stop()
                member.cleanup()
        finally:
            pg_cluster_stop(cls.pg_dir)

    def views(self):
        views = {}
        for member in self.members:
            status, headers, body = exchange(member, "GET", "/v1/cluster")
            self.assertEqual(status, 200, body)
            self.assertTrue(headers.get("coffer-seq", "").isdigit(), headers)
            views[member.url] = body
        return views

    def roles(self):
        """(leader, follower) as /v1/cluster on each says, checked to agree. Each instance
        records itself and reads the others about once a second: a member that just started
        may take a few seconds to appear in the others' lists."""
        expected = sorted(m.url for m in self.members)
        deadline = time.monotonic() + 10 * SLOW
        views = self.views()
        while time.monotonic() < deadline and any(
                sorted(m["advertise"] for m in v["members"]) != expected for v in views.values()):
            time.sleep(0.2)
            views = self.views()
        leaders = [m for m in self.members if views[m.url]["role"] == "leader"]
        followers = [m for m in self.members if views[m.url]["role"] == "follower"]
        self.assertEqual((len(leaders), len(followers)), (1, 1), views)
        leader, follower = leaders[0], followers[0]
        self.assertEqual(views[follower.url]["leader"], leader.url)
        self.assertEqual(views[leader.url]["leader"], leader.url)
        self.assertEqual(views[leader.url]["term"], views[follower.url]["term"])
        self.assertGreater(views[leader.url]["term"], 0)
        for view in views.values():
            self.assertEqual(sorted(m["advertise"] for m in view["members"]),
                             sorted(m.url for m in self.members))
        return leader, follower

    def test_a_write_to_the_follower_is_redirected_and_read_back_there(self):
        leader, follower = self.roles()
        bank, shop = uid("bank"), uid("shop")
        for body in ({"id": bank, "currency": "KRW", "min_balance": None},
                     {"id": shop, "currency": "KRW"}):
            status, _, answer = exchange(leader, "POST", "/v1/accounts", body)
            self.assertEqual(status, 201, answer)
        payment = {"id": uid("pay"), "from": bank, "to": shop, "amount": 500}
        status, headers, problem = exchange(follower, "POST", "/v1/transfers?trace=a%20b",
                                            payment)
        self.assertEqual(status, 307, problem)
        self.assertEqual(headers["location"], leader.url + "/v1/transfers?trace=a%20b")
        self.assertEqual((problem["code"], problem["status"], problem["leader"]),
                         ("not_leader", 307, leader.url))
        self.assertTrue(headers.get("coffer-seq", "").isdigit(), headers)
        location = urllib.parse.urlsplit(headers["location"])
        status, headers, created = exchange(leader, "POST",
                                            location.path + "?" + location.query, payment)
        self.assertEqual(status, 201, created)
        seq = int(headers["coffer-seq"])
        self.assertGreaterEqual(seq, created["transfer"]["seq"])
        status, _, account = exchange(follower, "GET", "/v1/accounts/%s?min_seq=%d" % (shop, seq))
        self.assertEqual(status, 200, account)
        self.assertEqual(account["balance"], 500)

    def test_the_cli_given_the_follower_first_gets_its_write_applied(self):
        leader, follower = self.roles()
        account_id = uid("acct")
        run = subprocess.run([coffer_binary(), "--server", follower.url + "," + leader.url,
                              "--json", "account", "create", account_id, "--currency", "KRW"],
                             capture_output=True, text=True, timeout=30 * SLOW)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(json.loads(run.stdout)["id"], account_id)
        status, _, account = exchange(leader, "GET", "/v1/accounts/" + account_id)
        self.assertEqual((status, account["id"]), (200, account_id))

    def test_readyz_names_each_role(self):
        leader, follower = self.roles()
        for member, role in ((leader, "leader"), (follower, "follower")):
            status, _, body = exchange(member, "GET", "/readyz")
            self.assertEqual((status, body), (200, {"status": "ready", "role": role}))

    def test_verify_and_dump_read_the_log_in_postgresql(self):
        leader, _ = self.roles()
        account_id = uid("verified")
        status, _, answer = exchange(leader, "POST", "/v1/accounts",
                                     {"id": account_id, "currency": "KRW"})
        self.assertEqual(status, 201, answer)

        def coffer(*args):
            return subprocess.run([coffer_binary()] + list(args), capture_output=True,
                                  text=True, timeout=60 * SLOW)

        conninfo = self.env["CONNINFO"]
        run = coffer("verify", conninfo)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn(": OK", run.stdout)
        self.assertIn("in PostgreSQL", run.stdout)
        self.assertIn("chain intact", run.stdout)
        # A URI with a password (trust authentication ignores it): never printed.
        uri = "postgresql://postgres:s3cret@127.0.0.1:%s/coffer" % self.env["PRIMARY_PORT"]
        run = coffer("verify", uri)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertNotIn("s3cret", run.stdout + run.stderr)
        self.assertIn("postgresql://postgres:***@127.0.0.1", run.stdout)
        # Any key ending in "password" (sslpassword is ignored without a client key): hidden.
        run = coffer("verify", conninfo + " sslpassword=s3cretssl")
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertNotIn("s3cretssl", run.stdout + run.stderr)
        self.assertIn("sslpassword=***", run.stdout)
        run = coffer("verify", uri + "?sslpassword=s3cretssl&application_name=v")
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertNotIn("s3cretssl", run.stdout + run.stderr)
        self.assertIn("?sslpassword=***&application_name=v", run.stdout)
        run = coffer("verify", "--json", uri)
        report = json.loads(run.stdout)
        self.assertTrue(report["ok"] and report["log"]["postgresql"], report)
        self.assertFalse(report["log"]["standby"], report)
        # The standby reads the same log (it may lag: nothing is compared with a snapshot).
        run = coffer("verify", self.env["STANDBY_CONNINFO"])
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn("(a hot standby)", run.stdout)
        self.assertGreaterEqual(report["log"]["term_rows"], 1)

        run = coffer("dump", conninfo)
        self.assertEqual(run.returncode, 0, run.stderr)
        lines = [json.loads(line) for line in run.stdout.splitlines()]
        self.assertIn(account_id, [line.get("id") for line in lines])
        self.assertEqual([line["seq"] for line in lines], sorted(line["seq"] for line in lines))
        self.assertEqual({line["segment"] for line in lines}, {0})
        self.assertEqual(lines[-1]["seq"], report["log"]["last_seq"])

        # A member's directory holds snapshots only: refused alone, checked with --log.
        run = coffer("verify", leader.data_dir)
        self.assertEqual(run.returncode, 2, run.stdout + run.stderr)
        self.assertIn("--log", run.stderr)
        run = coffer("verify", leader.data_dir, "--log", conninfo)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        run = coffer("dump", leader.data_dir)
        self.assertEqual(run.returncode, 1, run.stdout + run.stderr)
        run = coffer("verify", conninfo, "--log", conninfo)
        self.assertEqual(run.returncode, 2, run.stderr)


if __name__ == "__main__":
    unittest.main()
