"""Malformed input: broken JSON, wrong types, out-of-range numbers, bad UTF-8, missing and unknown
fields, oversized bodies and batches, unknown routes and methods, slow and idle clients. After all
of it the server is healthy and the ledger unchanged (test_zz_* runs last)."""

import http.client
import json
import select
import socket
import threading
import time
import unittest

from harness import (BATCH_MAX, BODY_MAX, SLOW, Response, ServerTestCase, raw_request,
                     read_response, record_exchange, uid)

TIMEOUT = 2  # the server's --timeout, seconds


class Malformed(ServerTestCase):

    server_options = {"timeout": TIMEOUT}

    @classmethod
    def prepare(cls):
        self = cls("test_zz_healthy_and_unchanged")
        cls.victim = self.funded_account(1000)
        cls.sink = self.create_account()["id"]
        cls.hold_id = uid("hold")
        r = self.transfer({"id": cls.hold_id, "from": cls.victim, "to": cls.sink, "amount": 100,
                           "hold": {"timeout_ms": 3600000}})
        assert r.status == 201, r
        cls.before = {a: self.get_account(a) for a in (cls.victim, cls.sink)}
        cls.before_history = {a: self.all_history(a) for a in (cls.victim, cls.sink)}

    def body(self, **change):
        b = {"id": uid("m"), "from": self.victim, "to": self.sink, "amount": 5}
        b.update(change)
        return b

    def send(self, path, data, headers=None):
        return self.client.request("POST", path, body=data, headers=headers)

    # -- broken JSON

    def test_broken_json(self):
        bad = [b'{"id":', b"", b"{", b"not json", b'{"id": "x",}', b"{'id': 'x'}",
               b'{"id": "x"} trailing', b"[1, 2", b"\x00", b'{"id" "x"}', b'{"amount": 01}',
               b'{"amount": NaN}', b'{"amount": Infinity}', b'{"amount": +5}', b'{"a": "\\x"}',
               b'\xef\xbb\xbf{"id": "x"}'[:3]]
        for path in ("/v1/transfers", "/v1/accounts", "/v1/holds/%s/post" % self.hold_id,
                     "/v1/holds/%s/void" % self.hold_id):
            for data in bad:
                with self.subTest(path=path, data=data):
                    r = self.send(path, data)
                    if data == b"" and "/v1/holds/" in path:
                        # post and void may take their id from Idempotency-Key alone, so an
                        # empty body may read as {} and miss /id
                        self.assertEqual(r.status, 400, r)
                        if r.json().get("code") == "invalid_field":
                            self.assert_problem(r, 400, "invalid_field", field="/id")
                            continue
                    self.assert_problem(r, 400, "invalid_json")

    def test_not_an_object(self):
        # docs/api.md: a body must be a JSON object (an empty body, or an array, is invalid_json)
        for path in ("/v1/transfers", "/v1/accounts"):
            for data in (b"[]", b"1", b'"text"', b"null", b"true", b"[{}]"):
                with self.subTest(path=path, data=data):
                    self.assert_problem(self.send(path, data), 400, "invalid_json")

    def test_duplicate_keys(self):
        for path, data in (
                ("/v1/transfers", '{"id": "%s", "from": "%s", "to": "%s", "amount": 1, "amount": 2}'
                 % (uid("dk"), self.victim, self.sink)),
                ("/v1/transfers", '{"id": "%s", "id": "%s", "from": "%s", "to": "%s", "amount": 1}'
                 % (uid("dk"), uid("dk"), self.victim, self.sink)),
                ("/v1/accounts", '{"id": "%s", "currency": "KRW", "currency": "USD"}' % uid("dk")),
                ("/v1/transfers", '{"id": "%s", "from": "%s", "to": "%s", "amount": 1, '
                 '"hold": {"timeout_ms": 1000, "timeout_ms": 2000}}'
                 % (uid("dk"), self.victim, self.sink))):
            with self.subTest(data=data):
                r = self.send(path, data)
                self.assertEqual(r.status, 400, r)
                self.assertIn(r.json().get("code"), ("invalid_json", "invalid_field"), r)
                self.assert_problem(r, 400, r.json()["code"])

    # -- types, ranges, floats

    def test_wrong_types(self):
        cases = [
            ({"amount": "100"}, "/amount"), ({"amount": True}, "/amount"),
            ({"amount": None}, "/amount"), ({"amount": [5]}, "/amount"),
            ({"from": 42}, "/from"), ({"to": ["x"]}, "/to"), ({"id": 7}, "/id"),
            ({"id": None}, "/id"), ({"hold": 5}, "/hold"), ({"hold": {"timeout_ms": "5"}},
                                                             "/hold/timeout_ms"),
            ({"hold": {}}, "/hold/timeout_ms"),
            ({"expect": {"from_version": "2"}}, "/expect/from_version"), ({"expect": 3}, "/expect"),
            ({"up_to": "yes"}, "/up_to"), ({"up_to": 1}, "/up_to"),
            ({"metadata": [1]}, "/metadata"),
        ]
        for change, field in cases:
            with self.subTest(change=change):
                self.assert_problem(self.send("/v1/transfers", self.body(**change)), 400,
                                    "invalid_field", field=field)
        account_cases = [({"currency": 5}, "/currency"), ({"min_balance": "0"}, "/min_balance"),
                         ({"max_balance": True}, "/max_balance"), ({"id": None}, "/id"),
                         ({"metadata": 5}, "/metadata")]
        for change, field in account_cases:
            body = {"id": uid("ma"), "currency": "KRW"}
            body.update(change)
            with self.subTest(change=change):
                self.assert_problem(self.send("/v1/accounts", body), 400, "invalid_field",
                                    field=field)
        batch_cases = [({"atomic": "yes", "transfers": [self.body()]}, "/atomic"),
                       ({"atomic": True, "transfers": {}}, "/transfers"),
                       ({"atomic": True, "transfers": [5]}, "/transfers/0"),
                       ({"atomic": False, "transfers": [self.body(), self.body(amount="1")]},
                        "/transfers/1/amount")]
        for body, field in batch_cases:
            with self.subTest(batch=field):
                r = self.send("/v1/transfers", body)
                self.assert_batch_invalid(r, field)
        self.assert_problem(self.send("/v1/accounts", {"accounts": 5}), 400, "invalid_field",
                            field="/accounts")
        self.assert_problem(self.send("/v1/holds/%s/post" % self.hold_id,
                                      {"id": uid(), "amount": "1"}), 400, "invalid_field",
                            field="/amount")

    def assert_batch_invalid(self, r, field):
        """A batch with an invalid item: a 400 problem, or 200 with that item's invalid_field."""
        if r.status == 200:
            results = r.json()["results"]
            bad = [x for x in results if x["code"] == "invalid_field"]
            self.assertEqual(len(bad), 1, results)
            self.assert_problem_body(bad[0]["problem"], 400, "invalid_field", field=field)
        else:
            self.assert_problem(r, 400, "invalid_field", field=field)

    def test_negative_and_out_of_range_numbers(self):
        cases = [
            ({"amount": -1}, "/amount"),
            ({"amount": -(2**63)}, "/amount"),
            ({"hold": {"timeout_ms": -1}}, "/hold/timeout_ms"),
            ({"hold": {"timeout_ms": 2**63 - 1}}, "/hold/timeout_ms"),
            ({"expect": {"from_version": -1}}, "/expect/from_version"),
        ]
        for change, field in cases:
            with self.subTest(change=change):
                self.assert_problem(self.send("/v1/transfers", self.body(**change)), 400,
                                    "invalid_field", field=field)
        for change, field in (({"min_balance": 2**63 - 1}, "/min_balance"),
                              ({"max_balance": -(2**63)}, "/max_balance")):
            body = {"id": uid("ma"), "currency": "KRW"}
            body.update(change)
            with self.subTest(change=change):
                self.assert_problem(self.send("/v1/accounts", body), 400, "invalid_field",
                                    field=field)
        self.assert_problem(self.send("/v1/holds/%s/post" % self.hold_id,
                                      {"id": uid(), "amount": -(2**63)}), 400, "invalid_field",
                            field="/amount")
        # an amount of INT64_MAX is well-formed: refused for the balance, not the shape
        r = self.send("/v1/transfers", self.body(amount=2**63 - 1))
        self.assert_problem(r, 409, "insufficient_balance")

    def test_valid_json_beyond_int64_is_invalid_field(self):
        # These bodies are valid JSON (RFC 8259 puts no limit on numbers, and \u0000 is a legal
        # escape); what is wrong is a field's range or content: 400 invalid_field naming the
        # field, not invalid_json, and never a wrapped value.
        cases = [
            ("/v1/transfers", self.body(amount=2**63), "/amount"),
            ("/v1/transfers", self.body(amount=2**64), "/amount"),
            ("/v1/transfers", self.body(amount=10**30), "/amount"),
            ("/v1/transfers", self.body(amount=-(2**63) - 1), "/amount"),
            ("/v1/transfers", self.body(hold={"timeout_ms": 2**64}), "/hold/timeout_ms"),
            ("/v1/transfers", self.body(expect={"to_version": 2**64}), "/expect/to_version"),
            ("/v1/accounts", {"id": uid("ma"), "currency": "KRW", "min_balance": -(2**63) - 1},
             "/min_balance"),
            ("/v1/accounts", {"id": uid("ma"), "currency": "KRW", "max_balance": 2**63},
             "/max_balance"),
            ("/v1/accounts", {"id": uid("ma"), "currency": "KRW", "min_balance": -(10**40)},
             "/min_balance"),
            ("/v1/holds/%s/post" % self.hold_id, {"id": uid(), "amount": 2**63}, "/amount"),
            ("/v1/transfers", ('{"id": "%s", "from": "%s", "to": "%s", "amount": 1e400}'
                               % (uid("f"), self.victim, self.sink)), "/amount"),
            ("/v1/transfers", self.body(id="a\u0000b"), "/id"),
            ("/v1/accounts", {"id": "a\u0000b", "currency": "KRW"}, "/id"),
        ]
        wrong = []
        for path, body, field in cases:
            r = self.send(path, body)
            self.assertEqual(r.status, 400, r)  # never accepted, never a wrap
            p = r.json()
            if (p.get("code"), p.get("field")) != ("invalid_field", field):
                wrong.append("POST %s with %s out of range: got %s (field %s), detail %r"
                             % (path, field, p.get("code"), p.get("field"), p.get("detail")))
        if wrong:
            self.fail("%d of %d valid JSON bodies not answered invalid_field:\n%s"
                      % (len(wrong), len(cases), "\n".join(wrong)))

    def test_floats_are_not_amounts(self):
        for raw in ("1.5", "100.0", "1e2", "1E2", "-0.0", "5e-1", "0.0", "2.5e3"):
            data = ('{"id": "%s", "from": "%s", "to": "%s", "amount": %s}'
                    % (uid("f"), self.victim, self.sink, raw)).encode()
            with self.subTest(amount=raw):
                self.assert_problem(self.send("/v1/transfers", data), 400, "invalid_field",
                                    field="/amount")
        data = ('{"id": "%s", "from": "%s", "to": "%s", "amount": 5, '
                '"hold": {"timeout_ms": 1000.0}}' % (uid("f"), self.victim, self.sink)).encode()
        self.assert_problem(self.send("/v1/transfers", data), 400, "invalid_field",
                            field="/hold/timeout_ms")
        data = ('{"id": "%s", "currency": "KRW", "min_balance": -10.5}' % uid("f")).encode()
        self.assert_problem(self.send("/v1/accounts", data), 400, "invalid_field",
                            field="/min_balance")

    # -- strings and encodings

    def test_bad_utf8_and_bad_strings(self):
        template = ('{"id": "%s", "from": "%s", "to": "%s", "amount": 5, "metadata": {"note": "@"}}'
                    % (uid("u"), self.victim, self.sink)).encode()
        for bad in (b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
                    b"abc\xe2\x82"):
            with self.subTest(bytes=bad):
                r = self.send("/v1/transfers", template.replace(b"@", bad))
                self.assertEqual(r.status, 400, r)
                self.assertIn(r.json().get("code"), ("invalid_json", "invalid_field"), r)
                self.assert_problem(r, 400, r.json()["code"])
        r = self.send("/v1/transfers", b'{"id": "\xff\xfe", "from": "%s", "to": "%s", "amount": 5}'
                      % (self.victim.encode(), self.sink.encode()))
        self.assertEqual(r.status, 400, r)
        self.assertIn(r.json().get("code"), ("invalid_json", "invalid_field"), r)
        # a lone surrogate escape is not a character
        r = self.send("/v1/transfers", template.replace(b"@", b"\\ud800"))
        self.assertEqual(r.status, 400, r)
        # valid JSON, invalid ids
        for bad_id in ("\u00e9t\u00e9", "tab\there", "x\ny", "a\\b", "\"q\""):
            with self.subTest(id=bad_id):
                self.assert_problem(self.send("/v1/transfers", self.body(id=bad_id)), 400,
                                    "invalid_field", field="/id")
                self.assert_problem(self.send("/v1/accounts", {"id": bad_id, "currency": "KRW"}),
                                    400, "invalid_field", field="/id")
        # valid UTF-8 in metadata is stored and returned as given
        meta = {"name": "\u00e9 \ud55c\uad6d\uc5b4 \U0001f600", "q": "a\"b\\c\u0001"}
        a = self.create_account(metadata=meta)
        self.assertEqual(a["metadata"], meta)
        self.assertEqual(self.get_account(a["id"])["metadata"], meta)

    def test_missing_fields(self):
        for missing, field in (("from", "/from"), ("to", "/to"), ("amount", "/amount"),
                               ("id", "/id")):
            body = self.body()
            del body[missing]
            with self.subTest(missing=missing):
                self.assert_problem(self.send("/v1/transfers", body), 400, "invalid_field",
                                    field=field)
        self.assert_problem(self.send("/v1/accounts", {"id": uid()}), 400, "invalid_field",
                            field="/currency")
        self.assert_problem(self.send("/v1/accounts", {"currency": "KRW"}), 400, "invalid_field",
                            field="/id")
        self.assert_problem(self.send("/v1/accounts", {}), 400, "invalid_field")
        self.assert_problem(self.send("/v1/transfers", {}), 400, "invalid_field")
        # docs/api.md: a value of the wrong JSON type (null where a hold id belongs) makes the
        # batch malformed, one 400 for the whole request
        r = self.send("/v1/transfers", {"atomic": True, "transfers": [{"id": uid(), "post": None}]})
        self.assert_problem(r, 400, "invalid_field", field="/transfers/0/post")

    def test_unknown_fields_are_rejected(self):
        cases = [
            ("/v1/transfers", self.body(amout=5), "/amout"),
            ("/v1/transfers", self.body(hold={"timeout_ms": 1000, "x": 1}), "/hold/x"),
            ("/v1/transfers", self.body(expect={"from_version": 2, "typo": 1}), "/expect/typo"),
            ("/v1/transfers", self.body(post=self.hold_id), None),
            ("/v1/accounts", {"id": uid(), "currency": "KRW", "colour": "red"}, "/colour"),
            ("/v1/accounts", {"accounts": [], "extra": 1}, None),
            ("/v1/holds/%s/post" % self.hold_id, {"id": uid(), "amt": 1}, "/amt"),
            ("/v1/holds/%s/void" % self.hold_id, {"id": uid(), "amount": 1}, None),
        ]
        for path, body, field in cases:
            with self.subTest(path=path, body=body):
                r = self.send(path, body)
                self.assert_problem(r, 400, "invalid_field", field=field)
        r = self.send("/v1/transfers", {"atomik": True, "transfers": [self.body()]})
        self.assert_problem(r, 400, "invalid_field", field="/atomik")
        # an unknown field in any item makes the whole batch one 400
        for atomic in (True, False):
            r = self.send("/v1/transfers", {"atomic": atomic,
                                            "transfers": [self.body(), self.body(foo=1)]})
            self.assert_problem(r, 400, "invalid_field", field="/transfers/1/foo")
        # unknown keys inside metadata are the caller's business
        src = self.funded_account(10)
        r = self.send("/v1/transfers", {"id": uid(), "from": src, "to": self.create_account()["id"],
                                        "amount": 1, "metadata": {"anything": {"goes": 1}}})
        self.assert_created(r)

    def test_malformed_request_records_nothing(self):
        tid = uid("retry")
        self.assert_problem(self.send("/v1/transfers", {"id": tid, "from": self.victim,
                                                        "to": self.sink, "amount": "5"}),
                            400, "invalid_field", field="/amount")
        self.assert_problem(self.get_transfer(tid), 404, "transfer_not_found")
        # the same id can be used for a well-formed request; a zero-amount up-to moves nothing
        poor = self.create_account()["id"]
        first = self.send("/v1/transfers", {"id": tid, "from": poor, "to": self.sink,
                                            "amount": 5, "up_to": True})
        self.assertEqual(self.assert_created(first)["transfer"]["amount"], 0)
        self.assert_replay_of(self.send("/v1/transfers", {"id": tid, "from": poor, "to": self.sink,
                                                          "amount": 5, "up_to": True}), first)

    def test_bad_headers(self):
        for key in ("has space", "x" * 129, "caf\u00e9".encode().decode("latin-1")):
            with self.subTest(key=key):
                r = self.send("/v1/transfers", {"from": self.victim, "to": self.sink,
                                                "amount": 5}, headers={"Idempotency-Key": key})
                self.assert_problem(r, 400, "invalid_field", field="/id")

    # -- sizes

    def test_batch_too_large(self):
        items = [{"id": "big-%s-%d" % (uid(), i), "from": self.victim, "to": self.sink,
                  "amount": 1} for i in range(BATCH_MAX + 1)]
        for atomic in (True, False):
            with self.subTest(atomic=atomic):
                r = self.send("/v1/transfers", {"atomic": atomic, "transfers": items})
                self.assert_problem(r, 400, "batch_too_large")
        self.assert_problem(self.get_transfer(items[0]["id"]), 404, "transfer_not_found")
        accounts = [{"id": "bigacct-%s-%d" % (uid(), i), "currency": "KRW"}
                    for i in range(BATCH_MAX + 1)]
        self.assert_problem(self.send("/v1/accounts", {"accounts": accounts}), 400,
                            "batch_too_large")
        self.assertEqual(self.client.get("/v1/accounts/" + accounts[0]["id"]).status, 404)
        r = self.send("/v1/transfers", {"atomic": True, "transfers": []})
        self.assert_problem(r, 400, "invalid_field", field="/transfers")

    def test_largest_batch_is_accepted(self):
        src = self.funded_account(BATCH_MAX)
        dst = self.create_account()["id"]
        prefix = uid("max")
        items = [{"id": "%s-%d" % (prefix, i), "from": src, "to": dst, "amount": 1}
                 for i in range(BATCH_MAX)]
        r = self.send("/v1/transfers", {"atomic": True, "transfers": items})
        self.assertEqual(r.status, 200, r)
        results = r.json()["results"]
        self.assertEqual(len(results), BATCH_MAX)
        self.assertTrue(all(x["code"] == "created" for x in results))
        self.assertEqual(self.get_account(dst)["balance"], BATCH_MAX)

    def test_body_too_large(self):
        # Content-Length over the limit, body streamed: 413 body_too_large
        status, headers, body = self.send_large(BODY_MAX + 1)
        self.assertEqual(status, 413, body[:300])
        self.check_raw_problem(headers, body, 413, "body_too_large")
        # a huge Content-Length and no body: answered without waiting for it
        started = time.monotonic()
        reply = raw_request(self.server.port, (
            "POST /v1/transfers HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000000000000\r\n\r\n").encode(), timeout=10)
        self.assertIsNotNone(reply, "closed without a response")
        self.assertEqual(reply[0], 413, reply)
        self.check_raw_problem(reply[1], reply[2], 413, "body_too_large")
        self.assertLess(time.monotonic() - started, TIMEOUT + 1)
        # chunked, growing past the limit
        status, headers, body = self.send_large(BODY_MAX + 65536, chunked=True)
        self.assertEqual(status, 413, body[:300])
        self.check_raw_problem(headers, body, 413, "body_too_large")
        # exactly the limit is fine (valid JSON padded with spaces)
        account_id = uid("edge")
        doc = json.dumps({"id": account_id, "currency": "KRW"}).encode()
        data = doc[:-1] + b" " * (BODY_MAX - len(doc)) + b"}"
        self.assertEqual(len(data), BODY_MAX)
        r = self.send("/v1/accounts", data)
        self.assertEqual(self.assert_created(r)["id"], account_id)

    def test_body_too_large_read_by_http_client(self):
        # Python's http.client (like Node's fetch) sends the whole body before it reads: the
        # server reads and drops the rest of the upload, then answers 413 and closes, so the
        # client sees the problem, not a reset. Once with Content-Length, once chunked.
        payload = b'{"id": "' + b"a" * (5 << 20) + b'"}'
        for chunked in (False, True):
            with self.subTest(chunked=chunked):
                connection = http.client.HTTPConnection("127.0.0.1", self.server.port,
                                                        timeout=30 * SLOW)
                try:
                    body = payload
                    if chunked:  # an iterable without Content-Length goes chunked
                        body = (payload[i:i + 65536] for i in range(0, len(payload), 65536))
                    connection.request("POST", "/v1/transfers", body=body,
                                       headers={"Content-Type": "application/json"})
                    response = connection.getresponse()
                    text = response.read()
                finally:
                    connection.close()
                record_exchange("POST", "/v1/transfers", {"Content-Type": "application/json"},
                                None, Response(response.status, response.reason, response.msg,
                                               text, 0))  # for the spec check
                self.assertEqual(response.status, 413, text[:300])
                self.assertEqual(response.getheader("Connection"), "close")
                headers = {k.lower(): v for k, v in response.getheaders()}
                self.check_raw_problem(headers, text, 413, "body_too_large")
        self.assertEqual(self.client.get("/healthz").status, 200)

    def send_large(self, size, chunked=False):
        """POSTs `size` bytes of JSON-ish body over a raw socket; returns the response."""
        head = "POST /v1/transfers HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        head += ("Transfer-Encoding: chunked\r\n" if chunked else "Content-Length: %d\r\n" % size)
        head += "\r\n"
        chunk = b'{"id": "' + b"a" * 65000
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=20 * SLOW) as s:
            s.sendall(head.encode())
            sent = 0
            while sent < size:
                readable, _, _ = select.select([s], [], [], 0)
                if readable:
                    break  # the server answered early
                piece = chunk[:size - sent]
                try:
                    if chunked:
                        s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                    else:
                        s.sendall(piece)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(piece)
            else:
                if chunked:
                    try:
                        s.sendall(b"0\r\n\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        pass
            reply = read_response(s)
        self.assertIsNotNone(reply, "the server closed the connection without a 413")
        return reply

    def check_raw_problem(self, headers, body, status, code):
        self.assertTrue(headers.get("x-request-id"), headers)
        self.assertEqual(headers.get("content-type", "").split(";")[0], "application/problem+json")
        self.assert_problem_body(json.loads(body), status, code)

    # -- routes and methods

    def test_unknown_routes(self):
        for method, path in (("GET", "/v1/nope"), ("GET", "/v2/accounts"), ("GET", "/"),
                             ("GET", "/v1/accountsx/%s" % self.victim),
                             ("POST", "/v1/holds/%s/capture" % self.hold_id),
                             ("GET", "/v1"), ("GET", "/metricsx"), ("GET", "/v1/holds/x/y/z")):
            with self.subTest(method=method, path=path):
                r = self.client.request(method, path, body=b"{}" if method == "POST" else None)
                self.assert_problem(r, 404, "route_not_found")

    def test_wrong_methods(self):
        cases = [
            ("DELETE", "/v1/accounts/" + self.victim, "GET"),
            ("PUT", "/v1/accounts", "POST"),
            ("GET", "/v1/accounts", "POST"),
            ("GET", "/v1/transfers", "POST"),
            ("DELETE", "/v1/transfers/" + self.hold_id, "GET"),
            ("POST", "/v1/transfers/" + self.hold_id, "GET"),
            ("POST", "/v1/verify", "GET"),
            ("POST", "/healthz", "GET"),
            ("POST", "/readyz", "GET"),
            ("POST", "/metrics", "GET"),
            ("GET", "/v1/holds/%s/post" % self.hold_id, "POST"),
            ("DELETE", "/v1/holds/%s/void" % self.hold_id, "POST"),
            ("PATCH", "/v1/holds", "GET"),
            ("POST", "/v1/accounts/%s/history" % self.victim, "GET"),
        ]
        for method, path, allowed in cases:
            with self.subTest(method=method, path=path):
                r = self.client.request(method, path,
                                        body=b"{}" if method in ("POST", "PUT", "PATCH") else None)
                self.assert_problem(r, 405, "method_not_allowed")
                allow = [m.strip().upper() for m in (r.header("Allow") or "").split(",")]
                self.assertIn(allowed, allow, "Allow: %r" % r.header("Allow"))
                self.assertNotIn(method, allow)
        self.assertEqual(self.get_transfer(self.hold_id).json()["state"], "pending")

    def test_garbage_http(self):
        for data in (b"HELLO\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                     b"POST /v1/transfers HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                     b"POST /v1/transfers HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                     b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
                     b"GET /" + b"a" * 200000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                     b"GET /healthz HTTP/1.1\r\n" + b"X-H: v\r\n" * 20000 + b"\r\n",
                     b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64):
            with self.subTest(data=data[:40]):
                try:
                    reply = raw_request(self.server.port, data, timeout=TIMEOUT + 5)
                except (socket.timeout, ConnectionResetError):
                    reply = None
                if reply is not None and reply[0]:
                    # a client error, or 505 for the unknown protocol version
                    self.assertTrue(400 <= reply[0] < 500 or reply[0] == 505, reply)
                self.assertEqual(self.client.get("/healthz").status, 200)

    # -- slow and idle clients

    def test_idle_client_is_disconnected(self):
        # Sends part of a request line, then nothing: closed after about --timeout seconds.
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=20) as s:
            s.sendall(b"GET /hea")
            closed_after = self.wait_closed(s, limit=TIMEOUT * 3 + 2)
        self.assertIsNotNone(closed_after, "an idle connection stayed open")
        self.assertGreaterEqual(closed_after, TIMEOUT * 0.5)

    def test_slow_headers_gap_longer_than_timeout(self):
        # One byte, then a gap longer than the timeout, then the next: the server has closed.
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=20) as s:
            request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            s.sendall(request[:1])
            time.sleep(TIMEOUT + 1.5)
            try:
                for byte in request[1:]:
                    s.sendall(bytes([byte]))
                reply = read_response(s)
            except (BrokenPipeError, ConnectionResetError):
                reply = None
        # closed (maybe with a 408 or 400 first), never served
        if reply is not None:
            self.assertIn(reply[0], (400, 408), "answered a request whose bytes came slower "
                          "than the timeout: %r" % (reply,))

    def test_slowloris_does_not_starve_others(self):
        # Several clients trickle headers one byte every 0.5 s (each gap under the timeout); the
        # whole header would take ~25 s. libmicrohttpd's timeout is an idle timeout, so they are
        # not cut off by time (docs/api.md, Limits: each holds one of --max-connections and at
        # most its header buffer); what must hold is that everyone else is served meanwhile and
        # that none of them is answered before its request is complete.
        request = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 30 + b"\r\n\r\n")
        limit = TIMEOUT * 4 + 2
        slow_results = [None] * 8
        stop = threading.Event()

        def slow(i):
            with socket.create_connection(("127.0.0.1", self.server.port), timeout=20) as s:
                started = time.monotonic()
                for byte in request:
                    if time.monotonic() - started > limit:
                        slow_results[i] = ("still open", None)
                        return
                    try:
                        s.sendall(bytes([byte]))
                    except (BrokenPipeError, ConnectionResetError):
                        slow_results[i] = ("closed", time.monotonic() - started)
                        return
                    readable, _, _ = select.select([s], [], [], 0.5)
                    if readable:
                        try:
                            data = s.recv(65536)
                        except ConnectionResetError:
                            data = b""
                        if not data:
                            slow_results[i] = ("closed", time.monotonic() - started)
                            return
                        slow_results[i] = ("answered", data[:80])
                        return
                slow_results[i] = ("completed", None)

        threads = [threading.Thread(target=slow, args=(i,), daemon=True) for i in range(8)]
        for t in threads:
            t.start()
        # meanwhile, normal clients are served promptly
        served = []
        client = self.server.client()
        try:
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline and any(t.is_alive() for t in threads):
                r = client.get("/healthz")
                served.append((r.status, r.elapsed))
                time.sleep(0.2)
        finally:
            client.close()
        for t in threads:
            t.join(limit + 10)
        self.assertTrue(served)
        self.assertTrue(all(status == 200 for status, _ in served), served)
        self.assertLess(max(e for _, e in served), 1.0 * SLOW, "others were not served promptly")
        for result in slow_results:
            self.assertIsNotNone(result)
            self.assertIn(result[0], ("closed", "still open", "completed"),
                          "slow client answered before its request was complete: %r" % (result,))

    def wait_closed(self, s, limit):
        started = time.monotonic()
        s.settimeout(0.2)
        while time.monotonic() - started < limit:
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return time.monotonic() - started
            if not data:
                return time.monotonic() - started
            # a 408 or 400 before closing is fine; keep reading until the close
        return None

    # -- last: nothing above changed the ledger or hurt the server

    def test_zz_healthy_and_unchanged(self):
        self.assertTrue(self.server.running(), "the server died")
        self.assertEqual(self.client.get("/healthz").json(), {"status": "ok"})
        self.assertEqual(self.client.get("/readyz").json(), {"status": "ready", "role": "standalone"})
        for account_id, before in self.before.items():
            self.assertEqual(self.get_account(account_id), before,
                             "malformed requests changed %s" % account_id)
            self.assertEqual(self.all_history(account_id), self.before_history[account_id])
        self.assertEqual(self.get_transfer(self.hold_id).json()["state"], "pending")
        self.verify_ok()


if __name__ == "__main__":
    unittest.main()
