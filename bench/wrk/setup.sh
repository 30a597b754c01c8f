#!/usr/bin/env bash
# Creates the accounts transfers.lua uses: PREFIX-bank (unbounded), PREFIX-hot and
# PREFIX-u0 .. PREFIX-u(N-1), each funded. Usage: setup.sh [URL] [N] [PREFIX]
set -euo pipefail
url=${1:-http://127.0.0.1:8080}
count=${2:-10000}
prefix=${3:-wrk}
post() { curl -sf -X POST "$url$1" -H 'Content-Type: application/json' -d @- > /dev/null; }
printf '{"accounts":[{"id":"%s-bank","currency":"KRW","min_balance":null},{"id":"%s-hot","currency":"KRW"}]}' \
    "$prefix" "$prefix" | post /v1/accounts
printf '{"id":"%s-fund-hot","from":"%s-bank","to":"%s-hot","amount":1000000000000000}' \
    "$prefix" "$prefix" "$prefix" | post /v1/transfers
for ((start = 0; start < count; start += 4000)); do
    end=$((start + 4000 < count ? start + 4000 : count))
    { printf '{"accounts":['
      for ((i = start; i < end; i++)); do
          ((i > start)) && printf ','
          printf '{"id":"%s-u%d","currency":"KRW"}' "$prefix" "$i"
      done
      printf ']}'; } | post /v1/accounts
    { printf '{"transfers":['
      for ((i = start; i < end; i++)); do
          ((i > start)) && printf ','
          printf '{"id":"%s-fund-%d","from":"%s-bank","to":"%s-u%d","amount":1000000000000}' \
              "$prefix" "$i" "$prefix" "$prefix" "$i"
      done
      printf ']}'; } | post /v1/transfers
done
echo "set up $count accounts with prefix $prefix on $url"
