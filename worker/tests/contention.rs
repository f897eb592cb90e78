//! Wallet contention never dead-letters healthy purchases (issue 13, 3).
//!
//! Other writers hammer a buyer's wallet while she buys. The old batch
//! re-checked balances after the fact and redid itself on every change; its
//! conflict counter was never reset, so after 50 conflicts each further one
//! spent an attempt and the messages were dead-lettered. Now the batch
//! locks the wallets it debits: the hammering waits its turn, nothing is
//! redone, nothing is dead-lettered.

use giftcard_tests::{invariants, Options, TestApp};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[tokio::test]
async fn a_wallet_hammered_by_other_writers_never_dead_letters_its_owners_purchases() {
    let app = TestApp::spawn_with(Options {
        max_attempts: 1,
        ..Options::default()
    })
    .await;
    let cards = [
        app.card_with_stock("1.00", 500).await,
        app.card_with_stock("1.00", 500).await,
    ];
    app.credit("hal", "1000.00").await;

    let stop = Arc::new(AtomicBool::new(false));
    let cents = Arc::new(AtomicU64::new(0));
    let mut hammers = Vec::new();
    for _ in 0..4 {
        let (stop, cents, url) = (stop.clone(), cents.clone(), app.db_url.clone());
        hammers.push(tokio::spawn(async move {
            let db = Database::connect(&url).await.expect("connect");
            while !stop.load(Ordering::Relaxed) {
                db.execute_unprepared(
                    "UPDATE wallets SET balance = balance + 0.01 WHERE user_id = 'hal'",
                )
                .await
                .expect("hammer");
                cents.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut ids = Vec::new();
    for i in 0..120 {
        let card = cards[i % 2];
        let (s, _, b) = app
            .buy(
                "hal",
                card,
                1,
                Some(&format!("hammered-{i}")),
                "respond-async",
            )
            .await;
        assert_eq!(s.as_u16(), 202, "{b}");
        ids.push(b["id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        let p = app.wait_terminal("hal", id).await;
        assert_eq!(p["status"], "succeeded", "{p}");
    }
    stop.store(true, Ordering::Relaxed);
    for h in hammers {
        h.await.expect("hammer task");
    }
    let cents = cents.load(Ordering::Relaxed);
    eprintln!("{cents} concurrent wallet updates during 120 purchases");
    assert!(
        cents > 100,
        "the wallet was hardly touched: {cents} updates"
    );

    let dead = app
        .db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) FROM dead_letters".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(dead, 0, "healthy purchases were dead-lettered");
    // The hammering bypassed the ledger: book it, then balances must add up.
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO wallet_entries (id, user_id, kind, amount, reference) \
             VALUES (gen_random_uuid(), 'hal', 'credit', {cents} * 0.01, 'hammer')"
        ))
        .await
        .unwrap();
    invariants::check(&app.db).await;
    app.stop().await;
}
