"""coffer_client — a client for coffer's HTTP API (docs/api.md), standard library only.

Every write carries an id (the caller's, or a fresh one), so a retry is safe: the server answers
a repeated id with the recorded outcome, never a second transfer. A request is retried, with the
same id and a growing backoff, after a connection error, on 503 `overloaded` (after its
Retry-After) and on 503 `shutting_down`/`no_leader` (trying the next base URL); a 307 to the
leader (`not_leader`, cluster mode) is followed and the leader remembered. Every problem the
server answers is raised as a CofferError subclass chosen by its code's family.

    client = Client(["http://127.0.0.1:8080"])
    client.create_account("user:42", "KRW")
    client.transfer("bank", "user:42", 5000, id="deposit-1")
    for change in client.follow(after=0):   # every change, in seq order, as it happens
        print(change["seq"], change["type"])

verify_webhook() checks a webhook delivery's Standard Webhooks signature.
"""

import base64
import hashlib
import hmac
import http.client
import json
import random
import time
import urllib.parse
import uuid

# The code table of include/coffer.h (COFFER_CODE_MAP): name -> (value, HTTP status).
# test_coffer_client.py checks that it matches the header.
CODES = {
    "ok": (0, 200), "created": (1, 201), "exists": (2, 200),
    "invalid_json": (10, 400), "invalid_field": (11, 400), "batch_too_large": (12, 400),
    "body_too_large": (13, 413), "invalid_argument": (14, 400), "route_not_found": (15, 404),
    "method_not_allowed": (16, 405), "uri_too_long": (17, 414), "headers_too_large": (18, 431),
    "account_not_found": (20, 422), "hold_not_found": (21, 422), "currency_mismatch": (22, 422),
    "same_account": (23, 422), "transfer_not_found": (24, 404), "webhook_not_found": (25, 404),
    "id_reused": (30, 422), "request_in_progress": (31, 409),
    "insufficient_balance": (40, 409), "exceeds_max_balance": (41, 409),
    "version_mismatch": (42, 409), "hold_expired": (43, 409), "hold_already_posted": (44, 409),
    "hold_already_voided": (45, 409), "hold_amount_exceeded": (46, 409), "batch_failed": (47, 409),
    "overflow": (48, 409),
    "overloaded": (50, 503), "storage_failed": (51, 503), "shutting_down": (52, 503),
    "capacity_exceeded": (53, 503), "out_of_memory": (54, 503), "internal": (55, 500),
    "unauthorized": (56, 401), "forbidden": (57, 403), "not_supported": (58, 501),
    "not_leader": (59, 307), "no_leader": (60, 503), "seq_not_applied": (61, 503),
}
# Service codes after which the same request may succeed later or on another instance.
RETRYABLE_CODES = frozenset({"overloaded", "shutting_down", "no_leader"})


class CofferError(Exception):
    """A problem answered by the server: `status`, `code`, and the whole `problem` body."""

    def __init__(self, status, problem):
        self.status = status
        self.problem = problem if isinstance(problem, dict) else {}
        self.code = self.problem.get("code", "unknown")
        super().__init__("%d %s: %s" % (status, self.code, self.problem.get("detail", "")))


class MalformedError(CofferError):
    """400/413: the request was refused before reaching the ledger; nothing was recorded."""


class NotFoundError(CofferError):
    """404: the account, transfer or endpoint does not exist."""


class ReferenceError(CofferError):  # noqa: A001 - the family's name in docs/api.md
    """422: a missing account or hold, mixed currencies, the same account twice."""


class IdempotencyError(CofferError):
    """id_reused (the id was used with other content) or request_in_progress."""


class ConflictError(CofferError):
    """409: a state conflict (insufficient_balance, version_mismatch, hold_expired, ...)."""


class BatchFailedError(ConflictError):
    """409 for an atomic batch that applied nothing: `results` has every item's result and
    `code` the first failure's."""

    def __init__(self, status, body):
        super().__init__(status, {"code": body.get("code"), "detail": "the atomic batch failed"})
        self.results = body.get("results", [])


class AuthError(CofferError):
    """401 unauthorized (no valid bearer token) or 403 forbidden (the token's scope or account
    prefixes, or the Origin or Host, do not allow the call); nothing was applied."""


class UnavailableError(CofferError):
    """503 (or 500): a service condition; nothing was applied."""


def error_class(status, code):
    if code in ("id_reused", "request_in_progress"):
        return IdempotencyError
    if status in (400, 405, 413):
        return MalformedError
    return {404: NotFoundError, 422: ReferenceError, 409: ConflictError, 401: AuthError,
            403: AuthError}.get(
        status, UnavailableError)


class ConnectionFailed(Exception):
    """No instance answered within the attempts; `__cause__` is the last error."""


class Client:
    """A client for one coffer deployment: one base URL, or several (tried in turn)."""

    def __init__(self, base_urls, timeout=30.0, attempts=6, backoff=0.05, backoff_max=2.0,
                 token=None):
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("at least one base URL")
        self.base_urls = [url.rstrip("/") for url in urls]
        self.current = 0  # the base URL that answered last (or the leader a 307 named)
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.token = token  # sent as Authorization: Bearer TOKEN when set

    # -- the API

    def create_account(self, id, currency, **fields):
        body = dict(fields, id=id, currency=currency)
        return self.request("POST", "/v1/accounts", body)

    def create_accounts(self, accounts):
        return self.request("POST", "/v1/accounts", {"accounts": list(accounts)})

    def get_account(self, id, at=None):
        query = {"at": at} if at is not None else None
        return self.request("GET", "/v1/accounts/" + segment(id), query=query)

    def history(self, id, after=None, limit=None):
        query = {k: v for k, v in (("after", after), ("limit", limit)) if v is not None}
        return self.request("GET", "/v1/accounts/%s/history" % segment(id), query=query)

    def transfer(self, from_account, to_account, amount, id=None, **fields):
        """One transfer; fields: hold={"timeout_ms": N}, expect={...}, up_to=True, metadata."""
        body = dict(fields, id=id or new_id(), to=to_account, amount=amount)
        body["from"] = from_account
        return self.request("POST", "/v1/transfers", body)

    def batch(self, items, atomic=False):
        """Items are transfers, {"post": HOLD}, {"void": HOLD}; each gets an id if it has none.
        An atomic batch that failed raises BatchFailedError."""
        items = [dict(item, id=item.get("id") or new_id()) for item in items]
        return self.request("POST", "/v1/transfers", {"atomic": atomic, "transfers": items})

    def post_hold(self, hold_id, amount=None, id=None, metadata=None):
        body = {"id": id or new_id()}
        if amount is not None:
            body["amount"] = amount
        if metadata is not None:
            body["metadata"] = metadata
        return self.request("POST", "/v1/holds/%s/post" % segment(hold_id), body)

    def void_hold(self, hold_id, id=None, metadata=None):
        body = {"id": id or new_id()}
        if metadata is not None:
            body["metadata"] = metadata
        return self.request("POST", "/v1/holds/%s/void" % segment(hold_id), body)

    def get_transfer(self, id):
        return self.request("GET", "/v1/transfers/" + segment(id))

    def holds(self, account=None, limit=None):
        query = {k: v for k, v in (("account", account), ("limit", limit)) if v is not None}
        return self.request("GET", "/v1/holds", query=query)

    def verify(self):
        return self.request("GET", "/v1/verify")

    # -- the change feed

    def events(self, after=0, limit=None, types=None, account=None, wait_ms=None):
        """One page of changes after seq `after`, oldest first: {"events": [...], "next_after",
        "durable_seq"}. `types` is a list of type names (default: all but transfer.rejected);
        with `wait_ms` the server holds the request until a newer change is durable or the
        time is up (keep it under the client's timeout)."""
        query = {"after": after}
        for name, value in (("limit", limit), ("account", account), ("wait_ms", wait_ms)):
            if value is not None:
                query[name] = value
        if types is not None:
            query["types"] = types if isinstance(types, str) else ",".join(types)
        return self.request("GET", "/v1/events", query=query)

    def follow(self, after=0, types=None, account=None, limit=None, wait_ms=25000):
        """Every change after `after`, forever, each once and in seq order, long-polling when
        there is none. After ConnectionFailed, start again with after= the last seq seen."""
        if wait_ms / 1000 >= self.timeout:
            raise ValueError("wait_ms must be under the client's timeout")
        while True:
            page = self.events(after, limit, types, account, wait_ms)
            for change in page["events"]:
                yield change
            after = page["next_after"]

    # -- webhooks (an admin token's calls)

    def create_webhook(self, id, url, types=None, account=None, secret=None, after=None,
                       batch=None, batch_wait_ms=None):
        """Registers a webhook; the answer carries its secret (generated when not given), and
        only this answer does. The same id and content again is a replay. `batch`: up to that
        many changes per POST (2 to 1000), in a body of type "batch"; `batch_wait_ms`: with a
        batch, once caught up, the wait between POSTs (0 to 10000) so that a stream goes out in
        full batches."""
        body = {"id": id, "url": url}
        for name, value in (("types", types), ("account", account), ("secret", secret),
                            ("after", after), ("batch", batch), ("batch_wait_ms", batch_wait_ms)):
            if value is not None:
                body[name] = list(value) if name == "types" else value
        return self.request("POST", "/v1/webhooks", body)

    def webhooks(self):
        return self.request("GET", "/v1/webhooks")

    def get_webhook(self, id):
        """Its state ("active" or "failing"), cursor, lag, failures and last error."""
        return self.request("GET", "/v1/webhooks/" + segment(id))

    def delete_webhook(self, id):
        self.request("DELETE", "/v1/webhooks/" + segment(id))

    def enable_webhook(self, id):
        """Resumes a failing webhook from its cursor."""
        return self.request("POST", "/v1/webhooks/%s/enable" % segment(id), {})

    # -- one request, with retries and redirects

    def request(self, method, path, body=None, query=None):
        """The parsed JSON answer of a 2xx; raises CofferError (or ConnectionFailed).
        The body is encoded once, so every retry sends the same id."""
        target = path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode("utf-8")
        last_error = None
        redirect_base = None
        for attempt in range(self.attempts):
            if attempt:
                self.sleep(attempt, last_error)
            base = redirect_base or self.base_urls[self.current]
            redirect_base = None
            try:
                status, headers, payload = self.send(base, method, target, data)
            except (OSError, http.client.HTTPException) as error:
                last_error = error
                self.next_base()
                continue
            if status == 307 and headers.get("location"):
                redirect_base = self.follow_redirect(headers["location"], target)
                last_error = None
                continue
            answer = parse(payload)
            if 200 <= status < 300:
                return answer
            if status == 409 and isinstance(answer, dict) and "results" in answer:
                raise BatchFailedError(status, answer)
            code = answer.get("code") if isinstance(answer, dict) else None
            if status == 503 and code in RETRYABLE_CODES:
                last_error = error_class(status, code)(status, answer)
                last_error.retry_after = retry_after(headers)
                if code != "overloaded":
                    self.next_base()
                continue
            raise error_class(status, code)(status, answer)
        if isinstance(last_error, CofferError):
            raise last_error
        raise ConnectionFailed("no answer from %s after %d attempts"
                               % (", ".join(self.base_urls), self.attempts)) from last_error

    def send(self, base, method, target, data):
        parts = urllib.parse.urlsplit(base)
        connection_class = (http.client.HTTPSConnection if parts.scheme == "https"
                            else http.client.HTTPConnection)
        connection = connection_class(parts.netloc, timeout=self.timeout)
        try:
            headers = {"Accept": "application/json"}
            if self.token:
                headers["Authorization"] = "Bearer " + self.token
            if data is not None:
                headers["Content-Type"] = "application/json"
            connection.request(method, parts.path + target, body=data, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, payload
        finally:
            connection.close()

    def follow_redirect(self, location, target):
        """The base URL of a 307's Location; it becomes the one to use from now on."""
        base = location[:-len(target)] if location.endswith(target) else location
        base = base.rstrip("/")
        if base not in self.base_urls:
            self.base_urls.append(base)
        self.current = self.base_urls.index(base)
        return base

    def next_base(self):
        self.current = (self.current + 1) % len(self.base_urls)

    def sleep(self, attempt, last_error):
        delay = min(self.backoff_max, self.backoff * 2 ** (attempt - 1))
        delay *= 0.5 + random.random() / 2  # jitter: retries of many clients spread out
        wait = getattr(last_error, "retry_after", None)
        time.sleep(max(delay, wait) if wait is not None else delay)


class WebhookVerificationError(Exception):
    """A delivery that is not from the server: a missing header, a timestamp too far from now,
    or no signature that matches."""


def verify_webhook(secret, headers, body, tolerance_s=300, now=None):
    """Checks a webhook delivery as Standard Webhooks signs it and returns its parsed payload
    ({"type", "timestamp", "data": the change}); raises WebhookVerificationError otherwise.

    `secret` is "whsec_<base64>"; `headers` any mapping (names in any case); `body` the raw
    bytes as received (parse only after checking). The signature is base64 HMAC-SHA256 with the
    secret's bytes over "<webhook-id>.<webhook-timestamp>.<body>"; webhook-signature may list
    several ("v1,<sig> v1,<sig>", while a secret is rotated), one match is enough. The
    timestamp must be within `tolerance_s` of `now` (a replayed old delivery is refused).
    De-duplicate on webhook-id: a delivery may come more than once."""
    lowered = {name.lower(): value for name, value in headers.items()}
    message_id = lowered.get("webhook-id")
    timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not message_id or not timestamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or signature")
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise WebhookVerificationError("webhook-timestamp is not a number of seconds")
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too far from now")
    if not secret.startswith("whsec_"):
        raise ValueError("a webhook secret starts with whsec_")
    key = base64.b64decode(secret[len("whsec_"):])
    body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    signed = message_id.encode("utf-8") + b"." + timestamp.encode("ascii") + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")
    for signature in signatures.split():
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected.encode()):
            return json.loads(body.decode("utf-8"))
    raise WebhookVerificationError("no matching signature")


def new_id():
    return "py-" + uuid.uuid4().hex


def segment(id):
    """An id as one path segment (`/` as %2F), as docs/openapi.yaml asks."""
    return urllib.parse.quote(id, safe=":@")


def parse(payload):
    """JSON with exact integers (Python's int is unbounded, so int64 amounts stay exact)."""
    if not payload:
        return {}
    try:
        return json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {"detail": payload[:200].decode("utf-8", "replace")}


def retry_after(headers):
    try:
        return float(headers.get("retry-after", ""))
    except ValueError:
        return None
