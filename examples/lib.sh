# examples/lib.sh — the helpers every story script shares. Sourced after SERVER is set; it
# checks the server is ready and gives each run a scratch folder in $work.
#
# SERVER may name several instances of one ledger, comma separated
# (http://a:8080,http://b:8080,http://c:8080). On sourcing, SERVER becomes the leader among them
# (the instance that says so in GET /v1/cluster, or the one the others name), so reads see every
# write the story made; `call` follows a 307 to the leader keeping method and body, and when an
# instance cannot be reached or answers 503 no_leader, tries the next one, a few rounds at most.
IFS=, read -ra servers <<<"$SERVER"

# leader_of URL: prints the leader's URL as URL sees it (URL itself when it leads), or nothing.
leader_of() {
    curl -sf --max-time 5 "$1/v1/cluster" |
        jq -r --arg self "$1" 'if .role == "leader" then $self else .leader // empty end' 2>/dev/null
}
SERVER=""
for url in "${servers[@]}"; do
    SERVER="$(leader_of "$url")" && [[ -n "$SERVER" ]] && break
done
if [[ -z "$SERVER" ]]; then # no leader known yet: the first instance that answers
    for url in "${servers[@]}"; do
        curl -sf --max-time 5 -o /dev/null "$url/readyz" && SERVER="$url" && break
    done
fi
SERVER="${SERVER:-${servers[0]}}"
unset url

# call METHOD PATH [JSON]: prints {"status": HTTP status, "body": response JSON}. No jq in here,
# so hundreds can run at once cheaply. Tries SERVER, then the other instances: a request that
# could not connect (curl exit 7), or was cut before its answer (52, 55, 56: the instance died),
# or got 503 no_leader goes to the next one; every write of the stories carries its own ids, so
# sending it again gets the original outcome. A timeout is an answer (status 000): an instance
# that hangs is not told from a slow one. curl -L keeps the method and the body through a 307.
call() {
    local out body status rc url round order=("$SERVER")
    for url in "${servers[@]}"; do [[ "$url" == "$SERVER" ]] || order+=("$url"); done
    for ((round = 0; round < 5; round++)); do
        ((round == 0)) || sleep 1 # an election takes a moment; Retry-After says 1 s
        for url in "${order[@]}"; do
            rc=0
            out="$(curl -sS -L --max-redirs 3 --max-time 30 -X "$1" "$url$2" \
                -H 'Content-Type: application/json' ${3:+--data-binary "$3"} -w '\n%{http_code}')" ||
                rc=$? # no answer: status 000, no body
            body="${out%$'\n'*}" status="$((10#${out##*$'\n'}))"
            case "$rc:$status" in
            7:* | 52:* | 55:* | 56:*) continue ;;
            0:503) [[ "$body" == *'"no_leader"'* ]] && continue ;;
            esac
            printf '{"status": %d, "body": %s}\n' "$status" "${body:-null}"
            return
        done
    done
    printf '{"status": %d, "body": %s}\n' "$status" "${body:-null}"
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
    echo "no coffer server ready at $SERVER (of ${servers[*]}) (start one with 'make run')" >&2
    exit 2
}
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
