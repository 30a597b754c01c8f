"""Every endpoint and every code of docs/api.md that HTTP can reach, against a real server."""

import http.client
import re
import threading
import time
import unittest
import urllib.parse

from harness import (BATCH_MAX, INT64_MAX, SLOW, ServerTestCase, parse_rfc3339_ns, quote,
                     run_threads, uid)

ACCOUNT_FIELDS = {"id", "currency", "balance", "available", "debits_posted", "credits_posted",
                  "debits_held", "credits_held", "min_balance", "max_balance", "version",
                  "metadata", "created_at", "created_seq"}


class Accounts(ServerTestCase):

    def test_create_returns_the_account_object(self):
        account_id = uid("user")
        r = self.client.post("/v1/accounts", {"id": account_id, "currency": "KRW",
                                              "metadata": {"name": "Kim", "tier": [1, 2]}})
        a = self.assert_created(r)
        self.assertTrue(ACCOUNT_FIELDS <= set(a), "missing fields: %s" % (ACCOUNT_FIELDS - set(a)))
        self.assertEqual(a["id"], account_id)
        self.assertEqual(a["currency"], "KRW")
        for key in ("balance", "available", "debits_posted", "credits_posted", "debits_held",
                    "credits_held"):
            self.assertEqual(a[key], 0, key)
        self.assertEqual(a["min_balance"], 0)
        self.assertIsNone(a["max_balance"])
        self.assertEqual(a["version"], 1)
        self.assertEqual(a["metadata"], {"name": "Kim", "tier": [1, 2]})
        self.assert_timestamp(a["created_at"])
        self.assertIsInstance(a["created_seq"], int)
        self.assertGreater(a["created_seq"], 0)
        # GET gives the same object
        got = self.get_account(account_id)
        self.assertEqual(got, a)

    def test_limits_are_stored(self):
        a = self.create_account(currency="POINT", min_balance=-500, max_balance=10000)
        self.assertEqual((a["min_balance"], a["max_balance"]), (-500, 10000))
        b = self.create_account(currency="POINT", min_balance=None)
        self.assertIsNone(b["min_balance"])
        self.assertIsNone(b["max_balance"])
        self.assertEqual(b["metadata"], {})  # none given

    def test_id_charset_and_length(self):
        ok = "a" * 50 + "Z9._:@/-" + "b" * 6  # 64 bytes, every allowed punctuation
        self.assertEqual(len(ok), 64)
        r = self.client.post("/v1/accounts", {"id": ok, "currency": "KRW"})
        self.assertEqual(self.assert_created(r)["id"], ok)
        for bad in ("", "a" * 65, "has space", "emoji\u00e9", "semi;colon", "q?x", "h#x"):
            r = self.client.post("/v1/accounts", {"id": bad, "currency": "KRW"})
            self.assert_problem(r, 400, "invalid_field", field="/id")

    def test_field_validation(self):
        cases = [
            ({"currency": "krw"}, "/currency"),
            ({"currency": ""}, "/currency"),
            ({"currency": "ABCDEFGHIJKLM"}, "/currency"),
            ({"min_balance": 1}, "/min_balance"),
            ({"max_balance": -1}, "/max_balance"),
            ({"min_balance": -10, "max_balance": -5}, "/max_balance"),
            ({"metadata": {"x": "y" * 1100}}, "/metadata"),
            ({"metadata": [1, 2]}, "/metadata"),
            ({"metadata": "text"}, "/metadata"),
        ]
        for extra, field in cases:
            body = {"id": uid("bad"), "currency": "KRW"}
            body.update(extra)
            with self.subTest(body=extra):
                r = self.client.post("/v1/accounts", body)
                self.assert_problem(r, 400, "invalid_field", field=field)
                # a 400 records nothing: the id is still free
                self.assertEqual(self.client.get("/v1/accounts/" + quote(body["id"])).status, 404)

    def test_replay_and_id_reused(self):
        account_id = uid("user")
        body = {"id": account_id, "currency": "KRW", "min_balance": -100, "max_balance": 5000,
                "metadata": {"k": "v"}}
        first = self.client.post("/v1/accounts", body)
        self.assert_created(first)
        # money moves between the create and the replay: the replay still shows it as created
        self.fund(account_id, 700)
        replay = self.client.post("/v1/accounts", body)
        self.assert_replay_of(replay, first)
        self.assertEqual(replay.json()["balance"], 0)
        for change, field in (({"currency": "USD"}, "/currency"),
                              ({"min_balance": -99}, "/min_balance"),
                              ({"min_balance": None}, "/min_balance"),
                              ({"max_balance": 5001}, "/max_balance"),
                              ({"max_balance": None}, "/max_balance"),
                              ({"metadata": {"k": "w"}}, "/metadata")):
            other = dict(body, **change)
            with self.subTest(change=change):
                r = self.client.post("/v1/accounts", other)
                p = self.assert_problem(r, 422, "id_reused", field=field, id=account_id)
                self.assertNotIn("seq", p, "id_reused records nothing, so has no seq")
        self.assertEqual(self.get_account(account_id)["balance"], 700)

    def test_account_batch(self):
        existing = self.create_account()
        ids = [uid("b0"), uid("b1"), uid("b2")]
        r = self.client.post("/v1/accounts", {"accounts": [
            {"id": ids[0], "currency": "KRW"},
            {"id": ids[1], "currency": "bad"},
            {"id": ids[2], "currency": "USD", "max_balance": 10},
            {"id": existing["id"], "currency": "USD"},
            {"id": existing["id"], "currency": "KRW"},
        ]})
        self.assertEqual(r.status, 200, r)
        self.assert_request_id(r)
        results = r.json()["results"]
        self.assertEqual(len(results), 5)
        self.assertEqual((results[0]["status"], results[0]["code"]), (201, "created"))
        self.assertEqual(results[0]["account"]["id"], ids[0])
        self.assertEqual(results[0]["account"]["version"], 1)
        self.assertEqual((results[1]["status"], results[1]["code"]), (400, "invalid_field"))
        self.assert_problem_body(results[1]["problem"], 400, "invalid_field",
                                 field="/accounts/1/currency")
        self.assertEqual((results[2]["status"], results[2]["code"]), (201, "created"))
        self.assertEqual(results[2]["account"]["max_balance"], 10)
        self.assertEqual((results[3]["status"], results[3]["code"]), (422, "id_reused"))
        self.assert_problem_body(results[3]["problem"], 422, "id_reused",
                                 field="/accounts/3/currency")
        # an exact repeat inside a batch is a replay of the original
        self.assertEqual((results[4]["status"], results[4]["code"], results[4].get("replayed")),
                         (201, "created", True))
        self.assertEqual(results[4]["account"], existing)
        self.assertNotIn("replayed", results[0])
        self.get_account(ids[0])
        self.get_account(ids[2])
        self.assertEqual(self.client.get("/v1/accounts/" + quote(ids[1])).status, 404)

    def test_ids_with_a_slash(self):
        account_id = uid("seat") + "/C1/A12"
        a = self.create_account(account_id)
        self.fund(account_id, 5)
        for path in ("/v1/accounts/" + account_id,
                     "/v1/accounts/" + account_id.replace("/", "%2F")):
            with self.subTest(path=path):
                r = self.client.get(path)
                self.assertEqual(r.status, 200, r)
                self.assertEqual((r.json()["id"], r.json()["balance"]), (account_id, 5))
        r = self.client.get("/v1/accounts/%s/history" % account_id)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([e["delta"] for e in r.json()["entries"]], [5])
        self.assertEqual(a["id"], account_id)

    def test_get_missing_account(self):
        r = self.client.get("/v1/accounts/" + uid("nobody"))
        self.assert_problem(r, 404, "account_not_found")
        r = self.client.get("/v1/accounts/%s/history" % uid("nobody"))
        self.assert_problem(r, 404, "account_not_found")


class History(ServerTestCase):

    def test_paging_and_entries(self):
        a = self.create_account()["id"]
        b = self.create_account()["id"]
        self.fund(a, 1000)
        ids = []
        for i in range(5):
            tid = uid("h")
            ids.append(tid)
            r = self.transfer({"id": tid, "from": a, "to": b, "amount": 10 + i})
            self.assertEqual(r.status, 201, r)
        r = self.history(a)
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertIsNone(body["next_after"])
        entries = body["entries"]
        self.assertEqual(len(entries), 6)
        self.assertEqual([e["kind"] for e in entries], ["posted"] * 6)
        self.assertEqual([e["transfer_id"] for e in entries[1:]], ids)
        self.assertEqual([e["delta"] for e in entries], [1000, -10, -11, -12, -13, -14])
        self.assertEqual([e["version"] for e in entries], [2, 3, 4, 5, 6, 7])
        self.assertEqual([e["balance"] for e in entries], [1000, 990, 979, 967, 954, 940])
        self.assertEqual([e["available"] for e in entries], [1000, 990, 979, 967, 954, 940])
        seqs = [e["seq"] for e in entries]
        self.assertEqual(seqs, sorted(seqs))
        self.assertEqual(len(set(seqs)), len(seqs))
        stamps = [self.assert_timestamp(e["timestamp"]) for e in entries]
        self.assertEqual(stamps, sorted(set(stamps)))
        # the credit side
        b_entries = self.history(b).json()["entries"]
        self.assertEqual([e["delta"] for e in b_entries], [10, 11, 12, 13, 14])
        # pages of 2: next_after chains them, null at the end
        pages, after = [], 0
        while True:
            r = self.history(a, after=after, limit=2)
            self.assertEqual(r.status, 200, r)
            page = r.json()
            pages.append(page["entries"])
            self.assertLessEqual(len(page["entries"]), 2)
            if page["next_after"] is None:
                break
            self.assertEqual(page["next_after"], page["entries"][-1]["seq"])
            after = page["next_after"]
            self.assertLess(len(pages), 10)
        self.assertEqual([e for p in pages for e in p], entries)
        self.assertEqual([len(p) for p in pages][:3], [2, 2, 2])
        # after= in the middle
        r = self.history(a, after=seqs[2])
        self.assertEqual(r.json()["entries"], entries[3:])
        # after the last: empty, next_after null
        r = self.history(a, after=seqs[-1])
        self.assertEqual(r.json(), {"entries": [], "next_after": None})

    def test_bad_paging_arguments(self):
        a = self.create_account()["id"]
        for query in ("limit=0", "limit=1001", "limit=abc", "after=-1", "after=x", "limit=1.5",
                      "limit=", "after=18446744073709551616"):
            with self.subTest(query=query):
                r = self.client.get("/v1/accounts/%s/history?%s" % (a, query))
                self.assert_problem(r, 400, "invalid_field", field="/" + query.split("=")[0])
        self.assertEqual(self.history(a, limit=1000).status, 200)
        self.assertEqual(self.history(a, limit=1).status, 200)

    def test_past_balance_at_seq_and_time(self):
        a = self.create_account()
        account_id = a["id"]
        self.fund(account_id, 500)
        sink = self.create_account()["id"]
        self.assertEqual(self.transfer({"id": uid(), "from": account_id, "to": sink,
                                        "amount": 200}).status, 201)
        hold = self.transfer({"id": uid(), "from": account_id, "to": sink, "amount": 50,
                              "hold": {"timeout_ms": 600000}})
        self.assertEqual(hold.status, 201, hold)
        entries = self.history(account_id).json()["entries"]
        self.assertEqual(len(entries), 3)
        for e in entries:
            for at in (str(e["seq"]), e["timestamp"]):
                with self.subTest(at=at):
                    r = self.client.get("/v1/accounts/%s?at=%s"
                                        % (account_id, urllib.parse.quote(at, safe="")))
                    self.assertEqual(r.status, 200, r)
                    past = r.json()
                    self.assertEqual(past["balance"], e["balance"])
                    self.assertEqual(past["available"], e["available"])
                    self.assertEqual(past["debits_held"], e["balance"] - e["available"])
                    self.assertEqual(past["version"], e["version"])
                    self.assertIsNone(past["debits_posted"])
                    self.assertIsNone(past["credits_posted"])
                    self.assertIsNone(past["credits_held"])
                    self.assertEqual(past["id"], account_id)
                    if at == e["timestamp"]:
                        self.assertEqual(past["at"], {"timestamp": e["timestamp"]})
                    else:
                        self.assertEqual(past["at"], {"seq": e["seq"]})
        # between two changes: the state after the earlier one
        r = self.client.get("/v1/accounts/%s?at=%d" % (account_id, entries[2]["seq"] - 1))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["balance"], 300)
        self.assertEqual(r.json()["version"], 3)
        # before the first change but after creation: the account as created
        r = self.client.get("/v1/accounts/%s?at=%d" % (account_id, a["created_seq"]))
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json()["balance"], r.json()["version"]), (0, 1))
        # before it existed: 404, by seq and by time
        r = self.client.get("/v1/accounts/%s?at=%d" % (account_id, a["created_seq"] - 1))
        self.assert_problem(r, 404, "account_not_found")
        r = self.client.get("/v1/accounts/%s?at=%s"
                            % (account_id, "2000-01-01T00%3A00%3A00.000000000Z"))
        self.assert_problem(r, 404, "account_not_found")
        # now is unaffected
        now = self.get_account(account_id)
        self.assertEqual((now["balance"], now["available"], now["debits_held"]), (300, 250, 50))
        # a malformed at=
        for at in ("yesterday", "-1", "1.5", "2026-11-24T23:48:00.1234567891Z",
                   "2026-11-24T23:48:00+09:00", ""):
            with self.subTest(at=at):
                r = self.client.get("/v1/accounts/%s?at=%s"
                                    % (account_id, urllib.parse.quote(at, safe="")))
                self.assert_problem(r, 400, "invalid_field", field="/at")


class Transfers(ServerTestCase):

    def setUp(self):
        self.a = self.funded_account(10000)
        self.b = self.create_account()["id"]

    def test_plain_transfer(self):
        tid = uid("pay")
        r = self.transfer({"id": tid, "from": self.a, "to": self.b, "amount": 500,
                           "metadata": {"order": 7}})
        body = self.assert_created(r)
        self.assertEqual(body["code"], "created")
        t = body["transfer"]
        self.assertEqual((t["id"], t["from"], t["to"], t["amount"], t["state"]),
                         (tid, self.a, self.b, 500, "posted"))
        self.assertIsInstance(t["seq"], int)
        self.assert_timestamp(t["timestamp"])
        self.assertEqual(body["accounts"]["from"],
                         {"id": self.a, "balance": 9500, "available": 9500, "version": 3})
        self.assertEqual(body["accounts"]["to"],
                         {"id": self.b, "balance": 500, "available": 500, "version": 2})
        got = self.get_transfer(tid)
        self.assertEqual(got.status, 200, got)
        g = got.json()
        self.assertEqual((g["id"], g["from"], g["to"], g["amount"], g["state"], g["code"],
                          g["seq"], g["timestamp"]),
                         (tid, self.a, self.b, 500, "posted", "created", t["seq"],
                          t["timestamp"]))
        self.assertEqual(g.get("metadata"), {"order": 7})
        a = self.get_account(self.a)
        self.assertEqual((a["balance"], a["debits_posted"], a["credits_posted"], a["version"]),
                         (9500, 500, 10000, 3))

    def test_replay_returns_the_original(self):
        tid = uid("pay")
        body = {"id": tid, "from": self.a, "to": self.b, "amount": 300}
        first = self.transfer(body)
        self.assert_created(first)
        self.assertEqual(self.transfer({"id": uid(), "from": self.a, "to": self.b,
                                        "amount": 1}).status, 201)
        for _ in range(3):
            replay = self.transfer(body)
            self.assert_replay_of(replay, first)
        # applied once
        self.assertEqual(self.get_account(self.b)["balance"], 301)
        # id_reused names the first differing field
        for change, field in (({"amount": 301}, "/amount"),
                              ({"to": self.a, "from": self.b}, "/from"),
                              ({"to": self.create_account()["id"]}, "/to"),
                              ({"metadata": {"x": 1}}, "/metadata"),
                              ({"expect": {"from_version": 2}}, "/expect/from_version"),
                              ({"up_to": True}, "/up_to"),
                              ({"hold": {"timeout_ms": 1000}}, "/hold/timeout_ms")):
            with self.subTest(change=change):
                r = self.transfer(dict(body, **change))
                self.assert_problem(r, 422, "id_reused", field=field)
                self.assertFalse(r.replayed)
        self.assertEqual(self.get_account(self.b)["balance"], 301)

    def test_replay_of_a_rejection_stays_a_rejection(self):
        poor = self.create_account()["id"]
        self.fund(poor, 40)
        tid = uid("pay")
        body = {"id": tid, "from": poor, "to": self.b, "amount": 100}
        first = self.transfer(body)
        p = self.assert_problem(first, 409, "insufficient_balance", available=40, id=tid)
        self.assertIsInstance(p.get("seq"), int, "a recorded rejection carries its seq")
        self.assertFalse(first.replayed)
        self.fund(poor, 1000)  # now it would succeed, but the key names the first attempt
        replay = self.transfer(body)
        self.assert_replay_of(replay, first)
        self.assertEqual(replay.json()["available"], 40)
        self.assertEqual(self.get_account(poor)["balance"], 1040)
        g = self.get_transfer(tid)
        self.assertEqual(g.status, 200, g)
        self.assertEqual((g.json()["code"], g.json()["state"]),
                         ("insufficient_balance", "rejected"))
        # docs/api.md: a rejected transfer moved nothing and shows the amount it asked for
        self.assertEqual(g.json()["amount"], 100, g.json())
        self.assertEqual(g.json()["seq"], p["seq"])
        # a rejection's id is still taken for other content
        self.assert_problem(self.transfer(dict(body, amount=99)), 422, "id_reused", field="/amount")
        self.assertIn("detail", p)

    def test_idempotency_key_header(self):
        key = uid("hdr")
        body = {"from": self.a, "to": self.b, "amount": 10}
        first = self.transfer(body, headers={"Idempotency-Key": key})
        self.assertEqual(self.assert_created(first)["transfer"]["id"], key)
        replay = self.transfer(body, headers={"Idempotency-Key": key})
        self.assert_replay_of(replay, first)
        # the same id in the body and the header: the same request
        replay2 = self.transfer(dict(body, id=key), headers={"Idempotency-Key": key})
        self.assert_replay_of(replay2, first)
        # header and body differ: 400 invalid_field /id, nothing recorded
        other = uid("hdr")
        r = self.transfer(dict(body, id=other), headers={"Idempotency-Key": uid("hdr")})
        self.assert_problem(r, 400, "invalid_field", field="/id")
        self.assert_problem(self.get_transfer(other), 404, "transfer_not_found")
        # an invalid key in the header
        r = self.transfer(body, headers={"Idempotency-Key": "x" * 129})
        self.assert_problem(r, 400, "invalid_field", field="/id")
        # not with a batch
        r = self.transfer({"atomic": False, "transfers": [dict(body, id=uid("hb"))]},
                          headers={"Idempotency-Key": uid("hdr")})
        self.assert_problem(r, 400, "invalid_field", field="/transfers")
        # no id at all
        r = self.transfer(body)
        self.assert_problem(r, 400, "invalid_field", field="/id")
        self.assertEqual(self.get_account(self.b)["balance"], 10)

    def test_reference_and_state_rejections(self):
        usd = self.create_account(currency="USD")["id"]
        capped = self.create_account(max_balance=100)["id"]
        cases = [
            ({"from": self.a, "to": self.a}, 422, "same_account", {}),
            ({"from": uid("ghost"), "to": self.b}, 422, "account_not_found", {"field": "/from"}),
            ({"from": self.a, "to": uid("ghost")}, 422, "account_not_found", {"field": "/to"}),
            ({"from": self.a, "to": usd}, 422, "currency_mismatch", {}),
            ({"from": self.a, "to": self.b, "amount": 10001}, 409, "insufficient_balance",
             {"available": 10000}),
            ({"from": self.a, "to": capped, "amount": 101}, 409, "exceeds_max_balance", {}),
            ({"from": self.a, "to": self.b, "expect": {"from_version": 1}}, 409,
             "version_mismatch", {"field": "/expect/from_version", "actual_version": 2}),
            ({"from": self.a, "to": self.b, "expect": {"from_version": 2, "to_version": 5}}, 409,
             "version_mismatch", {"field": "/expect/to_version", "actual_version": 1}),
        ]
        for fields, status, code, extra in cases:
            body = {"id": uid("rej"), "amount": 5}
            body.update(fields)
            with self.subTest(code=code, body=fields):
                r = self.transfer(body)
                self.assert_problem(r, status, code, **extra)
                # recorded: GET shows the rejection, and a replay repeats it
                g = self.get_transfer(body["id"])
                self.assertEqual(g.status, 200, g)
                self.assertEqual((g.json()["code"], g.json()["state"]), (code, "rejected"))
                self.assert_replay_of(self.transfer(body), r)
        a = self.get_account(self.a)
        self.assertEqual((a["balance"], a["version"]), (10000, 2))

    def test_compare_and_set_chain(self):
        version_a, version_b = 2, 1
        for i in range(3):
            r = self.transfer({"id": uid("cas"), "from": self.a, "to": self.b, "amount": 1,
                               "expect": {"from_version": version_a, "to_version": version_b}})
            body = self.assert_created(r)
            version_a = body["accounts"]["from"]["version"]
            version_b = body["accounts"]["to"]["version"]
        self.assertEqual((version_a, version_b), (5, 4))
        r = self.transfer({"id": uid("cas"), "from": self.a, "to": self.b, "amount": 1,
                           "expect": {"to_version": 3}})
        self.assert_problem(r, 409, "version_mismatch", field="/expect/to_version",
                            actual_version=4)

    def test_overflow(self):
        source = self.create_account(currency="BIG", min_balance=None)["id"]
        x = self.create_account(currency="BIG")["id"]
        y = self.create_account(currency="BIG")["id"]
        self.assertEqual(self.transfer({"id": uid(), "from": source, "to": x,
                                        "amount": INT64_MAX}).status, 201)
        r = self.transfer({"id": uid(), "from": source, "to": y, "amount": 1})
        self.assert_problem(r, 409, "overflow", field="/amount")
        r = self.transfer({"id": uid(), "from": source, "to": x, "amount": 1})
        self.assert_problem(r, 409, "overflow", field="/amount")
        self.assertEqual(self.get_account(x)["balance"], INT64_MAX)
        self.assertEqual(self.get_account(source)["balance"], -INT64_MAX)
        self.assertEqual(self.get_account(y)["balance"], 0)

    def test_up_to(self):
        src = self.funded_account(300)
        r = self.transfer({"id": uid("up"), "from": src, "to": self.b, "amount": 500,
                           "up_to": True})
        t = self.assert_created(r)["transfer"]
        self.assertEqual((t["amount"], t.get("up_to"), t.get("amount_requested")), (300, True, 500))
        r = self.transfer({"id": uid("up"), "from": src, "to": self.b, "amount": 500,
                           "up_to": True})
        body = self.assert_created(r)
        self.assertEqual(body["transfer"]["amount"], 0)
        self.assertEqual(body["accounts"]["from"]["version"], 3)  # moved 0: no new version
        capped = self.create_account(max_balance=70)["id"]
        r = self.transfer({"id": uid("up"), "from": self.a, "to": capped, "amount": 100,
                           "up_to": True})
        self.assertEqual(self.assert_created(r)["transfer"]["amount"], 70)
        r = self.transfer({"id": uid("up"), "from": self.a, "to": self.b, "amount": 5,
                           "up_to": True, "hold": {"timeout_ms": 1000}})
        self.assert_problem(r, 400, "invalid_field", field="/up_to")

    def test_transfer_field_validation(self):
        cases = [
            ({"amount": 0}, "/amount"),
            ({"amount": -5}, "/amount"),
            ({"id": "x" * 129}, "/id"),
            ({"id": ""}, "/id"),
            ({"id": "bad id"}, "/id"),
            ({"from": "bad from"}, "/from"),
            ({"to": "t" * 65}, "/to"),
            ({"hold": {"timeout_ms": 0}}, "/hold/timeout_ms"),
            ({"hold": {"timeout_ms": 31622400001}}, "/hold/timeout_ms"),
            ({"metadata": {"m": "z" * 1100}}, "/metadata"),
        ]
        for change, field in cases:
            body = {"id": uid("v"), "from": self.a, "to": self.b, "amount": 5}
            body.update(change)
            with self.subTest(change=str(change)[:80]):
                self.assert_problem(self.transfer(body), 400, "invalid_field", field=field)
        ok = {"id": "t" * 128, "from": self.a, "to": self.b, "amount": 5,
              "hold": {"timeout_ms": 31622400000}}
        self.assert_created(self.transfer(ok))
        self.assertEqual(self.get_account(self.a)["available"], 9995)

    def test_get_missing_transfer(self):
        self.assert_problem(self.get_transfer(uid("none")), 404, "transfer_not_found")


class Holds(ServerTestCase):

    def setUp(self):
        self.a = self.funded_account(1000)
        self.b = self.create_account()["id"]

    def hold(self, amount, timeout_ms=600000, frm=None, to=None):
        tid = uid("hold")
        r = self.transfer({"id": tid, "from": frm or self.a, "to": to or self.b, "amount": amount,
                           "hold": {"timeout_ms": timeout_ms}})
        body = self.assert_created(r)
        return tid, body

    def post(self, hold_id, amount=None, key=None, headers=None):
        body = {}
        if key is not False:
            body["id"] = key or uid("post")
        if amount is not None:
            body["amount"] = amount
        return self.client.post("/v1/holds/%s/post" % quote(hold_id), body, headers=headers)

    def void(self, hold_id, key=None, headers=None):
        body = {} if key is False else {"id": key or uid("void")}
        return self.client.post("/v1/holds/%s/void" % quote(hold_id), body, headers=headers)

    def test_hold_then_full_post(self):
        hid, body = self.hold(300)
        t = body["transfer"]
        self.assertEqual((t["state"], t["amount"]), ("pending", 300))
        self.assertEqual(t["hold"], {"timeout_ms": 600000})
        self.assertEqual(self.assert_timestamp(t["expires_at"]),
                         self.assert_timestamp(t["timestamp"]) + 600000 * 1000000)
        self.assertEqual(body["accounts"]["from"]["available"], 700)
        self.assertEqual(body["accounts"]["from"]["balance"], 1000)
        a = self.get_account(self.a)
        self.assertEqual((a["balance"], a["available"], a["debits_held"]), (1000, 700, 300))
        self.assertEqual(self.get_account(self.b)["credits_held"], 300)
        self.assertEqual(self.get_transfer(hid).json()["state"], "pending")
        pid = uid("post")
        r = self.post(hid, key=pid)
        p = self.assert_created(r)
        self.assertEqual(p["code"], "created")
        self.assertEqual(p["transfer"]["id"], pid)
        self.assertEqual(p["transfer"]["amount"], 300)
        # docs/api.md: a post's accounts are the hold's two, named, right after it
        self.assertEqual(p["accounts"]["from"],
                         {"id": self.a, "balance": 700, "available": 700, "version": 4})
        self.assertEqual(p["accounts"]["to"],
                         {"id": self.b, "balance": 300, "available": 300, "version": 3})
        g = self.get_transfer(hid).json()
        self.assertEqual((g["state"], g["captured"]), ("captured", 300))
        g = self.get_transfer(pid)
        self.assertEqual(g.status, 200, g)
        self.assertEqual((g.json()["post"], g.json()["code"], g.json()["state"], g.json()["from"],
                          g.json()["to"], g.json()["amount"]),
                         (hid, "created", "posted", self.a, self.b, 300))
        # resolved once; the rejection is recorded under the post's own id
        key = uid("again")
        p = self.assert_problem(self.post(hid, key=key), 409, "hold_already_posted",
                                field="/post", id=key)
        self.assertIsInstance(p.get("seq"), int)
        self.assert_problem(self.void(hid), 409, "hold_already_posted", field="/void")
        kinds = [e["kind"] for e in self.history(self.a).json()["entries"]]
        self.assertEqual(kinds, ["posted", "held", "captured"])

    def test_partial_post_releases_the_rest(self):
        hid, _ = self.hold(100)
        r = self.post(hid, amount=30)
        self.assertEqual(self.assert_created(r)["transfer"]["amount"], 30)
        a = self.get_account(self.a)
        self.assertEqual((a["balance"], a["available"], a["debits_held"], a["debits_posted"]),
                         (970, 970, 0, 30))
        b = self.get_account(self.b)
        self.assertEqual((b["balance"], b["credits_held"]), (30, 0))
        g = self.get_transfer(hid).json()
        self.assertEqual((g["state"], g["captured"], g["amount"]), ("captured", 30, 100))

    def test_void(self):
        hid, _ = self.hold(200)
        vid = uid("void")
        r = self.void(hid, key=vid)
        v = self.assert_created(r)
        self.assertEqual(v["transfer"]["id"], vid)
        a = self.get_account(self.a)
        self.assertEqual((a["balance"], a["available"], a["debits_held"], a["version"]),
                         (1000, 1000, 0, 4))
        self.assertEqual(self.get_transfer(hid).json()["state"], "voided")
        self.assertEqual(self.get_transfer(vid).json()["void"], hid)
        self.assert_problem(self.void(hid), 409, "hold_already_voided", field="/void")
        self.assert_problem(self.post(hid), 409, "hold_already_voided", field="/post")
        entries = self.history(self.a).json()["entries"]
        self.assertEqual(entries[-1]["kind"], "released")
        self.assertEqual(abs(entries[-1]["delta"]), 200)

    def test_post_rejections(self):
        hid, _ = self.hold(50)
        self.assert_problem(self.post(hid, amount=51), 409, "hold_amount_exceeded", field="/amount")
        self.assert_problem(self.post(uid("nohold")), 422, "hold_not_found", field="/post")
        self.assert_problem(self.void(uid("nohold")), 422, "hold_not_found", field="/void")
        plain = uid("plain")
        self.assertEqual(self.transfer({"id": plain, "from": self.a, "to": self.b,
                                        "amount": 1}).status, 201)
        self.assert_problem(self.post(plain), 422, "hold_not_found")
        self.assert_problem(self.void(plain), 422, "hold_not_found")
        self.assert_problem(self.post(hid, amount=-1), 400, "invalid_field", field="/amount")
        self.assert_problem(self.post(hid, key=False), 400, "invalid_field", field="/id")
        self.assert_problem(self.void(hid, key=False), 400, "invalid_field", field="/id")
        self.assertEqual(self.get_transfer(hid).json()["state"], "pending")
        self.assertEqual(self.get_account(self.a)["debits_held"], 50)

    def test_insufficient_for_hold(self):
        r = self.transfer({"id": uid(), "from": self.a, "to": self.b, "amount": 1001,
                           "hold": {"timeout_ms": 1000}})
        self.assert_problem(r, 409, "insufficient_balance", available=1000)
        self.hold(600)
        r = self.transfer({"id": uid(), "from": self.a, "to": self.b, "amount": 401,
                           "hold": {"timeout_ms": 1000}})
        self.assert_problem(r, 409, "insufficient_balance", available=400)

    def test_idempotency_key_header_for_post_and_void(self):
        hid, _ = self.hold(10)
        key = uid("pk")
        first = self.post(hid, key=False, headers={"Idempotency-Key": key})
        self.assertEqual(self.assert_created(first)["transfer"]["id"], key)
        self.assert_replay_of(self.post(hid, key=False, headers={"Idempotency-Key": key}), first)
        self.assert_replay_of(self.post(hid, key=key), first)
        self.assert_problem(self.post(hid, key=uid("pk"), headers={"Idempotency-Key": key}),
                            400, "invalid_field", field="/id")
        self.assert_problem(self.post(hid, key=key, amount=3), 422, "id_reused", field="/amount")
        hid2, _ = self.hold(10)
        vkey = uid("vk")
        first = self.void(hid2, key=False, headers={"Idempotency-Key": vkey})
        self.assertEqual(self.assert_created(first)["transfer"]["id"], vkey)
        self.assert_replay_of(self.void(hid2, key=False, headers={"Idempotency-Key": vkey}), first)
        self.assert_problem(self.void(hid2, key=uid("vk"), headers={"Idempotency-Key": vkey}),
                            400, "invalid_field", field="/id")
        # the post key used for a void of another hold is id_reused
        r = self.void(hid2, key=key)
        self.assert_problem(r, 422, "id_reused")
        self.assertIn(r.json().get("field"), ("/post", "/void"))

    def test_empty_body_with_idempotency_key(self):
        hid, _ = self.hold(10)
        key = uid("ek")
        r = self.client.post("/v1/holds/%s/void" % quote(hid), b"",
                             headers={"Idempotency-Key": key})
        self.assertEqual(self.assert_created(r)["transfer"]["id"], key)
        hid2, _ = self.hold(10)
        r = self.client.request("POST", "/v1/holds/%s/post" % quote(hid2),
                                headers={"Idempotency-Key": uid("ek")})
        self.assertEqual(self.assert_created(r)["transfer"]["amount"], 10)

    def test_post_and_void_items_alone_on_transfers(self):
        # a post or void item sent alone to /v1/transfers is the same as the holds endpoints
        hid, _ = self.hold(40)
        pid = uid("tp")
        r = self.transfer({"id": pid, "post": hid, "amount": 15})
        body = self.assert_created(r)
        self.assertEqual((body["transfer"]["id"], body["transfer"]["post"],
                          body["transfer"]["amount"]), (pid, hid, 15))
        self.assert_replay_of(self.client.post("/v1/holds/%s/post" % quote(hid),
                                               {"id": pid, "amount": 15}), r)
        hid2, _ = self.hold(40)
        r = self.transfer({"id": uid("tv"), "void": hid2})
        self.assertEqual(self.assert_created(r)["transfer"]["void"], hid2)
        self.assertEqual(self.get_transfer(hid2).json()["state"], "voided")
        self.assertEqual(self.get_account(self.a)["balance"], 985)

    def test_replay_of_a_rejected_post(self):
        hid, _ = self.hold(10)
        key = uid("pk")
        first = self.post(hid, amount=11, key=key)
        self.assert_problem(first, 409, "hold_amount_exceeded")
        self.assert_replay_of(self.post(hid, amount=11, key=key), first)
        self.assertEqual(self.get_transfer(hid).json()["state"], "pending")

    def test_expiry(self):
        hid, body = self.hold(250, timeout_ms=300)
        before = self.get_account(self.a)
        self.assertEqual(before["debits_held"], 250)
        expires_ns = parse_rfc3339_ns(body["transfer"]["expires_at"])
        deadline = time.monotonic() + 10 * SLOW
        state = None
        while time.monotonic() < deadline:
            state = self.get_transfer(hid).json()["state"]
            if state != "pending":
                break
            time.sleep(0.05)
        self.assertEqual(state, "expired", "the hold did not expire within 10 s")
        after = self.get_account(self.a)
        self.assertEqual((after["balance"], after["available"], after["debits_held"],
                          after["version"]), (1000, 1000, 0, before["version"] + 1))
        b = self.get_account(self.b)
        self.assertEqual((b["credits_held"], b["balance"]), (0, 0))
        last = self.history(self.a).json()["entries"][-1]
        self.assertEqual((last["kind"], last["transfer_id"], abs(last["delta"])),
                         ("expired", hid, 250))
        self.assertGreaterEqual(parse_rfc3339_ns(last["timestamp"]), expires_ns)
        self.assertEqual(self.history(self.b).json()["entries"][-1]["kind"], "expired")
        # too late to post or void
        self.assert_problem(self.post(hid), 409, "hold_expired", field="/post")
        self.assert_problem(self.void(hid), 409, "hold_expired", field="/void")
        listed = self.client.get("/v1/holds?account=" + quote(self.a)).json()["holds"]
        self.assertNotIn(hid, [h["id"] for h in listed])

    def test_post_at_expiry_is_hold_expired(self):
        # A post that arrives after expires_at fails with hold_expired whether or not the sweep
        # has run: try right at the deadline, many times.
        outcomes = set()
        for _ in range(5):
            hid, body = self.hold(1, timeout_ms=50)
            wait = parse_rfc3339_ns(body["transfer"]["expires_at"]) / 1e9 - time.time()
            if wait > 0:
                time.sleep(wait)
            r = self.post(hid)
            self.assert_problem(r, 409, "hold_expired")
            outcomes.add(r.json()["code"])
        self.assertEqual(outcomes, {"hold_expired"})

    def test_list_holds_soonest_expiry_first(self):
        a = self.funded_account(1000)
        c = self.create_account()["id"]
        ids = {}
        for timeout in (50000, 10000, 30000, 20000, 40000):
            hid, _ = self.hold(1, timeout_ms=timeout, frm=a)
            ids[timeout] = hid
        incoming, _ = self.hold(1, timeout_ms=25000, frm=self.a, to=a)
        other, _ = self.hold(1, timeout_ms=1000, frm=self.a, to=c)
        r = self.client.get("/v1/holds?account=" + quote(a))
        self.assertEqual(r.status, 200, r)
        holds = r.json()["holds"]
        want = [ids[10000], ids[20000], incoming, ids[30000], ids[40000], ids[50000]]
        self.assertEqual([h["id"] for h in holds], want)
        for h in holds:
            self.assertEqual((h["state"], h["code"]), ("pending", "created"))
            self.assert_timestamp(h["expires_at"])
        r = self.client.get("/v1/holds?account=%s&limit=2" % quote(a))
        self.assertEqual([h["id"] for h in r.json()["holds"]], want[:2])
        # without account: every pending hold, soonest first
        everything = self.client.get("/v1/holds?limit=1000").json()["holds"]
        ends = [parse_rfc3339_ns(h["expires_at"]) for h in everything]
        self.assertEqual(ends, sorted(ends))
        self.assertTrue(set(want) | {other} <= {h["id"] for h in everything})
        # resolving removes from the list
        self.assert_created(self.void(ids[10000]))
        r = self.client.get("/v1/holds?account=%s&limit=1" % quote(a))
        self.assertEqual([h["id"] for h in r.json()["holds"]], [ids[20000]])
        for query in ("limit=0", "limit=1001", "limit=x"):
            r = self.client.get("/v1/holds?" + query)
            self.assert_problem(r, 400, "invalid_field", field="/limit")
        self.assert_problem(self.client.get("/v1/holds?account=" + uid("nobody")), 404,
                            "account_not_found")


class Times(ServerTestCase):

    def test_times_are_rfc3339_text_only(self):
        # Every time the API writes is RFC 3339 UTC text with nine fraction digits, and no
        # integer nanoseconds (beyond 2^53: JavaScript rounds them), in every shape that has one.
        src = self.funded_account(1000)
        dst = self.create_account()["id"]
        hid = uid("th")
        hold = self.assert_created(self.transfer({"id": hid, "from": src, "to": dst,
                                                   "amount": 10, "hold": {"timeout_ms": 60000}}))
        entries = self.history(src).json()["entries"]
        at = entries[-1]["timestamp"]
        bodies = [hold, self.get_account(src), self.get_transfer(hid).json(),
                  self.client.get("/v1/holds?account=" + quote(src)).json(),
                  self.history(src).json(),
                  self.client.get("/v1/accounts/%s?at=%s" % (quote(src), at)).json(),
                  self.client.get("/v1/accounts/%s?at=%d" % (quote(src), entries[-1]["seq"])).json(),
                  self.create_account()]
        times = []
        for body in bodies:
            for where, key, value in walk(body):
                self.assertFalse(key.endswith("_ns"), "%s/%s in %r" % (where, key, body))
                if isinstance(value, int) and not isinstance(value, bool):
                    self.assertLessEqual(abs(value), 2**53 - 1, "%s/%s" % (where, key))
                if key in ("timestamp", "created_at", "expires_at"):
                    times.append(self.assert_timestamp(value))
        self.assertGreaterEqual(len(times), 12)
        self.assertEqual(bodies[5]["at"], {"timestamp": at})
        self.assertEqual(bodies[5]["version"], entries[-1]["version"])


def walk(value, where=""):
    """(pointer of the parent, key, value) for every member of every object in a JSON value."""
    if isinstance(value, dict):
        for key, member in value.items():
            yield where, key, member
            yield from walk(member, where + "/" + key)
    elif isinstance(value, list):
        for i, member in enumerate(value):
            yield from walk(member, "%s/%d" % (where, i))


class Batches(ServerTestCase):

    def test_atomic_batch_applies_in_order(self):
        src = self.funded_account(100)
        mid = self.create_account()["id"]
        dst = self.create_account()["id"]
        ids = [uid("ab") for _ in range(3)]
        r = self.transfer({"atomic": True, "transfers": [
            {"id": ids[0], "from": src, "to": mid, "amount": 100},
            {"id": ids[1], "from": mid, "to": dst, "amount": 60},  # needs the first
            {"id": ids[2], "from": mid, "to": dst, "amount": 40},
        ]})
        self.assertEqual(r.status, 200, r)
        self.assert_request_id(r)
        body = r.json()
        self.assertIs(body["atomic"], True)
        self.assertEqual([(x["status"], x["code"]) for x in body["results"]],
                         [(201, "created")] * 3)
        self.assertEqual([x["transfer"]["id"] for x in body["results"]], ids)
        seqs = [x["transfer"]["seq"] for x in body["results"]]
        self.assertEqual(seqs, sorted(seqs))
        self.assertEqual(body["results"][2]["accounts"]["to"]["balance"], 100)
        self.assertEqual([self.get_account(x)["balance"] for x in (src, mid, dst)], [0, 0, 100])
        # exact replay: the original results, each marked replayed
        replay = self.transfer({"atomic": True, "transfers": [
            {"id": ids[0], "from": src, "to": mid, "amount": 100},
            {"id": ids[1], "from": mid, "to": dst, "amount": 60},
            {"id": ids[2], "from": mid, "to": dst, "amount": 40},
        ]})
        self.assertEqual(replay.status, 200, replay)
        for original, again in zip(body["results"], replay.json()["results"]):
            self.assertIs(again.get("replayed"), True, again)
            self.assertEqual((again["status"], again["code"]),
                             (original["status"], original["code"]))
            self.assertEqual(again["transfer"], original["transfer"])
        self.assertEqual(self.get_account(dst)["balance"], 100)

    def test_atomic_batch_all_or_none(self):
        src = self.funded_account(100)
        dst = self.create_account()["id"]
        ids = [uid("an") for _ in range(3)]
        r = self.transfer({"atomic": True, "transfers": [
            {"id": ids[0], "from": src, "to": dst, "amount": 60},
            {"id": ids[1], "from": src, "to": dst, "amount": 60},
            {"id": ids[2], "from": src, "to": dst, "amount": 1},
        ]})
        results = self.assert_batch_failed(r, "insufficient_balance")
        self.assertEqual([x["status"] for x in results], [409, 409, 409])
        self.assertEqual([x["code"] for x in results],
                         ["batch_failed", "insufficient_balance", "batch_failed"])
        self.assert_problem_body(results[0]["problem"], 409, "batch_failed")
        self.assert_problem_body(results[1]["problem"], 409, "insufficient_balance", available=40)
        self.assert_problem_body(results[2]["problem"], 409, "batch_failed")
        for account_id, balance in ((src, 100), (dst, 0)):
            a = self.get_account(account_id)
            self.assertEqual((a["balance"], a["version"]), (balance, 2 if balance else 1))
        # every id is recorded with its code
        self.assertEqual([self.get_transfer(i).json()["code"] for i in ids],
                         ["batch_failed", "insufficient_balance", "batch_failed"])
        # an exact replay of a failed batch: the same 409 and results, each marked replayed
        replay = self.transfer({"atomic": True, "transfers": [
            {"id": ids[0], "from": src, "to": dst, "amount": 60},
            {"id": ids[1], "from": src, "to": dst, "amount": 60},
            {"id": ids[2], "from": src, "to": dst, "amount": 1},
        ]})
        again = self.assert_batch_failed(replay, "insufficient_balance")
        self.assertEqual([(x["code"], x.get("replayed")) for x in again],
                         [(x["code"], True) for x in results])

    def test_atomic_batch_mixing_recorded_and_new_items(self):
        # One item replays a recorded transfer exactly, the other is new: the batch is
        # refused (id_reused on the recorded one, batch_failed on the new one) and the problem
        # says the mix is what is wrong, naming no field of the identical item.
        src = self.funded_account(100)
        dst = self.create_account()["id"]
        old = uid("mix")
        self.assert_created(self.transfer({"id": old, "from": src, "to": dst, "amount": 60}))
        fresh = uid("mix")
        r = self.transfer({"atomic": True, "transfers": [
            {"id": fresh, "from": src, "to": dst, "amount": 1},
            {"id": old, "from": src, "to": dst, "amount": 60},
        ]})
        results = self.assert_batch_failed(r, "id_reused")
        self.assertEqual([(x["status"], x["code"]) for x in results],
                         [(409, "batch_failed"), (422, "id_reused")])
        problem = self.assert_problem_body(results[1]["problem"], 422, "id_reused", id=old)
        self.assertNotIn("field", problem)
        self.assertIn("mixes recorded and new items", problem["detail"])
        self.assertNotIn("different", problem["detail"])
        self.assert_problem(self.get_transfer(fresh), 404, "transfer_not_found")
        # the recorded item with other content: id_reused names its first differing field
        r = self.transfer({"atomic": True, "transfers": [
            {"id": fresh, "from": src, "to": dst, "amount": 1},
            {"id": old, "from": src, "to": dst, "amount": 61},
        ]})
        results = self.assert_batch_failed(r, "id_reused")
        problem = self.assert_problem_body(results[1]["problem"], 422, "id_reused",
                                           field="/transfers/1/amount")
        self.assertEqual(problem["detail"], "id %s was used with a different amount" % old)
        self.assertEqual((self.get_account(src)["balance"], self.get_account(dst)["balance"]),
                         (40, 60))

    def test_invalid_item_fails_the_whole_atomic_batch(self):
        src = self.funded_account(100)
        dst = self.create_account()["id"]
        ids = [uid("iv"), uid("iv")]
        r = self.transfer({"atomic": True, "transfers": [
            {"id": ids[0], "from": src, "to": dst, "amount": 1},
            {"id": ids[1], "from": src, "to": dst, "amount": 0},
        ]})
        results = self.assert_batch_failed(r, "invalid_field")
        self.assertEqual([(x["status"], x["code"]) for x in results],
                         [(409, "batch_failed"), (400, "invalid_field")])
        self.assert_problem_body(results[1]["problem"], 400, "invalid_field",
                                 field="/transfers/1/amount")
        for i in ids:  # recorded nothing
            self.assert_problem(self.get_transfer(i), 404, "transfer_not_found")
        # a repeated id inside one batch
        dup = uid("dup")
        r = self.transfer({"atomic": True, "transfers": [
            {"id": dup, "from": src, "to": dst, "amount": 1},
            {"id": dup, "from": src, "to": dst, "amount": 1},
        ]})
        self.assert_batch_failed(r, "invalid_field")
        self.assertEqual([x["code"] for x in r.json()["results"]],
                         ["batch_failed", "invalid_field"])
        self.assert_problem_body(r.json()["results"][1]["problem"], 400, "invalid_field",
                                 field="/transfers/1/id")
        self.assert_problem(self.get_transfer(dup), 404, "transfer_not_found")
        self.assertEqual(self.get_account(src)["balance"], 100)

    def test_non_atomic_batch(self):
        src = self.funded_account(100)
        dst = self.create_account()["id"]
        r = self.transfer({"transfers": [  # atomic defaults to false
            {"id": uid("na"), "from": src, "to": dst, "amount": 70},
            {"id": uid("na"), "from": src, "to": dst, "amount": 70},
            {"id": uid("na"), "from": src, "to": dst, "amount": 30},
            {"id": uid("na"), "from": src, "to": uid("ghost"), "amount": 1},
        ]})
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertIs(body["atomic"], False)
        self.assertEqual([(x["status"], x["code"]) for x in body["results"]],
                         [(201, "created"), (409, "insufficient_balance"), (201, "created"),
                          (422, "account_not_found")])
        self.assert_problem_body(body["results"][3]["problem"], 422, "account_not_found",
                                 field="/transfers/3/to")
        self.assertEqual(self.get_account(dst)["balance"], 100)

    def test_pay_and_confirm_a_seat_in_one_batch(self):
        pool = self.funded_account(1, currency="SEAT")  # one seat
        user_seats = self.create_account(currency="SEAT")["id"]
        wallet = self.funded_account(1500)
        shop = self.create_account()["id"]
        seat_hold = uid("seat")
        self.assert_created(self.transfer({"id": seat_hold, "from": pool, "to": user_seats,
                                           "amount": 1, "hold": {"timeout_ms": 300000}}))
        # a second user cannot reserve the same seat
        other = self.create_account(currency="SEAT")["id"]
        self.assert_problem(self.transfer({"id": uid("seat"), "from": pool, "to": other,
                                           "amount": 1, "hold": {"timeout_ms": 300000}}),
                            409, "insufficient_balance", available=0)
        # pay too much: the batch fails, the seat stays held
        pay_fail, confirm_fail = uid("pay"), uid("confirm")
        r = self.transfer({"atomic": True, "transfers": [
            {"id": pay_fail, "from": wallet, "to": shop, "amount": 2000},
            {"id": confirm_fail, "post": seat_hold},
        ]})
        self.assert_batch_failed(r, "insufficient_balance")
        self.assertEqual([x["code"] for x in r.json()["results"]],
                         ["insufficient_balance", "batch_failed"])
        self.assertEqual(self.get_transfer(seat_hold).json()["state"], "pending")
        # pay and confirm together
        pay, confirm = uid("pay"), uid("confirm")
        r = self.transfer({"atomic": True, "transfers": [
            {"id": pay, "from": wallet, "to": shop, "amount": 1000},
            {"id": confirm, "post": seat_hold},
        ]})
        self.assertEqual(r.status, 200, r)
        results = r.json()["results"]
        self.assertEqual([x["code"] for x in results], ["created", "created"])
        self.assertEqual(self.get_transfer(seat_hold).json()["state"], "captured")
        self.assertEqual(self.get_transfer(confirm).json()["post"], seat_hold)
        self.assertEqual(self.get_account(user_seats)["balance"], 1)
        self.assertEqual(self.get_account(pool)["balance"], 0)
        self.assertEqual(self.get_account(wallet)["balance"], 500)
        self.assertEqual(self.get_account(shop)["balance"], 1000)
        # void inside a batch, and a batch that posts an already-posted hold
        r = self.transfer({"atomic": True, "transfers": [
            {"id": uid("again"), "post": seat_hold}]})
        self.assert_batch_failed(r, "hold_already_posted")
        self.assertEqual(r.json()["results"][0]["code"], "hold_already_posted")
        h2 = uid("h2")
        self.assert_created(self.transfer({"id": h2, "from": wallet, "to": shop, "amount": 100,
                                           "hold": {"timeout_ms": 300000}}))
        r = self.transfer({"atomic": True, "transfers": [{"id": uid("v"), "void": h2}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["results"][0]["code"], "created")
        self.assertEqual(self.get_transfer(h2).json()["state"], "voided")
        # partial post inside a batch
        h3 = uid("h3")
        self.assert_created(self.transfer({"id": h3, "from": wallet, "to": shop, "amount": 100,
                                           "hold": {"timeout_ms": 300000}}))
        r = self.transfer({"atomic": False, "transfers": [{"id": uid("p"), "post": h3,
                                                            "amount": 25}]})
        self.assertEqual(r.json()["results"][0]["transfer"]["amount"], 25)
        self.assertEqual(self.get_account(wallet)["balance"], 475)


class Operations(ServerTestCase):

    def test_healthz_and_readyz(self):
        r = self.client.get("/healthz")
        self.assertEqual((r.status, r.json()), (200, {"status": "ok"}))
        self.assert_request_id(r)
        r = self.client.get("/readyz")
        self.assertEqual((r.status, r.json()), (200, {"status": "ready", "role": self.role}))
        self.assert_request_id(r)

    def test_verify(self):
        a = self.funded_account(100)
        self.transfer({"id": uid(), "from": a, "to": self.create_account()["id"], "amount": 5,
                       "hold": {"timeout_ms": 60000}})
        body = self.verify_ok()
        self.assertEqual(body["problem_count"], 0)
        self.assertGreaterEqual(body["accounts_checked"], 3)
        self.assertGreaterEqual(body["transfers_checked"], 2)

    def test_request_id_on_every_response(self):
        a = self.create_account()["id"]
        requests = [
            ("GET", "/healthz", None), ("GET", "/readyz", None), ("GET", "/metrics", None),
            ("GET", "/v1/verify", None), ("GET", "/v1/accounts/" + a, None),
            ("GET", "/v1/accounts/" + uid("none"), None),
            ("GET", "/v1/accounts/%s/history" % a, None), ("GET", "/v1/holds", None),
            ("GET", "/v1/transfers/" + uid("none"), None),
            ("POST", "/v1/accounts", {"id": uid(), "currency": "KRW"}),
            ("POST", "/v1/accounts", "{not json"),
            ("POST", "/v1/transfers", {"id": uid(), "from": a, "to": a, "amount": 1}),
            ("POST", "/v1/holds/%s/void" % uid("none"), {"id": uid()}),
            ("GET", "/v1/no-such-route", None), ("DELETE", "/v1/accounts/" + a, None),
        ]
        seen = set()
        for method, path, body in requests:
            with self.subTest(method=method, path=path):
                sent = uid("rid")
                r = self.client.request(method, path, body=body, request_id=sent)
                self.assert_request_id(r, sent)
                r = self.client.request(method, path, body=body)
                generated = self.assert_request_id(r)
                self.assertNotIn(generated, seen, "generated X-Request-Id repeats")
                seen.add(generated)

    def test_malformed_request_codes(self):
        # (test_malformed.py goes through these in depth; here: each code's shape once)
        self.assert_problem(self.client.post("/v1/transfers", "{not json"), 400, "invalid_json")
        self.assert_problem(self.client.post("/v1/accounts", b"\xff"), 400, "invalid_json")
        items = [{"id": "tl-%d" % i, "from": "a", "to": "b", "amount": 1}
                 for i in range(BATCH_MAX + 1)]
        self.assert_problem(self.client.post("/v1/transfers", {"atomic": True, "transfers": items}),
                            400, "batch_too_large")
        self.assert_problem(self.get_transfer("tl-0"), 404, "transfer_not_found")

    def test_request_id_rules(self):
        # echoed when 1-71 printable ASCII characters without spaces; otherwise made up
        for sent, echoed in (("a" * 71, True), ("x", True), ("trace-7f3a:b/c", True),
                             ("a" * 72, False), ("has space", False), ("tab\tx", False)):
            with self.subTest(sent=sent):
                r = self.client.get("/healthz", request_id=sent)
                rid = self.assert_request_id(r)
                if echoed:
                    self.assertEqual(rid, sent)
                else:
                    self.assertNotEqual(rid, sent)
                    self.assertRegex(rid, r"^[!-~]{1,71}$")

    def test_head_wherever_get(self):
        a = self.create_account()["id"]
        for path in ("/healthz", "/readyz", "/metrics", "/v1/verify", "/v1/accounts/" + a,
                     "/v1/accounts/%s/history" % a, "/v1/holds"):
            with self.subTest(path=path):
                r = self.client.request("HEAD", path)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.body, b"")
                self.assert_request_id(r)

    def test_route_and_method_problems(self):
        r = self.client.get("/v1/nothing-here")
        self.assert_problem(r, 404, "route_not_found")
        r = self.client.request("DELETE", "/v1/transfers/x")
        self.assert_problem(r, 405, "method_not_allowed")
        self.assertEqual(r.header("Allow"), "GET")

    def test_metrics_counts_requests(self):
        def scrape():
            r = self.client.get("/metrics")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.content_type, "text/plain", r.headers)
            self.assertIn("version=0.0.4", r.header("Content-Type"))
            return r.body.decode("utf-8")

        def parse(text):
            """{'# TYPE' name: type}, {(name, frozenset(labels)): value}"""
            types, samples = {}, {}
            for line in text.splitlines():
                if not line.strip():
                    continue
                if line.startswith("#"):
                    parts = line.split()
                    if len(parts) >= 4 and parts[1] == "TYPE":
                        types[parts[2]] = parts[3]
                    continue
                m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( \d+)?$', line)
                self.assertIsNotNone(m, "not a Prometheus sample line: %r" % line)
                labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                              m.group(3) or ""))
                samples[(m.group(1), labels)] = float(m.group(4))
            return types, samples

        def requests(samples, route, code):
            return samples.get(("coffer_http_requests_total",
                                frozenset({("route", route), ("code", code)})), 0.0)

        types, before = parse(scrape())
        self.assertEqual(types.get("coffer_http_requests_total"), "counter", sorted(types))
        for _ in range(7):
            self.client.get("/healthz")
        self.client.post("/v1/transfers", "{bad")
        _, after = parse(scrape())
        self.assertEqual(requests(after, "healthz", "ok") - requests(before, "healthz", "ok"), 7)
        self.assertEqual(requests(after, "create_transfers", "invalid_json")
                         - requests(before, "create_transfers", "invalid_json"), 1)
        self.assertEqual(requests(after, "metrics", "ok") - requests(before, "metrics", "ok"), 1)


class Overload(ServerTestCase):
    """--queue-events at its minimum (one full batch) and several clients sending full batches:
    some get 503 overloaded with Retry-After: 1; every answer is 200 or that."""

    server_options = {"queue_events": BATCH_MAX, "fsync": "always", "args": ["--threads", "4"]}

    def test_overloaded_has_retry_after(self):
        src = self.create_account(currency="OVL", min_balance=None)["id"]
        dst = self.create_account(currency="OVL")["id"]
        started = time.monotonic()
        stop_at = started + 15
        seen = {"overloaded": []}
        lock = threading.Lock()

        def worker(i):
            client = self.server.client()
            statuses = []
            n = 0
            try:
                while time.monotonic() < stop_at:
                    with lock:
                        if len(seen["overloaded"]) >= 3:  # enough seen
                            break
                    n += 1
                    item = '{"id":"ovl-%d-%d-%%d","from":"%s","to":"%s","amount":1}' % (
                        i, n, src, dst)
                    body = '{"atomic":false,"transfers":[%s]}' % ",".join(
                        item % k for k in range(BATCH_MAX))
                    r = client.post("/v1/transfers", body.encode())
                    statuses.append(r.status)
                    if r.status == 503:
                        with lock:
                            seen["overloaded"].append(r)
            finally:
                client.close()
            return statuses

        statuses = [s for part in run_threads(8, worker, timeout=60) for s in part]
        self.assertTrue(set(statuses) <= {200, 503}, statuses)
        # the ledger is consistent and applied exactly the accepted batches
        accepted = statuses.count(200)
        self.assertEqual(self.get_account(dst)["balance"], accepted * BATCH_MAX)
        self.verify_ok()
        if not seen["overloaded"]:
            # The queue fills only when the writer is slower than the parsers: on some machines
            # and builds (sanitizers) it never is. That is not a server failure.
            self.skipTest("could not provoke overloaded with %d full batches in %.0f s"
                          % (len(statuses), time.monotonic() - started))
        for r in seen["overloaded"]:
            self.assert_problem(r, 503, "overloaded")
            self.assertEqual(r.header("Retry-After"), "1")


class ConnectionLimit(ServerTestCase):
    """--max-connections 4: a fifth connection at once is refused; a freed slot serves again."""

    server_options = {"max_connections": 4}

    def test_connections_beyond_the_limit_wait(self):
        self.client.close()
        held = [self.server.client() for _ in range(4)]
        try:
            for c in held:
                self.assertEqual(c.get("/healthz").status, 200)
            extra = self.server.client(timeout=3)
            started = time.monotonic()
            try:
                try:
                    r = extra.get("/healthz")
                    outcome = "served %d" % r.status
                except TimeoutError:
                    outcome = "left waiting"
                except (OSError, http.client.HTTPException) as e:
                    outcome = "refused (%s)" % type(e).__name__
            finally:
                extra.close()
            # docs/api.md: beyond the limit a connection waits in the listen backlog, unserved
            # (a client with a timeout gives up), until one of the others closes.
            self.assertFalse(outcome.startswith("served"),
                             "a fifth connection with --max-connections 4 was %s after %.1f s"
                             % (outcome, time.monotonic() - started))
            # the held connections still work
            for c in held:
                self.assertEqual(c.get("/healthz").status, 200)
        finally:
            for c in held:
                c.close()
        # once they are closed, new connections are served again
        deadline = time.monotonic() + 5 * SLOW
        while True:
            c = self.server.client(timeout=5)
            try:
                if c.get("/healthz").status == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            finally:
                c.close()
            self.assertLess(time.monotonic(), deadline,
                            "no connection served after the others closed")
            time.sleep(0.05)


if __name__ == "__main__":
    unittest.main()
