-- Seat holds: one conditional UPDATE takes a seat for 1 s unless it is held (held_until in the
-- future); expiry is the clock passing held_until. The hold is journaled in the same statement
-- (one autocommit transaction) so the check can prove no seat was held twice at once.
\set seat random(1, :nseats)
WITH hold AS (UPDATE seats SET holder = :client_id, held_until = now() + interval '1 second' WHERE id = :seat AND held_until < now() RETURNING id, held_until) INSERT INTO seat_holds (seat, holder, held_from, held_until) SELECT id, :client_id, held_until - interval '1 second', held_until FROM hold;
