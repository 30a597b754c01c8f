#!/usr/bin/env bash
# Story 2: payments with idempotency keys (see README.md in this folder).
#
# 200 clients pay a merchant at the same time. Each client sends its payment three times with
# the same idempotency key, 100 ms apart, while its first attempt is still in flight (its request
# body is held back until both retries have been answered). Every payment is applied exactly once
# and all three attempts of a client get the same answer, refusals included.
#
# Usage: COFFER_SERVER=http://127.0.0.1:8080 ./run.sh     (bash, curl, jq)
# CLIENTS=N changes the number of concurrent clients (default 200).
set -euo pipefail

SERVER="${COFFER_SERVER:-http://127.0.0.1:8080}"
RUN="payments-$(date +%s)-$$-$RANDOM" # every id of this run starts with this: reruns never collide
CLIENTS="${CLIENTS:-200}"
PRICE=1234      # what each client pays
POOR_EVERY=40   # every 40th customer has only 1,000 and is refused: 5 of 200

# --- helpers -------------------------------------------------------------------------------------
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" # call, get, balance, codes, check

echo "== Story 2: payments with idempotency keys, $CLIENTS concurrent clients (run $RUN)"

# --- accounts: a funding account, a merchant and one wallet per customer ------------------------
call POST /v1/accounts "$(jq -nc --arg run "$RUN" --argjson n "$CLIENTS" '{accounts: (
    [{id: "\($run):funding", currency: "KRW", min_balance: null},
     {id: "\($run):merchant", currency: "KRW"}] +
    [range(1; $n + 1) | {id: "\($run):customer:\(.)", currency: "KRW"}])}')" >/dev/null
# Every customer gets 10,000 (the poor ones 1,000), all in one atomic batch.
funding="$(call POST /v1/transfers "$(jq -nc --arg run "$RUN" --argjson n "$CLIENTS" \
    --argjson poor "$POOR_EVERY" '{atomic: true, transfers: [range(1; $n + 1) |
    {id: "\($run):fund:\(.)", from: "\($run):funding", to: "\($run):customer:\(.)",
     amount: (if . % $poor == 0 then 1000 else 10000 end)}]}')")"
check "customers funded" "$(jq '[.body.results[].code] | unique' -c <<<"$funding")" '["created"]'

# --- the clients -----------------------------------------------------------------------------------
# attempt CLIENT N BODY [FIFO]: one HTTP attempt of a client's payment, keyed by the header
# Idempotency-Key. With FIFO the request body is sent in two parts and the second part waits until
# a line arrives on FIFO: the request is in flight, and has not reached the ledger, until then.
# Writes one JSON line to $work/CLIENT.N.json: status, replay header, start/end times, body.
# The body streams from a pipe, which curl cannot send twice: it goes to SERVER, the leader
# lib.sh found, and a 307 (the leader moved meanwhile) is recorded like any other answer.
attempt() {
    local client="$1" n="$2" body="$3" fifo="${4:-}" start
    # The first attempt waits up to 90 s for its retries before sending the rest of its body,
    # and its curl gives it that long on top of the 60 s every attempt has.
    local fifo_wait=0
    [[ -z "$fifo" ]] || fifo_wait=90
    start="$EPOCHREALTIME"
    {
        printf '%s' "${body:0:1}"
        if [[ -n "$fifo" ]]; then read -r -t "$fifo_wait" -u 3 _ || true; fi
        printf '%s' "${body:1}"
    } 3<>"${fifo:-/dev/null}" |
        curl -sS --max-time "$((fifo_wait + 60))" -X POST "$SERVER/v1/transfers" -T - \
            -o "$work/$client.$n.body" -H 'Content-Type: application/json' -H 'Expect:' \
            -H "Idempotency-Key: $RUN:pay:$client" \
            -w '%{http_code} %header{idempotent-replayed}' >"$work/$client.$n.status" || true
    local status=0 replayed=false reply=null
    read -r status replayed <"$work/$client.$n.status" || true
    [[ -s "$work/$client.$n.body" ]] && reply="$(<"$work/$client.$n.body")"
    printf '{"client": %d, "attempt": %d, "status": %d, "replayed": %s, "start_us": %s, "end_us": %s, "body": %s}\n' \
        "$client" "$n" "$((10#${status:-0}))" "$([[ "$replayed" == true ]] && echo true || echo false)" \
        "${start/./}" "${EPOCHREALTIME/./}" "$reply" >"$work/$client.$n.json"
}

# client N: the first attempt, then a retry 100 ms later and another 100 ms after that (a client
# that timed out and tried again); the first attempt's request completes only after both retries
# were answered.
client() {
    local client="$1" fifo="$work/$1.fifo" body
    # (printf rather than jq here: ids are plain [A-Za-z0-9._:@/-], and 200 jq starts cost seconds)
    printf -v body '{"from": "%s:customer:%d", "to": "%s:merchant", "amount": %d}' \
        "$RUN" "$client" "$RUN" "$PRICE"
    mkfifo "$fifo"
    attempt "$client" 1 "$body" "$fifo" &
    sleep 0.1
    attempt "$client" 2 "$body" &
    local retry2=$!
    sleep 0.1
    attempt "$client" 3 "$body" &
    local retry3=$!
    wait "$retry2" "$retry3"
    # Now the first attempt's request finishes arriving. Opened for reading and writing, the
    # FIFO never blocks this client, even when the first attempt gave up waiting already.
    echo release 1<>"$fifo"
    wait
}

echo "-- $CLIENTS clients x 3 attempts, all at once"
started="$EPOCHREALTIME"
for ((i = 1; i <= CLIENTS; i++)); do client "$i" & done
wait
echo "   all $((3 * CLIENTS)) attempts answered in $(((${EPOCHREALTIME/./} - ${started/./}) / 1000)) ms"
cat "$work"/*.json >"$work/attempts.jsonl"

# --- what happened -------------------------------------------------------------------------------
jq -sr 'group_by(.status) | map("   HTTP \(.[0].status): \(length) attempts (\(map(select(.replayed)) | length) replayed)") | .[]' \
    "$work/attempts.jsonl"
per_client="$(jq -sc 'group_by(.client) | map({
    client: .[0].client, attempts: length,
    originals: map(select(.replayed | not)) | length,
    outcomes: (map([.status, .body]) | unique | length),
    status: .[0].status, code: .[0].body.code,
    in_flight: ((.[] | select(.attempt == 1) | .end_us) as $first_end |
                map(select(.attempt > 1 and .end_us < $first_end)) | length == 2)})' "$work/attempts.jsonl")"
echo "   for example client 1:"
jq -r 'select(.client == 1) | "     attempt \(.attempt): started +\((.start_us - $t0) / 1000 | floor) ms, answered +\((.end_us - $t0) / 1000 | floor) ms, HTTP \(.status) \(.body.code) seq \(.body.transfer.seq // .body.seq), replayed \(.replayed)"' \
    --argjson t0 "$(jq -s 'map(select(.client == 1) | .start_us) | min' "$work/attempts.jsonl")" \
    "$work/attempts.jsonl" | sort

check "clients with 3 answers" "$(jq '[.[] | select(.attempts == 3)] | length' <<<"$per_client")" "$CLIENTS"
check "clients whose first attempt was in flight while both retries were answered" \
    "$(jq '[.[] | select(.in_flight)] | length' <<<"$per_client")" "$CLIENTS"
check "clients with exactly one original answer (the others replayed)" \
    "$(jq '[.[] | select(.originals == 1)] | length' <<<"$per_client")" "$CLIENTS"
check "clients whose 3 answers are identical" \
    "$(jq '[.[] | select(.outcomes == 1)] | length' <<<"$per_client")" "$CLIENTS"
poor=$((CLIENTS / POOR_EVERY))
check "payments created" "$(jq '[.[] | select(.code == "created")] | length' <<<"$per_client")" $((CLIENTS - poor))
check "payments refused (insufficient_balance, on every attempt)" \
    "$(jq '[.[] | select(.code == "insufficient_balance" and .status == 409)] | length' <<<"$per_client")" "$poor"

# --- the ledger: each payment exactly once ------------------------------------------------------
merchant="$(get "/v1/accounts/$RUN:merchant")"
paid=$((CLIENTS - poor))
echo "-- merchant: balance $(jq .balance <<<"$merchant"), version $(jq .version <<<"$merchant")"
check "merchant balance ($paid x $PRICE)" "$(jq .balance <<<"$merchant")" $((paid * PRICE))
check "merchant version (1 + one change per payment)" "$(jq .version <<<"$merchant")" $((1 + paid))
history="$(get "/v1/accounts/$RUN:merchant/history?limit=1000")"
check "merchant history: distinct payment ids" "$(jq '[.entries[].transfer_id] | unique | length' <<<"$history")" "$paid"
# One GET per customer, all in one curl process (keep-alive).
seq 1 "$CLIENTS" | sed "s|.*|url = \"$SERVER/v1/accounts/$RUN:customer:&\"|" |
    curl -sS --max-time 60 -K - >"$work/customers.jsonl"
charged="$(jq -sc --argjson poor "$POOR_EVERY" --argjson price "$PRICE" '
    map((.id | split(":") | last | tonumber) as $n | {n: $n,
        expect: (if $n % $poor == 0 then [1000, 2] else [10000 - $price, 3] end),
        got: [.balance, .version]}) | map(select(.expect == .got)) | length' "$work/customers.jsonl")"
check "customers charged exactly once (or refused and untouched)" "$charged" "$CLIENTS"

# A retry that changes the payment is not a retry: the key is already used.
reused="$(curl -sS -L --max-time 30 -X POST "$SERVER/v1/transfers" -H 'Content-Type: application/json' \
    -H "Idempotency-Key: $RUN:pay:1" --data-binary "$(jq -nc --arg run "$RUN" \
    '{from: "\($run):customer:1", to: "\($run):merchant", amount: 9999}')" | jq -c '[.status, .code, .field]')"
echo "-- the same key with amount 9999: $reused"
check "same key, different amount" "$reused" '[422,"id_reused","/amount"]'
check "customer 1 still charged once" "$(get "/v1/accounts/$RUN:customer:1" | jq .balance)" $((10000 - PRICE))

if ((FAILED)); then
    echo "== Story 2 FAILED"
    exit 1
fi
echo "== Story 2 passed: $((3 * CLIENTS)) attempts from $CLIENTS clients, $paid payments of $PRICE applied once each, $poor refused once each"
