#!/usr/bin/env python3
"""A webhook receiver that keeps a mirror of coffer's balances, standard library only.

coffer POSTs every change to it, signed as Standard Webhooks does. For each delivery it:

  1. checks the signature before reading anything else: webhook-id, webhook-timestamp (within 5
     minutes, so an old delivery cannot be replayed) and webhook-signature, "v1,<base64 of
     HMAC-SHA256(secret, id.timestamp.body)>", compared in constant time; else 401;
  2. takes the changes out of the body: one change ({"type", "timestamp", "data"}), or, for a
     webhook created with "batch", {"type": "batch", "data": {"changes": [...]}} holding several;
  3. skips a change whose seq it has already applied (delivery is at least once: after a timeout
     or a restart the same change comes again, and a batch may then be grouped differently);
  4. applies the change: an account's balance, available and version after it, straight from
     the change ("account" for account.created, "accounts" for every transfer and hold). Nothing
     is read back from coffer.

GET /mirror answers the mirror as JSON: {"accounts": {id: {balance, available, version}},
"applied": N, "duplicates": N, "refused": N}.

    WEBHOOK_SECRET=whsec_... python3 receiver.py PORT    (PORT 0: a free one; it prints
                                                          "listening on N")
"""

import base64
import hashlib
import hmac
import http.server
import json
import os
import sys
import threading
import time

TOLERANCE_S = 5 * 60
BODY_BYTES_MAX = 1 << 20


def signature_is_valid(secret, headers, body, now=None):
    """The Standard Webhooks check; `secret` is "whsec_<base64>", `body` the raw bytes."""
    message_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp") or ""
    signatures = headers.get("webhook-signature") or ""
    if not message_id or not timestamp.isdigit() or not timestamp.isascii():
        return False
    if abs((now or time.time()) - int(timestamp)) > TOLERANCE_S:
        return False
    key = base64.b64decode(secret[len("whsec_"):])
    signed = b"%s.%s.%s" % (message_id.encode(), timestamp.encode(), body)
    expected = b"v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    # Several signatures may be listed while a secret is rotated: one match is enough.
    return any(hmac.compare_digest(given.encode(), expected) for given in signatures.split())


class Mirror:
    """The balances as the changes say they are; one lock, as deliveries may overlap."""

    def __init__(self):
        self.lock = threading.Lock()
        self.accounts = {}
        self.seen = set()  # seqs applied (a real receiver keeps the highest with the mirror)
        self.applied = self.duplicates = self.refused = 0

    def apply(self, change):
        with self.lock:
            if change["seq"] in self.seen:
                self.duplicates += 1
                return
            self.seen.add(change["seq"])
            self.applied += 1
            after = [change["account"]] if change["type"] == "account.created" else \
                list(change.get("accounts", {}).values())
            for account in after:
                known = self.accounts.get(account["id"])
                # Versions only grow: an older state never overwrites a newer one.
                if known is None or account["version"] > known["version"]:
                    self.accounts[account["id"]] = {key: account[key] for key in
                                                    ("balance", "available", "version")}

    def snapshot(self):
        with self.lock:
            return {"accounts": dict(self.accounts), "applied": self.applied,
                    "duplicates": self.duplicates, "refused": self.refused}


def make_handler(secret, mirror):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, document=None):
            body = json.dumps(document).encode() if document is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length > BODY_BYTES_MAX:
                return self.answer(413)
            body = self.rfile.read(length)
            if not signature_is_valid(secret, self.headers, body):
                with mirror.lock:
                    mirror.refused += 1
                return self.answer(401, {"error": "bad signature"})
            payload = json.loads(body)  # only parsed once it is known to come from coffer
            changes = payload["data"]["changes"] if payload["type"] == "batch" else [payload]
            for change in changes:
                mirror.apply(change["data"])
            self.answer(204)

        def do_GET(self):
            if self.path != "/mirror":
                return self.answer(404)
            self.answer(200, mirror.snapshot())

    return Handler


def main():
    secret = os.environ.get("WEBHOOK_SECRET", "")
    if len(sys.argv) != 2 or not secret.startswith("whsec_"):
        sys.exit("usage: WEBHOOK_SECRET=whsec_... receiver.py PORT")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])),
                                             make_handler(secret, Mirror()))
    print("listening on %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
