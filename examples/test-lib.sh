#!/usr/bin/env bash
# Checks examples/lib.sh against stand-ins of a cluster (ctest: examples_lib): SERVER with several
# URLs resolves to the leader, and `call` gets past an instance with no leader (503 no_leader), a
# dead one and a follower's 307 with its method and body intact.
#
#   examples/test-lib.sh        (bash, curl, jq, python3; no coffer needed)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
scratch="$(mktemp -d)"
stubs_pid=""
cleanup() {
    [[ -z "$stubs_pid" ]] || kill "$stubs_pid" 2>/dev/null || true
    rm -rf "$scratch"
}
trap cleanup EXIT

# Three stand-ins on free ports, one process: "leader" answers every request with what it
# received; "follower" sends every write to the leader with a 307 and names it in /v1/cluster
# (unless told the leader is unknown); "electing" answers every write with 503 no_leader.
python3 - "$scratch/ports" <<'EOF' &
import http.server, json, sys, threading

class Stub(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        role, leader = self.server.role, "http://127.0.0.1:%d" % ports[0]
        known = leader if self.server.knows_leader else None
        if self.path == "/readyz":
            return self.answer(200, {"ready": True})
        if self.path == "/v1/cluster":
            return self.answer(200, {"role": role, "leader": leader if role == "leader" else known})
        if role == "leader":
            return self.answer(200, {"role": role, "method": self.command, "path": self.path,
                                     "received": body})
        if role == "electing" or self.command == "GET":
            return self.answer(503, {"code": "no_leader"}, [("Retry-After", "1")])
        self.answer(307, {"code": "not_leader", "leader": leader},
                    [("Location", leader + self.path)])

    do_GET = do_POST = do_PUT = do_DELETE = handle_any

servers = []
for role, knows in (("leader", True), ("follower", True), ("electing", False), ("follower", False)):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.role, server.knows_leader = role, knows
    servers.append(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
ports = [s.server_address[1] for s in servers]
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(" ".join(map(str, ports)) + "\n")
import os
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
threading.Event().wait()
EOF
stubs_pid=$!
for ((i = 0; i < 100; i++)); do [[ -s "$scratch/ports" ]] && break; sleep 0.1; done
read -r leader follower electing lost_follower <"$scratch/ports"
# A port nothing listens on: one the stand-ins held a moment ago would do, but a fresh bind and
# close is simplest.
dead="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url() { echo "http://127.0.0.1:$1"; }

failures=0
expect() { # expect WHAT ACTUAL EXPECTED
    if [[ "$2" == "$3" ]]; then
        echo "  ok    $1: $2"
    else
        echo "  FAIL  $1: got $2, expected $3"
        failures=1
    fi
}
# in_lib SERVER COMMAND: runs COMMAND in a shell that sourced lib.sh with that SERVER.
in_lib() { SERVER="$1" bash -c "set -euo pipefail; source '$here/lib.sh'; $2"; }

expect "the leader named by a follower" \
    "$(in_lib "$(url "$dead"),$(url "$follower")" 'echo "$SERVER"')" "$(url "$leader")"
expect "no leader known: the first instance that answers" \
    "$(in_lib "$(url "$dead"),$(url "$electing"),$(url "$lost_follower")" 'echo "$SERVER"')" \
    "$(url "$electing")"
expect "one URL, as before" "$(in_lib "$(url "$leader")" 'echo "$SERVER"')" "$(url "$leader")"

# No leader known anywhere: SERVER is the instance with no leader; the write goes on to the dead
# one, then to a follower whose 307 leads to the leader, the body intact.
body='{"id": "t1", "amount": 5}'
answer="$(in_lib "$(url "$electing"),$(url "$dead"),$(url "$lost_follower")" \
    "call POST /v1/transfers '$body'" 2>/dev/null)"
expect "write through 503, a dead instance and a 307: status" "$(jq .status <<<"$answer")" 200
expect "  reached the leader" "$(jq -r .body.role <<<"$answer")" leader
expect "  method kept" "$(jq -r .body.method <<<"$answer")" POST
expect "  body kept" "$(jq -r .body.received <<<"$answer")" "$body"
answer="$(in_lib "$(url "$lost_follower")" "call PUT /v1/accounts/a '{\"x\": 1}'")"
expect "PUT through a 307" "$(jq -c '[.status, .body.method, .body.received]' <<<"$answer")" \
    '[200,"PUT","{\"x\": 1}"]'

# The Python checkout's client takes the same list and gets through the same way.
answer="$(cd "$here/shop-checkout" && python3 -c '
import json, sys, checkout
coffer = checkout.Coffer(sys.argv[1], timeout=5, backoff=0.01, log=lambda line: None)
r = coffer.request("POST", "/v1/transfers", {"id": "t2"})
print(json.dumps([r.status, r.body["method"], r.body["received"]]))
' "$(url "$electing"),$(url "$dead"),$(url "$lost_follower")")"
expect "checkout.py through 503, a dead instance and a 307" "$answer" '[200, "POST", "{\"id\": \"t2\"}"]'

((failures == 0)) && echo "test-lib: all passed"
exit "$failures"
