"""The demo cluster of `make cluster` (scripts/cluster): it starts PostgreSQL (primary and
synchronous standby) and three instances in a fresh directory; `coffer cluster status` shows one
leader and two followers; the CLI given only a follower gets a transfer applied through the
redirect; `scripts/cluster stop` stops every process it started and removes the directory, and
nothing of it is left running. Bounded: about a minute (SLOW stretches it). Loopback only."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from harness import REPO, SLOW, coffer_binary, requires_postgresql, uid

SCRIPT = os.path.join(REPO, "scripts", "cluster")


def gone(pid):
    """True when pid no longer runs (absent, or a zombie waiting to be reaped)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def processes_naming(text):
    """Pids of live processes whose command line contains text."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and not gone(int(entry)):
            found.append((int(entry), cmdline))
    return found


@requires_postgresql
class DemoCluster(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="coffer-demo-")
        self.env = dict(os.environ, COFFER=coffer_binary())
        self.env.pop("COFFER_SERVER", None)
        self.stopped = False

    def tearDown(self):
        if not self.stopped:
            subprocess.run([SCRIPT, "stop", self.dir], env=self.env, capture_output=True,
                           timeout=60 * SLOW)
        # Whatever the script failed to stop: the coffer instances this test started, by pid
        # (each checked to still name this test's directory). PostgreSQL's stop is pg-cluster's.
        for pid, _ in processes_naming(self.dir + "/node"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def coffer(self, *args):
        run = subprocess.run([coffer_binary()] + list(args), capture_output=True, text=True,
                             timeout=20 * SLOW)
        self.assertEqual(run.returncode, 0, "coffer %s: %s" % (" ".join(args), run.stderr))
        return run.stdout

    def test_start_use_stop(self):
        started = subprocess.run([SCRIPT, "start", self.dir], env=self.env, capture_output=True,
                                 text=True, timeout=60 * SLOW)
        self.assertEqual(started.returncode, 0, started.stderr)
        self.assertIn("cluster stop", started.stdout)
        self.assertIn("coffer cluster status", started.stdout)
        with open(os.path.join(self.dir, "instances")) as f:
            instances = [line.split() for line in f if line.strip()]
        self.assertEqual([n for n, _, _ in instances], ["1", "2", "3"])
        urls = ["http://127.0.0.1:%s" % port for _, _, port in instances]
        pids = [int(pid) for _, pid, _ in instances]
        for node in ("primary", "standby"):
            with open(os.path.join(self.dir, "pg", node, "postmaster.pid")) as f:
                pids.append(int(f.readline()))
        for url in urls:
            self.assertIn(url, started.stdout)

        # One leader and two followers, as every member reports itself (each writes its row
        # about every second: wait, bounded, until all three are there).
        deadline = time.monotonic() + 20 * SLOW
        while True:
            status = json.loads(self.coffer("--server", ",".join(urls), "--json", "cluster",
                                            "status"))
            roles = sorted(m["role"] for m in status["members"])
            if roles == ["follower", "follower", "leader"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(roles, ["follower", "follower", "leader"], status)
        self.assertIn(status["leader"], urls)
        text = self.coffer("--server", ",".join(urls), "cluster", "status")
        self.assertIn("leader " + status["leader"], text)

        # A write through a follower: the CLI given only that follower follows its 307.
        follower = next(url for url in urls if url != status["leader"])
        bank, alice, transfer = uid("bank"), uid("alice"), uid("t")
        self.coffer("--server", follower, "account", "create", bank, "--currency", "EUR",
                    "--unbounded")
        self.coffer("--server", follower, "account", "create", alice, "--currency", "EUR")
        answer = json.loads(self.coffer("--server", follower, "--json", "transfer", "--from",
                                        bank, "--to", alice, "--amount", "700", "--id",
                                        transfer))
        self.assertEqual(answer["transfer"]["amount"], 700, answer)
        account = json.loads(self.coffer("--server", status["leader"], "--json", "account",
                                         "get", alice))
        self.assertEqual(account["balance"], 700, account)

        stopped = subprocess.run([SCRIPT, "stop", self.dir], env=self.env, capture_output=True,
                                 text=True, timeout=60 * SLOW)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        self.stopped = True
        self.assertFalse(os.path.exists(self.dir))
        deadline = time.monotonic() + 10 * SLOW
        while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)  # PostgreSQL's children go a moment after their postmaster
        self.assertEqual([pid for pid in pids if not gone(pid)], [], "still running")
        self.assertEqual(processes_naming(self.dir), [])


if __name__ == "__main__":
    unittest.main()
