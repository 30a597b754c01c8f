"""Security: bearer tokens (scopes, account prefixes, SIGHUP revocation, the CLI's and
`coffer bench`'s --token),
browsers (Origin, Host), HTTP framing that could smuggle a request (raw sockets), and clients that
would starve the others (per-address connection limit, body bytes in flight)."""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time
import unittest

from harness import (SLOW, Server, ServerTestCase, coffer_binary, issue_tokens, raw_request,
                     read_response, uid)


def coffer(*args, env=None):
    return subprocess.run([coffer_binary()] + list(args), capture_output=True, text=True,
                          timeout=30 * SLOW, env=env)


class Tokens(ServerTestCase):

    tokens = (("ops", "admin", None), ("app", "write", None), ("shop", "write", "shop:,fee:"),
              ("viewer", "read", None))

    def call(self, name, method, path, body=None):
        headers = {"Authorization": "Bearer " + self.secrets[name]} if name else {}
        return self.client.request(method, path, body=body, headers=headers)

    def test_the_file_holds_hashes_only_with_mode_0600(self):
        with open(self.tokens_path) as f:
            text = f.read()
        self.assertTrue(text.startswith("coffer-tokens 1\n"))
        for secret in self.secrets.values():
            self.assertNotIn(secret, text)
        self.assertEqual(stat.S_IMODE(os.stat(self.tokens_path).st_mode), 0o600)
        listed = json.loads(coffer("token", "list", "--file", self.tokens_path, "--json").stdout)
        self.assertEqual(sorted(t["name"] for t in listed["tokens"]),
                         ["app", "ops", "shop", "viewer"])

    def test_missing_or_invalid_token_is_401_with_www_authenticate(self):
        for headers in ({}, {"Authorization": "Bearer cft_" + "0" * 64},
                        {"Authorization": "Basic b3BzOm9wcw=="}):
            r = self.client.request("GET", "/v1/accounts/x", headers=headers)
            self.assert_problem(r, 401, "unauthorized")
            self.assertEqual(r.header("WWW-Authenticate"), 'Bearer realm="coffer"')
        r = self.client.post("/v1/accounts", {"id": uid("nobody"), "currency": "EUR"})
        self.assert_problem(r, 401, "unauthorized")

    def test_probes_are_open(self):
        self.assertEqual(self.client.get("/healthz").status, 200)
        self.assertEqual(self.client.get("/readyz").status, 200)

    def test_scopes(self):
        account = uid("s")
        self.assert_problem(self.call("viewer", "POST", "/v1/accounts",
                                      {"id": account, "currency": "EUR"}), 403, "forbidden")
        self.assertEqual(self.call("app", "POST", "/v1/accounts",
                                   {"id": account, "currency": "EUR"}).status, 201)
        self.assertEqual(self.call("viewer", "GET", "/v1/accounts/" + account).status, 200)
        for path in ("/metrics", "/v1/verify"):
            self.assert_problem(self.call("app", "GET", path), 403, "forbidden")
            self.assertEqual(self.call("ops", "GET", path).status, 200)

    def test_prefixes_refuse_a_batch_with_one_foreign_account_and_apply_nothing(self):
        mine, other = uid("shop:a"), uid("other:a")
        self.assertEqual(self.call("shop", "POST", "/v1/accounts",
                                   {"id": mine, "currency": "EUR"}).status, 201)
        self.assert_problem(self.call("shop", "POST", "/v1/accounts",
                                      {"id": other, "currency": "EUR"}), 403, "forbidden")
        self.assertEqual(self.call("app", "POST", "/v1/accounts",
                                   {"id": other, "currency": "EUR", "min_balance": None}).status,
                         201)
        first = uid("t")
        batch = {"atomic": False, "transfers": [
            {"id": first, "from": mine, "to": mine.replace("shop:", "fee:"), "amount": 1},
            {"id": uid("t"), "from": other, "to": mine, "amount": 5}]}
        self.assert_problem(self.call("shop", "POST", "/v1/transfers", batch), 403, "forbidden")
        self.assertEqual(self.call("ops", "GET", "/v1/transfers/" + first).status, 404)
        self.assertEqual(self.call("ops", "GET", "/v1/accounts/" + mine).json()["version"], 1)
        # Reads: the token's own accounts only; a transfer when one side is its own.
        self.assert_problem(self.call("shop", "GET", "/v1/accounts/" + other), 403, "forbidden")
        self.assert_problem(self.call("shop", "GET", "/v1/accounts/%s/history" % other), 403,
                            "forbidden")
        self.assert_problem(self.call("shop", "GET", "/v1/holds"), 403, "forbidden")
        self.assertEqual(self.call("shop", "GET", "/v1/holds?account=" + mine).status, 200)
        into_mine, elsewhere = uid("t"), uid("t")
        self.assertEqual(self.call("app", "POST", "/v1/transfers",
                                   {"id": into_mine, "from": other, "to": mine,
                                    "amount": 3}).status, 201)
        self.assertEqual(self.call("app", "POST", "/v1/accounts",
                                   {"id": elsewhere, "currency": "EUR"}).status, 201)
        outside = uid("t")
        self.assertEqual(self.call("app", "POST", "/v1/transfers",
                                   {"id": outside, "from": other, "to": elsewhere,
                                    "amount": 1}).status, 201)
        self.assertEqual(self.call("shop", "GET", "/v1/transfers/" + into_mine).status, 200)
        self.assert_problem(self.call("shop", "GET", "/v1/transfers/" + outside), 403,
                            "forbidden")
        # A hold's accounts are known only once applied: a prefix token may not post or void.
        self.assert_problem(self.call("shop", "POST", "/v1/holds/h/void", {"id": uid("v")}), 403,
                            "forbidden")

    def test_the_log_names_the_token_of_each_write(self):
        mine, other = uid("shop:n"), uid("other:n")
        self.assertEqual(self.call("shop", "POST", "/v1/accounts",
                                   {"id": mine, "currency": "EUR"}).status, 201)
        self.assertEqual(self.call("app", "POST", "/v1/accounts",
                                   {"id": other, "currency": "EUR", "min_balance": None}).status,
                         201)
        paid = uid("t")
        self.assertEqual(self.call("ops", "POST", "/v1/transfers",
                                   {"id": paid, "from": other, "to": mine, "amount": 4}).status,
                         201)
        # Acknowledged writes are durable: `coffer dump` reads them beside the running server.
        run = coffer("dump", self.server.data_dir)
        self.assertEqual(run.returncode, 0, run.stderr)
        lines = {line["id"]: line for line in map(json.loads, run.stdout.splitlines())}
        self.assertEqual(lines[mine]["submitted_by"], "shop")
        self.assertEqual(lines[other]["submitted_by"], "app")
        self.assertEqual(lines[paid]["submitted_by"], "ops")
        self.assertEqual(lines[paid]["outcome"]["amount"], 4)
        self.assertEqual(lines[paid]["outcome"]["to"]["balance"], 4)

    def test_the_cli_sends_the_token(self):
        account = uid("cli")
        self.assertEqual(self.call("app", "POST", "/v1/accounts",
                                   {"id": account, "currency": "EUR"}).status, 201)
        url = "http://127.0.0.1:%d" % self.server.port
        refused = coffer("--server", url, "account", "get", account)
        self.assertEqual(refused.returncode, 1, refused.stderr)
        given = coffer("--server", url, "--token", self.secrets["viewer"], "account", "get",
                       account)
        self.assertEqual(given.returncode, 0, given.stderr)
        env = dict(os.environ, COFFER_TOKEN=self.secrets["viewer"])
        from_env = coffer("--server", url, "account", "get", account, env=env)
        self.assertEqual(from_env.returncode, 0, from_env.stderr)

    def bench(self, *args, env=None):
        url = "http://127.0.0.1:%d" % self.server.port
        return coffer("bench", "--server", url, "--accounts", "10", "--duration", "1",
                      "--connections", "2", *args, env=env)

    def test_bench_sends_the_token_with_every_request(self):
        ran = self.bench("--token", self.secrets["app"])
        self.assertEqual(ran.returncode, 0, ran.stderr)
        result = json.loads(ran.stdout.splitlines()[-1])
        self.assertGreater(result["codes"]["created"], 0)
        self.assertEqual(result["codes"]["created"], result["transfers"])
        # /v1/verify takes the admin scope: a write token's run is reported unchecked.
        self.assertIsNone(result["verify_ok"])
        self.assertIn("/v1/verify not checked: the token may not call it (403 forbidden",
                      ran.stderr)
        env = dict(os.environ, COFFER_TOKEN=self.secrets["ops"])
        ran = self.bench(env=env)
        self.assertEqual(ran.returncode, 0, ran.stderr)
        self.assertIs(json.loads(ran.stdout.splitlines()[-1])["verify_ok"], True)

    def test_bench_without_a_usable_token_stops_at_setup(self):
        env = {k: v for k, v in os.environ.items() if k != "COFFER_TOKEN"}
        refused = self.bench(env=env)
        self.assertEqual(refused.returncode, 1, refused.stderr)
        self.assertIn("coffer bench: the server asks for a token (401 unauthorized): give one "
                      "with --token TOKEN or COFFER_TOKEN", refused.stderr)
        self.assertEqual(refused.stdout, "")
        refused = self.bench("--token", "cft_" + "0" * 64)
        self.assertEqual(refused.returncode, 1, refused.stderr)
        self.assertIn("does not accept the token given (401 unauthorized)", refused.stderr)
        refused = self.bench("--token", self.secrets["viewer"])
        self.assertEqual(refused.returncode, 1, refused.stderr)
        self.assertIn("(403 forbidden): it needs the write or admin scope", refused.stderr)

    def test_zz_sighup_revokes_and_a_bad_file_keeps_the_tokens(self):
        self.assertEqual(self.call("viewer", "GET", "/v1/holds").status, 200)
        run = coffer("token", "revoke", "--name", "viewer", "--file", self.tokens_path)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.server.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10 * SLOW
        while self.call("viewer", "GET", "/v1/holds").status != 401:
            self.assertLess(time.monotonic(), deadline, "the revoked token still works")
            time.sleep(0.05)
        with open(self.tokens_path) as f:
            good = f.read()
        with open(self.tokens_path, "w") as f:
            f.write("not a tokens file\n")
        self.server.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10 * SLOW
        while "keeping the tokens in force" not in self.server.stderr():
            self.assertLess(time.monotonic(), deadline, self.server.stderr())
            time.sleep(0.05)
        self.assertEqual(self.call("app", "GET", "/v1/holds").status, 200)
        with open(self.tokens_path, "w") as f:
            f.write(good)


class Browsers(ServerTestCase):

    server_options = {"args": ["--allow-origin", "https://good.example",
                               "--allow-host", "ledger.internal"]}

    def test_a_foreign_origin_is_refused_and_nothing_applied(self):
        account = uid("o")
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            r = self.client.post("/v1/accounts", {"id": account, "currency": "EUR"},
                                 headers={"Origin": "http://evil.example",
                                          "Content-Type": content_type})
            self.assert_problem(r, 403, "forbidden")
        self.assertEqual(self.client.get("/v1/accounts/" + account).status, 404)
        r = self.client.post("/v1/accounts", {"id": account, "currency": "EUR"},
                             headers={"Origin": "https://good.example"})
        self.assertEqual(r.status, 201, r)

    def test_a_foreign_host_is_refused_without_tokens(self):
        port = self.server.port
        for host, status in ((b"evil.example", 403), (b"evil.example:%d" % port, 403),
                             (b"localhost:%d" % port, 400), (b"127.0.0.1", 400),
                             (b"ledger.internal:%d" % port, 400)):
            request = (b"POST /v1/accounts HTTP/1.1\r\nHost: " + host +
                       b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            self.assertEqual(raw_request(port, request)[0], status, host)

    def test_curl_from_a_terminal_still_works(self):
        account = uid("c")
        run = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-d",
                              '{"id":"%s","currency":"EUR"}' % account,
                              "http://127.0.0.1:%d/v1/accounts" % self.server.port],
                             capture_output=True, text=True, timeout=30 * SLOW)
        self.assertEqual(run.stdout, "201", run.stderr)

    def test_a_non_loopback_listen_needs_tokens(self):
        run = coffer("serve", "--listen", "0.0.0.0:0", "--data", "/nonexistent/never-opened")
        self.assertEqual(run.returncode, 2)
        self.assertIn("--tokens", run.stderr)


class Framing(ServerTestCase):

    def smuggle(self, headers):
        """A request with `headers` whose body is a second request: answered 400, the
        connection closed, and the second request never run."""
        hidden = uid("smuggled")
        second = ('POST /v1/accounts HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s'
                  % (len('{"id":"%s","currency":"EUR"}' % hidden),
                     '{"id":"%s","currency":"EUR"}' % hidden))
        body = "0\r\n\r\n" + second
        data = ("POST /v1/accounts HTTP/1.1\r\nHost: localhost\r\n%s\r\n%s"
                % (headers.format(len(body)), body)).encode()
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10 * SLOW) as s:
            s.sendall(data)
            status, answer_headers, answer = read_response(s)
            self.assertEqual(status, 400, answer)
            self.assertEqual(answer_headers.get("content-type"), "application/problem+json")
            self.assertEqual(answer_headers.get("connection"), "close")
            s.settimeout(5 * SLOW)
            self.assertEqual(s.recv(65536), b"", "the connection stayed open")
        self.assertEqual(self.client.get("/v1/accounts/" + hidden).status, 404)

    def test_transfer_encoding_with_content_length(self):
        self.smuggle("Transfer-Encoding: chunked\r\nContent-Length: {0}\r\n")

    def test_two_content_lengths_even_equal(self):
        self.smuggle("Content-Length: {0}\r\nContent-Length: {0}\r\n")

    def test_a_transfer_encoding_other_than_chunked(self):
        self.smuggle("Transfer-Encoding: gzip, chunked\r\n")

    def test_http_1_1_without_host_is_a_problem_json_400(self):
        status, headers, body = raw_request(self.server.port,
                                            b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 400, body)
        self.assertEqual(json.loads(body)["code"], "invalid_argument")

    def test_a_later_http_1_minor_without_host_is_refused_too(self):
        # libmicrohttpd serves HTTP/1.2 and up as 1.1: they need a Host all the same.
        status, headers, body = raw_request(self.server.port,
                                            b"GET /healthz HTTP/1.2\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 400, body)
        self.assertEqual(json.loads(body)["code"], "invalid_argument")

    def test_a_bare_lf_cannot_hide_a_transfer_encoding(self):
        # Without Content-Length: the TE+CL rule would refuse it anyway.
        self.smuggle("X-Note: a\nTransfer-Encoding: chunked\r\n")

    def test_a_bare_cr_cannot_hide_a_transfer_encoding(self):
        self.smuggle("X-Note: a\rTransfer-Encoding: chunked\r\nContent-Length: {0}\r\n")

    def test_a_folded_line_cannot_hide_a_transfer_encoding(self):
        self.smuggle("Content-Length: {0}\r\nX-Note: a\r\n Transfer-Encoding: chunked\r\n")

    def test_nul_in_a_path_is_refused_not_cut(self):
        self.create_account("a")
        r = self.client.get("/v1/accounts/a%00b")
        self.assert_problem(r, 400, "invalid_field", field="/id")

    def test_nul_in_metadata_is_refused(self):
        r = self.client.post("/v1/accounts", {"id": uid("m"), "currency": "EUR",
                                              "metadata": {"note": "a\u0000b"}})
        self.assert_problem(r, 400, "invalid_field", field="/metadata")
        r = self.client.post("/v1/accounts", {"id": uid("m"), "currency": "EUR",
                                              "metadata": {"note": "a\\u0000b"}})
        self.assertEqual(r.status, 201, r)


class Head(ServerTestCase):
    """A request head that libmicrohttpd alone would take (a folded line, a bare LF or CR, white
    space before a colon, a NUL) or one over the bounds: a problem+json answer with its status
    and code, the connection closed, and the server still serving others."""

    GET = b"GET /healthz HTTP/1.1\r\n"
    HOST = b"Host: localhost\r\n"

    def refused(self, data, status=400, code="invalid_argument"):
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10 * SLOW) as s:
            s.sendall(data)
            answer = read_response(s)
            self.assertIsNotNone(answer, "closed without an answer: %r" % data[:80])
            got, headers, body = answer
            self.assertEqual(got, status, (data[:80], body))
            self.assertEqual(headers.get("content-type"), "application/problem+json", body)
            self.assertEqual(headers.get("connection"), "close")
            problem = json.loads(body)
            self.assert_problem_body(problem, status, code)
            s.settimeout(5 * SLOW)
            self.assertEqual(s.recv(65536), b"", "the connection stayed open")
        self.assertEqual(self.client.get("/healthz").status, 200)
        return problem["detail"]

    def served(self, data, answers=1):
        """`data` (ending with Connection: close) is answered 200, `answers` times, then closed."""
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10 * SLOW) as s:
            s.sendall(data)
            received = b""
            while chunk := s.recv(65536):
                received += chunk
        statuses = re.findall(rb"HTTP/1\.1 (\d+) ", received)
        self.assertEqual(statuses, [b"200"] * answers, received[:300])

    def test_a_folded_header_line_anywhere(self):
        for head in (self.GET + b" X-Note: a\r\n" + self.HOST,          # a first line folded
                     self.GET + b"X-Note: a\r\n b\r\n" + self.HOST,    # the middle
                     self.GET + self.HOST + b"X-Note: a\r\n\tb\r\n"):   # the last line
            detail = self.refused(head + b"\r\n")
            self.assertRegex(detail, "folded|not a token")

    def test_a_bare_lf_ends_no_line(self):
        for head in (b"GET /healthz HTTP/1.1\n" + self.HOST + b"\r\n",     # the request line
                     self.GET + b"Host: localhost\nX-Note: a\r\n\r\n",   # a header line
                     self.GET + self.HOST + b"X-Note: a\n\r\n",           # the last one
                     self.GET + self.HOST + b"\n",                         # the empty line
                     self.GET + self.HOST[:-2] + b"\n\n"):                # both
            self.assertIn("bare LF", self.refused(head))

    def test_a_bare_cr_anywhere_but_before_lf(self):
        for head, said in ((self.GET + self.HOST + b"X-Note: a\rb\r\n\r\n", "control"),
                           (self.GET + self.HOST + b"X-Note: a\r\r\n\r\n", "control"),
                           (self.GET + self.HOST + b"X-No\rte: a\r\n\r\n", "token"),
                           (b"GET /heal\rthz HTTP/1.1\r\n" + self.HOST + b"\r\n", "target"),
                           (b"GE\rT /healthz HTTP/1.1\r\n" + self.HOST + b"\r\n", "method")):
            self.assertIn(said, self.refused(head))

    def test_white_space_before_a_colon_or_in_the_request_line(self):
        self.assertIn("token", self.refused(self.GET + b"Host : localhost\r\n\r\n"))
        self.assertIn("token", self.refused(self.GET + self.HOST + b"X-Note\t: a\r\n\r\n"))
        self.assertIn("SP", self.refused(b"GET  /healthz HTTP/1.1\r\n" + self.HOST + b"\r\n"))
        # MHD takes the last space as the one before the version: the other is in the target.
        self.assertIn("space", self.refused(b"GET /healthz  HTTP/1.1\r\n" + self.HOST + b"\r\n"))
        self.assertIn("target", self.refused(b"GET /a b HTTP/1.1\r\n" + self.HOST + b"\r\n"))

    def test_a_nul_inside_a_line(self):
        self.assertIn("NUL", self.refused(self.GET + self.HOST + b"X-Note: a\0b\r\n\r\n"))
        self.assertIn("NUL", self.refused(self.GET + self.HOST + b"X-Note: a\0\r\n\r\n"))

    def test_what_the_rules_allow_is_served(self):
        self.served(self.GET + b"Host:localhost\r\nX-Empty:\r\nX-Note: \ta b \t\r\n"
                    b"Connection: close\r\n\r\n")
        self.served(b"\r\nGET /healthz HTTP/1.0\r\n\r\n")  # an empty line before is ignored
        # Pipelined: the second request is in the buffer right after the first one's head.
        self.served(self.GET + self.HOST + b"\r\n" + self.GET + self.HOST +
                    b"Connection: close\r\n\r\n", answers=2)

    def test_a_target_over_8192_bytes_is_414(self):
        line = b"GET /v1/accounts/%s HTTP/1.1\r\n"
        at_bound = line % (b"a" * (8192 - len("/v1/accounts/")))
        status, _, body = raw_request(self.server.port,
                                      at_bound + self.HOST + b"Connection: close\r\n\r\n")
        self.assertNotEqual(status, 414, body)
        for size in (8193, 9000, 40000):
            self.refused(line % (b"a" * (size - len("/v1/accounts/"))) + self.HOST + b"\r\n",
                         414, "uri_too_long")

    def test_a_head_over_32_kib_is_431(self):
        def head(size):
            start = self.GET + self.HOST + b"Connection: close\r\nX-Pad: "
            return start + b"p" * (size - len(start) - 4) + b"\r\n\r\n"
        self.served(head(32 * 1024))
        self.refused(head(32 * 1024 + 1), 431, "headers_too_large")
        sixty_four_kib = self.GET + self.HOST + b"".join(
            b"X-Pad-%02d: %s\r\n" % (i, b"p" * 1000) for i in range(64)) + b"\r\n"
        self.refused(sixty_four_kib, 431, "headers_too_large")

    def test_heads_past_libmicrohttpds_memory_are_ours_too(self):
        # 2,000 header lines of a few bytes, or 200 KB of head, would fill the memory
        # libmicrohttpd gives a connection before the head is whole (it answers that in HTML):
        # the scanner in front of it refuses them first, in problem+json.
        many = self.GET + self.HOST + b"".join(b"X%d: v\r\n" % i for i in range(2000)) + b"\r\n"
        self.assertIn("256 header lines", self.refused(many, 431, "headers_too_large"))
        lines = self.GET + self.HOST + b"".join(b"X%d: v\r\n" % i for i in range(254))
        self.served(lines + b"Connection: close\r\n\r\n")  # 256 lines exactly
        big = self.GET + self.HOST + b"X-Pad: " + b"p" * 200000 + b"\r\n\r\n"
        self.refused(big, 431, "headers_too_large")

    def test_an_unparsable_request_line_is_problem_json(self):
        self.assertIn("method", self.refused(b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n"))
        self.assertIn("version", self.refused(b"GET /healthz HTTP/1\r\n" + self.HOST + b"\r\n"))
        self.assertIn("version", self.refused(b"GET /healthz\r\n" + self.HOST + b"\r\n"))
        self.assertIn("HTTP/1.x", self.refused(b"GET /healthz HTTP/2.0\r\n" + self.HOST + b"\r\n"))

    def test_a_nul_right_before_a_bare_lf(self):
        # libmicrohttpd leaves the same two NULs for "\0\n" as for CRLF: read as sent, it is
        # neither.
        self.assertIn("NUL", self.refused(self.GET + self.HOST + b"X-Note: a\0\n\r\n"))

    def test_a_content_length_that_is_not_digits_gets_one_answer(self):
        for value in (b"-1", b"+5", b"0x10", b"1 2", b"", b"99999999999999999999", b"0 ", b"0\t"):
            data = (b"POST /v1/accounts HTTP/1.1\r\n" + self.HOST +
                    b"Content-Type: application/json\r\nContent-Length: " + value + b"\r\n\r\n{}")
            with socket.create_connection(("127.0.0.1", self.server.port),
                                          timeout=10 * SLOW) as s:
                s.sendall(data)
                received = b""
                while chunk := s.recv(65536):
                    received += chunk
            self.assertEqual(len(re.findall(rb"HTTP/1\.1 \d+ ", received)), 1, received)
            self.assertIn(b"HTTP/1.1 400 ", received)
            self.assertRegex(received, b"not a number of bytes|white space after its digits")
        self.served(b"GET /healthz HTTP/1.1\r\n" + self.HOST +
                    b"Content-Length: \t 0\r\nConnection: close\r\n\r\n")

    def test_a_refused_request_after_pipelined_ones_is_answered_after_them(self):
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10 * SLOW) as s:
            s.sendall(self.GET + self.HOST + b"\r\n" + self.GET + self.HOST + b"\r\n" +
                      self.GET + b"Host: localhost\nX: 1\r\n\r\n")
            received = b""
            while chunk := s.recv(65536):
                received += chunk
        statuses = re.findall(rb"HTTP/1\.1 (\d+) ", received)
        self.assertEqual(statuses, [b"200", b"200", b"400"], received[:400])
        self.assertIn(b"bare LF", received)

    def test_refusals_are_counted(self):
        def refusals():
            text = self.client.get("/metrics").body.decode()
            return int(re.search(r"^coffer_http_framing_refused_total (\d+)$", text, re.M)[1])
        before = refusals()
        self.refused(self.GET + b"Host: localhost\n\r\n")
        self.assertEqual(refusals(), before + 1)


class Chunked(ServerTestCase):
    """Chunked bodies as RFC 9112 writes them, and nothing looser: libmicrohttpd alone takes a
    bare LF in a chunk-size line, or a folded trailer, and decodes the body before the server
    sees it. Every refusal closes the connection, and a request hidden after it never runs."""

    def send(self, chunked_body):
        hidden = uid("hidden")
        body = '{"id":"%s","currency":"EUR"}' % hidden
        second = ("POST /v1/accounts HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                  "application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body))
        data = (b"POST /v1/accounts HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
                b"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked_body + second.encode())
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10 * SLOW) as s:
            s.sendall(data)
            received = b""
            while chunk := s.recv(65536):
                received += chunk
        return received, hidden

    def refused(self, chunked_body, said):
        received, hidden = self.send(chunked_body)
        self.assertTrue(received.startswith(b"HTTP/1.1 400 "), received[:300])
        self.assertIn(b"application/problem+json", received)
        self.assertIn(said.encode(), received)
        self.assertEqual(len(re.findall(rb"HTTP/1\.1 \d+ ", received)), 1, received)
        self.assertEqual(self.client.get("/v1/accounts/" + hidden).status, 404)

    def account(self, account_id):
        return ('{"id":"%s","currency":"EUR"}' % account_id).encode()

    def test_a_strict_chunked_body_is_served(self):
        a = uid("a")
        first = self.account(a)
        received, hidden = self.send(b"%x;note=1\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n"
                                     % (len(first), first))
        self.assertEqual(re.findall(rb"HTTP/1\.1 (\d+) ", received)[:2], [b"201", b"201"],
                         received[:400])
        self.assertEqual(self.client.get("/v1/accounts/" + a).status, 200)
        self.assertEqual(self.client.get("/v1/accounts/" + hidden).status, 200)

    def test_a_bare_lf_in_a_chunk_size_line(self):
        body = self.account(uid("a"))
        self.refused(b"%x\n%s\r\n0\r\n\r\n" % (len(body), body), "bare LF")
        self.refused(b"%x\r\n%s\r\n0\n\r\n" % (len(body), body), "bare LF")

    def test_chunk_data_not_followed_by_crlf(self):
        body = self.account(uid("a"))
        self.refused(b"%x\r\n%sXY0\r\n\r\n" % (len(body), body), "not followed by CRLF")

    def test_a_folded_or_bare_lf_trailer(self):
        body = self.account(uid("a"))
        start = b"%x\r\n%s\r\n0\r\n" % (len(body), body)
        self.refused(start + b"X-T: a\r\n b\r\n\r\n", "folded")
        self.refused(start + b"X-T: a\n\r\n", "bare LF")

    def test_a_size_that_is_not_hexadecimal_or_too_large(self):
        self.refused(b"-5\r\n", "hexadecimal")
        self.refused(b"5 x\r\n", "more than a size")
        self.refused(b"1" * 17 + b"\r\n", "64 bits")


class Starving(ServerTestCase):

    PER_CLIENT = 8
    IN_FLIGHT = 64 * 1024
    server_options = {"args": ["--max-connections-per-client", str(PER_CLIENT),
                               "--max-body-bytes-in-flight", str(IN_FLIGHT)], "timeout": 30}

    def trickler(self, source, count, stop):
        sockets = []
        for _ in range(count):
            s = socket.socket()
            s.bind((source, 0))
            s.connect(("127.0.0.1", self.server.port))
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            sockets.append(s)

        def trickle():
            while not stop.is_set():
                for s in sockets:
                    try:
                        s.sendall(b"X")
                    except OSError:
                        pass
                stop.wait(0.5)
            for s in sockets:
                s.close()
        thread = threading.Thread(target=trickle)
        thread.start()
        return thread

    def test_a_slowloris_does_not_stop_the_others(self):
        stop = threading.Event()
        threads = [self.trickler("127.0.0.%d" % (10 + i), self.PER_CLIENT, stop)
                   for i in range(10)]  # 80 connections trickling a header
        try:
            slowest = 0.0
            for _ in range(20):
                started = time.monotonic()
                self.assertEqual(self.client.get("/healthz").status, 200)
                slowest = max(slowest, time.monotonic() - started)
                time.sleep(0.1)
            self.assertLess(slowest, 0.5 * SLOW)
        finally:
            stop.set()
            for t in threads:
                t.join()

    def test_connections_past_the_per_address_limit_are_closed(self):
        held = [socket.create_connection(("127.0.0.1", self.server.port),
                                         source_address=("127.0.0.2", 0))
                for _ in range(self.PER_CLIENT)]
        try:
            time.sleep(0.2)
            with socket.create_connection(("127.0.0.1", self.server.port),
                                          source_address=("127.0.0.2", 0)) as extra:
                extra.settimeout(5 * SLOW)
                try:
                    extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    answer = extra.recv(100)
                except ConnectionResetError:
                    answer = b""
                self.assertEqual(answer, b"")
            self.assertEqual(self.client.get("/healthz").status, 200)
        finally:
            for s in held:
                s.close()

    def test_body_bytes_in_flight_are_bounded(self):
        port = self.server.port
        big = self.IN_FLIGHT - 1000
        with socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW) as holder:
            holder.sendall(b"POST /v1/accounts HTTP/1.1\r\nHost: localhost\r\nContent-Length: "
                           b"%d\r\n\r\n" % big + b" " * (big - 1))
            time.sleep(0.3 * SLOW)
            body = b'{"id":"%s","currency":"EUR"}' % uid("f").encode() + b" " * 4000
            request = (b"POST /v1/accounts HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n"
                       b"Connection: close\r\n\r\n" % len(body)) + body
            status, headers, answer = raw_request(port, request)
            self.assertEqual(status, 503, answer)
            self.assertEqual(json.loads(answer)["code"], "overloaded")
            self.assertEqual(headers.get("retry-after"), "1")
            holder.sendall(b"}")
            self.assertEqual(read_response(holder)[0], 400)
        self.assertEqual(raw_request(port, request)[0], 201)


class Deadlines(ServerTestCase):
    """A request's headers and body must arrive within their deadlines however slowly they
    trickle: libmicrohttpd's idle timeout never fires on such a client."""

    server_options = {"args": ["--header-timeout", "1", "--body-timeout", "2"],
                      "timeout": 30}

    def trickle_until_closed(self, first, limit):
        """Sends `first`, then a byte every 100 ms; the seconds until the server closed."""
        with socket.create_connection(("127.0.0.1", self.server.port)) as s:
            s.sendall(first)
            started = time.monotonic()
            s.settimeout(0.1)
            while time.monotonic() - started < limit:
                try:
                    s.sendall(b"X")
                    if s.recv(4096) == b"":
                        return time.monotonic() - started
                except socket.timeout:
                    continue
                except OSError:  # reset or broken pipe: closed too
                    return time.monotonic() - started
            return None

    def closed_total(self):
        """The metric, read on a connection of its own that the server closes after answering
        (the harness's kept connection would be cut too once idle past the deadline)."""
        self.client.close()
        _, _, body = raw_request(self.server.port, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n"
                                 b"Connection: close\r\n\r\n")
        metrics = body.decode()
        line = [l for l in metrics.splitlines()
                if l.startswith("coffer_http_deadline_closed_total ")]
        return int(line[0].split()[1])

    def test_trickled_headers_are_cut_at_their_deadline(self):
        before = self.closed_total()
        after = self.trickle_until_closed(b"GET /healthz HTTP/1.1\r\nX-Slow: ", 10 * SLOW)
        self.assertIsNotNone(after, "a trickle of headers was never cut")
        self.assertGreaterEqual(after, 0.9)
        self.assertEqual(self.closed_total(), before + 1)

    def test_a_trickled_body_is_cut_at_its_deadline(self):
        head = (b"POST /v1/accounts HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n"
                b"\r\n")
        after = self.trickle_until_closed(head, 15 * SLOW)
        self.assertIsNotNone(after, "a trickled body was never cut")
        self.assertGreaterEqual(after, 1.9)

    def test_prompt_requests_on_a_kept_connection_are_not_cut(self):
        request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=5 * SLOW) as s:
            for _ in range(4):  # 4 x 0.6 s: longer than one deadline, each request in time
                s.sendall(request)
                self.assertEqual(read_response(s)[0], 200)
                time.sleep(0.6)


class Submitters(unittest.TestCase):
    """GET /v1/transfers/{id} names the token whose request recorded the transfer, and the name
    survives a restart that replays the log and one that loads a snapshot."""

    def setUp(self):
        self.server = Server()
        self.addCleanup(self.server.cleanup)
        _, self.secrets = issue_tokens(self.server, (("alice", "write", None),
                                                     ("bob", "write", None)))
        self.server.start()

    def call(self, name, method, path, body=None):
        client = self.server.client()
        try:
            return client.request(method, path, body=body,
                                  headers={"Authorization": "Bearer " + self.secrets[name]})
        finally:
            client.close()

    def submitters(self, ids):
        found = {}
        for transfer_id in ids:
            r = self.call("bob", "GET", "/v1/transfers/" + transfer_id)
            self.assertEqual(r.status, 200, r)
            found[transfer_id] = r.json()["submitted_by"]
        return found

    def test_a_transfer_names_its_token_across_restarts(self):
        bank, user = uid("bank"), uid("user")
        for account in ({"id": bank, "currency": "KRW", "min_balance": None},
                        {"id": user, "currency": "KRW"}):
            self.assertEqual(self.call("alice", "POST", "/v1/accounts", account).status, 201)
        paid, held, refused, batch = uid("paid"), uid("held"), uid("refused"), uid("batch")
        writes = [("alice", {"id": paid, "from": bank, "to": user, "amount": 5}),
                  ("bob", {"id": held, "from": bank, "to": user, "amount": 2,
                           "hold": {"timeout_ms": 3600000}}),
                  ("alice", {"id": refused, "from": user, "to": bank, "amount": 10 ** 9})]
        for name, body in writes:
            self.assertIn(self.call(name, "POST", "/v1/transfers", body).status, (201, 409))
        self.assertEqual(self.call("bob", "POST", "/v1/transfers", {
            "atomic": True, "transfers": [{"id": batch, "from": bank, "to": user, "amount": 1}]
        }).status, 200)
        expected = {paid: "alice", held: "bob", refused: "alice", batch: "bob"}
        self.assertEqual(self.submitters(expected), expected)
        holds = self.call("alice", "GET", "/v1/holds?account=" + user).json()["holds"]
        self.assertEqual([(h["id"], h["submitted_by"]) for h in holds], [(held, "bob")])
        shown = coffer("--server", "http://127.0.0.1:%d" % self.server.port, "--token",
                       self.secrets["alice"], "transfer", "get", held)
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertIn(", by bob)", shown.stdout)

        self.server.kill()  # no snapshot at close: recovery replays the log
        self.server.start()
        self.assertNotIn("snapshot at seq", self.server.stderr(run=-1))
        self.assertEqual(self.submitters(expected), expected)

        self.server.restart()  # the SIGTERM wrote a snapshot, which this start loads
        self.assertRegex(self.server.stderr(run=-1), r"snapshot at seq \d+ loaded")
        self.assertEqual(self.submitters(expected), expected)
        self.server.stop()
        run = subprocess.run([coffer_binary(), "verify", self.server.data_dir],
                             capture_output=True, text=True, timeout=120 * SLOW)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)

    def test_without_tokens_submitted_by_is_null(self):
        server = Server()
        self.addCleanup(server.cleanup)
        server.start()
        client = server.client()
        self.addCleanup(client.close)
        bank, user, paid = uid("bank"), uid("user"), uid("paid")
        for account in ({"id": bank, "currency": "KRW", "min_balance": None},
                        {"id": user, "currency": "KRW"}):
            self.assertEqual(client.post("/v1/accounts", account).status, 201)
        self.assertEqual(client.post("/v1/transfers", {"id": paid, "from": bank, "to": user,
                                                       "amount": 3}).status, 201)
        body = client.get("/v1/transfers/" + paid).json()
        self.assertIn("submitted_by", body)
        self.assertIsNone(body["submitted_by"])


if __name__ == "__main__":
    unittest.main()
