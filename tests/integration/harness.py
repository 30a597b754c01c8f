"""Integration test harness for `coffer serve`: real processes, real sockets, loopback only.

Standard library only. A test starts a server with `Server(...).start()`: the server gets a free
127.0.0.1 port (found by binding a socket to port 0), a fresh temporary data directory, and its
stderr goes to a file the test can read (`server.stderr()`). `stop()` sends SIGTERM to the
server's own pid and checks the exit status is 0; `restart()` stops it and starts it again on
the same data directory. Only processes this harness started are ever signalled, always by pid;
any still running when the interpreter exits are killed (SIGKILL, by pid).

Several instances on one log in PostgreSQL: `Cluster(3).start()` starts a PostgreSQL primary and
synchronous standby (scripts/pg-cluster) and three `coffer serve --log` members on it;
`cluster.client()` is a ClusterClient, which follows a follower's 307 with the same body and
reads with Coffer-Min-Seq (read-your-writes on a follower); `stop()` stops them by pid.

The binary is $COFFER_BINARY (CMake sets it), else build/coffer next to this tree.
Set COFFER_KEEP_DATA=1 to keep the temporary directories for inspection.
Set COFFER_SPEC_RECORD=FILE to append every exchange a `Client` makes to FILE, one JSON line
each, for tests/spec/check_exchanges.py to hold against docs/openapi.yaml.
"""

import atexit
import datetime
import http.client
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# The code table of docs/api.md: name -> (value, HTTP status, title).
CODES = {
    "ok": (0, 200, "success"),
    "created": (1, 201, "created"),
    "exists": (2, 200, "already applied with the same content; this is the original outcome"),
    "invalid_json": (10, 400, "the request body is not valid JSON"),
    "invalid_field": (11, 400, "a field is missing, of the wrong type or out of range"),
    "batch_too_large": (12, 400, "a batch holds more than 8190 events"),
    "body_too_large": (13, 413, "the request body is larger than the limit"),
    "invalid_argument": (14, 400, "an argument of the call is invalid"),
    "route_not_found": (15, 404, "no such endpoint"),
    "method_not_allowed": (16, 405, "the endpoint does not take this method"),
    "uri_too_long": (17, 414, "the request target is longer than the limit"),
    "headers_too_large": (18, 431, "the request line and headers are larger than the limit"),
    "account_not_found": (20, 422, "the account does not exist"),
    "hold_not_found": (21, 422, "the hold does not exist"),
    "currency_mismatch": (22, 422, "the accounts have different currencies"),
    "same_account": (23, 422, "from and to are the same account"),
    "transfer_not_found": (24, 404, "the transfer does not exist"),
    "id_reused": (30, 422, "the id was already used with different content"),
    "request_in_progress": (31, 409, "a request with this id is in progress"),
    "insufficient_balance": (40, 409, "the debit would take the account below its minimum balance"),
    "exceeds_max_balance": (41, 409, "the credit would take the account above its maximum balance"),
    "version_mismatch": (42, 409, "the account version is not the expected one"),
    "hold_expired": (43, 409, "the hold has expired"),
    "hold_already_posted": (44, 409, "the hold was already posted"),
    "hold_already_voided": (45, 409, "the hold was already voided"),
    "hold_amount_exceeded": (46, 409, "the amount is larger than the hold"),
    "batch_failed": (47, 409, "another event of the atomic batch failed"),
    "overflow": (48, 409, "the result does not fit a signed 64-bit integer"),
    "overloaded": (50, 503, "the request queue is full; retry later"),
    "storage_failed": (51, 503, "storage failed; the engine refuses writes"),
    "shutting_down": (52, 503, "the engine is shutting down"),
    "capacity_exceeded": (53, 503, "the configured capacity is full"),
    "out_of_memory": (54, 503, "memory could not be allocated"),
    "internal": (55, 500, "internal error"),
    "unauthorized": (56, 401, "a valid bearer token is required"),
    "forbidden": (57, 403, "the token, origin or host does not allow this request"),
    "not_supported": (58, 501, "this engine keeps no log: it has no change feed"),
    "not_leader": (59, 307, "this instance follows the leader: send writes to the leader"),
    "no_leader": (60, 503, "no instance leads the cluster right now; retry later"),
    "seq_not_applied": (61, 503,
                        "this instance has not applied the requested seq within the wait; retry "
                        "later"),
}

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
BATCH_MAX = 8190
BODY_MAX = 4 * 1024 * 1024
RFC3339_NS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$")

# Every bounded wait in the tests scales with this (e.g. 3 under a sanitizer build).
SLOW = float(os.environ.get("COFFER_TEST_SLOW", "1"))


def coffer_binary():
    path = os.environ.get("COFFER_BINARY") or os.path.join(REPO, "build", "coffer")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError("coffer binary not found at %r (set COFFER_BINARY)" % path)
    return path


def thread_nices(pid, name):
    """The nice values of process pid's threads named `name` (Linux: /proc/PID/task)."""
    nices = []
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, task)) as f:
                stat = f.read()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        comm, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
        if comm == name:
            nices.append(int(fields.split()[16]))  # the 19th field of stat: nice
    return nices


def free_port():
    """A port that was free a moment ago on 127.0.0.1 (the kernel picks it for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_rfc3339_ns(text):
    """'2026-11-24T23:38:00.123456789Z' -> ns since the epoch (exact)."""
    if not RFC3339_NS.match(text):
        raise ValueError("not RFC 3339 UTC with nanoseconds: %r" % text)
    seconds, fraction = text[:-1].split(".")
    dt = datetime.datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc)
    return int(dt.timestamp()) * 1_000_000_000 + int(fraction)


def format_rfc3339_ns(ns):
    dt = datetime.datetime.fromtimestamp(ns // 1_000_000_000, tz=datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + ".%09dZ" % (ns % 1_000_000_000)


_counter = itertools.count(1)
_run = uuid.uuid4().hex[:6]


def uid(prefix="t"):
    """A fresh id, unique in this process and across restarts of one test run."""
    return "%s-%s-%d" % (prefix, _run, next(_counter))


# ---- processes ---------------------------------------------------------------------------------

_running = {}  # pid -> Popen, for the servers this process started and has not reaped
_running_lock = threading.Lock()


def _kill_leftovers():
    with _running_lock:
        procs = list(_running.values())
    for proc in procs:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


atexit.register(_kill_leftovers)


def _die_with_parent():
    """In the child before exec: SIGKILL it when the test process dies (PR_SET_PDEATHSIG), so
    a test runner killed by a ctest timeout leaves no server behind. Linux only; best effort."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except Exception:  # noqa: BLE001 - best effort
        pass


class ServerError(AssertionError):
    pass


class Server:
    """One `coffer serve` process on a free loopback port and a data directory of its own."""

    def __init__(self, args=(), data_dir=None, fsync="always", timeout=None,
                 queue_events=None, max_connections=None, snapshot_every=None):
        self.tmp = tempfile.mkdtemp(prefix="coffer-it-")
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        self.args = list(args)
        if fsync is not None:
            self.args += ["--fsync", fsync]
        if timeout is not None:
            self.args += ["--timeout", str(timeout)]
        if queue_events is not None:
            self.args += ["--queue-events", str(queue_events)]
        if max_connections is not None:
            self.args += ["--max-connections", str(max_connections)]
        if snapshot_every is not None:
            self.args += ["--snapshot-every", str(snapshot_every)]
        self.proc = None
        self.port = None
        self.runs = 0
        self.stderr_paths = []
        self.returncodes = []

    # -- lifecycle

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def command(self, port):
        return [coffer_binary(), "serve", "--listen", "127.0.0.1:%d" % port,
                "--data", self.data_dir] + self.args

    def spawn(self, port=None):
        """Starts the process without waiting for it (see wait_ready)."""
        assert not self.running(), "server already running"
        self.port = port or free_port()
        self.runs += 1
        path = os.path.join(self.tmp, "stderr-%d.log" % self.runs)
        self.stderr_paths.append(path)
        with open(path, "wb") as err:
            self.proc = subprocess.Popen(self.command(self.port), stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err, cwd=self.tmp,
                                         preexec_fn=_die_with_parent)
        with _running_lock:
            _running[self.proc.pid] = self.proc
        return self.proc

    def start(self, ready_timeout=30.0):
        """Starts the server and waits until GET /readyz says ready. Retries on a port race."""
        for attempt in range(4):
            self.spawn()
            state = self.wait_ready(ready_timeout * SLOW)
            if state == "ready":
                return self
            log = self.stderr(run=-1)
            if state == "exited" and attempt < 3 and re.search(
                    r"in use|EADDRINUSE|bind", log, re.I):
                continue  # somebody took the port between free_port() and bind: try another
            self._reap_after_failure()
            raise ServerError("coffer serve did not become ready (%s, exit %r); its stderr:\n%s"
                              % (state, self.proc.returncode, tail(log)))
        raise ServerError("coffer serve could not bind a port")

    def connection(self, timeout):
        """A new connection to the server (a subclass may make it HTTPS)."""
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def wait_ready(self, timeout):
        """'ready', 'exited' or 'timeout'."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._forget()
                return "exited"
            try:
                conn = self.connection(2)
                try:
                    conn.request("GET", "/readyz")
                    r = conn.getresponse()
                    body = r.read()
                finally:
                    conn.close()
                if r.status == 200:
                    try:
                        if json.loads(body).get("status") == "ready":
                            return "ready"
                    except ValueError:
                        pass
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        return "timeout"

    def send_signal(self, sig):
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout=30.0):
        """Waits for the process to exit; on timeout kills it (by pid) and raises."""
        try:
            rc = self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServerError("coffer serve (pid %d) did not exit within %.0f s; killed. "
                              "stderr:\n%s" % (self.proc.pid, timeout * SLOW,
                                                tail(self.stderr(run=-1))))
        self._forget()
        self.returncodes.append(rc)
        return rc

    def stop(self, timeout=30.0, sig=signal.SIGTERM, check=True):
        """SIGTERM (by pid), wait, and check the exit status is 0. Returns the status."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            rc = self.proc.returncode
            self._forget()
        else:
            self.send_signal(sig)
            rc = self.wait(timeout)
        if check and rc != 0:
            raise ServerError("coffer serve exited with status %r after %s (want 0); stderr:\n%s"
                              % (rc, signal.Signals(sig).name, tail(self.stderr(run=-1))))
        return rc

    def restart(self, **kw):
        self.stop()
        return self.start(**kw)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._forget()

    def cleanup(self):
        self.kill()
        if not os.environ.get("COFFER_KEEP_DATA"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _reap_after_failure(self):
        self.kill()

    def _forget(self):
        if self.proc is not None:
            with _running_lock:
                _running.pop(self.proc.pid, None)

    # -- output and clients

    def stderr(self, run=None):
        """The server's stderr: of one run (index into the runs, -1 the latest) or of all."""
        paths = self.stderr_paths if run is None else [self.stderr_paths[run]]
        out = []
        for path in paths:
            try:
                with open(path, "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "".join(out)

    def client(self, timeout=30.0):
        return Client(self.port, timeout=timeout)


def tail(text, lines=40):
    return "\n".join(text.splitlines()[-lines:])


# ---- HTTP client ---------------------------------------------------------------------------------

_record_path = os.environ.get("COFFER_SPEC_RECORD")
_record_lock = threading.Lock()


def record_exchange(method, path, headers, data, response):
    """Appends one exchange to $COFFER_SPEC_RECORD (when set) as a JSON line. Bodies are kept
    as text so that the checker reads their integers exactly, beyond 2^53 too."""
    if not _record_path:
        return
    line = json.dumps({
        "method": method, "target": path,
        "request_headers": {name.lower(): value for name, value in headers.items()},
        # An oversized body is refused unread (413): its bytes would only fill the file.
        "request_body": None if data is None or len(data) > BODY_MAX
        else data.decode("utf-8", "replace"),
        "status": response.status,
        "response_headers": [[name.lower(), value] for name, value in response.headers.items()],
        "response_body": response.body.decode("utf-8", "replace"),
    })
    with _record_lock, open(_record_path, "a", encoding="utf-8") as out:
        out.write(line + "\n")


class Response:
    def __init__(self, status, reason, headers, body, elapsed):
        self.status = status
        self.reason = reason
        self.headers = headers  # http.client.HTTPMessage: case-insensitive get()
        self.body = body
        self.elapsed = elapsed
        self._json = None

    def header(self, name, default=None):
        return self.headers.get(name, default)

    @property
    def content_type(self):
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def json(self):
        if self._json is None:
            try:
                self._json = json.loads(self.body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise AssertionError("response body is not JSON (%s): %r" % (e, self.body[:300]))
        return self._json

    @property
    def replayed(self):
        return (self.headers.get("Idempotent-Replayed") or "").strip().lower() == "true"

    def __repr__(self):
        return "<%d %s %s>" % (self.status, self.headers.get("Content-Type"), self.body[:400])


class Client:
    """A keep-alive HTTP/1.1 connection to the server. Not thread-safe: one per thread.

    A request that fails on a connection that sat idle for a while (the server may close idle
    connections, see --timeout) is sent once more on a fresh connection; nothing else is retried.
    """

    IDLE_RETRY_AFTER = 0.5

    def __init__(self, port, host="127.0.0.1", timeout=30.0):
        self.host = host
        self.port = port
        self.timeout = timeout * SLOW
        self.conn = None
        self.last_used = 0.0
        self.requests = 0

    def _connection(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.last_used = 0.0
        return self.conn

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, headers=None, request_id=None):
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode("utf-8")
        elif isinstance(body, str):
            data = body.encode("utf-8")
        else:
            data = body
        h = {}
        if data is not None:
            h["Content-Type"] = "application/json"
        if request_id is not None:
            h["X-Request-Id"] = request_id
        h.update(headers or {})
        for attempt in (0, 1):
            conn = self._connection()
            reused_after_idle = (self.last_used != 0.0 and
                                 time.monotonic() - self.last_used > self.IDLE_RETRY_AFTER)
            started = time.monotonic()
            try:
                conn.request(method, path, body=data, headers=h)
                r = conn.getresponse()
                payload = r.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.BadStatusLine):
                self.close()
                if attempt == 0 and reused_after_idle:
                    continue
                raise
            except Exception:
                self.close()
                raise
            self.requests += 1
            response = Response(r.status, r.reason, r.headers, payload,
                                time.monotonic() - started)
            record_exchange(method, path, h, data, response)
            if r.will_close:
                self.close()
            else:
                self.last_used = time.monotonic()
            return response

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)


def quote(segment):
    return urllib.parse.quote(segment, safe=":@")


# ---- several instances on one log in PostgreSQL --------------------------------------------------

PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")


def have_postgresql():
    return os.path.isfile(os.path.join(PG_BIN, "initdb"))


NO_POSTGRESQL = "PostgreSQL 15 is not installed (scripts/install-deps installs it)"
# The decorator of a test class that needs PostgreSQL: skipped, saying so, without it.
requires_postgresql = unittest.skipUnless(have_postgresql(), NO_POSTGRESQL)


def pg_cluster(*args):
    """scripts/pg-cluster ARGS (bounded); its stdout. Raises with its stderr when it fails."""
    run = subprocess.run([os.path.join(REPO, "scripts", "pg-cluster")] + list(args),
                         capture_output=True, text=True, timeout=120 * SLOW)
    if run.returncode != 0:
        raise AssertionError("pg-cluster %s failed:\n%s" % (" ".join(args), run.stderr))
    return run.stdout


def pg_sql(conninfo, statement):
    """Runs one SQL statement with psql (bounded); its unaligned rows, one a line."""
    run = subprocess.run([os.path.join(PG_BIN, "psql"), "-qAtX", "-v", "ON_ERROR_STOP=1",
                          "-c", statement, conninfo], capture_output=True, text=True,
                         timeout=30 * SLOW)
    if run.returncode != 0:
        raise AssertionError("psql failed: %s" % run.stderr)
    return run.stdout


def pg_cluster_start():
    """A PostgreSQL primary and synchronous standby in a fresh directory: (its directory, the
    KEY=value lines scripts/pg-cluster printed, as a dict). Stop it with pg_cluster("stop", dir)."""
    pg_dir = tempfile.mkdtemp(prefix="coffer-pg-")
    shutil.rmtree(pg_dir)  # pg-cluster creates it
    started = pg_cluster("start", pg_dir)
    return pg_dir, dict(shlex.split(line)[0].split("=", 1)  # KEY='value' lines, shell-quoted
                        for line in started.splitlines() if "=" in line)


def pg_cluster_stop(pg_dir):
    """Stops the pair pg_cluster_start started and removes its directory, in a teardown: a
    failure is not raised, so the rest of the teardown goes on."""
    subprocess.run([os.path.join(REPO, "scripts", "pg-cluster"), "stop", pg_dir],
                   capture_output=True, timeout=120 * SLOW)


class Member(Server):
    """An instance of a cluster: its --advertise is the URL of the port it listens on."""

    def command(self, port):
        return super().command(port) + ["--advertise", "http://127.0.0.1:%d" % port]

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port


class Cluster:
    """A PostgreSQL primary and synchronous standby (scripts/pg-cluster, in a fresh directory)
    and `count` instances of `coffer serve --log` on it. `seq` is the highest Coffer-Seq any
    ClusterClient of this cluster has seen: the floor of their reads (see ClusterClient)."""

    def __init__(self, count=3, member_args=()):
        self.count = count
        self.member_args = list(member_args)  # for every `coffer serve`, after --log
        self.pg_dir = None
        self.env = {}
        self.members = []
        self.seq = 0
        self.redirects = 0  # 307s the clients followed
        self.lock = threading.Lock()
        self.rotation = itertools.count()

    def start(self):
        self.pg_dir, self.env = pg_cluster_start()
        try:
            for _ in range(self.count):
                member = Member(args=["--log", self.env["MULTI_CONNINFO"]] + self.member_args)
                self.members.append(member)
                member.start()
        except BaseException:
            self.stop(check=False)
            raise
        return self

    def stop(self, check=True):
        """SIGTERM to each instance (by pid; exit 0 checked when `check`), then PostgreSQL."""
        problems = []
        try:
            for member in reversed(self.members):
                if member.running():
                    member.send_signal(signal.SIGCONT)  # a paused one stops too
                    try:
                        member.stop(check=check)
                    except ServerError as error:
                        problems.append(str(error))
                member.cleanup()
        finally:
            if self.pg_dir:
                pg_cluster("stop", self.pg_dir)
        if problems:
            raise ServerError("\n".join(problems))

    def view(self, member, timeout=2.0):
        """GET /v1/cluster of one instance, or None when it does not answer 200."""
        try:
            status, _, body = json_exchange(member.port, "GET", "/v1/cluster", timeout=timeout)
        except (OSError, http.client.HTTPException, ValueError):
            return None
        return body if status == 200 else None

    def settled_leader(self, timeout_s=15.0, members=None):
        """The member every one of `members` names as leader (itself leading, the others
        following it), waited for, bounded."""
        members = members or self.members
        deadline = time.monotonic() + timeout_s * SLOW
        while True:
            views = {m.url: self.view(m) for m in members}
            leaders = [m for m in members if views[m.url] and views[m.url]["role"] == "leader"]
            if len(leaders) == 1 and all(
                    v and v["leader"] == leaders[0].url and v["ready"] and
                    v["role"] == ("leader" if url == leaders[0].url else "follower")
                    for url, v in views.items()):
                return leaders[0]
            if time.monotonic() > deadline:
                raise AssertionError("no settled leader within %.0f s: %r"
                                     % (timeout_s * SLOW, views))
            time.sleep(0.05)

    def followers(self):
        leader = self.settled_leader()
        return [m for m in self.members if m is not leader]

    def saw(self, response):
        value = response.header("Coffer-Seq")
        if value and value.isdigit():
            with self.lock:
                self.seq = max(self.seq, int(value))

    def floor(self):
        with self.lock:
            return self.seq

    def client(self, home=None, timeout=30.0):
        """A ClusterClient whose requests go first to `home` (a Member); by default the
        instances in turn, followers and leader alike."""
        if home is None:
            home = self.members[next(self.rotation) % len(self.members)]
        return ClusterClient(self, home, timeout=timeout)


class ClusterClient:
    """What a careful client of a cluster does, with the interface of Client: every request
    goes to its home instance. A write (any method but GET and HEAD) answered 307 is sent again,
    with the same body and headers, to the Location (at most 4 hops); one answered 503 no_leader
    is sent again to the home instance after a pause, for up to 15 s (nothing was applied).
    A read carries Coffer-Min-Seq: the highest Coffer-Seq any client of the cluster has seen,
    so that it sees every write acknowledged before it was sent (a test that joins its threads
    before reading is one causal session). Not thread-safe: one per thread."""

    HOPS = 4
    NO_LEADER_RETRY_S = 15.0

    def __init__(self, cluster, home, timeout=30.0):
        self.cluster = cluster
        self.home = home
        self.timeout = timeout
        self.clients = {}  # port -> Client, one keep-alive connection to each instance used
        self.port = home.port

    @property
    def requests(self):
        return sum(c.requests for c in self.clients.values())

    def _client(self, port):
        if port not in self.clients:
            self.clients[port] = Client(port, timeout=self.timeout)
        return self.clients[port]

    def close(self):
        for client in self.clients.values():
            client.close()

    def request(self, method, path, body=None, headers=None, request_id=None):
        read = method in ("GET", "HEAD")
        port, target = self.home.port, path
        no_leader_until = time.monotonic() + self.NO_LEADER_RETRY_S * SLOW
        hops = 0
        while True:
            h = dict(headers or {})
            floor = self.cluster.floor()
            if read and floor and "min_seq=" not in target and not any(
                    name.lower() == "coffer-min-seq" for name in h):
                h["Coffer-Min-Seq"] = str(floor)
            r = self._client(port).request(method, target, body=body, headers=h,
                                           request_id=request_id)
            self.cluster.saw(r)
            if read:
                return r
            if r.status == 307 and r.header("Location") and hops < self.HOPS:
                location = urllib.parse.urlsplit(r.header("Location"))
                assert location.hostname == "127.0.0.1", r.header("Location")
                port = location.port
                target = location.path + ("?" + location.query if location.query else "")
                hops += 1
                with self.cluster.lock:
                    self.cluster.redirects += 1
                continue
            if (r.status == 503 and r.content_type == "application/problem+json" and
                    r.json().get("code") == "no_leader" and time.monotonic() < no_leader_until):
                time.sleep(0.2)
                port, target, hops = self.home.port, path, 0
                continue
            return r

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)


# ---- raw sockets, for what http.client will not send -------------------------------------------

def json_exchange(port, method, path, body=None, headers=None, timeout=30.0):
    """One request on a fresh connection, redirects not followed: (status, headers by lower-case
    name, the JSON body or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout * SLOW)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers=dict(headers or {}))
        response = conn.getresponse()
        payload = response.read()
        return (response.status, {k.lower(): v for k, v in response.getheaders()},
                json.loads(payload) if payload else None)
    finally:
        conn.close()


def raw_request(port, data, timeout=10.0, read=True):
    """Sends raw bytes on a fresh connection and returns (status, headers dict, body bytes) of the
    first response, or None when the server closed without answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if not read:
            return None
        return read_response(s)


def read_response(sock):
    """Reads one HTTP/1.1 response from a socket; None when closed before any byte."""
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    except ConnectionResetError:
        pass
    if b"\r\n\r\n" not in buf:
        return None if not buf else (0, {}, buf)
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    try:
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    except ConnectionResetError:
        pass
    return status, headers, rest[:length]


# ---- test base -------------------------------------------------------------------------------

class ApiAssertions:
    """Assertions about the wire format of docs/api.md; mixed into TestCases."""

    def assert_request_id(self, r, sent=None):
        rid = r.header("X-Request-Id")
        self.assertTrue(rid, "response without X-Request-Id: %r" % r)
        if sent is not None:
            self.assertEqual(rid, sent, "X-Request-Id does not echo the client's value")
        return rid

    def assert_problem(self, r, status, code, field=None, detail=True, **extra):
        """r is a problem+json response with this status and code (and field, extra fields)."""
        self.assertEqual(r.status, status, "want %d %s, got %r" % (status, code, r))
        self.assert_request_id(r)
        self.assertEqual(r.content_type, "application/problem+json",
                         "error without Content-Type application/problem+json: %r" % r)
        self.assert_problem_body(r.json(), status, code, field=field, **extra)
        return r.json()

    def assert_problem_body(self, p, status, code, field=None, **extra):
        self.assertIsInstance(p, dict, p)
        self.assertEqual(p.get("code"), code, "problem code: %r" % p)
        self.assertEqual(p.get("status"), status, "problem status: %r" % p)
        self.assertEqual(p.get("type"), "urn:coffer:error:" + code, "problem type: %r" % p)
        self.assertEqual(p.get("title"), CODES[code][2], "problem title: %r" % p)
        self.assertIsInstance(p.get("detail"), str, "problem without detail: %r" % p)
        self.assertTrue(p.get("detail"), "empty detail: %r" % p)
        if field is not None:
            self.assertEqual(p.get("field"), field, "problem field: %r" % p)
        for key, value in extra.items():
            self.assertEqual(p.get(key), value, "problem %s: %r" % (key, p))
        return p

    def assert_batch_failed(self, r, code):
        """r is the 409 of an atomic batch that applied nothing, `code` its first failure's;
        returns its results (each still a problem item or, never here, a created one)."""
        self.assertEqual(r.status, 409, "want 409 for a failed atomic batch, got %r" % r)
        self.assert_request_id(r)
        self.assertEqual(r.content_type, "application/json", r)
        body = r.json()
        self.assertEqual((body.get("atomic"), body.get("code")), (True, code), body)
        self.assertEqual(list(body), ["atomic", "code", "results"], body)
        failures = [x["code"] for x in body["results"] if x["code"] != "batch_failed"]
        self.assertEqual(failures, [code], "one item fails with its own code: %r" % body)
        return body["results"]

    def assert_created(self, r, status=201):
        self.assertEqual(r.status, status, "want %d, got %r" % (status, r))
        self.assert_request_id(r)
        self.assertEqual(r.content_type, "application/json", r)
        self.assertFalse(r.replayed, "a first answer marked Idempotent-Replayed: %r" % r)
        return r.json()

    def assert_replay_of(self, replay, original):
        """Same status and body as the original, with Idempotent-Replayed: true."""
        self.assertEqual(replay.status, original.status,
                         "replay status differs: %r vs %r" % (replay, original))
        self.assertTrue(replay.replayed, "replay without Idempotent-Replayed: true: %r" % replay)
        self.assertEqual(replay.json(), original.json(), "replay body differs")
        self.assert_request_id(replay)

    def assert_timestamp(self, text):
        """text is an RFC 3339 UTC time with nine fraction digits; returns it in ns."""
        self.assertIsInstance(text, str)
        self.assertRegex(text, RFC3339_NS)
        return parse_rfc3339_ns(text)


def issue_tokens(server, tokens):
    """Creates `tokens` ((name, scope, account prefixes or None), ...) with `coffer token create`
    in a file of the server's and makes it serve them: (the file's path, {name: secret})."""
    path = os.path.join(server.tmp, "tokens")
    secrets = {}
    for name, scope, accounts in tokens:
        run = subprocess.run([coffer_binary(), "token", "create", "--name", name, "--scope", scope,
                              "--file", path, "--json"]
                             + (["--accounts", accounts] if accounts else []),
                             capture_output=True, text=True, timeout=30 * SLOW)
        assert run.returncode == 0, run.stderr
        created = json.loads(run.stdout)
        assert created["name"] == name and created["scope"] == scope, created
        secrets[name] = created["token"]
    server.args += ["--tokens", path]
    return path, secrets


class ServerTestCase(unittest.TestCase, ApiAssertions):
    """One server per TestCase class; stopped with SIGTERM (exit 0 checked) at the end. With
    `tokens` ((name, scope, account prefixes or None), ...) it serves them: their file is
    cls.tokens_path and their secrets cls.secrets by name."""

    server_options = {}
    tokens = ()
    role = "standalone"  # what /readyz of the server this test's client talks to names

    @classmethod
    def setUpClass(cls):
        cls.server = Server(**cls.server_options)
        try:
            if cls.tokens:
                cls.tokens_path, cls.secrets = issue_tokens(cls.server, cls.tokens)
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            raise
        cls.client = cls.server.client()
        cls._issuers = set()
        try:
            cls.prepare()
        except BaseException:
            cls.tearDownClass()  # unittest does not call it when setUpClass fails
            raise

    @classmethod
    def prepare(cls):
        """Class-wide state, built once the server is up (override)."""

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        try:
            cls.server.stop()
        finally:
            cls.server.cleanup()

    # -- helpers that build state (each asserts success)

    def create_account(self, account_id=None, currency="KRW", client=None, **fields):
        body = {"id": account_id or uid("acct"), "currency": currency}
        body.update(fields)
        r = (client or self.client).post("/v1/accounts", body)
        self.assertEqual(r.status, 201, "create account %r: %r" % (body, r))
        return r.json()

    def issuer(self, currency="KRW"):
        """An unbounded account of this currency to fund others from."""
        account_id = "issuer:" + currency
        if (self.server.pid, currency) not in self._issuers:
            r = self.client.post("/v1/accounts",
                                 {"id": account_id, "currency": currency, "min_balance": None})
            self.assertEqual(r.status, 201, r)
            self._issuers.add((self.server.pid, currency))
        return account_id

    def fund(self, account_id, amount, currency="KRW", client=None):
        r = (client or self.client).post("/v1/transfers", {
            "id": uid("fund"), "from": self.issuer(currency), "to": account_id, "amount": amount})
        self.assertEqual(r.status, 201, "fund %s: %r" % (account_id, r))
        return r.json()

    def funded_account(self, amount, currency="KRW", **fields):
        account = self.create_account(currency=currency, **fields)
        if amount:
            self.fund(account["id"], amount, currency)
        return account["id"]

    def transfer(self, body, client=None, headers=None):
        return (client or self.client).post("/v1/transfers", body, headers=headers)

    def get_account(self, account_id, client=None):
        r = (client or self.client).get("/v1/accounts/" + quote(account_id))
        self.assertEqual(r.status, 200, "GET account %s: %r" % (account_id, r))
        return r.json()

    def get_transfer(self, transfer_id, client=None):
        return (client or self.client).get("/v1/transfers/" + quote(transfer_id))

    def history(self, account_id, after=None, limit=None, client=None):
        query = {}
        if after is not None:
            query["after"] = after
        if limit is not None:
            query["limit"] = limit
        path = "/v1/accounts/%s/history" % quote(account_id)
        if query:
            path += "?" + urllib.parse.urlencode(query)
        return (client or self.client).get(path)

    def all_history(self, account_id, client=None):
        entries, after = [], 0
        for _ in range(10000):
            r = self.history(account_id, after=after, limit=1000, client=client)
            self.assertEqual(r.status, 200, r)
            page = r.json()
            entries += page["entries"]
            if page["next_after"] is None:
                return entries
            after = page["next_after"]
        self.fail("history did not end")

    def verify_ok(self, client=None):
        r = (client or self.client).get("/v1/verify")
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertIs(body.get("ok"), True, "GET /v1/verify: %r" % body)
        self.assertEqual(body.get("problems"), [], body)
        return body


def run_threads(count, target, timeout=120.0):
    """Runs target(i) in `count` threads started together; returns their results in order.
    An exception in a thread is re-raised here; a thread still running at the timeout fails."""
    results = [None] * count
    errors = [None] * count
    barrier = threading.Barrier(count)

    def body(i):
        try:
            barrier.wait(timeout=30)
            results[i] = target(i)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            errors[i] = e

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout * SLOW
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = sum(t.is_alive() for t in threads)
    if alive:
        raise AssertionError("%d of %d threads still running after %.0f s"
                             % (alive, count, timeout * SLOW))
    for e in errors:
        if e is not None:
            raise e
    return results
