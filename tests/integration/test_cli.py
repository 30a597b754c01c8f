"""The `coffer` command as a user types it: global flags before the command, local refusals,
`serve --listen HOST:0`, a busy port, `dump` output and per-command help.

Standard library only; every server is started by this file (harness.Server or a Popen kept
by pid) on 127.0.0.1 and stopped by pid.
"""

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import SLOW, Server, ServerTestCase, coffer_binary, uid


def run(*args, timeout=30):
    """Runs `coffer ARGS`; returns (exit status, stdout, stderr)."""
    done = subprocess.run([coffer_binary()] + list(args), capture_output=True, text=True,
                          timeout=timeout * SLOW, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout, done.stderr


class Follower:
    """`coffer events --follow --json ...` in the background; its lines read with a deadline, so
    that a follower that hangs fails the test instead of blocking it."""

    def __init__(self, test, *args):
        self.proc = subprocess.Popen([coffer_binary(), "events", "--json", "--follow"] + list(args),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        test.addCleanup(self.kill)
        self.lines = queue.Queue()
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)  # end of output

    def next_change(self, timeout=10):
        line = self.lines.get(timeout=timeout * SLOW)
        if line is None:
            raise AssertionError("coffer events ended (exit %r): %s"
                                 % (self.proc.wait(), self.proc.stderr.read()))
        return json.loads(line)

    def stop(self):
        """SIGTERM; returns (exit status, what it printed after, its stderr)."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10 * SLOW)
        rest = []
        while (line := self.lines.get(timeout=10)) is not None:
            rest.append(line)
        return self.proc.returncode, "".join(rest), self.proc.stderr.read()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


class ClientCommandsTest(ServerTestCase):
    def url(self):
        return "http://127.0.0.1:%d" % self.server.port

    def test_global_flags_come_before_the_command(self):
        account = uid("cli")
        status, out, err = run("--server", self.url(), "account", "create", account,
                               "--currency", "KRW")
        self.assertEqual(status, 0, err)
        self.assertIn("created account %s" % account, out)
        status, out, err = run("--server", self.url(), "--json", "account", "get", account)
        self.assertEqual(status, 0, err)
        self.assertEqual(json.loads(out)["id"], account)  # JSON, not the human text

    def test_a_flag_after_the_command_wins(self):
        account = self.create_account()["id"]
        status, out, err = run("--server", "http://127.0.0.1:1", "account", "get", account,
                               "--server", self.url(), "--json")
        self.assertEqual(status, 0, err)
        self.assertEqual(json.loads(out)["id"], account)

    def test_a_global_flag_a_command_does_not_take_is_refused(self):
        status, out, err = run("--json", "serve", "--listen", "127.0.0.1:0")
        self.assertEqual(status, 2)
        self.assertEqual(err.strip(), "coffer: serve: --json does not apply to it")

    def test_a_negative_amount_is_refused_before_it_is_sent(self):
        transfer_id = uid("neg")
        status, out, err = run("--server", self.url(), "transfer", "--from", "a", "--to", "b",
                               "--amount", "-5", "--id", transfer_id)
        self.assertEqual(status, 2)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("--amount", err)
        self.assertEqual(out, "")
        r = self.client.get("/v1/transfers/" + transfer_id)
        self.assertEqual(r.status, 404, "the transfer reached the server: %r" % r)

    def test_bad_usage_is_one_line_and_exit_2(self):
        for args in (["account", "get"], ["transfer", "--from"], ["account", "get", "x", "--bogus"],
                     ["verify"], ["bench", "--server", "http://x", "--transfers", "5"],
                     ["bench", "--reopen", "/nonexistent", "--memory-max", "3"],
                     ["bench", "--reopen", "/nonexistent", "--workload", "hot"]):
            status, out, err = run(*args)
            self.assertEqual(status, 2, args)
            self.assertEqual(len(err.strip().splitlines()), 1, (args, err))
            self.assertTrue(err.startswith("coffer: "), (args, err))

    def test_every_command_prints_help(self):
        for command in (["codes"], ["serve"], ["dump"], ["verify"], ["bench"], ["account"],
                        ["account", "create"], ["transfer"], ["transfer", "get"], ["hold"],
                        ["hold", "post"], ["health"], ["events"], []):
            status, out, err = run(*(command + ["--help"]))
            self.assertEqual(status, 0, (command, err))
            self.assertTrue(out.startswith("usage: coffer" + "".join(" " + w for w in command)),
                            (command, out[:80]))
            self.assertEqual(err, "")

    def test_version_is_the_librarys(self):
        status, out, _ = run("--version")
        self.assertEqual(status, 0)
        self.assertRegex(out, r"^coffer \d+\.\d+\.\d+\n$")
        self.assertEqual(run("version")[1], out)


class EventsCommandTest(ServerTestCase):
    """`coffer events`: the feed as lines (readable or --json), filters, and --follow."""

    def url(self):
        return "http://127.0.0.1:%d" % self.server.port

    def feed(self, after, **filters):
        """Every change after `after` as GET /v1/events pages them, up to the durable seq."""
        changes = []
        while True:
            query = "&".join("%s=%s" % item for item in dict(filters, after=after).items())
            r = self.client.get("/v1/events?" + query)
            self.assertEqual(r.status, 200, r)
            page = r.json()
            changes += page["events"]
            after = page["next_after"]
            if after >= page["durable_seq"]:
                return changes

    def durable_seq(self):
        r = self.client.get("/v1/events?after=0&limit=1")
        self.assertEqual(r.status, 200, r)
        return r.json()["durable_seq"]

    def pair(self):
        """Two fresh accounts, alice funded with 1,500, and the seq before all of it."""
        self.issuer()  # created before `start`, once for the class
        start = self.durable_seq()
        alice, bob = self.create_account(uid("alice"))["id"], self.create_account(uid("bob"))["id"]
        self.fund(alice, 1500)
        return start, alice, bob

    def test_json_lines_are_the_servers_changes_in_order(self):
        start, alice, bob = self.pair()
        self.transfer({"id": uid("t"), "from": alice, "to": bob, "amount": 500})
        status, out, err = run("events", "--server", self.url(), "--json", "--after", str(start),
                               "--limit", "2")
        self.assertEqual((status, err), (0, ""))
        lines = [json.loads(line) for line in out.splitlines()]
        self.assertEqual(lines, self.feed(start))  # three pages of 2, all of them
        self.assertEqual([list(line) for line in lines], [list(c) for c in self.feed(start)])
        self.assertEqual([line["type"] for line in lines],
                         ["account.created", "account.created", "transfer.posted",
                          "transfer.posted"])
        self.assertEqual(lines[-1]["accounts"]["to"]["balance"], 500)

    def test_readable_lines_say_who_moved_what_and_the_balances_after(self):
        start, alice, bob = self.pair()
        hold = uid("h")
        self.assertEqual(self.transfer({"id": hold, "from": alice, "to": bob, "amount": 200,
                                        "hold": {"timeout_ms": 60000}}).status, 201)
        status, out, err = run("--server", self.url(), "events", "--after", str(start),
                               "--account", alice)
        self.assertEqual((status, err), (0, ""))
        when = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
        a, b, h = re.escape(alice), re.escape(bob), re.escape(hold)
        expected = [r"account\.created %s KRW" % a,
                    r"transfer\.posted \S+ issuer:KRW -> %s 1500 \(issuer:KRW -\d+, %s 1500\)"
                    % (a, a),
                    r"hold\.created %s %s -> %s 200 \(%s 1500 available 1300, %s 0\)"
                    % (h, a, b, a, b)]
        lines = out.splitlines()
        self.assertEqual(len(lines), len(expected), out)
        for line, pattern in zip(lines, expected):
            self.assertRegex(line, r"^#\d+ %s %s$" % (when, pattern))

    def test_after_and_types_narrow_the_lines(self):
        start, alice, bob = self.pair()
        transfer = self.transfer({"id": uid("t"), "from": alice, "to": bob, "amount": 1}).json()
        self.assertIn("transfer", transfer)
        seq = transfer["transfer"]["seq"]
        self.transfer({"id": uid("t"), "from": alice, "to": bob, "amount": 2})
        status, out, _ = run("events", "--server", self.url(), "--json", "--after", str(seq),
                             "--account", bob)
        self.assertEqual(status, 0)
        self.assertEqual([json.loads(line)["transfer"]["amount"] for line in out.splitlines()],
                         [2])
        status, out, _ = run("events", "--server", self.url(), "--json", "--after", str(start),
                             "--types", "account.created", "--account", bob)
        self.assertEqual(status, 0)
        self.assertEqual([json.loads(line)["account"]["id"] for line in out.splitlines()], [bob])

    def test_a_refusal_is_on_stderr_only_with_exit_1(self):
        for flags in ([], ["--json"]):
            status, out, err = run("events", "--server", self.url(), "--types", "nope", *flags)
            self.assertEqual((status, out), (1, ""), flags)
            self.assertRegex(err, r"^error: invalid_\w+: ", flags)
        status, _, err = run("events", "--server", self.url(), "--limit", "0")
        self.assertEqual(status, 2, err)

    def test_follow_prints_the_next_write_and_exits_0_on_sigterm(self):
        _, alice, bob = self.pair()
        follower = Follower(self, "--server", self.url(), "--after", str(self.durable_seq()),
                            "--account", bob)
        time.sleep(0.3)  # it is waiting in a long-poll by now
        written = time.monotonic()
        self.assertEqual(self.transfer({"id": uid("t"), "from": alice, "to": bob,
                                        "amount": 7}).status, 201)
        line = follower.next_change()
        woke_s = time.monotonic() - written
        self.assertEqual((line["type"], line["transfer"]["amount"]), ("transfer.posted", 7))
        self.assertLess(woke_s, 5 * SLOW)  # the long-poll woke on the write, not its 25 s end
        stopping = time.monotonic()
        self.assertEqual(follower.stop(), (0, "", ""))
        self.assertLess(time.monotonic() - stopping, 3 * SLOW)


class EventsFollowRestartTest(unittest.TestCase):
    def test_follow_resumes_after_a_server_restart_without_a_gap_or_a_repeat(self):
        server = Server(fsync="never")
        self.addCleanup(server.cleanup)
        server.start()
        client = server.client()
        self.addCleanup(client.close)
        for account in ("a", "b"):
            self.assertEqual(client.post("/v1/accounts", {"id": account, "currency": "KRW",
                                                          "min_balance": None}).status, 201)
        follower = Follower(self, "--server", "http://127.0.0.1:%d" % server.port,
                            "--types", "transfer.posted")

        def pay(amount):
            r = client.post("/v1/transfers", {"id": "t%d" % amount, "from": "a", "to": "b",
                                              "amount": amount})
            self.assertEqual(r.status, 201, r)

        pay(1)
        self.assertEqual(follower.next_change()["transfer"]["amount"], 1)
        server.stop()
        time.sleep(0.5)  # the follower finds no server and backs off
        server.spawn(port=server.port)
        self.assertEqual(server.wait_ready(30 * SLOW), "ready")
        client.close()
        pay(2)
        pay(3)
        amounts = [follower.next_change(timeout=30)["transfer"]["amount"] for _ in "23"]
        self.assertEqual(amounts, [2, 3])
        status, rest, err = follower.stop()
        self.assertEqual((status, rest), (0, ""))
        self.assertIn("retrying in", err)  # it did lose the server for a while


class ServeTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="coffer-cli-")
        self.procs = []
        self.files = []

    def tearDown(self):
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()
        for file in self.files:
            file.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def spawn(self, *args):
        err = open(os.path.join(self.tmp, "stderr-%d.log" % len(self.procs)), "w+")
        proc = subprocess.Popen([coffer_binary(), "serve"] + list(args), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err, text=True)
        self.procs.append(proc)
        self.files.append(err)
        return proc, err

    def test_port_zero_picks_a_free_port_and_prints_it(self):
        data = os.path.join(self.tmp, "data")
        proc, err = self.spawn("--listen", "127.0.0.1:0", "--data", data, "--fsync", "never")
        url = proc.stdout.readline().strip()  # printed once the socket listens
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", url)
        self.assertIsNotNone(match, url)
        port = int(match.group(1))
        self.assertNotEqual(port, 0)
        deadline = time.monotonic() + 30 * SLOW
        while time.monotonic() < deadline:
            err.seek(0)
            if "serving on" in err.read():
                break
            time.sleep(0.05)
        err.seek(0)
        self.assertIn("serving on http://127.0.0.1:%d " % port, err.read())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            self.assertTrue(connection.recv(64).startswith(b"HTTP/1.1 200"))
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(30 * SLOW), 0)

    def test_a_busy_port_fails_before_the_data_directory_is_touched(self):
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        data = os.path.join(self.tmp, "never-created")
        try:
            proc, err = self.spawn("--listen", "127.0.0.1:%d" % port, "--data", data)
            self.assertEqual(proc.wait(30 * SLOW), 1)
        finally:
            holder.close()
        err.seek(0)
        text = err.read()
        self.assertIn("cannot listen on 127.0.0.1:%d: Address already in use" % port, text)
        self.assertNotIn("recovered", text)
        self.assertNotIn("Failed to bind", text)  # libmicrohttpd's own words never show
        self.assertFalse(os.path.exists(data), "the data directory was created")


class DumpTest(unittest.TestCase):
    def test_dump_prints_metadata_as_json(self):
        server = Server(fsync="never")
        try:
            server.start()
            client = server.client()
            r = client.post("/v1/accounts", {"id": "meta", "currency": "KRW",
                                             "metadata": {"name": "Kim \"K\"", "tier": 2}})
            self.assertEqual(r.status, 201, r)
            client.close()
            server.stop()
            status, out, err = run("dump", server.data_dir)
            self.assertEqual(status, 0, err)
            lines = [json.loads(line) for line in out.splitlines()]
            self.assertEqual(len(lines), 1, out)
            self.assertEqual(lines[0]["op"], "create_account")
            self.assertEqual(lines[0]["metadata"], {"name": "Kim \"K\"", "tier": 2})
        finally:
            server.cleanup()

    def test_dump_prints_each_outcome(self):
        server = Server(fsync="never")
        try:
            server.start()
            client = server.client()
            for body in ({"id": "bank", "currency": "KRW", "min_balance": None},
                         {"id": "kim", "currency": "KRW"}):
                self.assertEqual(client.post("/v1/accounts", body).status, 201)
            pay = {"id": "pay-1", "from": "bank", "to": "kim", "amount": 700}
            self.assertEqual(client.post("/v1/transfers", pay).status, 201)
            refused = {"id": "pay-2", "from": "kim", "to": "bank", "amount": 900}
            self.assertEqual(client.post("/v1/transfers", refused).status, 409)
            client.close()
            server.stop()
            status, out, err = run("dump", server.data_dir)
            self.assertEqual(status, 0, err)
            lines = {line["id"]: line for line in map(json.loads, out.splitlines())}
            self.assertEqual(lines["kim"]["outcome"],
                             {"code": "created", "state": "posted",
                              "from": {"balance": 0, "available": 0, "version": 1}})
            self.assertIsNone(lines["pay-1"]["submitted_by"])  # no --tokens
            self.assertEqual(lines["pay-1"]["outcome"],
                             {"code": "created", "state": "posted", "amount": 700,
                              "from": {"balance": -700, "available": -700, "version": 2},
                              "to": {"balance": 700, "available": 700, "version": 2}})
            self.assertEqual(lines["pay-2"]["outcome"],
                             {"code": "insufficient_balance", "state": "rejected",
                              "available": 700})
        finally:
            server.cleanup()


class VerifyTest(unittest.TestCase):
    def test_a_database_that_cannot_be_read_is_exit_3_not_a_verdict(self):
        # Nothing listens on port 1: the checks do not run (exit 3), which is not PROBLEMS FOUND
        # (exit 1); --json says so on stdout as an error object.
        conninfo = "host=127.0.0.1 port=1 dbname=coffer connect_timeout=2 password=s3cret"
        status, out, err = run("verify", conninfo)
        self.assertEqual(status, 3, out + err)
        self.assertIn("cannot connect", err)
        self.assertNotIn("PROBLEMS FOUND", out)
        status, out, err = run("verify", "--json", conninfo)
        self.assertEqual(status, 3, out + err)
        report = json.loads(out)
        self.assertIsNone(report["ok"])
        self.assertEqual(report["error"]["code"], "storage_failed")
        self.assertIn("cannot connect", report["error"]["message"])
        self.assertNotIn("s3cret", out + err)
        status, out, err = run("verify", "postgresql://u:s3cret@127.0.0.1:1/coffer?connect_timeout=2")
        self.assertEqual(status, 3, out + err)


if __name__ == "__main__":
    unittest.main()
