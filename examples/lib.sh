# examples/lib.sh — the helpers every story script shares. Sourced after SERVER is set; it
# checks the server is ready and gives each run a scratch folder in $work.

# call METHOD PATH [JSON]: prints {"status": HTTP status, "body": response JSON}. No jq in here,
# so hundreds can run at once cheaply.
call() {
    local out body
    out="$(curl -sS --max-time 30 -X "$1" "$SERVER$2" -H 'Content-Type: application/json' \
        ${3:+--data-binary "$3"} -w '\n%{http_code}')" || true # no answer: status 000, no body
    body="${out%$'\n'*}"
    printf '{"status": %d, "body": %s}\n' "$((10#${out##*$'\n'}))" "${body:-null}"
}
get() { call GET "$1" | jq -c .body; }
balance() { get "/v1/accounts/$1" | jq .balance; }
codes() { jq -c '[.body.results[].code]'; } # the per-item codes of a batch answer

FAILED=0
check() { # check WHAT ACTUAL EXPECTED
    if [[ "$2" == "$3" ]]; then
        printf '  ok    %s: %s\n' "$1" "$2"
    else
        printf '  FAIL  %s: got %s, expected %s\n' "$1" "$2" "$3"
        FAILED=1
    fi
}

curl -sf --max-time 5 "$SERVER/readyz" >/dev/null || {
    echo "no coffer server ready at $SERVER (start one with 'make run')" >&2
    exit 2
}
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
