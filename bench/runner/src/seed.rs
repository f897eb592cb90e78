//! A fresh database per run: migrations, then cards, codes and wallets
//! inserted set-based, the same for every strategy.

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::json;

use crate::Args;

pub struct Seed {
    /// What the load generator reads (`--seed`).
    pub json: serde_json::Value,
    pub sellout_requests: usize,
}

/// Every user's credit: more than any run spends.
const CREDIT: &str = "1000000.00";

/// `(cards, codes per card)` of a scenario.
fn shape(scenario: &str, args: &Args) -> anyhow::Result<Vec<usize>> {
    Ok(match scenario {
        // Enough stock that hot and spread never run out in the window.
        "hot" => vec![400_000],
        "spread" => vec![400_000 / args.spread_cards.max(1); args.spread_cards],
        "sellout" => vec![args.sellout_stock],
        // The probe card (two probes), then the card the fill sells out.
        "soak" => vec![args.soak_probe * 2 + 1000, args.soak_fill],
        other => anyhow::bail!("unknown scenario {other:?}: use hot, spread or sellout"),
    })
}

/// Creates database `db_name` with the scenario's cards, codes and
/// `args.users` funded wallets; the seed JSON lists the cards in order.
pub async fn prepare(
    pg: &giftcard_tests::PgCluster,
    db_name: &str,
    scenario: &str,
    args: &Args,
) -> anyhow::Result<Seed> {
    let stocks = shape(scenario, args)?;
    let admin = Database::connect(pg.url("postgres")).await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {db_name}"))
        .await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {db_name}"))
        .await?;
    admin.close().await?;
    let db = Database::connect(pg.url(db_name)).await?;
    <migration::Migrator as migration::MigratorTrait>::up(&db, None).await?;
    // Cards of equal stock are inserted together; names order them.
    let mut first = 1;
    for (stock, count) in runs(&stocks) {
        let last = first + count - 1;
        db.execute_unprepared(&format!(
            "INSERT INTO gift_cards (id, name, price, value) \
               SELECT gen_random_uuid(), 'bench card ' || lpad(i::text, 6, '0'), 1.00, 1.00 \
               FROM generate_series({first}, {last}) i;
             INSERT INTO activation_codes (id, gift_card_id, code, expires_on) \
               SELECT gen_random_uuid(), g.id, 'B-' || substr(g.id::text, 1, 8) || '-' || n, \
                      CASE WHEN n % 2 = 0 THEN NULL ELSE now() + (1 + n % 365) * interval '1 day' END \
               FROM gift_cards g, generate_series(1, {stock}) n \
               WHERE g.name BETWEEN 'bench card ' || lpad('{first}', 6, '0') AND 'bench card ' || lpad('{last}', 6, '0');"
        ))
        .await?;
        first = last + 1;
    }
    let last_user = args.users - 1;
    db.execute_unprepared(&format!(
        "INSERT INTO wallets (user_id, balance) \
           SELECT 'bench-user-' || i, {CREDIT} FROM generate_series(0, {last_user}) i;
         INSERT INTO wallet_entries (id, user_id, kind, amount, reference) \
           SELECT gen_random_uuid(), 'bench-user-' || i, 'credit', {CREDIT}, 'bench-credit-' || i \
           FROM generate_series(0, {last_user}) i;"
    ))
    .await?;
    db.execute_unprepared("VACUUM ANALYZE").await?;
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT id::text AS id FROM gift_cards ORDER BY name".to_owned(),
        ))
        .await?;
    db.close().await?;
    let cards: Vec<serde_json::Value> = rows
        .iter()
        .zip(&stocks)
        .map(|(r, stock)| {
            let id: String = r.try_get("", "id").unwrap_or_default();
            json!({"id": id, "price": "1.00", "stock": stock})
        })
        .collect();
    let users: Vec<serde_json::Value> = (0..args.users)
        .map(|i| json!({"id": format!("bench-user-{i}"), "credit": CREDIT}))
        .collect();
    Ok(Seed {
        json: json!({"cards": cards, "users": users}),
        sellout_requests: args.sellout_stock * 4,
    })
}

/// Consecutive equal stocks as `(stock, how many)`.
fn runs(stocks: &[usize]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for s in stocks {
        match out.last_mut() {
            Some((stock, n)) if stock == s => *n += 1,
            _ => out.push((*s, 1)),
        }
    }
    out
}

/// The seed with only card `index` (the load generator buys the first card).
pub fn only_card(seed: &serde_json::Value, index: usize) -> serde_json::Value {
    let mut s = seed.clone();
    s["cards"] = json!([seed["cards"][index].clone()]);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_stocks_are_grouped() {
        assert_eq!(runs(&[5, 5, 7, 5]), vec![(5, 2), (7, 1), (5, 1)]);
        assert!(runs(&[]).is_empty());
    }
}
