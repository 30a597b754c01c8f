#!/usr/bin/env bash
# Story 4: an event-sourced wallet shared by several application instances (see README.md).
#
#   1. Balance 100; two instances read it and buy for 100 at the same moment: one succeeds, one
#      gets insufficient_balance, and no read or history entry ever shows -100.
#   2. Compare-and-set: an instance that writes with the version it read is refused with
#      version_mismatch when another instance wrote first; re-reading and writing with the fresh
#      version succeeds.
#   3. Ten instances run read-decide-write loops with compare-and-set on one wallet: exactly as
#      many purchases succeed as the balance allows.
#   4. The wallet is its event stream: folding the history gives the balance, and any past version
#      can be read back.
#
# Usage: COFFER_SERVER=http://127.0.0.1:8080 ./run.sh     (bash, curl, jq)
set -euo pipefail

SERVER="${COFFER_SERVER:-http://127.0.0.1:8080}"
RUN="eswallet-$(date +%s)-$$-$RANDOM" # every id of this run starts with this: reruns never collide
INSTANCES=10 # instances in the compare-and-set loop of part 3
PRICE=30     # what each of them wants to buy

# --- helpers -------------------------------------------------------------------------------------
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" # call, get, balance, codes, check

echo "== Story 4: event-sourced wallet across instances (run $RUN)"
WALLET="$RUN:wallet:lee"
STORE="$RUN:store"
FUNDING="$RUN:funding"
call POST /v1/accounts "$(jq -nc --arg run "$RUN" '{accounts: [
    {id: "\($run):funding", currency: "POINT", min_balance: null},
    {id: "\($run):wallet:lee", currency: "POINT"},
    {id: "\($run):store", currency: "POINT"}]}')" >/dev/null
topup() { # topup ID AMOUNT
    call POST /v1/transfers "$(printf '{"id": "%s", "from": "%s", "to": "%s", "amount": %d}' \
        "$RUN:$1" "$FUNDING" "$WALLET" "$2")"
}
# purchase ID AMOUNT [EXPECTED_VERSION]: buy from the store, optionally only if the wallet is
# still at the version this instance read (compare-and-set).
purchase() {
    local expect=""
    [[ -n "${3:-}" ]] && expect=", \"expect\": {\"from_version\": $3}"
    call POST /v1/transfers "$(printf '{"id": "%s", "from": "%s", "to": "%s", "amount": %d%s}' \
        "$RUN:$1" "$WALLET" "$STORE" "$2" "$expect")"
}
topup topup-1 100 >/dev/null

# --- 1. two instances, one balance of 100, two purchases of 100 -----------------------------------
# Each instance reads 100, decides "enough", and buys. With read-then-write-the-new-balance the
# second write wins and the wallet paid twice for one balance; with "balance -= 100" in a store
# without a floor it reads -100. coffer checks the floor at the moment it applies each purchase.
echo "-- 1. two instances buy for 100 from a balance of 100 at the same moment"
for instance in A B; do get "/v1/accounts/$WALLET" >"$work/read-$instance.json" & done
wait
for instance in A B; do
    echo "   instance $instance read balance $(jq .balance "$work/read-$instance.json") (version $(jq .version "$work/read-$instance.json")), decides to buy for 100"
done
for instance in A B; do purchase "buy-100-$instance" 100 >"$work/buy-$instance.json" & done
# A third instance keeps reading the balance while the purchases race.
for _ in $(seq 1 20); do get "/v1/accounts/$WALLET" | jq .balance; done >"$work/reads.txt" &
wait
jq -r '"   \(.body.transfer.id // .body.id): HTTP \(.status) \(.body.code)"' "$work"/buy-*.json
check "outcomes" "$(jq -sc 'map("\(.status) \(.body.code)") | sort' "$work"/buy-*.json)" \
    '["201 created","409 insufficient_balance"]'
check "balance" "$(get "/v1/accounts/$WALLET" | jq .balance)" 0
check "lowest balance read while racing" "$(sort -n "$work/reads.txt" | head -1)" 0
check "lowest balance in the history" "$(get "/v1/accounts/$WALLET/history" | jq '[.entries[].balance] | min')" 0

# --- 2. compare-and-set --------------------------------------------------------------------------
echo "-- 2. compare-and-set"
topup topup-2 300 >/dev/null
read_a="$(get "/v1/accounts/$WALLET")"
read_b="$(get "/v1/accounts/$WALLET")"
v="$(jq .version <<<"$read_a")"
echo "   instance A read balance $(jq .balance <<<"$read_a") at version $v, B read $(jq .balance <<<"$read_b") at version $(jq .version <<<"$read_b")"
a="$(purchase cas-A 120 "$v")"
echo "   A buys 120 expecting version $v: HTTP $(jq .status <<<"$a"), wallet now version $(jq .body.accounts.from.version <<<"$a")"
check "A's write" "$(jq -c '[.status, .body.accounts.from.version]' <<<"$a")" "[201,$((v + 1))]"
b="$(purchase cas-B 50 "$v")"
echo "   B buys 50 expecting version $v: HTTP $(jq .status <<<"$b") $(jq -r .body.code <<<"$b"), actual version $(jq .body.actual_version <<<"$b")"
check "B's stale write" "$(jq -c '[.status, .body.code, .body.field, .body.actual_version]' <<<"$b")" \
    "[409,\"version_mismatch\",\"/expect/from_version\",$((v + 1))]"
# B reads again, decides again (180 is still enough), and writes with the fresh version. It uses
# a new key: the key cas-B names the refused attempt, and replaying it replays the refusal.
fresh="$(get "/v1/accounts/$WALLET")"
b2="$(purchase cas-B-2 50 "$(jq .version <<<"$fresh")")"
echo "   B re-reads ($(jq .balance <<<"$fresh") at version $(jq .version <<<"$fresh")) and buys 50: HTTP $(jq .status <<<"$b2")"
check "B's fresh write" "$(jq -c '[.status, .body.accounts.from.balance, .body.accounts.from.version]' <<<"$b2")" \
    "[201,130,$((v + 2))]"
check "B's stale key replayed" "$(purchase cas-B 50 "$v" | jq -c '[.status, .body.code]')" '[409,"version_mismatch"]'

# --- 3. ten instances, read-decide-write with compare-and-set ------------------------------------
# Each instance: read the wallet; if it cannot afford 30, decline; else buy 30 expecting the
# version it read; on version_mismatch start over (new key per attempt). 130 affords 4 purchases.
start_balance="$(get "/v1/accounts/$WALLET" | jq .balance)"
echo "-- 3. $INSTANCES instances each try to buy $PRICE from $start_balance with read-decide-write + compare-and-set"
instance() {
    local n="$1" try acct balance version r code
    for ((try = 1; try <= 50; try++)); do
        acct="$(call GET "/v1/accounts/$WALLET")"
        read -r balance version < <(jq -r '"\(.body.balance) \(.body.version)"' <<<"$acct")
        if ((balance < PRICE)); then
            echo "{\"instance\": $n, \"outcome\": \"declined\", \"tries\": $try}"
            return
        fi
        r="$(purchase "loop-$n-try-$try" "$PRICE" "$version")"
        code="$(jq -r .body.code <<<"$r")"
        if [[ "$code" == created ]]; then
            echo "{\"instance\": $n, \"outcome\": \"bought\", \"tries\": $try, \"version\": $((version + 1))}"
            return
        fi
        [[ "$code" == version_mismatch ]] || {
            echo "{\"instance\": $n, \"outcome\": \"$code\", \"tries\": $try}"
            return
        }
    done
    echo "{\"instance\": $n, \"outcome\": \"gave up\"}"
}
for ((n = 1; n <= INSTANCES; n++)); do instance "$n" >"$work/instance-$n.json" & done
wait
cat "$work"/instance-*.json >"$work/instances.jsonl"
jq -sr 'sort_by(.instance) | .[] | "   instance \(.instance): \(.outcome) on attempt \(.tries)\(if .version then " (wallet version \(.version))" else "" end)"' \
    "$work/instances.jsonl"
affordable=$((start_balance / PRICE))
check "purchases" "$(jq -s 'map(select(.outcome == "bought")) | length' "$work/instances.jsonl")" "$affordable"
check "declines" "$(jq -s 'map(select(.outcome == "declined")) | length' "$work/instances.jsonl")" $((INSTANCES - affordable))
check "balance" "$(get "/v1/accounts/$WALLET" | jq .balance)" $((start_balance - affordable * PRICE))
check "versions written by the buyers are consecutive" \
    "$(jq -sc '[.[] | select(.version) | .version] | sort | [.[0], .[-1], length] | .[1] - .[0] + 1 == .[2]' \
    "$work/instances.jsonl")" true

# --- 4. the wallet is its event stream -------------------------------------------------------------
echo "-- 4. the event stream"
wallet="$(get "/v1/accounts/$WALLET")"
history="$(get "/v1/accounts/$WALLET/history?limit=1000")"
jq -r '.entries[] | "   v\(.version)  seq \(.seq)  \(.kind)  \(.delta | tostring | if startswith("-") then . else "+" + . end)  -> \(.balance)  (\(.transfer_id | split(":") | last))"' \
    <<<"$history"
check "fold of the stream = balance" "$(jq '[.entries[] | select(.kind == "posted") | .delta] | add' <<<"$history")" \
    "$(jq .balance <<<"$wallet")"
check "stream length = version - 1" "$(jq '.entries | length' <<<"$history")" $(($(jq .version <<<"$wallet") - 1))
check "versions in the stream" "$(jq -c '[.entries[].version] == [range(2; (.entries | length) + 2)]' <<<"$history")" true
# Read the wallet as it was at the event where A's compare-and-set purchase landed.
seq_a="$(jq .body.transfer.seq <<<"$a")"
check "balance and version at seq $seq_a (?at=)" \
    "$(get "/v1/accounts/$WALLET?at=$seq_a" | jq -c '[.balance, .version]')" "[180,$((v + 1))]"

if ((FAILED)); then
    echo "== Story 4 FAILED"
    exit 1
fi
echo "== Story 4 passed: 100 - two concurrent 100s = one sale, balance 0 (never -100); stale version refused, fresh accepted; $affordable of $INSTANCES CAS buyers served"
