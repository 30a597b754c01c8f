"""Tests of coffer_client against a real `coffer serve` (started by tests/integration/harness.py)
and, for retries and redirects, small stub servers in front of it: a lost answer, an overloaded
server, a follower that redirects to the leader, a base URL where nothing listens."""

import http.client
import http.server
import os
import queue
import re
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import coffer_client  # noqa: E402
from coffer_client import (BatchFailedError, Client, ConflictError, IdempotencyError,  # noqa: E402
                           MalformedError, NotFoundError, ReferenceError)
from harness import RFC3339_NS, Server, free_port, uid  # noqa: E402


class Stub:
    """An HTTP server on a free loopback port; `answer(handler, method)` decides each request
    (see Proxy below). Requests are counted."""

    def __init__(self, answer):
        stub = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                stub.requests += 1
                answer(self, "GET")

            def do_POST(self):
                stub.requests += 1
                answer(self, "POST")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def forward(handler, method, port):
    """Sends the handler's request to the real server; returns (status, headers, body)."""
    length = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(length) if length else None
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, handler.path, body=body,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


def reply(handler, status, headers, body):
    handler.send_response(status)
    for name, value in headers:
        if name.lower() not in ("connection", "transfer-encoding", "date", "server"):
            handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


class ClientAgainstServer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server().start()
        cls.url = "http://127.0.0.1:%d" % cls.server.port
        cls.client = Client(cls.url)
        cls.client.create_account("bank", "KRW", min_balance=None)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.server.cleanup()

    def funded(self, amount):
        account = uid("user")
        self.client.create_account(account, "KRW")
        if amount:
            self.client.transfer("bank", account, amount)
        return account

    def test_accounts_transfers_and_timestamps(self):
        account = self.client.create_account(uid("user"), "KRW", metadata={"name": "Kim"})
        self.assertEqual(account["metadata"], {"name": "Kim"})
        self.assertRegex(account["created_at"], RFC3339_NS)
        result = self.client.transfer("bank", account["id"], 700, id=uid("pay"))
        self.assertEqual(result["accounts"]["to"], {"id": account["id"], "balance": 700,
                                                     "available": 700, "version": 2})
        self.assertRegex(result["transfer"]["timestamp"], RFC3339_NS)
        read = self.client.get_account(account["id"])
        self.assertEqual((read["balance"], read["version"]), (700, 2))
        # No timestamp is an integer of nanoseconds any more (it would not survive JavaScript).
        for body in (account, result["transfer"], read):
            self.assertEqual([key for key in body if key.endswith("_ns")], [], body)

    def test_amounts_beyond_two_to_the_53_are_exact(self):
        account = self.funded(2**62 + 1)
        self.assertEqual(self.client.get_account(account)["balance"], 2**62 + 1)

    def test_problems_are_typed_errors(self):
        poor = self.funded(10)
        with self.assertRaises(ConflictError) as caught:
            self.client.transfer(poor, "bank", 11)
        self.assertEqual((caught.exception.code, caught.exception.problem["available"]),
                         ("insufficient_balance", 10))
        with self.assertRaises(NotFoundError) as caught:
            self.client.get_account(uid("nobody"))
        self.assertEqual(caught.exception.code, "account_not_found")
        with self.assertRaises(ReferenceError) as caught:
            self.client.transfer("bank", uid("nobody"), 1)
        self.assertEqual(caught.exception.code, "account_not_found")
        key = uid("pay")
        self.client.transfer("bank", poor, 1, id=key)
        with self.assertRaises(IdempotencyError) as caught:
            self.client.transfer("bank", poor, 2, id=key)
        self.assertEqual(caught.exception.problem["field"], "/amount")
        with self.assertRaises(MalformedError) as caught:
            self.client.transfer("bank", poor, 0)
        self.assertEqual(caught.exception.code, "invalid_field")

    def test_a_failed_atomic_batch_raises_with_every_result(self):
        poor = self.funded(100)
        with self.assertRaises(BatchFailedError) as caught:
            self.client.batch([{"from": poor, "to": "bank", "amount": 60},
                               {"from": poor, "to": "bank", "amount": 60}], atomic=True)
        failure = caught.exception
        self.assertEqual((failure.status, failure.code), (409, "insufficient_balance"))
        self.assertEqual([item["code"] for item in failure.results],
                         ["batch_failed", "insufficient_balance"])
        self.assertEqual(self.client.get_account(poor)["balance"], 100)

    def test_holds_post_and_void(self):
        buyer = self.funded(1000)
        hold = uid("hold")
        self.client.transfer(buyer, "bank", 800, id=hold, hold={"timeout_ms": 60000})
        self.assertEqual([h["id"] for h in self.client.holds(account=buyer)["holds"]], [hold])
        posted = self.client.post_hold(hold, amount=500)
        self.assertEqual((posted["transfer"]["post"], posted["accounts"]["from"]["id"]),
                         (hold, buyer))
        with self.assertRaises(ConflictError) as caught:
            self.client.void_hold(hold)
        self.assertEqual(caught.exception.code, "hold_already_posted")
        self.assertEqual(self.client.get_account(buyer)["balance"], 500)

    def test_ids_with_a_slash_are_one_path_segment(self):
        seat = uid("seat") + "/C1/A12"
        self.client.create_account(seat, "KRW")
        self.assertEqual(self.client.get_account(seat)["id"], seat)
        self.assertEqual(self.client.history(seat)["entries"], [])

    # -- the change feed and webhooks

    def test_events_pages_and_follow_wakes_on_the_next_change(self):
        start = self.client.events(limit=1)["durable_seq"]
        account = self.funded(300)
        page = self.client.events(after=start, account=account)
        self.assertEqual([change["type"] for change in page["events"]],
                         ["account.created", "transfer.posted"])
        self.assertEqual(page["events"][1]["accounts"]["to"]["balance"], 300)
        only = self.client.events(after=start, types=["transfer.posted"], account=account)
        self.assertEqual([change["seq"] for change in only["events"]], [page["events"][1]["seq"]])
        changes = Client(self.url, timeout=10).follow(after=page["next_after"], account=account,
                                                      wait_ms=5000)
        threading.Timer(0.3, self.client.transfer, ("bank", account, 9)).start()
        began = time.monotonic()
        change = next(changes)
        self.assertEqual((change["type"], change["transfer"]["amount"]), ("transfer.posted", 9))
        self.assertLess(time.monotonic() - began, 4)  # woken by the write, not the 5 s wait

    def test_webhooks_deliver_signed_changes(self):
        deliveries = queue.Queue()

        def receive(handler, method):
            body = handler.rfile.read(int(handler.headers["Content-Length"]))
            deliveries.put((dict(handler.headers), body))
            handler.send_response(204)
            handler.end_headers()

        receiver = Stub(receive)
        self.addCleanup(receiver.close)
        hook, secret = uid("hook"), "whsec_" + "c2VjcmV0IG9mIHRoZSB0ZXN0IHdlYmhvb2sh"
        created = self.client.create_webhook(hook, receiver.url + "/in",
                                             types=["transfer.posted"], secret=secret)
        self.assertEqual((created["id"], created["secret"]), (hook, secret))
        self.assertIn(hook, [item["id"] for item in self.client.webhooks()["webhooks"]])
        account = self.funded(0)
        self.client.transfer("bank", account, 41)
        headers, body = deliveries.get(timeout=30)
        payload = coffer_client.verify_webhook(secret, headers, body)
        self.assertEqual((payload["type"], payload["data"]["transfer"]["to"],
                          payload["data"]["accounts"]["to"]["balance"]),
                         ("transfer.posted", account, 41))
        self.assertEqual(headers["webhook-id"], "evt_%d" % payload["data"]["seq"])
        with self.assertRaises(coffer_client.WebhookVerificationError):
            coffer_client.verify_webhook("whsec_" + "b3RoZXIgc2VjcmV0IG9mIDI0IGJ5dGVz", headers,
                                         body)
        self.assertEqual(self.client.enable_webhook(hook)["state"], "active")
        self.assertEqual((self.client.get_webhook(hook)["id"], self.client.get_webhook(hook)["batch"]),
                         (hook, 1))
        batched = self.client.create_webhook(uid("hook"), receiver.url + "/in", batch=20,
                                             batch_wait_ms=50)
        shown = self.client.get_webhook(batched["id"])
        self.assertEqual((shown["batch"], shown["batch_wait_ms"]), (20, 50))
        self.client.delete_webhook(batched["id"])
        self.client.delete_webhook(hook)
        with self.assertRaises(NotFoundError) as caught:
            self.client.get_webhook(hook)
        self.assertEqual(caught.exception.code, "webhook_not_found")

    # -- retries and redirects, with stubs in front of the real server

    def test_a_lost_answer_is_retried_with_the_same_id(self):
        state = {"dropped": 0}

        def lose_the_first_answer(handler, method):
            status, headers, body = forward(handler, method, self.server.port)
            if state["dropped"] == 0:
                state["dropped"] += 1
                handler.close_connection = True  # applied, but the client never hears of it
                return
            reply(handler, status, headers, body)

        stub = Stub(lose_the_first_answer)
        self.addCleanup(stub.close)
        account = self.funded(0)
        result = Client(stub.url, backoff=0.01).transfer("bank", account, 5)
        self.assertEqual((stub.requests, state["dropped"]), (2, 1))
        self.assertEqual(self.client.get_account(account)["balance"], 5)  # applied once
        self.assertEqual(self.client.get_transfer(result["transfer"]["id"])["amount"], 5)

    def test_overloaded_is_retried_after_retry_after(self):
        def overloaded_once(handler, method):
            if stub.requests == 1:
                body = b'{"type":"urn:coffer:error:overloaded","title":"t","status":503,' \
                       b'"code":"overloaded","detail":"d"}'
                return reply(handler, 503, [("Content-Type", "application/problem+json"),
                                            ("Retry-After", "0"),
                                            ("Content-Length", str(len(body)))], body)
            reply(handler, *forward(handler, method, self.server.port))

        stub = Stub(overloaded_once)
        self.addCleanup(stub.close)
        account = self.funded(0)
        Client(stub.url, backoff=0.01).transfer("bank", account, 3)
        self.assertEqual(stub.requests, 2)
        self.assertEqual(self.client.get_account(account)["balance"], 3)

    def test_a_redirect_to_the_leader_is_followed_and_remembered(self):
        def follower(handler, method):
            body = b'{"type":"urn:coffer:error:not_leader","title":"t","status":307,' \
                   b'"code":"not_leader","detail":"d"}'
            reply(handler, 307, [("Location", self.url + handler.path),
                                 ("Content-Type", "application/problem+json"),
                                 ("Content-Length", str(len(body)))], body)

        stub = Stub(follower)
        self.addCleanup(stub.close)
        account = self.funded(0)
        client = Client([stub.url], backoff=0.01)
        client.transfer("bank", account, 4)
        client.transfer("bank", account, 4)
        self.assertEqual(stub.requests, 1)  # the second went to the leader directly
        self.assertEqual(client.base_urls[client.current], self.url)
        self.assertEqual(self.client.get_account(account)["balance"], 8)

    def test_the_next_base_url_is_tried_when_one_does_not_answer(self):
        dead = "http://127.0.0.1:%d" % free_port()
        client = Client([dead, self.url], backoff=0.01)
        self.assertEqual(client.get_account("bank")["id"], "bank")
        self.assertEqual(client.base_urls[client.current], self.url)

    def test_connection_failed_after_the_attempts(self):
        client = Client("http://127.0.0.1:%d" % free_port(), attempts=2, backoff=0.01)
        with self.assertRaises(coffer_client.ConnectionFailed):
            client.verify()


class VerifyWebhook(unittest.TestCase):
    """verify_webhook against the example of the Standard Webhooks specification (its signature
    also checked with `openssl dgst -sha256 -mac HMAC`), and every way a delivery is refused."""

    SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    BODY = b'{"test": 2432232314}'
    SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    SENT_AT = 1614265330

    def headers(self, **changes):
        headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
                   "webhook-timestamp": str(self.SENT_AT), "webhook-signature": self.SIGNATURE}
        headers.update({name.replace("_", "-"): value for name, value in changes.items()})
        return {name: value for name, value in headers.items() if value is not None}

    def verify(self, headers, body=BODY, now=SENT_AT + 10, secret=SECRET):
        return coffer_client.verify_webhook(secret, headers, body, now=now)

    def test_the_specifications_example_verifies(self):
        self.assertEqual(self.verify(self.headers()), {"test": 2432232314})
        upper = {name.title(): value for name, value in self.headers().items()}
        self.assertEqual(self.verify(upper, body=self.BODY.decode()), {"test": 2432232314})
        rotated = self.headers(webhook_signature="v1,bm90IGl0 " + self.SIGNATURE)
        self.assertEqual(self.verify(rotated), {"test": 2432232314})

    def test_every_change_is_refused(self):
        refused = [
            (self.headers(), b'{"test": 2432232315}', self.SENT_AT),  # the body
            (self.headers(webhook_id="msg_other"), self.BODY, self.SENT_AT),
            (self.headers(webhook_timestamp=str(self.SENT_AT + 1)), self.BODY, self.SENT_AT),
            (self.headers(webhook_signature="v2," + self.SIGNATURE[3:]), self.BODY, self.SENT_AT),
            (self.headers(webhook_signature=None), self.BODY, self.SENT_AT),
            (self.headers(webhook_id=None), self.BODY, self.SENT_AT),
            (self.headers(webhook_timestamp="1e9"), self.BODY, self.SENT_AT),
            (self.headers(), self.BODY, self.SENT_AT + 301),  # too old
            (self.headers(), self.BODY, self.SENT_AT - 301),  # from the future
        ]
        for headers, body, now in refused:
            with self.assertRaises(coffer_client.WebhookVerificationError, msg=(headers, now)):
                self.verify(headers, body=body, now=now)
        with self.assertRaises(coffer_client.WebhookVerificationError):
            self.verify(self.headers(), secret="whsec_" + "A" * 32)
        self.assertEqual(self.verify(self.headers(), now=self.SENT_AT + 300), {"test": 2432232314})


class CodeTable(unittest.TestCase):
    def test_codes_match_include_coffer_h(self):
        with open(os.path.join(REPO, "include", "coffer.h"), encoding="utf-8") as header:
            text = header.read()
        table = text[text.index("#define COFFER_CODE_MAP"):text.index("enum coffer_code")]
        rows = re.findall(r"X\(\s*\w+,\s*(\w+),\s*(\d+),\s*(\d+),", table)
        self.assertGreater(len(rows), 20)
        self.assertEqual(coffer_client.CODES,
                         {name: (int(value), int(status)) for name, value, status in rows})


if __name__ == "__main__":
    unittest.main()
