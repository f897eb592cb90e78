\set u random(0, 999)
\set r1 random(1, 9223372036854775807)
\set r2 random(1, 9223372036854775807)
SELECT code, sort_key, code_id, unit_price FROM peer_buy((lpad(to_hex(:r1::bigint), 16, '0') || lpad(to_hex(:r2::bigint), 16, '0'))::uuid, 'bench-user-' || :u, :card::uuid, 1, 'k' || :r1, 'bench-hash', :r2, now(), true, :sort_key::timestamptz, :code_id::uuid) \gset
