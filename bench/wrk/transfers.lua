-- wrk script: one transfer per request between random accounts (set up by setup.sh), each
-- with a fresh id, so wrk's figures can be checked against `coffer bench --server`.
-- Usage: wrk -t2 -c64 -d10s -s bench/wrk/transfers.lua http://127.0.0.1:8080
--        (environment: COFFER_ACCOUNTS, default 10000; COFFER_PREFIX, default "wrk";
--         COFFER_HOT=1 debits one hot account)

local accounts = tonumber(os.getenv("COFFER_ACCOUNTS") or "10000")
local prefix = os.getenv("COFFER_PREFIX") or "wrk"
local hot = os.getenv("COFFER_HOT") == "1"
local counter = 0
local thread_id = 0
local statuses = {}

function setup(thread)
    thread_id = thread_id + 1
    thread:set("thread_id", thread_id)
end

function init(args)
    math.randomseed(os.time() * 1000 + thread_id)
    run = string.format("%s-%d-%d", prefix, os.time(), thread_id)
end

function request()
    counter = counter + 1
    local from = hot and (prefix .. "-hot") or string.format("%s-u%d", prefix, math.random(0, accounts - 1))
    local to = string.format("%s-u%d", prefix, math.random(0, accounts - 1))
    if from == to then
        to = string.format("%s-u%d", prefix, (math.random(0, accounts - 2) + 1) % accounts)
    end
    local body = string.format('{"id":"%s-%d","from":"%s","to":"%s","amount":%d}', run, counter,
                               from, to, math.random(1, 100))
    return wrk.format("POST", "/v1/transfers", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    io.write(string.format("wrk: %d requests, %.0f requests/s, p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, errors %d\n",
        summary.requests, summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        latency:percentile(99.9) / 1000,
        summary.errors.status + summary.errors.connect + summary.errors.read +
        summary.errors.write + summary.errors.timeout))
end
