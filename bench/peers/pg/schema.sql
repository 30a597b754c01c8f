-- The PostgreSQL side of bench/peers: accounts funded like coffer bench funds them (1e12 each,
-- the hot account 0 with 1e15), a journal row per transfer (what a ledger keeps; coffer keeps
-- one per transfer too), an idempotency-key table, seats with a hold time, and a journal of
-- seat holds for the check. No CHECK constraints: the patterns themselves must keep balances
-- non-negative, and the check after the run proves whether they did.
CREATE TABLE accounts (
    id integer PRIMARY KEY,
    balance bigint NOT NULL,
    version bigint NOT NULL DEFAULT 1
) WITH (fillfactor = 80);
INSERT INTO accounts (id, balance) SELECT g, 1000000000000 FROM generate_series(1, :naccounts) g;
INSERT INTO accounts (id, balance) VALUES (0, 1000000000000000);

CREATE TABLE transfers (
    id bigserial PRIMARY KEY,
    src integer NOT NULL,
    dst integer NOT NULL,
    amount bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payments (
    key bigint PRIMARY KEY,
    src integer NOT NULL,
    dst integer NOT NULL,
    amount bigint NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE seats (
    id integer PRIMARY KEY,
    holder integer,
    held_until timestamptz NOT NULL DEFAULT '-infinity'
) WITH (fillfactor = 50);
INSERT INTO seats (id) SELECT g FROM generate_series(1, :nseats) g;

CREATE TABLE seat_holds (
    id bigserial PRIMARY KEY,
    seat integer NOT NULL,
    holder integer NOT NULL,
    held_from timestamptz NOT NULL,
    held_until timestamptz NOT NULL
);

-- Counters the scripts bump on their slow paths (sequences: no row locks, not rolled back).
CREATE SEQUENCE refused;      -- a debit refused for insufficient balance
CREATE SEQUENCE retries;      -- optimistic: another read-and-compare-and-set round
CREATE SEQUENCE gave_up;      -- optimistic: still losing after the last attempt
CREATE SEQUENCE replays;      -- an idempotency key seen before: the recorded outcome returned
VACUUM ANALYZE;
CHECKPOINT;
