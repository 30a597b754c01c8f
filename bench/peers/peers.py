#!/usr/bin/env python3
"""Helpers of bench/peers/run (standard library only).

  peers.py free-port
  peers.py pgbench STDOUT LOGPREFIX COUNTS_JSON META_JSON   one result line from a pgbench run
  peers.py redis LOAD_JSON_FILE META_JSON                   one result line from redis-load
  peers.py coffer BENCH_JSON_FILE EXPIRED META_JSON         one result line from coffer bench
  peers.py redis-check PORT ACCOUNTS SEATS META_JSON        the correctness check of a Redis run
  peers.py report RESULTS.jsonl OUTDIR                      table.md, ratios and chart data

A result line is one JSON object: peer, durability, pattern, workload, clients, batch, run,
seconds, requests (answered requests), ops (operations answered: transfers, holds or payments,
whatever their outcome), ops_per_s, applied, conflicts (refused for balance or seat taken),
replays, failed (no final answer: errors, aborts, gave up), retries (extra attempts a client
made because of contention), p50_ms, p99_ms, p999_ms.
"""
import glob
import json
import os
import re
import socket
import statistics
import sys


def emit(obj):
    print(json.dumps(obj, separators=(",", ":")))
    sys.stdout.flush()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def percentiles(values):
    if not values:
        return None, None, None
    values.sort()
    n = len(values)

    def at(f):
        return values[min(n - 1, int(n * f))]

    return at(0.5), at(0.99), at(0.999)


# ---- pgbench ---------------------------------------------------------------------------------


def pgbench(stdout_path, log_prefix, counts_json, meta_json):
    meta = json.loads(meta_json)
    counts = json.loads(counts_json)
    text = open(stdout_path).read()

    def number(pattern, default=0):
        m = re.search(pattern, text)
        return float(m.group(1)) if m else default

    processed = int(number(r"number of transactions actually processed: (\d+)"))
    failed = int(number(r"number of failed transactions: (\d+)"))
    retried_total = int(number(r"total number of retries: (\d+)"))
    aborted = "aborted" in text.lower() and "Run was aborted" in text
    latencies = []
    log_failed = 0
    for path in glob.glob(log_prefix + ".*"):
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                if fields[2].isdigit():
                    latencies.append(int(fields[2]))
                else:
                    log_failed += 1
    p50, p99, p999 = percentiles(latencies)
    seconds = meta.get("seconds", 0)
    gave_up = counts.get("gave_up", 0)
    answered = processed - gave_up  # transactions that ended with a final answer
    result = dict(meta)
    result.update(
        requests=processed + failed,
        ops=answered,
        ops_per_s=round(answered / seconds) if seconds else 0,
        applied=counts.get("applied", 0),
        conflicts=answered - counts.get("applied", 0) if meta.get("workload") == "seats"
        else counts.get("refused", 0),
        replays=counts.get("replays", 0),
        failed=failed + gave_up + (1 if aborted else 0),
        retries=retried_total + counts.get("retries", 0),
        p50_ms=p50 / 1000 if p50 is not None else None,
        p99_ms=p99 / 1000 if p99 is not None else None,
        p999_ms=p999 / 1000 if p999 is not None else None,
        aborted=aborted,
        detail={"pgbench_failed": failed, "pgbench_retries": retried_total, **counts},
    )
    emit(result)


# ---- redis-load ------------------------------------------------------------------------------


def redis(load_path, meta_json):
    meta = json.loads(meta_json)
    load = json.loads(open(load_path).read().strip().splitlines()[-1])
    replies = {int(k): v for k, v in load["replies"].items()}
    applied = replies.get(1, 0)
    refused = replies.get(0, 0)
    replays = sum(v for k, v in replies.items() if 10 <= k < 20)
    bad = sum(v for k, v in replies.items() if k not in (0, 1) and not 10 <= k < 20)
    failed = load["errors"] + bad + load["connection_failures"]
    ops = load["requests"] - load["errors"] - bad
    result = dict(meta)
    result.update(
        seconds=load["seconds"],
        requests=load["requests"],
        ops=ops,
        ops_per_s=round(ops / load["seconds"]),
        applied=applied,
        conflicts=refused,
        replays=replays,
        failed=failed,
        retries=0,
        p50_ms=load["latency_ms"]["p50"],
        p99_ms=load["latency_ms"]["p99"],
        p999_ms=load["latency_ms"]["p999"],
        detail={"replies": load["replies"], "first_error": load.get("first_error", "")},
    )
    emit(result)


# ---- coffer bench ----------------------------------------------------------------------------

FINAL = {"created", "exists", "insufficient_balance"}  # answers that settle a request


def coffer(bench_path, expired, meta_json):
    meta = json.loads(meta_json)
    lines = [l for l in open(bench_path).read().splitlines() if l.startswith("{")]
    bench = json.loads(lines[-1])
    codes = bench.get("codes", {})
    batch = bench.get("batch", 1)
    failed_items = sum(v for k, v in codes.items() if k not in FINAL)
    ops = bench["transfers"] - failed_items
    # coffer bench counts replays from the Idempotent-Replayed header; they answer 201 too.
    m = re.search(r"\((\d+) created, (\d+) replays\)", open(bench_path).read())
    replays = int(m.group(2)) if m and batch == 1 else 0
    result = dict(meta)
    result.update(
        seconds=bench["seconds"],
        requests=bench["requests"],
        ops=ops,
        ops_per_s=round(ops / bench["seconds"]),
        applied=codes.get("created", 0) - replays,
        conflicts=codes.get("insufficient_balance", 0),
        replays=replays,
        failed=failed_items + bench.get("connection_failures", 0),
        retries=0,
        p50_ms=bench["latency_ms"]["p50"],
        p99_ms=bench["latency_ms"]["p99"],
        p999_ms=bench["latency_ms"]["p999"],
        verify_ok=bench.get("verify_ok"),
        detail={"codes": codes, "holds_expired_total": int(expired)},
    )
    emit(result)


# ---- Redis correctness check -----------------------------------------------------------------


class Resp:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError("bad reply %r" % line)

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self.read()

    def mget(self, keys):
        values = []
        for i in range(0, len(keys), 10000):
            values.extend(self.call("MGET", *keys[i : i + 10000]))
        return values


def redis_check(port, accounts, seats, meta_json):
    meta = json.loads(meta_json)
    r = Resp(int(port))
    accounts = int(accounts)
    # Transfers (uniform, hot): a:0 .. a:N-1 funded with 1e12, hot with 1e15.
    a = [int(v) for v in r.mget(["a:%d" % i for i in range(accounts)])]
    hot = int(r.call("GET", "hot"))
    negative = sum(1 for v in a if v < 0) + (1 if hot < 0 else 0)
    conserved = sum(a) + hot == accounts * 10**12 + 10**15
    # Payments: b:0 .. with 1e12; every record p:* holds "outcome from to amount".
    b = [int(v) for v in r.mget(["b:%d" % i for i in range(accounts)])]
    keys, cursor = [], "0"
    while True:
        cursor, batch = r.call("SCAN", cursor, "MATCH", "p:*", "COUNT", 10000)
        keys.extend(batch)
        if cursor == "0":
            break
    keys = sorted(set(keys))
    expected = [10**12] * accounts
    applied = 0
    for record in r.mget(keys):
        outcome, src, dst, amount = record.split()
        if outcome == "1":
            applied += 1
            expected[int(src[2:])] -= int(amount)
            expected[int(dst[2:])] += int(amount)
    payment_mismatch = sum(1 for x, y in zip(b, expected) if x != y)
    negative += sum(1 for v in b if v < 0)
    conserved = conserved and sum(b) == accounts * 10**12
    # Seats: every hold in the journal; a seat's holds must be at least 1 s apart.
    holds = r.call("LRANGE", "holds", 0, -1) or []
    by_seat = {}
    for h in holds:
        seat, sec, usec = h.split()
        by_seat.setdefault(seat, []).append(int(sec) * 1000000 + int(usec))
    overlaps, min_gap = 0, None
    for times in by_seat.values():
        times.sort()
        for x, y in zip(times, times[1:]):
            gap = y - x
            min_gap = gap if min_gap is None else min(min_gap, gap)
            if gap < 999000:  # 1 s TTL, 1 ms for the script clock vs the expiry clock
                overlaps += 1
    result = dict(meta)
    result.update(
        check=True,
        negative_balances=negative,
        total_conserved=conserved,
        payment_keys=len(keys),
        payments_applied=applied,
        balance_vs_records_mismatches=payment_mismatch,
        seat_holds=len(holds),
        seats_held_again_after_expiry=len(holds) - len(by_seat),
        seats_held_twice=overlaps,
        min_gap_between_holds_ms=min_gap / 1000 if min_gap is not None else None,
        ok=negative == 0 and conserved and payment_mismatch == 0 and overlaps == 0,
    )
    emit(result)


# ---- report ----------------------------------------------------------------------------------

PATTERN_NAMES = {
    ("coffer", "single"): "coffer, 1 transfer/request",
    ("coffer", "batch100"): "coffer, 100 transfers/request",
    ("postgres", "cond-update"): "PostgreSQL, conditional UPDATE",
    ("postgres", "for-update"): "PostgreSQL, SELECT FOR UPDATE",
    ("postgres", "optimistic"): "PostgreSQL, version column + retry",
    ("postgres", "on-conflict"): "PostgreSQL, INSERT ON CONFLICT",
    ("postgres", "seat-update"): "PostgreSQL, conditional seat UPDATE",
    ("redis-always", "lua"): "Redis Lua, appendfsync always",
    ("redis-everysec", "lua"): "Redis Lua, appendfsync everysec (not durable)",
}
WORKLOADS = ["uniform", "hot", "retries", "seats"]
WORKLOAD_NAMES = {
    "uniform": "uniform transfers",
    "hot": "hot account",
    "retries": "idempotent payments",
    "seats": "seat holds (1 s, released by expiry)",
}


def series_key(r):
    peer = r["peer"] if r["peer"] != "redis" else "redis-" + r["durability"]
    return (peer, r["pattern"])


def fmt_int(x):
    return "{:,}".format(int(round(x))) if x is not None else "–"


def fmt_ms(x):
    if x is None:
        return "–"
    return "%.2f" % x if x < 10 else "%.1f" % x if x < 100 else "%.0f" % x


def report(results_path, outdir):
    rows = [json.loads(l) for l in open(results_path) if l.strip().startswith("{")]
    measurements = [r for r in rows if not r.get("check")]
    checks = [r for r in rows if r.get("check")]
    groups = {}
    for r in measurements:
        groups.setdefault((r["workload"], series_key(r), r["clients"]), []).append(r)
    med = {}
    for key, rs in groups.items():
        med[key] = dict(
            runs=len(rs),
            ops_per_s=statistics.median(r["ops_per_s"] for r in rs),
            p50=statistics.median(r["p50_ms"] for r in rs if r["p50_ms"] is not None)
            if any(r["p50_ms"] is not None for r in rs)
            else None,
            p99=statistics.median(r["p99_ms"] for r in rs if r["p99_ms"] is not None)
            if any(r["p99_ms"] is not None for r in rs)
            else None,
            failed=sum(r["failed"] for r in rs),
            retries=sum(r["retries"] for r in rs),
            requests=sum(r["requests"] for r in rs),
            conflicts=sum(r["conflicts"] for r in rs),
            replays=sum(r["replays"] for r in rs),
        )
    check_by_peer = {}
    for c in checks:
        key = c["peer"] if c["peer"] != "redis" else "redis-" + c["durability"]
        check_by_peer.setdefault(key, []).append(c)

    def check_text(peer, workload):
        cs = check_by_peer.get(peer, [])
        if not cs:
            return "not run"
        cs = [c for c in cs if c.get("workload") in (None, workload)]
        if not cs:
            return "not run"
        return "ok" if all(c["ok"] for c in cs) else "**FAILED**"

    out = []
    out.append("| workload | peer and pattern | clients | ops/s | p50 ms | p99 ms | failed | client retries | conflicts | replays | check |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    order = list(PATTERN_NAMES)
    for w in WORKLOADS:
        keys = sorted({k[1] for k in med if k[0] == w}, key=lambda s: order.index(s) if s in order else 99)
        for s in keys:
            for c in sorted({k[2] for k in med if k[0] == w and k[1] == s}):
                m = med[(w, s, c)]
                out.append(
                    "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |"
                    % (
                        WORKLOAD_NAMES[w], PATTERN_NAMES.get(s, "%s %s" % s), c,
                        fmt_int(m["ops_per_s"]), fmt_ms(m["p50"]), fmt_ms(m["p99"]),
                        fmt_int(m["failed"]), fmt_int(m["retries"]), fmt_int(m["conflicts"]),
                        fmt_int(m["replays"]), check_text(s[0], w),
                    )
                )
    table = "\n".join(out)

    # Ratios: coffer (one transfer per request, and batched) over each peer, same workload and
    # client count; and over PostgreSQL's best pattern at any client count.
    ratio = ["| workload | clients | coffer ops/s | coffer batched ops/s | best PostgreSQL pattern | its ops/s | coffer / PostgreSQL | batched / PostgreSQL | Redis always ops/s | coffer / Redis always | Redis everysec ops/s | coffer / Redis everysec |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    headline = {}
    for w in WORKLOADS:
        for c in sorted({k[2] for k in med if k[0] == w}):
            cf = med.get((w, ("coffer", "single"), c))
            cb = med.get((w, ("coffer", "batch100"), c))
            pg = [(s, med[(w, s, c)]) for s in order if s[0] == "postgres" and (w, s, c) in med]
            best = max(pg, key=lambda x: x[1]["ops_per_s"]) if pg else None
            ra = med.get((w, ("redis-always", "lua"), c))
            re_ = med.get((w, ("redis-everysec", "lua"), c))

            def div(a, b):
                return "%.1fx" % (a["ops_per_s"] / b["ops_per_s"]) if a and b and b["ops_per_s"] else "–"

            ratio.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                WORKLOAD_NAMES[w], c, fmt_int(cf["ops_per_s"]) if cf else "–",
                fmt_int(cb["ops_per_s"]) if cb else "–",
                PATTERN_NAMES[best[0]].replace("PostgreSQL, ", "") if best else "–",
                fmt_int(best[1]["ops_per_s"]) if best else "–",
                div(cf, best[1] if best else None), div(cb, best[1] if best else None),
                fmt_int(ra["ops_per_s"]) if ra else "–", div(cf, ra),
                fmt_int(re_["ops_per_s"]) if re_ else "–", div(cf, re_)))
        # Headline: coffer's best client count against PostgreSQL's best pattern and count.
        # coffer's best client count against PostgreSQL's best pattern at its best client count,
        # one transfer per request and batched; and both at the same 64 clients.
        pgs = [(s, c, med[(w, s, c)]) for (ww, s, c) in med if ww == w and s[0] == "postgres"]
        pbest = max(pgs, key=lambda x: x[2]["ops_per_s"]) if pgs else None
        pg64 = max((x for x in pgs if x[1] == 64), key=lambda x: x[2]["ops_per_s"], default=None)
        for kind in ("single", "batch100"):
            cfs = [(c, med[(w, ("coffer", kind), c)]) for c in (1, 8, 64) if (w, ("coffer", kind), c) in med]
            if not cfs or not pbest:
                continue
            cbest = max(cfs, key=lambda x: x[1]["ops_per_s"])
            c64 = dict(cfs).get(64)
            headline[(w, kind)] = dict(
                coffer=cbest[1]["ops_per_s"], coffer_clients=cbest[0],
                pg=pbest[2]["ops_per_s"], pg_pattern=PATTERN_NAMES[pbest[0]], pg_clients=pbest[1],
                ratio=cbest[1]["ops_per_s"] / pbest[2]["ops_per_s"],
                ratio64=(c64["ops_per_s"] / pg64[2]["ops_per_s"]) if c64 and pg64 else None,
                pg64_pattern=PATTERN_NAMES[pg64[0]] if pg64 else None,
                coffer_retries=sum(m["retries"] for c, m in cfs),
                coffer_failed=sum(m["failed"] for c, m in cfs))
    ratios = "\n".join(ratio)

    lines = []
    for (w, kind), h in headline.items():
        target = {"uniform": 10, "hot": 50}.get(w)
        how = "1 transfer/request" if kind == "single" else "100 transfers/request"
        lines.append("- %s, coffer %s: %s ops/s (%d clients) vs %s %s ops/s (%d clients): **%.1fx**%s%s; coffer failed %d, client retries %d"
                     % (WORKLOAD_NAMES[w], how, fmt_int(h["coffer"]), h["coffer_clients"], h["pg_pattern"], fmt_int(h["pg"]),
                        h["pg_clients"], h["ratio"],
                        (" (target %dx: %s)" % (target, "met" if h["ratio"] >= target else "NOT met")) if target else "",
                        ("; at 64 clients each against %s: %.1fx" % (h["pg64_pattern"], h["ratio64"])) if h["ratio64"] else "",
                        h["coffer_failed"], h["coffer_retries"]))
    headlines = "\n".join(lines)

    check_lines = ["| peer | scope | what was checked | result |", "|---|---|---|---|"]
    skip = ("peer", "durability", "check", "ok", "pattern", "run", "stamp", "seconds", "workload",
            "offline_verify")
    for peer, cs in sorted(check_by_peer.items()):
        for c in cs:
            fields = ["%s %s" % (k.replace("_", " "), str(v).lower() if isinstance(v, bool) else v)
                      for k, v in c.items() if k not in skip and v is not None]
            if "offline_verify" in c:
                ov = c["offline_verify"] if isinstance(c["offline_verify"], dict) else {}
                fields.append("coffer verify: chain %s, snapshot matches replay %s, invariants %s" % (
                    str(ov.get("log", {}).get("chain_ok")).lower(),
                    str(ov.get("snapshot", {}).get("matches_replay")).lower(),
                    str(ov.get("invariants", {}).get("ok")).lower()))
            check_lines.append("| %s | %s | %s | %s |" % (
                PATTERN_NAMES.get((peer, "lua"), peer).split(",")[0] if peer.startswith("redis") else peer,
                c.get("workload", "all workloads") if peer == "coffer" else
                ("all workloads, appendfsync " + c["durability"] if peer.startswith("redis") else "all workloads"),
                "; ".join(fields), "ok" if c["ok"] else "**FAILED**"))
    check_table = "\n".join(check_lines)

    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write("<!-- generated by bench/peers/peers.py report from %s -->\n\n" % os.path.basename(results_path))
        f.write("### Medians (failed, retries, conflicts and replays: totals over the runs)\n\n" + table + "\n\n")
        f.write("### coffer / peer, same run\n\n" + ratios + "\n\n")
        f.write("### Against the targets\n\n" + headlines + "\n\n")
        f.write("### Correctness checks after each peer's run\n\n" + check_table + "\n")
    # Chart data: one file per workload, a column per series, rows by client count.
    for w in ("uniform", "hot"):
        series = [s for s in order if any(k[0] == w and k[1] == s for k in med)]
        with open(os.path.join(outdir, "chart-%s.dat" % w), "w") as f:
            f.write("# clients " + " ".join('"%s" "%s p99"' % (PATTERN_NAMES[s], PATTERN_NAMES[s]) for s in series) + "\n")
            for c in sorted({k[2] for k in med if k[0] == w}):
                vals = []
                for s in series:
                    m = med.get((w, s, c))
                    vals.append("%s %s" % (m["ops_per_s"] if m else "NaN", m["p99"] if m and m["p99"] is not None else "NaN"))
                f.write("%d %s\n" % (c, " ".join(vals)))
        with open(os.path.join(outdir, "chart-%s.series" % w), "w") as f:
            f.write("\n".join(PATTERN_NAMES[s] for s in series) + "\n")
    print(open(os.path.join(outdir, "table.md")).read())


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "free-port": free_port,
        "pgbench": pgbench,
        "redis": redis,
        "coffer": coffer,
        "redis-check": redis_check,
        "report": report,
    }[cmd](*args)


if __name__ == "__main__":
    main()
