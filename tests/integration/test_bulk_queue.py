"""The bound on large bodies waiting for a bulk worker (src/server/bulk.c): bodies of 16 KiB or
more are decoded by two workers, at most 64 wait for them, and past that the answer is 503
overloaded. A few slow bodies (the general decoder, with metadata, near 4 MiB) keep both
workers busy while a hundred bodies just over 16 KiB complete at once on a single network
thread: the first 64-odd wait and are applied, the rest are refused with nothing applied, and
/healthz and a small transfer are answered meanwhile and afterwards."""

import json
import re
import select
import socket
import time

from harness import BATCH_MAX, BODY_MAX, SLOW, ServerTestCase, read_response, uid

WAITING_MAX = 64  # BULK_WAITING_MAX
BULK_BODY_MIN = 16 * 1024
# The first bodies to complete: the workers take two, the other two wait with the small ones.
# Each costs a worker about 0.12 s of CPU (measured, one at a time, on an idle server), at nice
# 5 and more on a busy machine, while the hundred small ones complete within milliseconds.
SLOW_BODIES = 4
SMALL_BODIES = 100
SMALL_TRANSFERS = 20  # in each small body, padded with spaces past BULK_BODY_MIN


def post_head(length):
    return (b"POST /v1/transfers HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % length)


class BulkQueueBound(ServerTestCase):

    # One network thread (the default, said here because the test depends on it): the small
    # bodies complete one after the other on it, as fast as it reads them. No fsync: the test
    # is about the workers, not the disk.
    server_options = {"args": ["--threads", "1"], "fsync": "never"}

    @classmethod
    def prepare(cls):
        cls.tag = uid("bq")
        cls.issuer_id = "issuer-%s:KRW" % cls.tag
        r = cls.client.post("/v1/accounts", {"id": cls.issuer_id, "currency": "KRW",
                                             "min_balance": None})
        assert r.status == 201, r
        cls.sink = "sink-%s" % cls.tag
        cls.recipients = ["to-%s-%d" % (cls.tag, i) for i in range(SMALL_BODIES)]
        r = cls.client.post("/v1/accounts", {"accounts": [
            {"id": account, "currency": "KRW"} for account in [cls.sink] + cls.recipients]})
        assert r.status == 200, r

    def slow_body(self, index):
        """A batch the fast decoder declines (metadata): decoded by the general one, slowly."""
        metadata = ',"metadata":{"note":"%s"}' % ("m" * 380)
        items = ['{"id":"slow-%s-%d-%d","from":"%s","to":"%s","amount":1%s}'
                 % (self.tag, index, i, self.issuer_id, self.sink, metadata)
                 for i in range(BATCH_MAX)]
        body = ('{"atomic":true,"transfers":[' + ",".join(items) + "]}").encode()
        self.assertLessEqual(len(body), BODY_MAX)
        return body

    def small_id(self, index, item):
        return "small-%s-%d-%d" % (self.tag, index, item)

    def small_body(self, index):
        """SMALL_TRANSFERS transfers of 1 to recipient `index`, just over BULK_BODY_MIN."""
        items = ['{"id":"%s","from":"%s","to":"%s","amount":1}'
                 % (self.small_id(index, i), self.issuer_id, self.recipients[index])
                 for i in range(SMALL_TRANSFERS)]
        body = ('{"atomic":true,"transfers":[' + ",".join(items) + "]}").encode()
        body = body[:-1] + b" " * (BULK_BODY_MIN + 64 - len(body)) + b"}"
        self.assertGreaterEqual(len(body), BULK_BODY_MIN)
        return body

    def open_all_but_last_byte(self, bodies):
        """A connection per body, each sent whole but for the body's last byte."""
        sockets = []
        for body in bodies:
            s = socket.create_connection(("127.0.0.1", self.server.port), timeout=60 * SLOW)
            s.sendall(post_head(len(body)) + body[:-1])
            sockets.append(s)
        return sockets

    def overloaded_count(self):
        text = self.client.get("/metrics").body.decode()
        found = re.search(r'^coffer_http_requests_total\{route="create_transfers",'
                          r'code="overloaded"\} (\d+)$', text, re.M)
        return int(found.group(1)) if found else 0

    def assert_small_requests_served(self, probe):
        """GET /healthz and a single transfer, on a connection of their own, answered."""
        r = probe.get("/healthz")
        self.assertEqual(r.status, 200, r)
        r = probe.post("/v1/transfers", {"id": uid("single"), "from": self.issuer_id,
                                         "to": self.sink, "amount": 1})
        self.assertEqual(r.status, 201, r)

    def test_bodies_past_the_bound_are_refused_503_and_not_applied(self):
        overloaded_before = self.overloaded_count()
        probe = self.server.client(timeout=30 * SLOW)
        self.assert_small_requests_served(probe)  # connected before the burst
        slow = self.open_all_but_last_byte([self.slow_body(i) for i in range(SLOW_BODIES)])
        small = self.open_all_but_last_byte([self.small_body(i) for i in range(SMALL_BODIES)])
        try:
            time.sleep(0.3 * SLOW)  # the network thread reads what was sent
            for s in slow:
                s.sendall(b"}")
            time.sleep(0.01)  # the workers take the first two slow bodies
            for s in small:
                s.sendall(b"}")
            # Meanwhile, with the workers still on the slow bodies: none is answered yet.
            self.assert_small_requests_served(probe)
            readable = select.select(slow, [], [], 0)[0]
            self.assertEqual(readable, [], "a slow body was answered before the probe")
            answers = [read_response(s) for s in small]
            slow_answers = [read_response(s) for s in slow]
        finally:
            for s in slow + small:
                s.close()
        self.assertEqual([answer and answer[0] for answer in slow_answers], [200] * SLOW_BODIES)
        self.assertNotIn(None, answers)

        accepted = [i for i, (status, _, _) in enumerate(answers) if status == 200]
        refused = [i for i, (status, _, _) in enumerate(answers) if status != 200]
        for i in refused:
            status, headers, body = answers[i]
            self.assertEqual(status, 503, body)
            self.assertEqual(headers.get("content-type"), "application/problem+json")
            self.assertEqual(headers.get("retry-after"), "1")
            problem = json.loads(body)
            self.assertEqual((problem["code"], problem["status"]), ("overloaded", 503), problem)
        # Every body let in waited or was taken by a worker: 64 wait at most, and while the
        # small bodies completed the workers took only slow ones (measured: two, so 66 let in).
        admitted = SLOW_BODIES + len(accepted)
        self.assertGreaterEqual(admitted, WAITING_MAX, "refused before the queue was full")
        self.assertLessEqual(admitted, WAITING_MAX + SLOW_BODIES,
                             "%d of %d small bodies let in" % (len(accepted), SMALL_BODIES))
        self.assertGreater(len(refused), 0)
        self.assertEqual(self.overloaded_count() - overloaded_before, len(refused))

        for i in accepted:
            self.assertEqual(self.get_account(self.recipients[i])["balance"], SMALL_TRANSFERS)
            self.assertEqual(self.get_transfer(self.small_id(i, 0)).status, 200)
        for i in refused:
            self.assertEqual(self.get_account(self.recipients[i])["balance"], 0)
            self.assertEqual(self.get_transfer(self.small_id(i, 0)).status, 404)
        self.assert_small_requests_served(probe)  # afterwards
        probe.close()
        self.verify_ok()
