//! Direct SQL checks of invariants 1–3 and 6 of docs/design.md (section 9).

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .expect("invariant query")
        .expect("one row");
    row.try_get_by_index::<i64>(0).expect("count")
}

/// Panics with the violated invariant's name and the number of offenders.
pub async fn check(db: &DatabaseConnection) {
    let checks: [(&str, &str); 8] = [
        (
            "1/2: a succeeded purchase holds exactly `quantity` codes of its card",
            "SELECT count(*) FROM purchases p WHERE p.status = 'succeeded' AND p.quantity <> \
               (SELECT count(*) FROM activation_codes a WHERE a.purchase_id = p.id AND a.gift_card_id = p.gift_card_id)",
        ),
        (
            "1: every used code belongs to a succeeded purchase of its card",
            "SELECT count(*) FROM activation_codes a LEFT JOIN purchases p ON p.id = a.purchase_id \
             WHERE a.is_used AND (p.id IS NULL OR p.status <> 'succeeded' OR p.gift_card_id <> a.gift_card_id)",
        ),
        (
            "2: assigned codes were not deleted or expired at assignment",
            "SELECT count(*) FROM activation_codes a JOIN purchases p ON p.id = a.purchase_id \
             WHERE (a.deleted_at IS NOT NULL AND a.deleted_at < p.completed_at) \
                OR (a.expires_on IS NOT NULL AND a.expires_on <= p.created_at)",
        ),
        (
            "2: failed purchases hold no codes",
            "SELECT count(*) FROM activation_codes a JOIN purchases p ON p.id = a.purchase_id WHERE p.status <> 'succeeded'",
        ),
        (
            "3: every balance equals credits minus succeeded totals",
            "SELECT count(*) FROM wallets w WHERE w.balance <> \
               COALESCE((SELECT sum(amount) FROM wallet_entries e WHERE e.user_id = w.user_id AND e.kind = 'credit'), 0) \
             - COALESCE((SELECT sum(total) FROM purchases p WHERE p.user_id = w.user_id AND p.status = 'succeeded'), 0)",
        ),
        (
            "3: the ledger has one debit per succeeded purchase, for its total",
            "SELECT count(*) FROM purchases p WHERE p.status = 'succeeded' AND NOT EXISTS \
               (SELECT 1 FROM wallet_entries e WHERE e.purchase_id = p.id AND e.amount = -p.total)",
        ),
        (
            "6: no out-of-stock failure precedes a later success that needed as many codes",
            "SELECT count(*) FROM purchases f JOIN purchases s ON s.gift_card_id = f.gift_card_id \
             WHERE f.error_code = 'ACTIVATION_CODES_NOT_AVAILABLE' AND s.status = 'succeeded' \
               AND s.stream_sequence > f.stream_sequence AND s.quantity >= f.quantity",
        ),
        (
            "6: per card, purchases were completed in sequence order",
            "SELECT count(*) FROM (SELECT completed_at, lag(completed_at) OVER \
               (PARTITION BY gift_card_id ORDER BY stream_sequence) AS previous FROM purchases \
             WHERE status IN ('succeeded', 'failed') AND error_code IS DISTINCT FROM 'DISCARDED') t \
             WHERE previous > completed_at",
        ),
    ];
    for (name, sql) in checks {
        let n = count(db, sql).await;
        if n > 0 && name.starts_with("6: per card") {
            panic!(
                "invariant violated ({n} offenders): {name}\n{}",
                order_detail(db).await
            );
        }
        assert_eq!(n, 0, "invariant violated ({n} offenders): {name}");
    }
    let negative = count(db, "SELECT count(*) FROM wallets WHERE balance < 0").await;
    assert_eq!(negative, 0, "invariant 3 violated: negative balances");
}

/// The purchases completed out of sequence order, for the failure message.
async fn order_detail(db: &DatabaseConnection) -> String {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT gift_card_id::text AS card, stream_sequence, prev_seq, completed_at::text AS done, prev_done::text AS prev_done, partition \
             FROM (SELECT gift_card_id, stream_sequence, completed_at, partition, \
                     lag(completed_at) OVER w AS prev_done, lag(stream_sequence) OVER w AS prev_seq FROM purchases \
                   WHERE status IN ('succeeded', 'failed') AND error_code IS DISTINCT FROM 'DISCARDED' \
                   WINDOW w AS (PARTITION BY gift_card_id ORDER BY stream_sequence)) t \
             WHERE prev_done > completed_at LIMIT 10"
                .to_owned(),
        ))
        .await
        .unwrap_or_default();
    rows.iter()
        .map(|r| {
            format!(
                "card {} partition {}: seq {} done {} but earlier seq {} done {}",
                r.try_get::<String>("", "card").unwrap_or_default(),
                r.try_get::<i32>("", "partition").unwrap_or_default(),
                r.try_get::<i64>("", "stream_sequence").unwrap_or_default(),
                r.try_get::<String>("", "done").unwrap_or_default(),
                r.try_get::<i64>("", "prev_seq").unwrap_or_default(),
                r.try_get::<String>("", "prev_done").unwrap_or_default(),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
