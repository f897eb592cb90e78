-- The batch's write: the second statement of its transaction. Set-based
-- (arrays in, one data-modifying CTE per table), so its text never changes
-- and PostgreSQL plans it once per connection, whatever the batch's size.
-- It returns how many rows each part touched; the worker compares them
-- with its plan and rolls the transaction back on any difference, so
-- nothing of a batch commits unless all of it does, as decided.
--
-- Empty strings stand for NULL in the text arrays ($14-$19): arrays passed
-- as parameters cannot carry NULL here.
--
-- Parameters (built by `WriteParams` in write.rs):
--   $1   uuid[]         codes to claim
--   $2   uuid[]         the purchase claiming each (same order as $1)
--   $3   text[]         wallets to debit, in user order
--   $4   numeric[]      amount to debit from each (same order as $3)
--   $5   numeric[]      each one's balance as the read saw it (same order as $3)
--   $6   uuid[]         ledger lines: ids
--   $7   text[]         ledger lines: users
--   $8   numeric[]      ledger lines: amounts (negative)
--   $9   uuid[]         ledger lines: purchases
--   $10  uuid[]         purchases: ids
--   $11  text[]         purchases: users
--   $12  uuid[]         purchases: cards
--   $13  int2[]         purchases: quantities
--   $14  text[]         purchases: unit prices
--   $15  text[]         purchases: totals
--   $16  text[]         purchases: statuses
--   $17  text[]         purchases: error codes
--   $18  text[]         purchases: error messages
--   $19  text[]         purchases: idempotency keys
--   $20  text[]         purchases: request hashes
--   $21  int8[]         purchases: stream sequences
--   $22  int4[]         purchases: partitions
--   $23  timestamptz[]  purchases: accepted at
--   $24  timestamptz    completed at (every purchase of the batch)
--   $25  int4[]         partitions of the batch (whose fence the read locked)
--   $26  int8[]         their fencing epochs (same order as $25)
--   $27  int8[]         their fencing tokens (same order as $25)
--   $28  uuid[]         cards the decision used
--   $29  numeric[]      their prices as read (same order as $28)
--   $30  bool[]         their active flags as read (same order as $28)
WITH
  -- The decided codes, if still available (a withdrawal may have won).
  claimed AS (
    UPDATE activation_codes a SET is_used = TRUE, purchase_id = v.purchase
    FROM unnest($1::uuid[], $2::uuid[]) AS v(id, purchase)
    WHERE a.id = v.id AND NOT a.is_used AND a.deleted_at IS NULL
      AND (a.expires_on IS NULL OR a.expires_on > now())
    RETURNING 1),
  -- The debits, if each balance is still what the read saw (it is locked).
  debited AS (
    UPDATE wallets w SET balance = w.balance - v.amount, updated_at = now()
    FROM unnest($3::text[], $4::numeric[], $5::numeric[]) AS v(user_id, amount, expected)
    WHERE w.user_id = v.user_id AND w.balance = v.expected
    RETURNING 1),
  -- One ledger line per succeeded purchase (unique per purchase).
  ledger AS (
    INSERT INTO wallet_entries (id, user_id, kind, amount, purchase_id)
    SELECT v.id, v.user_id, 'purchase', v.amount, v.purchase
    FROM unnest($6::uuid[], $7::text[], $8::numeric[], $9::uuid[]) AS v(id, user_id, amount, purchase)
    RETURNING 1),
  -- The purchases. A dead-lettered row is overwritten only by the same
  -- request (a replay); any other existing row is left alone, and the
  -- count below then aborts the batch.
  recorded AS (
    INSERT INTO purchases (id, user_id, gift_card_id, quantity, unit_price, total, status,
      error_code, error_message, idempotency_key, request_hash, stream_sequence, partition,
      created_at, completed_at)
    SELECT v.id, v.user_id, v.card, v.quantity, NULLIF(v.unit_price, '')::numeric,
      NULLIF(v.total, '')::numeric, v.status, NULLIF(v.error_code, ''),
      NULLIF(v.error_message, ''), NULLIF(v.idempotency_key, ''), v.request_hash, v.sequence,
      v.partition, v.created_at, $24::timestamptz
    FROM unnest($10::uuid[], $11::text[], $12::uuid[], $13::int2[], $14::text[], $15::text[],
                $16::text[], $17::text[], $18::text[], $19::text[], $20::text[], $21::int8[],
                $22::int4[], $23::timestamptz[])
      AS v(id, user_id, card, quantity, unit_price, total, status, error_code, error_message,
           idempotency_key, request_hash, sequence, partition, created_at)
    ON CONFLICT (id) DO UPDATE SET unit_price = EXCLUDED.unit_price, total = EXCLUDED.total,
      status = EXCLUDED.status, error_code = EXCLUDED.error_code,
      error_message = EXCLUDED.error_message, stream_sequence = EXCLUDED.stream_sequence,
      partition = EXCLUDED.partition, completed_at = EXCLUDED.completed_at
    WHERE purchases.status = 'dead_lettered'
      AND purchases.user_id = EXCLUDED.user_id
      AND purchases.request_hash = EXCLUDED.request_hash
    RETURNING 1)
SELECT
  -- Fences still this owner's (locked by the read: a check, not a race).
  (SELECT count(*) FROM partition_fences f
     JOIN unnest($25::int4[], $26::int8[], $27::int8[]) AS v(p, e, t)
       ON f.partition = v.p AND f.epoch = v.e AND f.token = v.t) AS fences,
  -- Cards still at the price and status the decision used (locked too).
  (SELECT count(*) FROM gift_cards g
     JOIN unnest($28::uuid[], $29::numeric[], $30::bool[]) AS v(id, price, active)
       ON g.id = v.id AND g.price = v.price AND g.active = v.active) AS cards,
  (SELECT count(*) FROM claimed) AS claimed,
  (SELECT count(*) FROM debited) AS debited,
  (SELECT count(*) FROM ledger) AS ledger,
  (SELECT count(*) FROM recorded) AS recorded
