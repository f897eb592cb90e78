//! Every statement that assigns a code runs inside BEGIN ... COMMIT on its
//! connection (issue 13): PostgreSQL itself logs every statement of a real
//! worker process (connecting as a role of its own with `log_statement =
//! all`), and the log is replayed. The worker opens its transactions one
//! at a time (its committer), and nothing else it runs here opens one, so
//! the replay needs no session ids.

use std::time::Duration;

use giftcard_tests::processes::{wait_balanced, WorkerProcess};
use giftcard_tests::{invariants, Options, TestApp};
use sea_orm::ConnectionTrait;

const WORKER: &str = env!("CARGO_BIN_EXE_giftcard-worker");

#[tokio::test]
async fn every_batch_read_and_write_runs_between_begin_and_commit_on_its_connection() {
    let app = TestApp::spawn_with(Options {
        start_worker: false,
        own_postgres: true,
        ..Options::default()
    })
    .await;
    for setting in [
        "CREATE ROLE logged_worker LOGIN SUPERUSER",
        "ALTER ROLE logged_worker SET log_statement = 'all'",
    ] {
        app.db.execute_unprepared(setting).await.unwrap();
    }
    let url = app.db_url.replacen("postgres@", "logged_worker@", 1);
    let worker =
        WorkerProcess::spawn_worker(WORKER.as_ref(), &app, "logged", &[("DATABASE_URL", &url)]);
    worker.wait_ready(&app.http).await;
    wait_balanced(&app, &["logged"], Duration::from_secs(15)).await;

    let cards = [
        app.card_with_stock("2.00", 40).await,
        app.card_with_stock("3.00", 40).await,
    ];
    for u in ["tia", "tom", "ted"] {
        app.credit(u, "50.00").await;
    }
    let mut ids = Vec::new();
    for i in 0..30 {
        let user = ["tia", "tom", "ted"][i % 3];
        let (_, _, b) = app
            .buy(
                user,
                cards[i % 2],
                1,
                Some(&format!("tx-{i}")),
                "respond-async",
            )
            .await;
        ids.push((user, b["id"].as_str().expect("id").to_owned()));
    }
    for (user, id) in &ids {
        app.wait_terminal(user, id).await;
    }
    invariants::check(&app.db).await;
    drop(worker);

    let prefix = format!("db={} ", app.db_name);
    let log = std::fs::read_to_string(app.pg.as_ref().unwrap().log()).unwrap();
    let (mut in_transaction, mut wrote) = (false, false);
    let (mut reads, mut writes, mut commits) = (0, 0, 0);
    for line in log.lines() {
        let Some(message) = line.strip_prefix(&prefix) else {
            continue;
        };
        let statement = message.strip_prefix("LOG:  statement: ").or_else(|| {
            message
                .strip_prefix("LOG:  execute ")
                .and_then(|m| m.split_once(": ").map(|(_, sql)| sql))
        });
        let Some(sql) = statement else {
            continue;
        };
        if sql.starts_with("BEGIN") {
            assert!(!in_transaction, "BEGIN inside an open transaction");
            (in_transaction, wrote) = (true, false);
        } else if sql.starts_with("COMMIT") || sql.starts_with("ROLLBACK") {
            assert!(in_transaction, "{sql} without BEGIN");
            if wrote && sql.starts_with("COMMIT") {
                commits += 1;
            }
            (in_transaction, wrote) = (false, false);
        } else if sql.starts_with("-- The batch's read") {
            assert!(in_transaction, "a batch read outside BEGIN ... COMMIT");
            reads += 1;
        } else if sql.starts_with("-- The batch's write") {
            assert!(in_transaction, "a batch write outside BEGIN ... COMMIT");
            assert!(!wrote, "two batch writes in one transaction");
            wrote = true;
            writes += 1;
        }
    }
    eprintln!("{reads} batch reads, {writes} writes, {commits} committed writes");
    assert!(
        writes > 0,
        "the log shows no batch write: is log_statement on?"
    );
    assert_eq!(
        commits, writes,
        "every batch write is followed by its COMMIT"
    );
    assert!(reads >= writes);
}
