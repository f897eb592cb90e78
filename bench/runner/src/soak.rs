//! Cost as the data grows: on one running system, a hot probe on an empty
//! database, then a fill that sells a whole card out, then the same probe
//! again. The last probe should be as fast as the first; table and index
//! sizes, dead tuples and memory are recorded between the phases.

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::{json, Value};

use crate::runs::{Bench, Spec};
use crate::seed;
use crate::targets::PipelineShape;

/// Sizes and tuple counts of the tables that grow.
const TABLE_STATS: &str = "SELECT relname::text AS name, n_live_tup AS live, n_dead_tup AS dead, \
       pg_relation_size(relid) AS heap_bytes, pg_indexes_size(relid) AS index_bytes, \
       COALESCE(last_autovacuum::text, '') AS last_autovacuum \
    FROM pg_stat_user_tables \
    WHERE relname IN ('activation_codes', 'purchases', 'wallet_entries', 'wallets') ORDER BY relname";

const INDEX_STATS: &str =
    "SELECT indexrelname::text AS name, pg_relation_size(indexrelid) AS bytes \
    FROM pg_stat_user_indexes WHERE relname = 'activation_codes' ORDER BY indexrelname";

pub async fn run(bench: &Bench<'_>, strategy: &str) -> anyhow::Result<Value> {
    let args = bench.args;
    let db_name = format!("bench_soak_{}", strategy.replace('-', "_"));
    let seeded = seed::prepare(bench.pg, &db_name, "soak", args).await?;
    let start_spec = Spec {
        label: format!("soak-{strategy}"),
        strategy,
        scenario: "sellout",
        shape: PipelineShape::default(),
        requests: None,
        profile: false,
        clients: None,
    };
    let target = bench.start(&start_spec, &db_name).await?;
    let phases = [
        ("probe-1", 0, args.soak_probe),
        ("fill", 1, args.soak_fill),
        ("probe-2", 0, args.soak_probe),
    ];
    let mut out = Vec::new();
    for (phase, card, requests) in phases {
        eprintln!("[bench]   soak {strategy}: {phase}, {requests} purchases");
        let before = stats(bench, &db_name).await?;
        let mut seed = seed::only_card(&seeded.json, card);
        seed["users"] = balances(bench, &db_name).await?;
        let spec = Spec {
            label: format!("soak-{strategy}-{phase}"),
            strategy,
            scenario: "sellout",
            shape: PipelineShape::default(),
            requests: Some(requests),
            profile: false,
            clients: None,
        };
        let result = bench.drive(&spec, &target, &seed).await;
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                target.stop().await;
                return Err(e);
            }
        };
        out.push(json!({"phase": phase, "before": before, "result": result}));
    }
    let after = stats(bench, &db_name).await?;
    target.stop().await;
    let tput = |i: usize| {
        out[i]["result"]["throughput_per_sec"]
            .as_f64()
            .unwrap_or(0.0)
    };
    Ok(json!({
        "strategy": strategy,
        "probe": args.soak_probe,
        "fill": args.soak_fill,
        "phases": out,
        "after": after,
        "ratio": tput(2) / tput(0).max(1e-9),
    }))
}

async fn query(
    bench: &Bench<'_>,
    db_name: &str,
    sql: &str,
) -> anyhow::Result<Vec<sea_orm::QueryResult>> {
    let db = Database::connect(bench.pg.url(db_name)).await?;
    let rows = db
        .query_all_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await?;
    db.close().await?;
    Ok(rows)
}

/// Table and index sizes and tuple counts now.
pub async fn stats(bench: &Bench<'_>, db_name: &str) -> anyhow::Result<Value> {
    let tables: Vec<Value> = query(bench, db_name, TABLE_STATS)
        .await?
        .iter()
        .map(|r| {
            json!({
                "table": r.try_get::<String>("", "name").unwrap_or_default(),
                "live": r.try_get::<i64>("", "live").unwrap_or(0),
                "dead": r.try_get::<i64>("", "dead").unwrap_or(0),
                "heap_mib": mib(r.try_get::<i64>("", "heap_bytes").unwrap_or(0)),
                "index_mib": mib(r.try_get::<i64>("", "index_bytes").unwrap_or(0)),
                "last_autovacuum": r.try_get::<String>("", "last_autovacuum").unwrap_or_default(),
            })
        })
        .collect();
    let indexes: Vec<Value> = query(bench, db_name, INDEX_STATS)
        .await?
        .iter()
        .map(|r| {
            json!({
                "index": r.try_get::<String>("", "name").unwrap_or_default(),
                "mib": mib(r.try_get::<i64>("", "bytes").unwrap_or(0)),
            })
        })
        .collect();
    Ok(json!({"tables": tables, "activation_codes_indexes": indexes}))
}

fn mib(bytes: i64) -> f64 {
    (bytes as f64 / 1048576.0 * 10.0).round() / 10.0
}

/// Every seed user with its current balance as its credit, so that the
/// load generator's wallet check covers only the phase it runs.
async fn balances(bench: &Bench<'_>, db_name: &str) -> anyhow::Result<Value> {
    let rows = query(
        bench,
        db_name,
        "SELECT user_id, balance::text AS balance FROM wallets WHERE user_id LIKE 'bench-user-%' \
         ORDER BY substr(user_id, 12)::int",
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            json!({
                "id": r.try_get::<String>("", "user_id").unwrap_or_default(),
                "credit": r.try_get::<String>("", "balance").unwrap_or_default(),
            })
        })
        .collect())
}
