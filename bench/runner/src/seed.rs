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

pub const USERS: usize = 64;

pub async fn prepare(
    pg: &giftcard_tests::PgCluster,
    db_name: &str,
    scenario: &str,
    args: &Args,
) -> anyhow::Result<Seed> {
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
    // Enough stock that hot and spread never run out in the window.
    let (cards, stock) = match scenario {
        "hot" => (1, 400_000),
        "spread" => (args.spread_cards, 400_000 / args.spread_cards.max(1)),
        "sellout" => (1, args.sellout_stock),
        other => anyhow::bail!("unknown scenario {other:?}: use hot, spread or sellout"),
    };
    let sql = format!(
        "INSERT INTO gift_cards (id, name, price, value) \
           SELECT gen_random_uuid(), 'bench card ' || i, 1.00, 1.00 FROM generate_series(1, {cards}) i;
         INSERT INTO activation_codes (id, gift_card_id, code, expires_on) \
           SELECT gen_random_uuid(), g.id, 'B-' || substr(g.id::text, 1, 8) || '-' || n, \
                  CASE WHEN n % 2 = 0 THEN NULL ELSE now() + (1 + n % 365) * interval '1 day' END \
           FROM gift_cards g, generate_series(1, {stock}) n;
         INSERT INTO wallets (user_id, balance) \
           SELECT 'bench-user-' || i, 1000000.00 FROM generate_series(0, {last_user}) i;
         INSERT INTO wallet_entries (id, user_id, kind, amount, reference) \
           SELECT gen_random_uuid(), 'bench-user-' || i, 'credit', 1000000.00, 'bench-credit-' || i \
           FROM generate_series(0, {last_user}) i;",
        last_user = USERS - 1
    );
    db.execute_unprepared(&sql).await?;
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
        .map(|r| {
            let id: String = r.try_get("", "id").unwrap_or_default();
            json!({"id": id, "price": "1.00", "stock": stock})
        })
        .collect();
    let users: Vec<serde_json::Value> = (0..USERS)
        .map(|i| json!({"id": format!("bench-user-{i}"), "credit": "1000000.00"}))
        .collect();
    Ok(Seed {
        json: json!({"cards": cards, "users": users}),
        sellout_requests: args.sellout_stock * 4,
    })
}
