//! What the one-round-trip peers' SQL can do on this machine, without HTTP:
//! `pgbench` running exactly the peer's call (`giftcard_peer::buy::CALL`
//! of the function `giftcard_peer::buy::FUNCTION`) on the hot scenario's
//! data, and `EXPLAIN (ANALYZE, BUFFERS)` of the statements inside it
//! (auto_explain, nested statements), scanning from the start of the card
//! and from the peer's cursor.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use giftcard_loadgen::cpu;
use sea_orm::{ConnectionTrait, Database};
use serde::Serialize;

use crate::seed;
use crate::Args;

/// Connection counts tried before the main run: the peer's pool size is
/// the best of these.
const POOL_SWEEP: [usize; 4] = [8, 16, 32, 64];
const SWEEP_SECS: u64 = 5;

#[derive(Debug, Clone, Serialize)]
pub struct PgbenchRun {
    pub clients: usize,
    pub tps: f64,
    pub latency_ms: f64,
    /// PostgreSQL CPU (all backends) per transaction, µs.
    pub postgres_cpu_us: f64,
    pub transactions: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SqlLimit {
    pub strategy: String,
    pub script: String,
    pub sweep: Vec<PgbenchRun>,
    pub main: PgbenchRun,
    /// auto_explain output of one call scanning from the start of the card.
    pub explain_from_start: String,
    /// … and from the cursor (the last claimed code).
    pub explain_from_cursor: String,
}

/// A PostgreSQL client program (`pgbench`, `psql`): from `GIFTCARD_PG_BIN`,
/// else the newest `/usr/lib/postgresql/<version>/bin`, else `PATH`.
fn pg_tool(name: &str) -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    dirs.sort();
    if let Some(d) = std::env::var_os("GIFTCARD_PG_BIN") {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter()
        .rev()
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{name} not found: install it with `apt-get install -y postgresql-15` (./bench/run.sh does) or set GIFTCARD_PG_BIN"
            )
        })
}

/// The peer's call as a pgbench script: a fresh purchase id and user per
/// transaction, the cursor carried from each call to the next (per
/// connection, as `\gset` keeps it).
pub fn script(lock_card: bool, users: usize) -> String {
    let id = "(lpad(to_hex(:r1::bigint), 16, '0') || lpad(to_hex(:r2::bigint), 16, '0'))::uuid";
    let params = [
        (11, ":code_id::uuid".to_owned()),
        (10, ":sort_key::timestamptz".to_owned()),
        (9, lock_card.to_string()),
        (8, "now()".to_owned()),
        (7, ":r2".to_owned()),
        (6, "'bench-hash'".to_owned()),
        (5, "'k' || :r1".to_owned()),
        (4, "1".to_owned()),
        (3, ":card::uuid".to_owned()),
        (2, "'bench-user-' || :u".to_owned()),
        (1, id.to_owned()),
    ];
    let mut call = giftcard_peer::buy::CALL.to_owned();
    for (n, value) in params {
        call = call.replace(&format!("${n}"), &value);
    }
    format!(
        "\\set u random(0, {last})\n\\set r1 random(1, 9223372036854775807)\n\\set r2 random(1, 9223372036854775807)\n{call} \\gset\n",
        last = users - 1
    )
}

fn pgbench(
    pg: &giftcard_tests::PgCluster,
    db: &str,
    card: &str,
    script_file: &Path,
    clients: usize,
    secs: u64,
) -> anyhow::Result<PgbenchRun> {
    let watch = [cpu::Watch {
        name: "postgres".into(),
        pid: pg.process.as_ref().map_or(0, |p| p.pid) as i32,
        tree: true,
    }];
    let before = cpu::sample(&watch);
    let out = Command::new(pg_tool("pgbench")?)
        .args(connection(pg))
        .args(["-n", "-M", "prepared", "-j", "2"])
        .args(["-c", &clients.to_string(), "-T", &secs.to_string()])
        .args(["-D", &format!("card={card}")])
        .args(["-D", "sort_key=-infinity"])
        .args(["-D", "code_id=00000000-0000-0000-0000-000000000000"])
        .arg("-f")
        .arg(script_file)
        .arg(db)
        .output()
        .context("running pgbench")?;
    let used = cpu::delta(&before, &cpu::sample(&watch));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let transactions = field("number of transactions actually processed: ") as u64;
    Ok(PgbenchRun {
        clients,
        tps: field("tps = "),
        latency_ms: field("latency average = "),
        postgres_cpu_us: used.get("postgres").copied().unwrap_or(0.0) * 1e6
            / transactions.max(1) as f64,
        transactions,
    })
}

/// One call of the function with auto_explain logging every nested plan,
/// rolled back.
fn explain(
    pg: &giftcard_tests::PgCluster,
    db: &str,
    card: &str,
    lock_card: bool,
    cursor: Option<(String, String)>,
) -> anyhow::Result<String> {
    let (key, id) = cursor.map_or(("NULL".to_owned(), "NULL".to_owned()), |(k, i)| {
        (format!("'{k}'"), format!("'{i}'"))
    });
    let sql = format!(
        "LOAD 'auto_explain';
         SET auto_explain.log_min_duration = 0;
         SET auto_explain.log_analyze = on;
         SET auto_explain.log_buffers = on;
         SET auto_explain.log_nested_statements = on;
         SET client_min_messages = log;
         BEGIN;
         SELECT count(*) FROM peer_buy(gen_random_uuid(), 'bench-user-0', '{card}', 1, NULL, 'explain', 0, now(), {lock_card}, {key}, {id});
         ROLLBACK;"
    );
    let out = psql(pg, db, &["-q", "-c", &sql])?;
    let log = String::from_utf8_lossy(&out.stderr);
    // Keep the plans of the claim (the statement that scans the index).
    let plans: Vec<&str> = log
        .split("LOG:  ")
        .filter(|p| p.contains("activation_codes_available_key_idx"))
        .collect();
    Ok(plans.join("\n").trim().to_owned())
}

/// Runs `psql` against database `db` with `args` (`-X`: no psqlrc).
fn psql(
    pg: &giftcard_tests::PgCluster,
    db: &str,
    args: &[&str],
) -> anyhow::Result<std::process::Output> {
    Command::new(pg_tool("psql")?)
        .args(connection(pg))
        .args(["-d", db, "-X"])
        .args(args)
        .output()
        .context("running psql")
}

/// `-h`, `-p`, `-U` of the benchmark's PostgreSQL.
fn connection(pg: &giftcard_tests::PgCluster) -> [String; 6] {
    [
        "-h",
        "127.0.0.1",
        "-p",
        &pg.port.to_string(),
        "-U",
        "postgres",
    ]
    .map(str::to_owned)
}

fn psql_one(pg: &giftcard_tests::PgCluster, db: &str, sql: &str) -> anyhow::Result<String> {
    let out = psql(pg, db, &["-A", "-t", "-c", sql])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl SqlLimit {
    /// The sweep's fastest connection count: the peer's pool size.
    pub fn best_connections(&self) -> usize {
        self.sweep
            .iter()
            .max_by(|a, b| a.tps.total_cmp(&b.tps))
            .map_or(self.main.clients, |r| r.clients)
    }
}

/// Measures `strategy`'s SQL (skip-locked or advisory-lock) on a fresh hot database.
pub async fn measure(
    args: &Args,
    pg: &giftcard_tests::PgCluster,
    strategy: &str,
    dir: &Path,
) -> anyhow::Result<SqlLimit> {
    let lock_card = strategy == "advisory-lock";
    let db_name = format!("bench_sql_{}", strategy.replace('-', "_"));
    let seeded = seed::prepare(pg, &db_name, "hot", args).await?;
    let db = Database::connect(pg.url(&db_name)).await?;
    db.execute_unprepared(
        "ALTER TABLE activation_codes ADD COLUMN IF NOT EXISTS row_version INTEGER NOT NULL DEFAULT 0",
    )
    .await?;
    db.execute_unprepared(giftcard_peer::buy::FUNCTION).await?;
    db.close().await?;
    let card = seeded.json["cards"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let text = script(lock_card, args.users);
    let file = dir.join(format!("pgbench-{strategy}.sql"));
    std::fs::write(&file, &text)?;
    let mut sweep = Vec::new();
    for clients in POOL_SWEEP {
        eprintln!("[bench]   pgbench {strategy}: {clients} connections, {SWEEP_SECS} s");
        sweep.push(pgbench(pg, &db_name, &card, &file, clients, SWEEP_SECS)?);
    }
    eprintln!(
        "[bench]   pgbench {strategy}: {} connections, {} s",
        args.clients, args.duration
    );
    let main = pgbench(pg, &db_name, &card, &file, args.clients, args.duration)?;
    let last = psql_one(
        pg,
        &db_name,
        "SELECT COALESCE(expires_on, 'infinity'::timestamptz) || '|' || id FROM activation_codes \
         WHERE is_used ORDER BY COALESCE(expires_on, 'infinity'::timestamptz) DESC, id DESC LIMIT 1",
    )?;
    let cursor = last
        .split_once('|')
        .map(|(k, i)| (k.to_owned(), i.to_owned()));
    Ok(SqlLimit {
        strategy: strategy.to_owned(),
        script: text,
        sweep,
        main,
        explain_from_start: explain(pg, &db_name, &card, lock_card, None)?,
        explain_from_cursor: explain(pg, &db_name, &card, lock_card, cursor)?,
    })
}

#[cfg(test)]
mod tests {
    use super::script;

    #[test]
    fn the_pgbench_script_is_the_peers_call_with_every_parameter_bound() {
        let s = script(true, 1000);
        assert!(s.contains("FROM peer_buy("), "{s}");
        assert!(!s.contains('$'), "an unbound parameter: {s}");
        assert!(s.contains("random(0, 999)"), "{s}");
        assert!(
            s.contains(", true, :sort_key::timestamptz, :code_id::uuid)"),
            "{s}"
        );
        assert!(s.trim_end().ends_with("\\gset"), "{s}");
    }
}
