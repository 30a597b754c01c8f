#!/usr/bin/env python3
"""A shop checkout that uses coffer from Python, with the standard library only (http.client).

The shop keeps its money and its stock in coffer. A checkout is one atomic batch: the customer
pays the order total to the shop, and every line's units move from the SKU's stock to its sold
account. Either the whole order happens or none of it does: a customer is never charged for an
item that was out of stock, and stock never goes below zero however many customers check out at
once.

Every id is derived from the order id (order-42:pay, order-42:stock:mug), so the checkout call
can be retried as often as needed: on a timeout, a dropped connection or a 503, the client sends
the same batch again, and coffer answers with the original outcome instead of charging twice.

The demo below runs against a coffer server ($COFFER_SERVER, default http://127.0.0.1:8080):

  1. an order whose first response is lost after coffer applied it (the client times out),
  2. an order whose first attempt is shed with 503 overloaded (Retry-After) before coffer saw it,
  3. an order the customer cannot afford, and its retry, which gets the same refusal,
  4. a flash sale: 8 customers at once for the last 5 units of a SKU,
  5. an audit of every balance; the script exits 1 if anything does not add up.

Faults 1 and 2 are injected on the client side (FaultInjector) so that the demo is repeatable;
the retry code that handles them is the code a real shop would run.
"""

import http.client
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor


class CofferUnavailable(Exception):
    """Every attempt failed with a timeout, a connection error or a 503."""


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def replayed(self):
        """True when coffer answered with a recorded outcome instead of applying anything: a
        single write says so in the Idempotent-Replayed header, a batch in every result."""
        if self.headers.get("Idempotent-Replayed", "").lower() == "true":
            return True
        results = self.body.get("results") if isinstance(self.body, dict) else None
        return bool(results) and all(x.get("replayed") is True for x in results)


class FaultInjector:
    """Simulates the network failures the retry loop exists for (for the demo only).

    lose_response: the request is sent, then the connection is dropped before the answer is read,
    as when a response is lost or the client's timeout fires. shed: the attempt is answered
    503 overloaded with Retry-After, as a load balancer or a full server queue would, and the
    request is never sent. Each fault fires once per key, on the first attempt."""

    def __init__(self):
        self.lose_response = set()
        self.shed = set()
        self._lock = threading.Lock()

    def take(self, kind, key):
        with self._lock:
            faults = getattr(self, kind)
            if key in faults:
                faults.discard(key)
                return True
            return False


class Coffer:
    """A small coffer client: JSON over keep-alive HTTP/1.1, one connection per thread.

    request() retries timeouts, connection errors and 503 (honouring Retry-After) with
    exponential backoff. Retrying a write is safe only because every write carries its own
    idempotency key (the transfer ids); the retry sends exactly the same body.

    base_urls may name several instances of one ledger, comma separated: a 307 from a follower
    moves every thread to the leader it names, and a connection error or 503 no_leader moves
    them to the next instance of the list."""

    def __init__(self, base_urls, timeout=10.0, attempts=6, backoff=0.05, faults=None, log=print):
        self.instances = []
        for base_url in base_urls.split(","):
            url = urllib.parse.urlsplit(base_url.strip())
            if url.scheme != "http" or not url.hostname:
                raise ValueError("COFFER_SERVER must look like http://HOST:PORT[,http://HOST:PORT...],"
                                 " not %r" % base_urls)
            self.instances.append((url.hostname, url.port or 80))
        self.target = self.instances[0]  # (host, port) every thread sends to; one assignment moves it
        self.timeout, self.attempts, self.backoff = timeout, attempts, backoff
        self.faults = faults
        self.log = log
        self._local = threading.local()

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None and (conn.host, conn.port) != self.target:
            self._drop_connection()  # another thread learnt where the leader is
            conn = None
        if conn is None:
            conn = http.client.HTTPConnection(*self.target, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _move(self, location=None):
        """Sends the next requests to location (a 307's) or else to the next instance of the list."""
        if location:
            url = urllib.parse.urlsplit(location)
            self.target = (url.hostname, url.port or 80)
        elif self.target in self.instances:
            self.target = self.instances[(self.instances.index(self.target) + 1) % len(self.instances)]
        else:  # a leader learnt from a 307 that has gone: start the list again
            self.target = self.instances[0]
        self._drop_connection()

    def _drop_connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(self, method, path, body=None, key=None):
        """Sends one request, retrying what is safe to retry. key names the request in the log and
        for the fault injector (the idempotency key of a write)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                if self.faults and key and self.faults.take("shed", key):
                    status, retry_after = 503, "1"
                    self.log("    attempt %d: 503 overloaded (Retry-After: %s)" % (attempt, retry_after))
                else:
                    conn = self._connection()
                    conn.request(method, path, body=data, headers=headers)
                    if self.faults and key and self.faults.take("lose_response", key):
                        self._drop_connection()
                        raise socket.timeout("timed out (the response was lost)")
                    resp = conn.getresponse()
                    payload = resp.read()
                    status, retry_after = resp.status, resp.getheader("Retry-After")
                    if status == 307 and resp.getheader("Location"):
                        self.log("    attempt %d: 307 to %s" % (attempt, resp.getheader("Location")))
                        self._move(resp.getheader("Location"))
                        retry_after = "0"  # not a failure: the leader is known, go now
                    elif status != 503:
                        return Response(status, dict(resp.getheaders()), json.loads(payload or b"null"))
                    else:
                        code = json.loads(payload).get("code")
                        self.log("    attempt %d: 503 %s" % (attempt, code))
                        if code == "no_leader":
                            self._move()
            except (socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException) as e:
                if isinstance(e, (ConnectionError, http.client.HTTPException)):
                    self._move()  # this instance is gone or going: try the next one
                else:
                    self._drop_connection()  # slow, not gone: the same instance again
                retry_after = None
                self.log("    attempt %d: %s: %s" % (attempt, type(e).__name__, e))
            if attempt == self.attempts:
                break
            wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
            self.log("    retrying in %.2f s%s" % (wait, " with the same key" if key else ""))
            time.sleep(wait)
            delay = min(delay * 2, 2.0)
        raise CofferUnavailable("%s %s: no answer after %d attempts" % (method, path, self.attempts))

    # The few calls the shop needs.
    def create_accounts(self, accounts):
        r = self.request("POST", "/v1/accounts", {"accounts": accounts})
        bad = [x for x in r.body["results"] if x["code"] != "created"]
        if r.status != 200 or bad:
            raise RuntimeError("creating accounts failed: %s" % (bad or r.body))

    def transfers(self, transfers, atomic=True, key=None):
        return self.request("POST", "/v1/transfers", {"atomic": atomic, "transfers": transfers}, key=key)

    def account(self, account_id):
        r = self.request("GET", "/v1/accounts/" + urllib.parse.quote(account_id, safe=":@/"))
        if r.status != 200:
            raise RuntimeError("GET account %s: %s" % (account_id, r.body))
        return r.body


class Shop:
    """The shop's checkout, on top of coffer accounts:

    {p}:customer:NAME  KRW   the customer's wallet (floor 0)
    {p}:revenue        KRW   the shop's takings
    {p}:stock:SKU      ITEM  units on the shelf (floor 0: never oversold)
    {p}:sold:SKU       ITEM  units sold
    """

    def __init__(self, coffer, prefix, prices):
        self.coffer, self.p, self.prices = coffer, prefix, prices

    def checkout(self, order_id, customer, cart):
        """Charges the customer and takes the units off the shelf in one atomic batch. Returns
        ("paid", total, response) or ("refused", reason, response). Safe to call again with the
        same order_id: the second call returns the first call's outcome."""
        total = sum(self.prices[sku] * qty for sku, qty in cart.items())
        key = "%s:%s" % (self.p, order_id)
        batch = [{"id": key + ":pay", "from": "%s:customer:%s" % (self.p, customer),
                  "to": self.p + ":revenue", "amount": total,
                  "metadata": {"order": order_id}}]
        for sku, qty in sorted(cart.items()):
            batch.append({"id": "%s:stock:%s" % (key, sku), "from": "%s:stock:%s" % (self.p, sku),
                          "to": "%s:sold:%s" % (self.p, sku), "amount": qty})
        r = self.coffer.transfers(batch, atomic=True, key=key)
        # 200: the batch applied; 409 with "results": it failed whole and applied nothing.
        if r.status == 200:
            return "paid", total, r
        if r.status != 409 or not isinstance(r.body, dict) or "results" not in r.body:
            raise RuntimeError("checkout %s: HTTP %d %s" % (order_id, r.status, r.body))
        results = r.body["results"]
        # In a failed atomic batch the item that failed carries its own code, the rest batch_failed.
        failed = next(i for i, x in enumerate(results) if x["code"] != "batch_failed")
        code = results[failed]["code"]
        if failed == 0 and code == "insufficient_balance":
            reason = "insufficient funds"
        elif code == "insufficient_balance":
            reason = "out of stock: " + batch[failed]["from"].rsplit(":", 1)[1]
        else:
            reason = code
        return "refused", reason, r


def main():
    server = os.environ.get("COFFER_SERVER", "http://127.0.0.1:8080")
    prefix = "shop-%d-%s" % (int(time.time()), uuid.uuid4().hex[:6])
    faults = FaultInjector()
    lock = threading.Lock()

    def log(line):
        with lock:
            print(line, flush=True)

    coffer = Coffer(server, faults=faults, log=log)
    failures = []

    def check(what, actual, expected):
        ok = actual == expected
        log("  %s  %s: %s%s" % ("ok  " if ok else "FAIL", what, actual,
                                "" if ok else ", expected %s" % (expected,)))
        if not ok:
            failures.append(what)

    try:
        ready = coffer.request("GET", "/readyz")
    except CofferUnavailable:
        ready = None
    if ready is None or ready.status != 200:
        print("no coffer server ready at %s (start one with 'make run')" % server, file=sys.stderr)
        return 2

    log("== Shop checkout from Python (run %s)" % prefix)
    prices = {"mug": 12000, "tee": 25000, "poster": 8000}
    stock = {"mug": 50, "tee": 50, "poster": 5}
    wallets = {"ann": 100000, "bo": 100000, "cy": 10000}
    wallets.update({"fan%d" % i: 50000 for i in range(1, 9)})
    p = prefix
    coffer.create_accounts(
        [{"id": p + ":bank", "currency": "KRW", "min_balance": None},
         {"id": p + ":revenue", "currency": "KRW"},
         {"id": p + ":supplier", "currency": "ITEM", "min_balance": None}]
        + [{"id": "%s:customer:%s" % (p, c), "currency": "KRW"} for c in wallets]
        + [{"id": "%s:stock:%s" % (p, s), "currency": "ITEM"} for s in stock]
        + [{"id": "%s:sold:%s" % (p, s), "currency": "ITEM"} for s in stock])
    setup = coffer.transfers(
        [{"id": "%s:fund:%s" % (p, c), "from": p + ":bank", "to": "%s:customer:%s" % (p, c),
          "amount": amount} for c, amount in wallets.items()]
        + [{"id": "%s:restock:%s" % (p, s), "from": p + ":supplier", "to": "%s:stock:%s" % (p, s),
            "amount": n} for s, n in stock.items()], key="setup")
    check("shop set up", sorted({x["code"] for x in setup.body["results"]}), ["created"])
    shop = Shop(coffer, prefix, prices)
    spent = {c: 0 for c in wallets}  # what each customer should have paid, from the receipts

    # 1. The first response is lost after coffer applied the order: the retry must not charge again.
    log("-- 1. ann orders 2 mugs and a tee; the first response is lost (timeout)")
    faults.lose_response.add("%s:order-1" % p)
    outcome, total, r = shop.checkout("order-1", "ann", {"mug": 2, "tee": 1})
    log("    -> %s %s KRW (answer replayed from the first attempt: %s)" % (outcome, total, r.replayed))
    check("order-1", outcome, "paid")
    spent["ann"] += total
    again = shop.checkout("order-1", "ann", {"mug": 2, "tee": 1})
    check("order-1 submitted once more: same outcome, replayed",
          (again[0], again[2].replayed, again[2].body["results"][0]["transfer"]["seq"]),
          ("paid", True, r.body["results"][0]["transfer"]["seq"]))

    # 2. The first attempt is shed with 503 before coffer saw it: the retry applies it.
    log("-- 2. bo orders a poster; the first attempt gets 503 overloaded")
    faults.shed.add("%s:order-2" % p)
    outcome, total, r = shop.checkout("order-2", "bo", {"poster": 1})
    log("    -> %s %s KRW" % (outcome, total))
    check("order-2", outcome, "paid")
    spent["bo"] += total

    # 3. A refusal is an outcome too: retrying the same order gets the same refusal.
    log("-- 3. cy (10,000 KRW) orders a tee for 25,000")
    outcome, reason, r = shop.checkout("order-3", "cy", {"tee": 1})
    log("    -> %s: %s" % (outcome, reason))
    check("order-3", (outcome, reason), ("refused", "insufficient funds"))
    retry = shop.checkout("order-3", "cy", {"tee": 1})
    check("order-3 retried: same refusal, replayed", (retry[0], retry[1], retry[2].replayed),
          ("refused", "insufficient funds", True))

    # 4. Flash sale: the last posters, many buyers at once.
    left = coffer.account(p + ":stock:poster")["balance"]
    log("-- 4. flash sale: 8 customers at once for the last %d posters (and a mug each)" % left)

    def flash(i):
        return "fan%d" % i, shop.checkout("flash-%d" % i, "fan%d" % i, {"poster": 1, "mug": 1})

    with ThreadPoolExecutor(max_workers=8) as pool:
        sales = list(pool.map(flash, range(1, 9)))
    for customer, (outcome, detail, _) in sales:
        log("    %s: %s%s" % (customer, outcome, " (%s)" % detail if outcome == "refused" else ""))
        if outcome == "paid":
            spent[customer] += detail
    paid = sum(1 for _, (outcome, _, _) in sales if outcome == "paid")
    check("flash-sale orders paid", paid, left)
    check("flash-sale refusals, all out of stock",
          sorted({d for _, (o, d, _) in sales if o == "refused"}), ["out of stock: poster"])

    # 5. Audit: coffer's balances against the shop's receipts.
    log("-- 5. audit")
    for c, start in wallets.items():
        check("%s's wallet" % c, coffer.account("%s:customer:%s" % (p, c))["balance"], start - spent[c])
    check("revenue", coffer.account(p + ":revenue")["balance"], sum(spent.values()))
    for s, n in stock.items():
        shelf = coffer.account("%s:stock:%s" % (p, s))["balance"]
        sold = coffer.account("%s:sold:%s" % (p, s))["balance"]
        check("%s: on the shelf + sold" % s, (shelf, sold, shelf + sold >= 0 and shelf >= 0), (n - sold, sold, True))
    check("poster stock", coffer.account(p + ":stock:poster")["balance"], 0)
    check("server invariant check (GET /v1/verify)", coffer.request("GET", "/v1/verify").body["ok"], True)

    if failures:
        log("== Shop checkout FAILED: %s" % ", ".join(failures))
        return 1
    log("== Shop checkout passed: lost response and 503 retried without a double charge; "
        "%d of 8 flash-sale buyers served, the rest not charged" % paid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
