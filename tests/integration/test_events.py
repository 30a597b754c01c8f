"""The change feed over HTTP (GET /v1/events) against a real server: replaying it from 0 into a
mirror gives every account's balance, available and version as the API reports them, with every
recorded outcome exactly once and in seq order; the types and account filters; long-polls; event
streams (Server-Sent Events) resumed from every Last-Event-ID of a run; keep-alives; a consumer
that reads nothing is cut off while the server stays responsive; tokens and their prefixes."""

import http.client
import json
import os
import random
import re
import socket
import threading
import time
import unittest
import urllib.parse

from harness import SLOW, ServerTestCase, quote, thread_nices, uid

TYPES = ["account.created", "transfer.posted", "hold.created", "hold.posted", "hold.voided",
         "hold.expired", "transfer.rejected"]
DEFAULT_TYPES = TYPES[:-1]


def events_path(after=None, limit=None, types=None, account=None, wait_ms=None):
    query = {name: value for name, value in (("after", after), ("limit", limit),
                                             ("types", types), ("account", account),
                                             ("wait_ms", wait_ms)) if value is not None}
    return "/v1/events" + ("?" + urllib.parse.urlencode(query) if query else "")


def touches(event, account_id):
    if event["type"] == "account.created":
        return event["account"]["id"] == account_id
    transfer = event["transfer"]
    return account_id in (transfer.get("from"), transfer.get("to"))


def expected_type(transfer):
    """The change type a transfer read back by GET /v1/transfers/{id} was recorded as."""
    if transfer["state"] == "rejected":
        return "transfer.rejected"
    if "post" in transfer:
        return "hold.posted"
    if "void" in transfer:
        return "hold.voided"
    return "hold.created" if "hold" in transfer else "transfer.posted"


class Stream:
    """An event stream read line by line: frames are ("event", {id, event, data}) and
    ("comment", text)."""

    def __init__(self, port, path="/v1/events", last_event_id=None, headers=None, timeout=10.0):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout * SLOW)
        sent = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            sent["Last-Event-ID"] = str(last_event_id)
        sent.update(headers or {})
        self.conn.request("GET", path, headers=sent)
        self.response = self.conn.getresponse()

    def close(self):
        self.conn.close()

    def frames(self):
        fields = {}
        while True:
            line = self.response.readline()
            if not line:
                return
            line = line.decode("utf-8").rstrip("\n")
            if line == "":
                if fields:
                    yield "event", fields
                fields = {}
            elif line.startswith(":"):
                yield "comment", line[1:].strip()
            else:
                name, _, value = line.partition(": ")
                fields[name] = value

    def events_until(self, last_seq):
        """The changes up to and including seq last_seq, checking each frame's form. With
        nothing to come (last_seq None), reads up to the first keep-alive after the opening
        comment and returns what came before it."""
        events, comments = [], 0
        for kind, frame in self.frames():
            if kind != "event":
                comments += 1
                if last_seq is None and comments == 2:
                    return events
                continue
            change = json.loads(frame["data"])
            assert frame.get("id") == str(change["seq"]) and frame.get("event") == change["type"], frame
            events.append(change)
            if last_seq is not None and change["seq"] >= last_seq:
                return events
        raise AssertionError("the stream ended before seq %d" % last_seq)


class FeedReading:
    """Reading the whole feed by pages; mixed into the test cases."""

    def events_page(self, client=None, **query):
        r = (client or self.client).get(events_path(**query))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.content_type, "application/json", r)
        body = r.json()
        self.assertEqual(sorted(body), ["durable_seq", "events", "next_after"], body)
        return body

    def all_events(self, limit=1000, client=None, **query):
        events, after = [], 0
        for _ in range(100000):
            body = self.events_page(after=after, limit=limit, client=client, **query)
            self.assertGreaterEqual(body["next_after"], after)
            self.assertLessEqual(len(body["events"]), limit)
            events += body["events"]
            if body["next_after"] >= body["durable_seq"]:
                return events
            after = body["next_after"]
        self.fail("the feed did not end")

    def assert_in_order(self, events):
        seqs = [e["seq"] for e in events]
        self.assertEqual(seqs, sorted(set(seqs)), "seqs not strictly increasing")


class Workload(ServerTestCase, FeedReading):
    """A random workload of every kind of change, then the feed checked against it."""

    server_options = {"args": ["--sse-keepalive-ms", "200"]}
    SEED = int(os.environ.get("COFFER_TEST_SEED", "1517"))

    @classmethod
    def prepare(cls):
        cls.rng = random.Random(cls.SEED)
        cls.accounts = []
        cls.submitted = []  # every transfer, hold, post and void id sent
        cls.short_holds = []
        test = cls("test_replay_mirrors_every_account")
        test.run_workload(operations=300)

    def post(self, path, body):
        r = self.client.post(path, body)
        self.assertIn(r.status, (200, 201, 409, 422), "%s %r: %r" % (path, body, r))
        return r

    def new_transfer(self, rng, hold=False):
        sides = rng.sample(self.accounts, 2)
        body = {"id": uid("t"), "from": sides[0], "to": sides[1], "amount": rng.randint(1, 4000)}
        if hold:
            timeout_ms = rng.choice([150, 60000])
            body["hold"] = {"timeout_ms": timeout_ms}
        return body

    def one_operation(self, rng, pending):
        kind = rng.choice(["transfer"] * 4 + ["hold"] * 3 + ["resolve"] * 3 + ["batch"] * 2)
        if kind == "resolve" and pending:
            hold = pending.pop(rng.randrange(len(pending)))
            op = rng.choice(["post", "void"])
            body = {"id": uid(op)}
            if op == "post" and rng.random() < 0.5:
                body["amount"] = rng.randint(1, 5000)  # larger than the hold: rejected
            self.submitted.append(body["id"])
            self.post("/v1/holds/%s/%s" % (quote(hold), op), body)
        elif kind == "batch":
            items = [self.new_transfer(rng) for _ in range(rng.randint(2, 4))]
            self.submitted.extend(item["id"] for item in items)
            self.post("/v1/transfers", {"atomic": rng.random() < 0.7, "transfers": items})
        else:
            body = self.new_transfer(rng, hold=kind == "hold")
            self.submitted.append(body["id"])
            r = self.post("/v1/transfers", body)
            if kind == "hold" and r.status == 201:
                pending.append(body["id"])
                if body["hold"]["timeout_ms"] < 1000:
                    self.short_holds.append(body["id"])

    def run_workload(self, operations):
        rng = self.rng
        self.accounts.append(self.issuer())
        for i in range(5):
            fields = {"min_balance": -500} if i == 0 else {"max_balance": 9000} if i == 1 else {}
            account = self.create_account(account_id=uid("user:%d" % i), **fields)["id"]
            self.accounts.append(account)
            self.fund(account, rng.randint(1, 5000))
        pending = []
        for _ in range(operations):
            self.one_operation(rng, pending)
        deadline = time.monotonic() + 10 * SLOW
        for hold in self.short_holds:  # every short hold resolved: expired unless posted/voided
            while self.get_transfer(hold).json()["state"] == "pending":
                self.assertLess(time.monotonic(), deadline, "hold %s never expired" % hold)
                time.sleep(0.05)

    def test_replay_mirrors_every_account(self):
        events = self.all_events(types=",".join(TYPES))
        self.assert_in_order(events)
        mirror = {}
        for event in events:
            self.assert_timestamp(event["timestamp"])
            if event["type"] == "account.created":
                account = event["account"]
                self.assertNotIn(account["id"], mirror)
                mirror[account["id"]] = (account["balance"], account["available"], 1)
                continue
            for side in event.get("accounts", {}).values():
                before = mirror[side["id"]]
                self.assertEqual(side["version"], before[2] + 1,
                                 "a change to %s missing before seq %d" % (side["id"], event["seq"]))
                mirror[side["id"]] = (side["balance"], side["available"], side["version"])
        self.assertEqual(sorted(mirror), sorted(self.accounts))
        for account_id, (balance, available, version) in mirror.items():
            account = self.get_account(account_id)
            self.assertEqual((account["balance"], account["available"], account["version"]),
                             (balance, available, version), account_id)

    def test_every_recorded_outcome_is_one_change(self):
        events = self.all_events(types=",".join(TYPES))
        by_seq = {e["seq"]: e for e in events}
        fundings = [e["transfer"]["id"] for e in events if e["type"] == "transfer.posted"
                    and e["transfer"]["id"].startswith("fund-")]
        self.assertGreaterEqual(len(fundings), 5)
        changes = len(self.accounts)  # one account.created each
        for transfer_id in self.submitted + fundings:
            r = self.get_transfer(transfer_id)
            if r.status == 404:
                continue  # refused before the ledger (a malformed event records nothing)
            self.assertEqual(r.status, 200, r)
            transfer = r.json()
            event = by_seq.get(transfer["seq"])
            self.assertIsNotNone(event, "no change at seq %d for %s" % (transfer["seq"],
                                                                       transfer_id))
            self.assertEqual(event["type"], expected_type(transfer), (event, transfer))
            self.assertEqual(event["transfer"]["id"], transfer_id)
            changes += 1
            if transfer["state"] == "expired":
                expiries = [e for e in events if e["type"] == "hold.expired"
                            and e["transfer"]["id"] == transfer_id]
                self.assertEqual(len(expiries), 1, transfer_id)
                self.assertGreater(expiries[0]["seq"], transfer["seq"])
                changes += 1
        self.assertEqual(len([e for e in events if e["type"] == "account.created"]),
                         len(self.accounts))
        self.assertEqual(len(events), changes, "changes that no submitted id accounts for")
        self.assertTrue({"hold.expired", "hold.posted", "hold.voided", "transfer.rejected"}
                        <= {e["type"] for e in events}, "the workload lacks a kind of change")

    def test_types_filter_selects_exactly_those(self):
        everything = self.all_events(types=",".join(TYPES))
        default = self.all_events()
        self.assertEqual(default, [e for e in everything if e["type"] != "transfer.rejected"])
        for chosen in (["hold.expired"], ["hold.posted", "transfer.rejected"], ["account.created"]):
            got = self.all_events(types=",".join(chosen), limit=7)
            self.assertEqual(got, [e for e in everything if e["type"] in chosen], chosen)

    def test_account_filter_selects_exactly_its_changes(self):
        default = self.all_events()
        for account_id in self.accounts[1:3]:
            got = self.all_events(account=account_id, limit=5)
            self.assertEqual(got, [e for e in default if touches(e, account_id)])
            self.assertTrue(got)
        self.assertEqual(self.all_events(account="nobody:here"), [])

    def test_small_pages_give_the_same_sequence(self):
        self.assertEqual(self.all_events(limit=3), self.all_events(limit=1000))

    def test_bad_queries_are_400_with_their_field(self):
        for query, field in ((dict(types="hold.created,nope"), "/types"),
                             (dict(types=""), "/types"), (dict(limit=0), "/limit"),
                             (dict(limit=1001), "/limit"), (dict(wait_ms=30001), "/wait_ms"),
                             (dict(after=-1), "/after"), (dict(account="x" * 65), "/account")):
            r = self.client.get(events_path(**query))
            self.assert_problem(r, 400, "invalid_field", field=field)

    def test_long_poll_wakes_on_the_next_write(self):
        tail = self.events_page()["durable_seq"]
        answer = {}

        def poll():
            client = self.server.client()
            started = time.monotonic()
            answer["body"] = self.events_page(client=client, after=tail, wait_ms=5000)
            answer["at"] = time.monotonic()
            answer["started"] = started
            client.close()

        waiter = threading.Thread(target=poll)
        waiter.start()
        time.sleep(0.3)
        written = time.monotonic()
        funded = self.fund(self.accounts[1], 1)
        waiter.join(10 * SLOW)
        self.assertFalse(waiter.is_alive())
        self.assertLess(answer["at"] - written, 1.0 * SLOW, "the long-poll woke late")
        self.assertGreater(answer["at"] - answer["started"], 0.25, "it did not wait")
        events = answer["body"]["events"]
        self.assertEqual([e["transfer"]["id"] for e in events], [funded["transfer"]["id"]])
        self.assertEqual(events[0]["seq"], funded["transfer"]["seq"])

    def test_long_poll_returns_empty_after_its_wait(self):
        tail = self.events_page()["durable_seq"]
        started = time.monotonic()
        body = self.events_page(after=tail, wait_ms=600, types="hold.voided",
                                account="nobody:here")
        elapsed = time.monotonic() - started
        self.assertEqual(body["events"], [])
        self.assertGreaterEqual(body["next_after"], tail)
        self.assertGreaterEqual(elapsed, 0.55)
        self.assertLess(elapsed, 3 * SLOW)

    def test_stream_gives_the_feed_and_keep_alives(self):
        everything = self.all_events(types=",".join(TYPES))
        last = everything[-1]["seq"]
        stream = Stream(self.server.port, events_path(types=",".join(TYPES)))
        try:
            self.assertEqual(stream.response.status, 200)
            self.assertEqual(stream.response.getheader("Content-Type"), "text/event-stream")
            self.assertEqual(stream.response.getheader("Cache-Control"), "no-cache")
            self.assertEqual(stream.events_until(last), everything)
            comments = 0
            started = time.monotonic()
            for kind, frame in stream.frames():
                self.assertEqual(kind, "comment", frame)  # nothing new was written
                self.assertEqual(frame, "keep-alive")
                comments += 1
                if comments == 3:
                    break
            self.assertLess(time.monotonic() - started, 3 * SLOW)
        finally:
            stream.close()

    def test_stream_sends_a_write_made_while_it_waits(self):
        tail = self.events_page()["durable_seq"]
        stream = Stream(self.server.port, events_path(after=tail))
        try:
            funded = self.fund(self.accounts[2], 1)
            got = stream.events_until(funded["transfer"]["seq"])
            self.assertEqual([e["transfer"]["id"] for e in got], [funded["transfer"]["id"]])
        finally:
            stream.close()

    def test_streams_are_filled_at_a_lower_priority(self):
        # The filler thread reads and encodes every stream's frames at nice 10, below the
        # writer's priority (a server started at a nice above 10 keeps it for all its threads).
        [writer] = thread_nices(self.server.pid, "coffer-writer")
        self.assertEqual(thread_nices(self.server.pid, "coffer-feed"), [max(10, writer)])

    def test_stream_bad_last_event_id_is_400(self):
        stream = Stream(self.server.port, last_event_id="seven")
        try:
            self.assertEqual(stream.response.status, 400)
            body = json.loads(stream.response.read())
            self.assertEqual((body["code"], body["field"]), ("invalid_field", "Last-Event-ID"))
        finally:
            stream.close()

    def test_metrics_count_the_feed(self):
        self.all_events()
        text = self.client.get("/metrics").body.decode()
        read = int(re.search(r"^coffer_feed_events_read_total (\d+)$", text, re.M).group(1))
        self.assertGreater(read, 0)
        for gauge in ("coffer_feed_streams", "coffer_feed_waiters",
                      "coffer_feed_streams_cut_total"):
            self.assertRegex(text, r"(?m)^%s \d+$" % gauge)


class Resumption(ServerTestCase, FeedReading):
    """A run of about 200 changes: a stream resumed from each of its ids gives the suffix."""

    server_options = {"args": ["--sse-keepalive-ms", "200"]}

    @classmethod
    def prepare(cls):
        test = cls("test_every_last_event_id_resumes_with_the_suffix")
        a = test.create_account(account_id=uid("a"), min_balance=None)["id"]
        b = test.create_account(account_id=uid("b"))["id"]
        batch = [{"id": uid("r"), "from": a, "to": b, "amount": 1 + i} for i in range(100)]
        test.transfer({"transfers": batch})
        rejected = [{"id": uid("x"), "from": b, "to": a, "amount": 10 ** 9} for _ in range(40)]
        test.transfer({"transfers": rejected})
        for i in range(60):
            test.transfer({"id": uid("s"), "from": a, "to": b, "amount": 7})

    def test_every_last_event_id_resumes_with_the_suffix(self):
        types = ",".join(TYPES)
        run = self.all_events(types=types)
        self.assertGreaterEqual(len(run), 200)
        last = run[-1]["seq"]
        stream = Stream(self.server.port, events_path(types=types))
        try:
            self.assertEqual(stream.events_until(last), run)
        finally:
            stream.close()
        for index, change in enumerate(run):
            resumed = Stream(self.server.port, events_path(types=types),
                             last_event_id=change["seq"])
            try:
                until = last if change["seq"] < last else None  # the last: nothing follows
                self.assertEqual(resumed.events_until(until), run[index + 1:], change["seq"])
            finally:
                resumed.close()

    def test_after_without_last_event_id_and_the_header_wins(self):
        run = self.all_events()
        middle = run[len(run) // 2]["seq"]
        last = run[-1]["seq"]
        for path, header in ((events_path(after=middle), None),
                             (events_path(after=1), middle)):
            stream = Stream(self.server.port, path, last_event_id=header)
            try:
                self.assertEqual(stream.events_until(last), [e for e in run if e["seq"] > middle])
            finally:
                stream.close()


def metric(client, name):
    text = client.get("/metrics").body.decode()
    found = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    return int(found.group(1)) if found else None


class SlowConsumer(ServerTestCase, FeedReading):
    """A stream whose client reads nothing is cut off after --sse-stall-seconds."""

    server_options = {"args": ["--sse-stall-seconds", "1", "--sse-keepalive-ms", "300"]}

    def test_a_client_that_reads_nothing_is_cut_off(self):
        a = self.create_account(account_id=uid("a"), min_balance=None)["id"]
        b = self.create_account(account_id=uid("b"))["id"]
        metadata = {"note": "x" * 300}
        for _ in range(3):  # 18,000 changes of ~700 bytes: far more than socket buffers hold
            batch = [{"id": uid("t"), "from": a, "to": b, "amount": 1, "metadata": metadata}
                     for _ in range(6000)]
            self.assertEqual(self.transfer({"transfers": batch}).status, 200)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", self.server.port))
        try:
            sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Accept: text/event-stream\r\n\r\n")
            deadline = time.monotonic() + 15 * SLOW
            while metric(self.client, "coffer_feed_streams_cut_total") != 1:
                self.assertLess(time.monotonic(), deadline, "the stream was never cut off")
                started = time.monotonic()
                self.assertEqual(self.client.get("/healthz").status, 200)
                self.assertLess(time.monotonic() - started, 0.5 * SLOW, "the server stalled")
                time.sleep(0.2)
            self.assertEqual(metric(self.client, "coffer_feed_streams"), 0)
            sock.settimeout(10 * SLOW)
            received = 0
            try:
                while True:  # what was sent before the cut, then the end
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        break
                    received += len(chunk)
            except ConnectionResetError:
                pass
            self.assertLess(received, 18000 * 700, "the whole feed was sent")
        finally:
            sock.close()
        self.assertIn("cut off", self.server.stderr())
        # A stream that reads keeps going.
        stream = Stream(self.server.port, events_path(limit=1))
        try:
            self.assertEqual(len(stream.events_until(3)), 3)
        finally:
            stream.close()


class Scopes(ServerTestCase, FeedReading):
    """With --tokens: the read scope reads the feed; a token limited to account prefixes only
    with account= inside them."""

    tokens = (("app", "write", None), ("viewer", "read", None), ("shop", "read", "shop:"))

    def call(self, name, path, body=None):
        headers = {"Authorization": "Bearer " + self.secrets[name]} if name else {}
        method = "POST" if body is not None else "GET"
        return self.client.request(method, path, body=body, headers=headers)

    def test_tokens_and_prefixes(self):
        for account in ("shop:1", "other:1"):
            r = self.call("app", "/v1/accounts", {"id": account, "currency": "KRW"})
            self.assertEqual(r.status, 201, r)
        self.assert_problem(self.call(None, events_path()), 401, "unauthorized")
        everything = self.call("viewer", events_path()).json()["events"]
        self.assertEqual([e["account"]["id"] for e in everything], ["shop:1", "other:1"])
        self.assert_problem(self.call("shop", events_path()), 403, "forbidden")
        self.assert_problem(self.call("shop", events_path(account="other:1")), 403, "forbidden")
        own = self.call("shop", events_path(account="shop:1"))
        self.assertEqual(own.status, 200, own)
        self.assertEqual([e["account"]["id"] for e in own.json()["events"]], ["shop:1"])
        stream = Stream(self.server.port, events_path(),
                        headers={"Authorization": "Bearer " + self.secrets["shop"]})
        try:
            self.assertEqual(stream.response.status, 403)
        finally:
            stream.close()


if __name__ == "__main__":
    unittest.main()
