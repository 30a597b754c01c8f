"""A write whose client goes away before its answer: the server applies it (the request was
complete) and, since the client cannot know that, says so in its log and counts it in
/metrics. A raw socket sends a small batch, shuts its side and resets the connection at once:
the server has the request (it came before the reset) but cannot send the answer."""

import json
import re
import socket
import struct
import time
import unittest

from harness import SLOW, ServerTestCase, uid

BATCH = 50  # a few KiB: the request arrives in one piece, and the reset right after it
# A reset can beat the request to the server, which then drops both (nothing applied, nothing
# logged); or the client can be held up long enough for the answer to come first (it is
# seen, and the attempt does not count). Either is rare: a few attempts make one that counts.
ATTEMPTS = 10


class UndeliveredWrite(ServerTestCase):

    @classmethod
    def prepare(cls):
        r = cls.client.post("/v1/accounts", {"id": "issuer:KRW", "currency": "KRW",
                                             "min_balance": None})
        assert r.status == 201, r

    def send_and_reset(self, ids, to):
        """True when the reset went out before any byte of the answer came back."""
        body = json.dumps({"transfers": [
            {"id": i, "from": "issuer:KRW", "to": to, "amount": 1}
            for i in ids]}).encode()
        request = (b"POST /v1/transfers HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   b"Content-Type: application/json\r\nX-Request-Id: %s\r\n"
                   b"Content-Length: %d\r\n\r\n" % (ids[0].encode(), len(body))) + body
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=10 * SLOW)
        # Linger 0: close sends a reset, so the server's answer cannot be written.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        s.setblocking(False)
        try:
            answered = len(s.recv(1, socket.MSG_PEEK)) > 0
        except BlockingIOError:
            answered = False
        s.close()
        return not answered

    def undelivered_lines(self, request_id):
        return [line for line in self.server.stderr().splitlines()
                if "applied but its answer was not delivered" in line
                and (" %s " % request_id) in line]

    def transfer_exists(self, transfer_id):
        r = self.get_transfer(transfer_id)
        self.assertIn(r.status, (200, 404), r)
        return r.status == 200

    def undelivered_metric(self):
        r = self.client.get("/metrics")
        self.assertEqual(r.status, 200, r)
        values = [line.split()[1] for line in r.body.decode().splitlines()
                  if line.startswith("coffer_http_writes_undelivered_total ")]
        self.assertEqual(len(values), 1, r.body)
        return int(values[0])

    def test_applied_write_without_answer_is_logged(self):
        """Each attempt reset before its answer either reached the server (applied, and
        logged) or did not (nothing applied, nothing logged); one must reach it."""
        logged = 0
        for _ in range(ATTEMPTS):
            prefix = uid("undelivered")
            ids = ["%s-%d" % (prefix, i) for i in range(BATCH)]
            to = self.create_account(prefix + "-to")["id"]
            if not self.send_and_reset(ids, to):
                continue
            # The log line comes once the server has tried to answer; wait for it a while.
            deadline = time.monotonic() + 10 * SLOW
            while not self.undelivered_lines(ids[0]) and time.monotonic() < deadline:
                time.sleep(0.05)
            lines = self.undelivered_lines(ids[0])
            applied = self.transfer_exists(ids[0]) and self.transfer_exists(ids[-1])
            self.assertEqual(len(lines), 1 if applied else 0,
                             "applied: %s; log lines: %r" % (applied, lines))
            if not applied:
                continue
            logged += 1
            self.assertRegex(lines[0], r"^coffer: request %s POST /v1/transfers applied but its "
                             r"answer was not delivered \(.+\): %d events, ids %s \.\. %s; "
                             % (re.escape(ids[0]), BATCH, re.escape(ids[0]), re.escape(ids[-1])))
            break
        self.assertEqual(logged, 1, "no attempt reached the server before its reset")
        # Counted as often as logged (an attempt whose answer had begun may be logged too).
        every_line = [line for line in self.server.stderr().splitlines()
                      if "applied but its answer was not delivered" in line]
        self.assertEqual(self.undelivered_metric(), len(every_line))
        # The write is whole: every transfer of the batch, once.
        self.assertEqual(self.get_account(to)["balance"], BATCH)


if __name__ == "__main__":
    unittest.main()
