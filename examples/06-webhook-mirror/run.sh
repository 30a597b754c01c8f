#!/usr/bin/env bash
# Story 6: a balance mirror fed by webhooks (see README.md in this folder).
#
#   1. Starts receiver.py on a free loopback port and registers it as a webhook with a fresh
#      secret (POST /v1/webhooks), taking up to 50 changes per POST ("batch": a mirror of a busy
#      ledger keeps up that way; without it, one change per POST).
#   2. Creates accounts and runs transfers and holds: a deposit, payments, a hold posted in part,
#      a hold voided and a hold left to expire.
#   3. Waits until the receiver's mirror (balance, available, version) equals GET /v1/accounts
#      for every account, from the signed deliveries alone.
#   4. Checks that a delivery with a bad signature, or a stale timestamp, is refused with 401.
#   5. Shows the webhook's cursor and lag (GET /v1/webhooks/ID) and deletes it.
#
# Usage: COFFER_SERVER=http://127.0.0.1:8080 ./run.sh     (bash, curl, jq, python3)
set -euo pipefail

SERVER="${COFFER_SERVER:-http://127.0.0.1:8080}"
RUN="mirror-$(date +%s)-$$-$RANDOM" # every id of this run starts with this: reruns never collide
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MIRROR_TIMEOUT_S=30

# --- helpers -------------------------------------------------------------------------------------
source "$here/../lib.sh" # call, get, balance, codes, check; $work

echo "== Story 6: a balance mirror fed by webhooks (run $RUN)"

# --- 1. the receiver and its webhook -------------------------------------------------------------
# The secret: "whsec_" and 32 random bytes in base64. coffer signs with it, the receiver checks.
secret="whsec_$(head -c 32 /dev/urandom | base64)"
# The file exists before the receiver starts: the background job opens it in its own time, and
# reading it before then failed the story under load (set -e).
: >"$work/receiver.out"
WEBHOOK_SECRET="$secret" python3 "$here/receiver.py" 0 >"$work/receiver.out" 2>&1 &
receiver_pid=$!
stop() { # the webhook goes first, so that coffer stops delivering to a receiver that is gone
    curl -sS -L --max-time 10 -X DELETE "$SERVER/v1/webhooks/$RUN" >/dev/null 2>&1 || true
    kill "$receiver_pid" 2>/dev/null || true
    wait "$receiver_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap stop EXIT
for ((i = 0; i < 100; i++)); do
    port="$(sed -n 's/^listening on //p' "$work/receiver.out")"
    [[ -n "$port" ]] && break
    sleep 0.1
done
[[ -n "$port" ]] || { echo "receiver.py did not start: $(cat "$work/receiver.out")" >&2; exit 1; }
receiver="http://127.0.0.1:$port"
echo "-- 1. receiver on $receiver"

# Registered before the accounts exist: a new webhook delivers the changes after the durable seq
# at its creation, so the mirror sees every account of this run from its account.created on.
registered="$(call POST /v1/webhooks "$(jq -nc --arg id "$RUN" --arg url "$receiver/" \
    --arg secret "$secret" '{id: $id, url: $url, secret: $secret, batch: 50}')")"
check "webhook registered" "$(jq -c '[.status, .body.id]' <<<"$registered")" "[201,\"$RUN\"]"

# --- 2. activity ---------------------------------------------------------------------------------
accounts=(bank alice bob shop)
call POST /v1/accounts "$(jq -nc --arg run "$RUN" '{accounts: [
    {id: "\($run):bank", currency: "KRW", min_balance: null},
    {id: "\($run):alice", currency: "KRW"}, {id: "\($run):bob", currency: "KRW"},
    {id: "\($run):shop", currency: "KRW"}]}')" >/dev/null
# move ID FROM TO AMOUNT [HOLD_TIMEOUT_MS]: a transfer, or a hold when a timeout is given.
move() {
    local hold=""
    [[ -n "${5:-}" ]] && hold=", \"hold\": {\"timeout_ms\": $5}"
    call POST /v1/transfers "$(printf '{"id": "%s", "from": "%s", "to": "%s", "amount": %d%s}' \
        "$RUN:$1" "$RUN:$2" "$RUN:$3" "$4" "$hold")" | jq -r .body.code
}
echo "-- 2. transfers and holds: $(move deposit-1 bank alice 10000) $(move deposit-2 bank bob 3000)" \
    "$(move pay-1 alice shop 2500) $(move pay-2 bob alice 700)" \
    "$(move order-1 alice shop 4000 60000) $(move order-2 bob shop 1000 60000)" \
    "$(move seat-1 alice shop 500 300)"
call POST "/v1/holds/$RUN:order-1/post" "{\"id\": \"$RUN:order-1:post\", \"amount\": 3000}" >/dev/null
call POST "/v1/holds/$RUN:order-2/void" "{\"id\": \"$RUN:order-2:void\"}" >/dev/null
# seat-1 expires after 300 ms: its release reaches the mirror as hold.expired.
for ((i = 0; i < 100; i++)); do
    [[ "$(get "/v1/transfers/$RUN:seat-1" | jq -r .state)" == expired ]] && break
    sleep 0.1
done
check "seat-1 expired" "$(get "/v1/transfers/$RUN:seat-1" | jq -r .state)" expired

# --- 3. the mirror converges ---------------------------------------------------------------------
truth() { # every account of this run as coffer answers it, in the mirror's shape
    for name in "${accounts[@]}"; do
        get "/v1/accounts/$RUN:$name" | jq -c '{(.id): {balance, available, version}}'
    done | jq -Ssc 'add'
}
mirrored() { curl -sS --max-time 5 "$receiver/mirror" | jq -Sc --arg run "$RUN:" \
    '.accounts | with_entries(select(.key | startswith($run)))'; }
started="$SECONDS"
until [[ "$(mirrored)" == "$(truth)" ]] || ((SECONDS - started > MIRROR_TIMEOUT_S)); do
    sleep 0.2
done
echo "-- 3. the mirror after $((SECONDS - started)) s:"
jq -r 'to_entries[] | "   \(.key)  balance \(.value.balance)  available \(.value.available)  version \(.value.version)"' \
    <<<"$(mirrored)"
same="$([[ "$(mirrored)" == "$(truth)" ]] && echo equal || echo "$(mirrored) vs $(truth)")"
check "mirror = GET /v1/accounts/ID for all ${#accounts[@]} accounts" "$same" equal
check "alice's balance (10000 - 2500 + 700 - 3000)" "$(balance "$RUN:alice")" 5200

# --- 4. forged deliveries are refused ------------------------------------------------------------
forge() { # forge TIMESTAMP SIGNATURE: a delivery coffer did not sign; prints the HTTP status
    curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -X POST "$receiver/" \
        -H "webhook-id: evt_forged" -H "webhook-timestamp: $1" -H "webhook-signature: $2" \
        -H 'Content-Type: application/json' --data-binary \
        "{\"type\": \"account.created\", \"data\": {\"seq\": 1, \"type\": \"account.created\", \"account\": {\"id\": \"$RUN:thief\", \"balance\": 1000000, \"available\": 1000000, \"version\": 1}}}"
}
check "a bad signature is refused" "$(forge "$(date +%s)" "v1,$(head -c 32 /dev/urandom | base64)")" 401
# A stale timestamp is refused before the signature is even computed.
check "a stale timestamp is refused" "$(forge $(($(date +%s) - 600)) "v1,x")" 401
check "and nothing forged reached the mirror" "$(mirrored | jq "has(\"$RUN:thief\")")" false

# --- 5. the webhook as coffer sees it ------------------------------------------------------------
hook="$(get "/v1/webhooks/$RUN")"
echo "-- 5. webhook: $(jq -c '{state, batch, cursor, lag_events, failures, deliveries}' <<<"$hook")"
check "webhook state" "$(jq -r .state <<<"$hook")" active
check "deleted" "$(call DELETE "/v1/webhooks/$RUN" | jq .status)" 204

if ((FAILED)); then
    echo "== Story 6 FAILED"
    exit 1
fi
echo "== Story 6 passed: $(curl -sS "$receiver/mirror" | jq .applied) signed changes applied," \
    "every balance mirrored exactly, forged deliveries refused"
