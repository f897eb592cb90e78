-- The batch's read: the first statement of its transaction, one row of JSON
-- arrays (one round trip, whatever the batch's size). It locks what the
-- batch's decision rests on, so that nothing else can change it before
-- COMMIT: the partitions' fences and the cards FOR SHARE (a newer owner's
-- claim, a price or status change, an import wait for this transaction),
-- the buyers' wallets FOR UPDATE, in user order as every batch locks them
-- (a credit, or another partition's batch for the same buyer, waits).
-- Stored purchases and available codes are read without locks: the write
-- counts the rows it touches, and the transaction is rolled back if they
-- moved.
--
-- Parameters (built by `ReadParams` in read.rs):
--   $1   int4[]  partitions of the batch
--   $2   int8[]  their fencing epochs (same order as $1)
--   $3   int8[]  their fencing tokens (same order as $1)
--   $4   uuid[]  purchase ids of the batch's messages
--   $5   uuid[]  gift cards the messages name
--   $6   text[]  the buyers
--   $7   uuid[]  cards whose codes to read, each once
--   $8   int8[]  how many codes each of them may need (same order as $7)
--   $9   text[]  each card's cursor: sort key of its last claimed code ('-infinity': none)
--   $10  uuid[]  each card's cursor: id of its last claimed code (nil: none)
--   $11  text[]  each card's cursor: the card's updated_at when it was set ('': none)
SELECT
  -- Partitions whose fence still holds this owner's token.
  (SELECT json_agg(l.partition)::text FROM (
     SELECT f.partition
     FROM partition_fences f
     JOIN unnest($1::int4[], $2::int8[], $3::int8[]) AS v(p, e, t)
       ON f.partition = v.p AND f.epoch = v.e AND f.token = v.t
     ORDER BY f.partition
     FOR SHARE OF f) l) AS live,
  -- Purchases already stored under the messages' ids.
  (SELECT json_agg(json_build_array(p.id, p.status, p.user_id, p.request_hash))::text
   FROM purchases p
   WHERE p.id = ANY($4::uuid[])) AS stored,
  -- The cards: price and status, locked until commit.
  (SELECT json_agg(json_build_array(g.id, g.price::text, g.active))::text FROM (
     SELECT g.id, g.price, g.active
     FROM gift_cards g
     WHERE g.id = ANY($5::uuid[])
     ORDER BY g.id
     FOR SHARE) g) AS cards,
  -- The cards' versions as this statement's snapshot sees them (the codes
  -- below come from the same snapshot): a cursor is valid while unchanged.
  (SELECT json_agg(json_build_array(g.id, g.updated_at::text))::text
   FROM gift_cards g
   WHERE g.id = ANY($7::uuid[])) AS versions,
  -- The buyers' wallets, locked until commit.
  (SELECT json_agg(json_build_array(w.user_id, w.balance::text))::text FROM (
     SELECT w.user_id, w.balance
     FROM wallets w
     WHERE w.user_id = ANY($6::text[])
     ORDER BY w.user_id
     FOR UPDATE) w) AS wallets,
  -- Each card's soonest-expiring available codes, as many as the batch
  -- could need, after the card's cursor while the card is unchanged since.
  (SELECT json_agg(json_build_array(n.card, c.id, c.code, c.sort_key::text)
                   ORDER BY n.card, c.sort_key, c.id)::text
   FROM (
     SELECT n.card, n.want,
       CASE WHEN g.updated_at = NULLIF(n.seen_at, '')::timestamptz
         THEN n.after_key::timestamptz ELSE '-infinity'::timestamptz END AS after_key,
       CASE WHEN g.updated_at = NULLIF(n.seen_at, '')::timestamptz
         THEN n.after_id ELSE '00000000-0000-0000-0000-000000000000'::uuid END AS after_id
     FROM unnest($7::uuid[], $8::int8[], $9::text[], $10::uuid[], $11::text[])
       AS n(card, want, after_key, after_id, seen_at)
     JOIN gift_cards g ON g.id = n.card AND g.active) n
   CROSS JOIN LATERAL (
     SELECT a.id, a.code, COALESCE(a.expires_on, 'infinity'::timestamptz) AS sort_key
     FROM activation_codes a
     WHERE a.gift_card_id = n.card AND NOT a.is_used AND a.deleted_at IS NULL
       AND (COALESCE(a.expires_on, 'infinity'::timestamptz), a.id) > (n.after_key, n.after_id)
       AND (a.expires_on IS NULL OR a.expires_on > now())
     ORDER BY COALESCE(a.expires_on, 'infinity'::timestamptz), a.id
     LIMIT n.want) c) AS codes
