-- Idempotent payments: INSERT ... ON CONFLICT DO NOTHING on the key table decides, in the same
-- transaction as the money, whether this request is the first with its key. A third of the
-- requests repeat one of the client's last 4,096 keys; a key's content is a hash of the key, so
-- a repeat sends the same payment. A repeat reads and returns the recorded outcome.
\set r random(0, 2)
\if :n > 0 and :r = 0
\set key :base + :client_id * 1000000000 + :n - random(0, least(:n - 1, 4095))
\else
\set n :n + 1
\set key :base + :client_id * 1000000000 + :n
\endif
\set src abs(hash(:key)) % :naccounts + 1
\set dst abs(hash(:key, 7)) % :naccounts + 1
\if :src = :dst
\set dst :dst % :naccounts + 1
\endif
\set amount abs(hash(:key, 11)) % 100 + 1
BEGIN;
WITH fresh AS (INSERT INTO payments (key, src, dst, amount, status) VALUES (:key, :src, :dst, :amount, 'applied') ON CONFLICT (key) DO NOTHING RETURNING 1) SELECT count(*) AS fresh FROM fresh \gset
\if :fresh
WITH debit AS (UPDATE accounts SET balance = balance - :amount WHERE id = :src AND balance >= :amount RETURNING 1) SELECT count(*) AS debited FROM debit \gset
\if :debited
UPDATE accounts SET balance = balance + :amount WHERE id = :dst;
\else
UPDATE payments SET status = 'refused' WHERE key = :key;
\endif
COMMIT;
\else
SELECT status, src, dst, amount, nextval('replays') FROM payments WHERE key = :key;
COMMIT;
\endif
