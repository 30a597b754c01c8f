#!/usr/bin/env bash
# Story 5: concert seats (see README.md in this folder).
#
#   1. Five fans try to reserve seat A12 at once: one gets a 5-minute hold, four get a clear
#      conflict. The winner pays and confirms the seat in one atomic batch.
#   2. A shopper with 10,000 points buys five 1,000-point items at once: 5,000 left.
#   3. A fan pays for a hold that has expired, in one atomic batch (pay + confirm the hold): the
#      batch fails whole (hold_expired), nothing is charged, and the seat is free again.
#   4. Ten payments race their holds' expiry: each seat is either paid and confirmed, or expired
#      and not charged, never both.
#
# Usage: COFFER_SERVER=http://127.0.0.1:8080 ./run.sh     (bash, curl, jq)
set -euo pipefail

SERVER="${COFFER_SERVER:-http://127.0.0.1:8080}"
RUN="seats-$(date +%s)-$$-$RANDOM" # every id of this run starts with this: reruns never collide
TICKET=3000 # points per seat
RACES=10    # part 4: seats whose payment races the hold's expiry

# --- helpers -------------------------------------------------------------------------------------
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" # call, get, balance, codes, check

echo "== Story 5: concert seats (run $RUN)"

# --- accounts ------------------------------------------------------------------------------------
# A seat is an account of currency SEAT holding 1: reserving it is a hold of 1 from the seat to
# the fan's tickets account, and a seat cannot be held or sold twice because its balance cannot
# go below 0. Points are a second currency.
fans=(1 2 3 4 5 shopper racer)
seats=(A12 A13)
for ((k = 1; k <= RACES; k++)); do seats+=("B$k"); done
fans_json="$(jq -nc '$ARGS.positional' --args "${fans[@]}")"
call POST /v1/accounts "$(jq -nc --arg run "$RUN" --argjson fans "$fans_json" --args '{accounts: (
    [{id: "\($run):venue:seats", currency: "SEAT", min_balance: null},
     {id: "\($run):points:issuer", currency: "POINT", min_balance: null},
     {id: "\($run):venue:revenue", currency: "POINT"},
     {id: "\($run):shop", currency: "POINT"}] +
    [$ARGS.positional[] | {id: "\($run):seat:C1:\(.)", currency: "SEAT"}] +
    [$fans[] | {id: "\($run):fan:\(.):tickets", currency: "SEAT"},
               {id: "\($run):fan:\(.):points", currency: "POINT"}])}' "${seats[@]}")" >/dev/null
# One seat issued to each seat account, and points for the fans, in one atomic batch.
setup="$(call POST /v1/transfers "$(jq -nc --arg run "$RUN" --argjson fans "$fans_json" --args '{
    atomic: true, transfers: (
    [$ARGS.positional[] |
        {id: "\($run):issue:\(.)", from: "\($run):venue:seats", to: "\($run):seat:C1:\(.)", amount: 1}] +
    [$fans[] |
        {id: "\($run):points:\(.)", from: "\($run):points:issuer", to: "\($run):fan:\(.):points",
         amount: (if . == "shopper" then 10000 elif . == "racer" then 100000 else 20000 end)}])}' \
    "${seats[@]}")")"
check "seats issued and points granted" "$(jq -c '[.body.results[].code] | unique' <<<"$setup")" '["created"]'

# hold_seat FAN SEAT KEY TIMEOUT_MS: reserve a seat for a fan until paid, voided or expired.
hold_seat() {
    call POST /v1/transfers "$(printf '{"id": "%s", "from": "%s:seat:C1:%s", "to": "%s:fan:%s:tickets", "amount": 1, "hold": {"timeout_ms": %d}}' \
        "$RUN:$3" "$RUN" "$2" "$RUN" "$1" "$4")"
}
# pay_and_confirm FAN HOLD_KEY KEY: one atomic batch: the fan pays the ticket and the seat's hold
# is posted. Both happen or neither does.
pay_and_confirm() {
    call POST /v1/transfers "$(printf '{"atomic": true, "transfers": [
        {"id": "%s:pay", "from": "%s:fan:%s:points", "to": "%s:venue:revenue", "amount": %d},
        {"id": "%s:confirm", "post": "%s"}]}' "$RUN:$3" "$RUN" "$1" "$RUN" "$TICKET" "$RUN:$3" "$RUN:$2")"
}

# --- 1. five fans, one seat ----------------------------------------------------------------------
# Naive code checks "is A12 free?" and then marks it taken: all five see it free. Here the hold
# itself is the check: the seat's available balance is 1, and only one hold of 1 fits.
echo "-- 1. five fans try to reserve seat A12 at once (5-minute hold)"
for fan in 1 2 3 4 5; do hold_seat "$fan" A12 "hold:A12:fan$fan" 300000 >"$work/hold-$fan.json" & done
wait
for fan in 1 2 3 4 5; do
    jq -r --arg fan "$fan" '"   fan \($fan): HTTP \(.status) \(.body.code)\(if .body.available != null then " (seat available: \(.body.available))" else "" end)"' \
        "$work/hold-$fan.json"
done
check "outcomes" "$(cat "$work"/hold-?.json | jq -sc 'map("\(.status) \(.body.code)") | group_by(.) | map("\(length) x \(.[0])")')" \
    '["1 x 201 created","4 x 409 insufficient_balance"]'
winner="$(for fan in 1 2 3 4 5; do jq -r --arg fan "$fan" 'select(.status == 201) | $fan' "$work/hold-$fan.json"; done)"
hold="$(cat "$work/hold-$winner.json")"
# RFC 3339 times with nanoseconds: 300 s apart to the nanosecond (same fraction digits)
check "the hold lasts 5 minutes" "$(jq -c '.body.transfer | [.expires_at, .timestamp]
    | map(capture("^(?<s>.*)[.](?<f>[0-9]{9})Z$"))
    | [(map(.s + "Z" | fromdateiso8601) | .[0] - .[1]), .[0].f == .[1].f]' <<<"$hold")" '[300,true]'
r="$(pay_and_confirm "$winner" "hold:A12:fan$winner" "order:A12:fan$winner")"
echo "   fan $winner pays $TICKET and confirms the seat: $(codes <<<"$r")"
check "payment and confirmation" "$(codes <<<"$r")" '["created","created"]'
check "seat A12 / fan $winner's tickets / fan $winner's points" \
    "$(balance "$RUN:seat:C1:A12") / $(balance "$RUN:fan:$winner:tickets") / $(balance "$RUN:fan:$winner:points")" \
    "0 / 1 / $((20000 - TICKET))"

# --- 2. five purchases at once from 10,000 points ------------------------------------------------
echo "-- 2. the shopper (10,000 points) buys five 1,000-point items at once"
v0="$(get "/v1/accounts/$RUN:fan:shopper:points" | jq .version)"
for item in 1 2 3 4 5; do
    call POST /v1/transfers "$(printf '{"id": "%s:item:%d", "from": "%s:fan:shopper:points", "to": "%s:shop", "amount": 1000}' \
        "$RUN" "$item" "$RUN" "$RUN")" >"$work/item-$item.json" &
done
wait
check "purchases" "$(cat "$work"/item-*.json | jq -sc 'map(.body.code) | unique')" '["created"]'
shopper="$(get "/v1/accounts/$RUN:fan:shopper:points")"
check "shopper's points" "$(jq .balance <<<"$shopper")" 5000
check "shopper's version advanced by" "$(($(jq .version <<<"$shopper") - v0))" 5

# --- 3. paying an expired hold -------------------------------------------------------------------
echo "-- 3. fan 2 holds seat A13 for 1 second, and pays after it expired"
h="$(hold_seat 2 A13 hold:A13:fan2 1000)"
check "hold on A13" "$(jq -r .body.transfer.state <<<"$h")" pending
points_before="$(balance "$RUN:fan:2:points")"
sleep 1.5
r="$(pay_and_confirm 2 hold:A13:fan2 order:A13:fan2)"
echo "   pay + confirm: $(codes <<<"$r")"
check "the batch fails whole" "$(codes <<<"$r")" '["batch_failed","hold_expired"]'
check "answered as a failure" "$(jq -c '[.status, .body.code]' <<<"$r")" '[409,"hold_expired"]'
check "fan 2 charged" $((points_before - $(balance "$RUN:fan:2:points"))) 0
check "hold state" "$(get "/v1/transfers/$RUN:hold:A13:fan2" | jq -r .state)" expired
check "seat A13 free again (available)" "$(get "/v1/accounts/$RUN:seat:C1:A13" | jq .available)" 1
check "fan 3 can now hold A13" "$(hold_seat 3 A13 hold:A13:fan3 300000 | jq -r .body.code)" created

# --- 4. payment confirmation races hold expiry ---------------------------------------------------
# Holds of 500 ms, each paid 200 to 650 ms after its hold was answered. Whichever the engine
# applies first wins; the other is refused, and the ledger agrees with the answer.
echo "-- 4. $RACES payments race their holds' 500 ms expiry"
race() {
    local k="$1"
    hold_seat racer "B$k" "hold:B$k" 500 >"$work/race-hold-$k.json"
    sleep "0.$((15 + 5 * k))"
    pay_and_confirm racer "hold:B$k" "order:B$k" >"$work/race-pay-$k.json"
}
for ((k = 1; k <= RACES; k++)); do race "$k" & done
wait
for ((k = 1; k <= RACES; k++)); do
    jq -nc --arg k "$k" --slurpfile pay "$work/race-pay-$k.json" \
        --argjson hold "$(get "/v1/transfers/$RUN:hold:B$k")" --argjson seat "$(get "/v1/accounts/$RUN:seat:C1:B$k")" '
        {seat: "B\($k)", paid: ($pay[0].body.results | map(.code)), hold: $hold.state,
         seat_balance: $seat.balance, seat_available: $seat.available}'
done >"$work/races.jsonl"
jq -r '"   \(.seat): payment \(.paid | join(" + ")), hold \(.hold), seat balance \(.seat_balance)"' "$work/races.jsonl"
won="$(jq -s 'map(select(.paid == ["created", "created"])) | length' "$work/races.jsonl")"
echo "   payment won $won, expiry won $((RACES - won))"
check "seats consistent (paid+captured+sold, or refused+expired+free)" \
    "$(jq -s 'map(select(
        (.paid == ["created", "created"] and .hold == "captured" and .seat_balance == 0) or
        (.paid == ["batch_failed", "hold_expired"] and .hold == "expired" and .seat_available == 1)))
        | length' "$work/races.jsonl")" "$RACES"
check "racer charged for exactly the seats won" "$(balance "$RUN:fan:racer:points")" $((100000 - won * TICKET))
check "racer's tickets" "$(balance "$RUN:fan:racer:tickets")" "$won"

if ((FAILED)); then
    echo "== Story 5 FAILED"
    exit 1
fi
echo "== Story 5 passed: 5 holds on one seat = 1 hold + 4 conflicts; 10,000 - 5 x 1,000 at once = 5,000; expired hold paid = nothing charged, seat freed; $RACES races consistent"
