#!/usr/bin/env bash
# Story 3: lottery shares (see README.md in this folder).
#
#   1. Buying is atomic: the price leaves the wallet and the shares leave the round's pool in one
#      atomic batch, or neither moves (a buyer without the money, a buyer over the cap).
#   2. 30 users send 90 orders of 4 shares at once for the 92 shares left: exactly 23 orders
#      succeed, the round sells out and never sells more than it has; a user never holds more
#      than 10 shares (max_balance), and everyone paid exactly for the shares they hold.
#   3. The daily free-entry reset (sweep up_to, then grant 3, in one atomic batch) races with
#      users spending entries, and every user ends with exactly what the order of events implies.
#
# Usage: COFFER_SERVER=http://127.0.0.1:8080 ./run.sh     (bash, curl, jq)
set -euo pipefail

SERVER="${COFFER_SERVER:-http://127.0.0.1:8080}"
RUN="lottery-$(date +%s)-$$-$RANDOM" # every id of this run starts with this: reruns never collide
USERS=30         # racing users, 3 orders each
ORDER_SHARES=4   # shares per order
PRICE=1000       # KRW per share
POOL_SHARES=100  # shares in the round
CAP=10           # at most 10 shares per user (max_balance of the user's share account)
FREE_ENTRIES=3   # the daily free entries every user is reset to

# --- helpers -------------------------------------------------------------------------------------
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" # call, get, balance, codes, check
accounts() { printf "url = \"$SERVER/v1/accounts/%s\"\n" "$@" | curl -sS --max-time 60 -K -; }

echo "== Story 3: lottery shares (run $RUN)"
POOL="$RUN:round:1:pool"
REVENUE="$RUN:round:1:revenue"

# --- accounts ------------------------------------------------------------------------------------
# Three currencies: KRW (money), SHARE (the round's shares), ENTRY (free entries). Issuers have no
# floor; everything else has the default floor 0; a user's share account is capped at 10.
users=(whale poor)
racers=()
for ((u = 1; u <= USERS; u++)); do racers+=("$u"); done
users+=("${racers[@]}")
call POST /v1/accounts "$(jq -nc --arg run "$RUN" --argjson cap "$CAP" --args '{accounts: (
    [{id: "\($run):bank", currency: "KRW", min_balance: null},
     {id: "\($run):round:1:revenue", currency: "KRW"},
     {id: "\($run):issuer:shares", currency: "SHARE", min_balance: null},
     {id: "\($run):round:1:pool", currency: "SHARE"},
     {id: "\($run):issuer:entries", currency: "ENTRY", min_balance: null},
     {id: "\($run):round:1:entries", currency: "ENTRY"}] +
    [$ARGS.positional[] | {id: "\($run):user:\(.):krw", currency: "KRW"},
                          {id: "\($run):user:\(.):shares", currency: "SHARE", max_balance: $cap},
                          {id: "\($run):user:\(.):free", currency: "ENTRY"}])}' "${users[@]}")" >/dev/null
# Money for the users (whale 100,000, poor 500, the others 12,000: enough for all three of their
# orders, so only the pool and the cap can stop them) and 100 shares for the round.
setup="$(call POST /v1/transfers "$(jq -nc --arg run "$RUN" --argjson pool "$POOL_SHARES" --args '{
    atomic: true, transfers: ([{id: "\($run):issue:round:1", from: "\($run):issuer:shares",
                                to: "\($run):round:1:pool", amount: $pool}] +
    [$ARGS.positional[] | {id: "\($run):fund:\(.)", from: "\($run):bank", to: "\($run):user:\(.):krw",
        amount: (if . == "whale" then 100000 elif . == "poor" then 500 else 12000 end)}])}' "${users[@]}")")"
check "round and wallets funded" "$(jq -c '[.body.results[].code] | unique' <<<"$setup")" '["created"]'

# buy USER SHARES ORDER: one order, as one atomic batch of two transfers:
#   the price from the user's wallet to the round's revenue, and the shares from the pool to the
#   user. Either both happen or neither does.
buy() {
    local user="$RUN:user:$1" order="$RUN:order:$3"
    call POST /v1/transfers "$(printf '{"atomic": true, "transfers": [
        {"id": "%s:pay", "from": "%s:krw", "to": "%s", "amount": %d},
        {"id": "%s:shares", "from": "%s", "to": "%s:shares", "amount": %d}]}' \
        "$order" "$user" "$REVENUE" $(($2 * PRICE)) "$order" "$POOL" "$user" "$2")"
}

# --- 1. buying is atomic -------------------------------------------------------------------------
echo "-- 1. atomic buying"
r="$(buy poor 1 poor-1)"
echo "   poor (500 KRW) buys 1 share for 1,000: $(codes <<<"$r")"
check "poor's order fails whole" "$(codes <<<"$r")" '["insufficient_balance","batch_failed"]'
check "answered as a failure" "$(jq -c '[.status, .body.code]' <<<"$r")" '[409,"insufficient_balance"]'
check "poor still has" "$(balance "$RUN:user:poor:krw") KRW, $(balance "$RUN:user:poor:shares") shares" "500 KRW, 0 shares"
r="$(buy whale 8 whale-1)"
echo "   whale buys 8 shares: $(codes <<<"$r")"
r="$(buy whale 4 whale-2)"
echo "   whale buys 4 more (8 + 4 > cap 10): $(codes <<<"$r")"
check "whale's second order fails whole" "$(codes <<<"$r")" '["batch_failed","exceeds_max_balance"]'
check "whale has" "$(balance "$RUN:user:whale:krw") KRW, $(balance "$RUN:user:whale:shares") shares" "92000 KRW, 8 shares"
check "pool after step 1" "$(balance "$POOL")" $((POOL_SHARES - 8))

# --- 2. many buyers at once ----------------------------------------------------------------------
# A naive shop checks "pool >= 4" and "user shares + 4 <= 10" and then writes: between the check
# and the write other buyers pass the same check, and the round oversells. In coffer the checks
# and the writes are one step of the single writer.
left="$(balance "$POOL")"
echo "-- 2. $USERS users send 3 orders of $ORDER_SHARES shares each, all at once, for the $left shares left"
for ((u = 1; u <= USERS; u++)); do
    for k in 1 2 3; do buy "$u" "$ORDER_SHARES" "$u-$k" >"$work/order-$u-$k.json" & done
done
wait
cat "$work"/order-*.json >"$work/orders.jsonl"
jq -sr 'map([.body.results[].code] | join(" + ")) | group_by(.) |
    map("   \(length) orders: \(.[0])") | .[]' "$work/orders.jsonl"
sold_in_race=$((left / ORDER_SHARES * ORDER_SHARES))
check "orders that succeeded" "$(jq -s 'map(select(.body.results | all(.code == "created"))) | length' "$work/orders.jsonl")" \
    $((left / ORDER_SHARES))
check "failed orders with one own code and one batch_failed" \
    "$(jq -s 'map(select([.body.results[].code] | (index("batch_failed") != null) and
        (map(select(. != "batch_failed" and . != "created")) | length == 1))) | length' "$work/orders.jsonl")" \
    $((3 * USERS - left / ORDER_SHARES))
check "pool (sold out, never below 0)" "$(balance "$POOL")" $((left - sold_in_race))
check "lowest pool balance in its history" \
    "$(get "/v1/accounts/$POOL/history?limit=1000" | jq '[.entries[].balance] | min')" 0
check "revenue" "$(balance "$REVENUE")" $((POOL_SHARES * PRICE))
# Every user: at most 10 shares, and paid exactly 1,000 per share held (one curl for all GETs).
wallets_and_shares=()
for u in "${users[@]}"; do wallets_and_shares+=("$RUN:user:$u:krw" "$RUN:user:$u:shares"); done
accounts "${wallets_and_shares[@]}" | jq -sc '
    [_nwise(2) | {user: (.[0].id | split(":")[-2]), krw: .[0].balance, shares: .[1].balance,
                  funded: .[0].credits_posted}]' >"$work/users.json"
check "shares held by all users" "$(jq 'map(.shares) | add' "$work/users.json")" "$POOL_SHARES"
check "users over the cap" "$(jq --argjson cap "$CAP" 'map(select(.shares > $cap)) | length' "$work/users.json")" 0
check "users whose money and shares disagree" \
    "$(jq --argjson price "$PRICE" 'map(select(.funded - .krw != .shares * $price)) | length' "$work/users.json")" 0
echo "   shares per racing user: $(jq -c '[.[] | select(.user | test("^[0-9]+$")) | .shares] |
    group_by(.) | map("\(length) users with \(.[0])") | join(", ")' "$work/users.json")"

# --- 3. the daily free-entry reset ---------------------------------------------------------------
# Yesterday's free entries: user u has u % 6 left (0 to 5).
echo "-- 3. daily free-entry reset to $FREE_ENTRIES, while users spend entries"
grants="$(jq -nc --arg run "$RUN" --argjson n "$USERS" '{atomic: true, transfers: [range(1; $n + 1) |
    select(. % 6 > 0) | {id: "\($run):grant:day0:\(.)", from: "\($run):issuer:entries",
                         to: "\($run):user:\(.):free", amount: (. % 6)}]}')"
call POST /v1/transfers "$grants" >/dev/null
# reset USER DAY: sweep whatever is left (up_to: at most 1,000,000, as much as the floor allows),
# then grant 3; one atomic batch, so no spend can land between the two.
reset() {
    local free="$RUN:user:$1:free" key="$RUN:reset:$2:$1"
    call POST /v1/transfers "$(printf '{"atomic": true, "transfers": [
        {"id": "%s:sweep", "from": "%s", "to": "%s:issuer:entries", "amount": 1000000, "up_to": true},
        {"id": "%s:grant", "from": "%s:issuer:entries", "to": "%s", "amount": %d}]}' \
        "$key" "$free" "$RUN" "$key" "$RUN" "$free" "$FREE_ENTRIES")"
}
spend() { # spend USER: use one free entry on the round
    call POST /v1/transfers "$(printf '{"id": "%s:spend:%s", "from": "%s:user:%s:free", "to": "%s", "amount": 1}' \
        "$RUN" "$1" "$RUN" "$1" "$RUN:round:1:entries")"
}
for ((u = 1; u <= USERS; u++)); do
    reset "$u" day1 >"$work/reset-$u.json" &
    spend "$u" >"$work/spend-$u.json" &
done
wait
# Each user's end state follows from the order coffer applied the two requests in (their seqs):
#   spend before the reset: the sweep takes what is left, the user ends with 3;
#   spend after the reset: the user ends with 2;
#   spend before the reset with nothing left: refused (insufficient_balance), the user ends with 3.
for ((u = 1; u <= USERS; u++)); do
    jq -nc --argjson u "$u" --slurpfile reset "$work/reset-$u.json" --slurpfile spend "$work/spend-$u.json" '
        ($reset[0].body.results) as $r | $spend[0] as $s |
        {user: $u, reset: ([$r[].code] | unique), sweep_seq: $r[0].transfer.seq, swept: $r[0].transfer.amount,
         spend: $s.body.code, spend_seq: ($s.body.transfer.seq // $s.body.seq)} |
        .after_reset = (.spend_seq > .sweep_seq) |
        .expected = (if .spend == "created" and .after_reset then 2 else 3 end) |
        .expected_swept = ($u % 6 - (if .spend == "created" and (.after_reset | not) then 1 else 0 end))'
done >"$work/resets.jsonl"
free_accounts=()
for u in "${racers[@]}"; do free_accounts+=("$RUN:user:$u:free"); done
free_entries() { accounts "${free_accounts[@]}" | jq .balance; } # the racers' entries, in order
free_entries | jq -c '{balance: .}' >"$work/free.jsonl"
jq -s '. as $all | ($all | length / 2) as $n | [range(0; $n) | $all[.] + $all[. + $n]]' \
    "$work/resets.jsonl" "$work/free.jsonl" >"$work/day1.json"
jq -r 'group_by([.spend, .after_reset, .balance]) | map("   \(length) users: spend \(.[0].spend) \(if .[0].after_reset then "after" else "before" end) the reset, end with \(.[0].balance)") | .[]' \
    "$work/day1.json"
check "resets that applied whole" "$(jq 'map(select(.reset == ["created"])) | length' "$work/day1.json")" "$USERS"
check "users whose entries match the order of events" \
    "$(jq 'map(select(.balance == .expected)) | length' "$work/day1.json")" "$USERS"
check "sweeps that took exactly what was left (up_to)" \
    "$(jq 'map(select(.swept == .expected_swept)) | length' "$work/day1.json")" "$USERS"
check "refused spends that came after the reset" \
    "$(jq 'map(select(.spend != "created" and .after_reset)) | length' "$work/day1.json")" 0

# The reset job crashes and runs again with the same keys: an exact replay, nobody gets 3 more.
for ((u = 1; u <= USERS; u++)); do reset "$u" day1 >"$work/rerun-$u.json" & done
wait
replays="$(cat "$work"/rerun-*.json | jq -sc 'map(.body.results[].replayed) | unique')"
check "day-1 reset run again: replayed" "$replays" '[true]'
check "users whose entries match after the rerun" "$(free_entries | jq -s --slurpfile day1 "$work/day1.json" '
    [., ($day1[0] | map(.expected))] | transpose | map(select(.[0] == .[1])) | length')" "$USERS"

# The next day: everyone back to exactly 3, whatever they had.
for ((u = 1; u <= USERS; u++)); do reset "$u" day2 >"$work/reset2-$u.json" & done
wait
check "day-2 resets that applied whole" \
    "$(cat "$work"/reset2-*.json | jq -s 'map(select([.body.results[].code] == ["created", "created"])) | length')" "$USERS"
check "users with exactly $FREE_ENTRIES entries on day 2" \
    "$(free_entries | jq -s --argjson n "$FREE_ENTRIES" 'map(select(. == $n)) | length')" "$USERS"

if ((FAILED)); then
    echo "== Story 3 FAILED"
    exit 1
fi
echo "== Story 3 passed: $POOL_SHARES shares sold, never more; $((left / ORDER_SHARES)) of $((3 * USERS)) racing orders filled, failed ones charged nothing; resets exact"
