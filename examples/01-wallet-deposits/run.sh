#!/usr/bin/env bash
# Story 1: wallet deposits and reconciliation (see README.md in this folder).
#
#   1. A wallet holds 10,000. Two deposits, 5,000 and 3,000, arrive at the same moment.
#      Result: 18,000, and the wallet's version advanced by exactly two.
#   2. A deposit request is held from the bank's funding account and posted when the bank
#      confirms it; another is voided when the bank declines it; a third is still pending.
#   3. Reconciliation: every balance equals the sum of its history and of the deposits the bot
#      recorded as confirmed; any discrepancy is reported and fails the run.
#
# Usage: COFFER_SERVER=http://127.0.0.1:8080 ./run.sh     (bash, curl, jq)
set -euo pipefail

SERVER="${COFFER_SERVER:-http://127.0.0.1:8080}"
RUN="deposits-$(date +%s)-$$-$RANDOM" # every id of this run starts with this: reruns never collide

# --- helpers -------------------------------------------------------------------------------------
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" # call, get, balance, codes, check

BANK="$RUN:bank:funding"
WALLET="$RUN:wallet:kim"
echo "== Story 1: wallet deposits and reconciliation (run $RUN)"

# --- accounts ------------------------------------------------------------------------------------
# The bank's funding account has no floor (min_balance null): it goes negative by exactly what it
# has paid out. The wallet has the default floor of 0.
call POST /v1/accounts "$(jq -nc --arg bank "$BANK" --arg wallet "$WALLET" '{accounts: [
    {id: $bank, currency: "KRW", min_balance: null, metadata: {role: "deposit funding"}},
    {id: $wallet, currency: "KRW", metadata: {owner: "kim"}}]}')" >/dev/null

# The bot's own record of the deposits it has seen confirmed (id and amount), for reconciliation.
confirmed=()
deposit() { # deposit ID AMOUNT: a confirmed deposit, posted at once
    call POST /v1/transfers "$(jq -nc --arg id "$1" --arg from "$BANK" --arg to "$WALLET" \
        --argjson amount "$2" '{id: $id, from: $from, to: $to, amount: $amount}')"
}
deposit "$RUN:dep:opening" 10000 >/dev/null
confirmed+=("$RUN:dep:opening=10000")

before="$(get "/v1/accounts/$WALLET")"
v0="$(jq .version <<<"$before")"
echo "-- wallet before: balance $(jq .balance <<<"$before"), version $v0"

# --- 1. two deposits at the same moment --------------------------------------------------------
# A naive bot reads 10,000, adds its deposit and writes the sum back: one write overwrites the
# other and the wallet ends at 15,000 or 13,000. coffer applies both as increments, one after the
# other, in one total order.
echo "-- two deposits, 5,000 and 3,000, at the same moment"
deposit "$RUN:dep:a" 5000 >"$work/dep-a.json" &
deposit "$RUN:dep:b" 3000 >"$work/dep-b.json" &
wait
for f in "$work"/dep-a.json "$work"/dep-b.json; do
    jq -r '"   \(.body.transfer.id): HTTP \(.status), seq \(.body.transfer.seq), wallet then \(.body.accounts.to.balance) (version \(.body.accounts.to.version))"' "$f"
done
confirmed+=("$RUN:dep:a=5000" "$RUN:dep:b=3000")

after="$(get "/v1/accounts/$WALLET")"
check "both deposits created" "$(jq -s 'map(.status) | sort | join(",")' "$work"/dep-*.json)" '"201,201"'
check "wallet balance" "$(jq .balance <<<"$after")" 18000
check "wallet version advanced by" "$(($(jq .version <<<"$after") - v0))" 2
seq_18000="$(jq -s 'map(.body.transfer.seq) | max' "$work"/dep-*.json)"

# --- 2. deposits confirmed later: hold, then post or void --------------------------------------
# A deposit request is not money yet. The bot holds it from the bank's funding account (the wallet
# shows it as credits_held, not as balance) and posts the hold when the bank confirms.
echo "-- deposit requests: 2,000 (bank confirms it), 700 (bank declines it), 1,500 (no answer yet)"
hold() { # hold ID AMOUNT: a pending deposit, expiring after a day if never confirmed
    call POST /v1/transfers "$(jq -nc --arg id "$1" --arg from "$BANK" --arg to "$WALLET" \
        --argjson amount "$2" '{id: $id, from: $from, to: $to, amount: $amount,
                               hold: {timeout_ms: 86400000}}')"
}
hold "$RUN:dep:c" 2000 >"$work/hold-c.json"
hold "$RUN:dep:d" 700 >"$work/hold-d.json"
hold "$RUN:dep:e" 1500 >"$work/hold-e.json"
check "deposit request c held" "$(jq -r .body.transfer.state "$work/hold-c.json")" pending
pending="$(get "/v1/accounts/$WALLET")"
echo "   wallet while pending: balance $(jq .balance <<<"$pending"), credits_held $(jq .credits_held <<<"$pending")"
check "pending deposits are not balance" "$(jq .balance <<<"$pending")" 18000
check "pending deposits are credits_held" "$(jq .credits_held <<<"$pending")" 4200

# The bank's confirmation for c arrives: post the hold (the post has its own idempotency key, so
# a confirmation delivered twice posts once). The bank declines d: void it.
post_c="$(call POST "/v1/holds/$RUN:dep:c/post" "$(jq -nc --arg id "$RUN:dep:c:confirm" '{id: $id}')")"
void_d="$(call POST "/v1/holds/$RUN:dep:d/void" "$(jq -nc --arg id "$RUN:dep:d:decline" '{id: $id}')")"
again_c="$(call POST "/v1/holds/$RUN:dep:c/post" "$(jq -nc --arg id "$RUN:dep:c:confirm" '{id: $id}')")"
confirmed+=("$RUN:dep:c=2000")
check "confirmation of c" "$(jq -r '"\(.status) \(.body.code)"' <<<"$post_c")" "201 created"
check "decline of d" "$(jq -r '"\(.status) \(.body.code)"' <<<"$void_d")" "201 created"
check "confirmation delivered twice: same seq" \
    "$(jq .body.transfer.seq <<<"$again_c")" "$(jq .body.transfer.seq <<<"$post_c")"
check "hold c state" "$(get "/v1/transfers/$RUN:dep:c" | jq -r .state)" captured
check "hold d state" "$(get "/v1/transfers/$RUN:dep:d" | jq -r .state)" voided

final="$(get "/v1/accounts/$WALLET")"
echo "   wallet now: balance $(jq .balance <<<"$final"), credits_held $(jq .credits_held <<<"$final"), version $(jq .version <<<"$final")"
check "wallet balance after confirmation" "$(jq .balance <<<"$final")" 20000
check "still held (deposit e)" "$(jq .credits_held <<<"$final")" 1500
check "balance as of the concurrent deposits (?at=$seq_18000)" \
    "$(get "/v1/accounts/$WALLET?at=$seq_18000" | jq .balance)" 18000

# --- 3. reconciliation ---------------------------------------------------------------------------
# For every account: page through its full history and prove
#   balance                     = sum of the deltas of posted and captured entries
#   version                     = 1 + number of history entries (the version is the stream offset)
#   credits_held, debits_held   = the sums of the account's pending holds (GET /v1/holds)
# and compare the balances with the deposits the bot recorded as confirmed.
echo "-- reconciliation"
history() { # all history entries of an account, one JSON object per line
    local after=0 page
    while [[ "$after" != null ]]; do
        page="$(get "/v1/accounts/$1/history?after=$after&limit=1000")"
        jq -c '.entries[]' <<<"$page"
        after="$(jq .next_after <<<"$page")"
    done
}
discrepancies=0
report() {
    echo "   DISCREPANCY $*"
    discrepancies=$((discrepancies + 1))
}
expected_wallet=0
for entry in "${confirmed[@]}"; do expected_wallet=$((expected_wallet + ${entry##*=})); done
declare -A expected=(["$WALLET"]=$expected_wallet ["$BANK"]=$((-expected_wallet)))
for account in "$WALLET" "$BANK"; do
    acct="$(get "/v1/accounts/$account")"
    history "$account" >"$work/history.jsonl"
    sums="$(jq -sc '{entries: length,
        posted: (map(select(.kind == "posted" or .kind == "captured") | .delta) | add // 0)}' \
        "$work/history.jsonl")"
    holds="$(get "/v1/holds?account=$account&limit=1000" | jq -c --arg a "$account" '{
        credits: ([.holds[] | select(.to == $a) | .amount] | add // 0),
        debits: ([.holds[] | select(.from == $a) | .amount] | add // 0)}')"
    balance="$(jq .balance <<<"$acct")"
    version="$(jq .version <<<"$acct")"
    printf '   %-44s balance %7s = history %7s = confirmed %7s; held %s = pending holds %s\n' \
        "$account" "$balance" "$(jq .posted <<<"$sums")" "${expected[$account]}" \
        "$(jq -c '[.credits_held, .debits_held]' <<<"$acct")" "$(jq -c '[.credits, .debits]' <<<"$holds")"
    [[ "$balance" == "$(jq .posted <<<"$sums")" ]] ||
        report "$account: balance $balance but history sums to $(jq .posted <<<"$sums")"
    [[ "$(jq -c '{credits: .credits_held, debits: .debits_held}' <<<"$acct")" == "$holds" ]] ||
        report "$account: held $(jq -c '[.credits_held, .debits_held]' <<<"$acct") but pending holds sum to $holds"
    [[ "$version" == "$((1 + $(jq .entries <<<"$sums")))" ]] ||
        report "$account: version $version but $(jq .entries <<<"$sums") history entries"
    [[ "$balance" == "${expected[$account]}" ]] ||
        report "$account: balance $balance but confirmed deposits say ${expected[$account]}"
done
# Every confirmed deposit of the bot's record has exactly one entry in the wallet's history.
history "$WALLET" >"$work/history.jsonl"
for entry in "${confirmed[@]}"; do
    id="${entry%=*}" amount="${entry##*=}"
    [[ "$id" == "$RUN:dep:c" ]] && id="$RUN:dep:c:confirm" # a held deposit lands when posted
    found="$(jq -sc --arg id "$id" '[.[] | select(.transfer_id == $id and
        (.kind == "posted" or .kind == "captured")) | .delta]' "$work/history.jsonl")"
    [[ "$found" == "$(jq -nc --argjson a "$amount" '[$a]')" ]] ||
        report "deposit $id of $amount: wallet history has $found"
done
# The server's own invariant check: hash chain, replay, per-currency sums, limits, holds.
verify="$(get /v1/verify)"
[[ "$(jq .ok <<<"$verify")" == true ]] || report "GET /v1/verify: $(jq -c .problems <<<"$verify")"
check "reconciliation discrepancies" "$discrepancies" 0

if ((FAILED)); then
    echo "== Story 1 FAILED"
    exit 1
fi
echo "== Story 1 passed: 10,000 + 5,000 + 3,000 at once = 18,000 (version +2); +2,000 confirmed = 20,000 (1,500 pending); reconciled"
