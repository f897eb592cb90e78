//! The batch transaction against the real schema, driven step by step
//! (read, plan, write, commit) so that each test can put another writer in
//! between: the interleavings that broke the two-statement batch (issue 13).

use std::time::Duration;

use giftcard_shared::contract::{PurchaseMessage, ReplyOutcome};
use giftcard_shared::domain::{purchase_id_for, request_hash, IdempotencyKey, Quantity, UserId};
use giftcard_tests::{invariants, Options, TestApp};
use giftcard_worker::batch::{self, Cursors, Fence, FenceToken, Item, Verdict};
use giftcard_worker::error::{BatchError, Conflict};
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use serde_json::json;
use uuid::Uuid;

async fn app() -> TestApp {
    TestApp::spawn_with(Options {
        start_worker: false,
        ..Options::default()
    })
    .await
}

fn item(user: &str, card: Uuid, quantity: u8, key: &str, sequence: u64, partition: u16) -> Item {
    let user_id = UserId::parse(user).expect("user");
    let key = IdempotencyKey::parse(key).expect("key");
    let q = Quantity::parse(i64::from(quantity)).expect("quantity");
    Item {
        message: PurchaseMessage {
            v: 1,
            purchase_id: purchase_id_for(&user_id, Some(&key)),
            user_id: user.to_owned(),
            gift_card_id: card,
            quantity,
            request_hash: request_hash(card, q),
            idempotency_key: Some(key.as_str().to_owned()),
            accepted_at: chrono::Utc::now(),
        },
        sequence,
        partition,
    }
}

async fn owner(db: &DatabaseConnection, partition: u16, revision: i64) -> Fence {
    let fence = Fence {
        partition,
        token: FenceToken { epoch: 1, revision },
        owner: format!("owner-{revision}"),
    };
    batch::claim(db, &fence).await.expect("claim");
    fence
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> String {
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .expect("query")
        .expect("row");
    row.try_get_by_index::<Option<String>>(0)
        .expect("text")
        .unwrap_or_default()
}

/// Whether some session of this database waits for a lock right now.
async fn someone_waits_for_a_lock(db: &DatabaseConnection) -> bool {
    scalar(
        db,
        "SELECT count(*)::text FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .await
        != "0"
}

async fn wait_until_blocked(db: &DatabaseConnection, what: &str) {
    for _ in 0..100 {
        if someone_waits_for_a_lock(db).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never waited for the open batch's locks");
}

/// Issue 13, 1b: one user and key on two cards (two partitions, two
/// transactions) after the duplicate window. The first decides "failed"
/// (no stock); the second, reading before the first committed, decides
/// "succeeded". Its write must not debit the wallet and attach a code
/// while the purchase row says failed.
#[tokio::test]
async fn one_key_on_two_cards_in_concurrent_batches_tells_one_story_and_charges_nothing_twice() {
    let app = app().await;
    let empty = app.card_with_stock("10.00", 0).await;
    let stocked = app.card_with_stock("10.00", 5).await;
    app.credit("ann", "100.00").await;
    let (fa, fb) = (owner(&app.db, 0, 1).await, owner(&app.db, 1, 1).await);
    let first = item("ann", empty, 1, "k-two-cards", 10, 0);
    let second = item("ann", stocked, 1, "k-two-cards", 11, 1);

    let x = app.db.begin().await.unwrap();
    let cursors = Cursors::default();
    let sx = batch::read(&x, &[&fa], &[&first], &cursors).await.unwrap();
    let px = batch::plan(&[&first], &sx);
    assert_eq!(
        px.decisions[0].failure.map(|f| f.as_str()),
        Some("ACTIVATION_CODES_NOT_AVAILABLE")
    );

    // The second batch reads while the first is open: it waits for ann's
    // wallet, which the first locked.
    let db = app.db.clone();
    let second_batch = {
        let second = second.clone();
        let fb = fb.clone();
        tokio::spawn(async move {
            let cursors = Cursors::default();
            let y = db.begin().await.unwrap();
            let sy = batch::read(&y, &[&fb], &[&second], &cursors).await?;
            let py = batch::plan(&[&second], &sy);
            let now = chrono::Utc::now();
            let written = batch::write(&y, &[&fb], &[&second], &py, &sy, now).await;
            match written {
                Ok(()) => y.commit().await.map_err(BatchError::from),
                Err(e) => {
                    y.rollback().await.unwrap();
                    Err(e)
                }
            }
        })
    };
    wait_until_blocked(&app.db, "the second batch's read").await;
    batch::write(&x, &[&fa], &[&first], &px, &sx, chrono::Utc::now())
        .await
        .unwrap();
    x.commit().await.unwrap();

    match second_batch.await.unwrap() {
        // It read before the first committed, decided a success, and its
        // write found the purchase row taken: rolled back.
        Err(BatchError::Conflict(Conflict::RowCount { what, .. })) => {
            assert_eq!(what, "purchases recorded")
        }
        other => panic!("the second batch must be rolled back as a conflict, got {other:?}"),
    }
    // Read again, it is a reused key.
    let results = batch::process_group(&app.db, &[(fb, vec![second])], &cursors)
        .await
        .unwrap();
    assert!(matches!(
        results[0].as_ref().unwrap()[0],
        ReplyOutcome::IdempotencyKeyReused
    ));

    let id = first.message.purchase_id;
    let row = scalar(
        &app.db,
        &format!(
            "SELECT status || ' ' || gift_card_id || ' ' || \
               (SELECT count(*) FROM activation_codes WHERE purchase_id = '{id}') || ' ' || \
               (SELECT count(*) FROM wallet_entries WHERE purchase_id = '{id}') \
             FROM purchases WHERE id = '{id}'"
        ),
    )
    .await;
    assert_eq!(row, format!("failed {empty} 0 0"));
    assert_eq!(app.balance("ann").await, "100.00");
    invariants::check(&app.db).await;
    app.stop().await;
}

/// Issue 13, 1a: a dead-lettered purchase, then its key reused with another
/// body after the duplicate window. The stored row used to keep card A and
/// quantity 1 while reading `succeeded` with two codes of card B.
#[tokio::test]
async fn a_dead_lettered_purchases_key_reused_with_another_body_leaves_the_dead_letter_alone() {
    let app = app().await;
    let a = app.card_with_stock("10.00", 5).await;
    let b = app.card_with_stock("10.00", 5).await;
    app.credit("bea", "100.00").await;
    let fence = owner(&app.db, 0, 1).await;
    let dead = item("bea", a, 1, "k-dead", 5, 0);
    let m = &dead.message;
    app.db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO purchases (id, user_id, gift_card_id, quantity, status, error_code, \
               error_message, idempotency_key, request_hash, stream_sequence, partition, created_at) \
             VALUES ($1, $2, $3, 1, 'dead_lettered', 'DEAD_LETTERED', 'dead-lettered', $4, $5, 5, 0, now())",
            [
                m.purchase_id.into(),
                m.user_id.clone().into(),
                a.into(),
                m.idempotency_key.clone().into(),
                m.request_hash.clone().into(),
            ],
        ))
        .await
        .unwrap();
    let cursors = Cursors::default();

    let reuse = item("bea", b, 2, "k-dead", 9, 0);
    let results = batch::process_group(&app.db, &[(fence.clone(), vec![reuse])], &cursors)
        .await
        .unwrap();
    assert!(matches!(
        results[0].as_ref().unwrap()[0],
        ReplyOutcome::IdempotencyKeyReused
    ));
    let id = m.purchase_id;
    let state = format!(
        "SELECT status || ' ' || gift_card_id || ' ' || quantity || ' ' || \
           (SELECT count(*) FROM activation_codes WHERE purchase_id = '{id}') \
         FROM purchases WHERE id = '{id}'"
    );
    assert_eq!(
        scalar(&app.db, &state).await,
        format!("dead_lettered {a} 1 0")
    );
    assert_eq!(app.balance("bea").await, "100.00");

    // The same request (a replay) is decided and overwrites the dead letter.
    let results = batch::process_group(&app.db, &[(fence, vec![dead])], &cursors)
        .await
        .unwrap();
    match &results[0].as_ref().unwrap()[0] {
        ReplyOutcome::Completed { purchase } => {
            assert_eq!(purchase.status.as_str(), "succeeded")
        }
        other => panic!("the replay must complete: {other:?}"),
    }
    assert_eq!(scalar(&app.db, &state).await, format!("succeeded {a} 1 1"));
    assert_eq!(app.balance("bea").await, "90.00");
    invariants::check(&app.db).await;
    app.stop().await;
}

/// Issue 13, 4: the write did not re-check the price and status its read
/// saw. Now the read locks the card: a price change waits for the batch
/// that decided with the old price, and the next batch sees the new one.
#[tokio::test]
async fn a_price_change_waits_for_the_batch_that_decided_with_the_old_price() {
    let app = app().await;
    let card = app.card_with_stock("10.00", 5).await;
    app.credit("cid", "100.00").await;
    let fence = owner(&app.db, 0, 1).await;
    let cursors = Cursors::default();
    let one = item("cid", card, 1, "k-price-1", 1, 0);

    let x = app.db.begin().await.unwrap();
    let sx = batch::read(&x, &[&fence], &[&one], &cursors).await.unwrap();
    let px = batch::plan(&[&one], &sx);
    assert_eq!(px.decisions[0].unit_price.unwrap().to_string(), "10.00");

    let reprice = {
        let (http, url, token) = (app.http.clone(), app.api_url.clone(), app.admin_token());
        tokio::spawn(async move {
            http.patch(format!("{url}/v1/admin/gift-cards/{card}"))
                .bearer_auth(token)
                .json(&json!({"price": "20.00"}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    wait_until_blocked(&app.db, "the price change").await;
    assert!(
        !reprice.is_finished(),
        "the price changed under an open batch"
    );
    batch::write(&x, &[&fence], &[&one], &px, &sx, chrono::Utc::now())
        .await
        .unwrap();
    x.commit().await.unwrap();
    assert_eq!(reprice.await.unwrap(), StatusCode::OK);

    let two = item("cid", card, 1, "k-price-2", 2, 0);
    let results = batch::process_group(&app.db, &[(fence, vec![two])], &cursors)
        .await
        .unwrap();
    match &results[0].as_ref().unwrap()[0] {
        ReplyOutcome::Completed { purchase } => {
            assert_eq!(purchase.unit_price.as_deref(), Some("20.00"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(app.balance("cid").await, "70.00");
    invariants::check(&app.db).await;
    app.stop().await;
}

/// A stale owner's open batch holds the fence until it ends; the new
/// owner's claim waits for it, and every later batch of the stale owner is
/// fenced off. Tokens compare as (epoch, revision) beyond 2^32.
#[tokio::test]
async fn a_newer_claim_waits_for_the_stale_owners_open_batch_then_fences_it_off() {
    let app = app().await;
    let card = app.card_with_stock("1.00", 5).await;
    app.credit("dot", "10.00").await;
    let stale = owner(&app.db, 3, (1 << 32) - 1).await;
    let cursors = Cursors::default();
    let one = item("dot", card, 1, "k-fence-1", 1, 3);

    let x = app.db.begin().await.unwrap();
    let sx = batch::read(&x, &[&stale], &[&one], &cursors).await.unwrap();
    assert!(sx.live.contains(&3));
    let newer = Fence {
        partition: 3,
        token: FenceToken {
            epoch: 1,
            revision: (1 << 32) + 1,
        },
        owner: "newer".into(),
    };
    let claim = {
        let (db, newer) = (app.db.clone(), newer.clone());
        tokio::spawn(async move { batch::claim(&db, &newer).await })
    };
    wait_until_blocked(&app.db, "the newer owner's claim").await;
    let px = batch::plan(&[&one], &sx);
    batch::write(&x, &[&stale], &[&one], &px, &sx, chrono::Utc::now())
        .await
        .unwrap();
    x.commit().await.unwrap();
    claim.await.unwrap().expect("the newer claim holds");

    let two = item("dot", card, 1, "k-fence-2", 2, 3);
    let results = batch::process_group(&app.db, &[(stale.clone(), vec![two.clone()])], &cursors)
        .await
        .unwrap();
    assert!(matches!(
        results[0],
        Err(BatchError::Fenced { partition: 3 })
    ));
    assert!(matches!(
        batch::claim(&app.db, &stale).await,
        Err(BatchError::Fenced { partition: 3 })
    ));
    let results = batch::process_group(&app.db, &[(newer, vec![two])], &cursors)
        .await
        .unwrap();
    assert!(results[0].is_ok());
    assert_eq!(app.balance("dot").await, "8.00");
    invariants::check(&app.db).await;
    app.stop().await;
}

/// A worker frozen in the middle of a batch (SIGSTOP, a long GC-like
/// pause) must not hold its row locks for ever: the batch pool's sessions
/// lose an idle transaction after the statement timeout.
#[tokio::test]
async fn a_batch_transaction_left_idle_loses_its_locks_after_the_statement_timeout() {
    let app = app().await;
    let card = app.card_with_stock("1.00", 5).await;
    app.credit("eli", "10.00").await;
    let fence = owner(&app.db, 0, 1).await;
    let pool = giftcard_shared::db::connect_for_batches(
        &app.common(giftcard_tests::Role::Worker),
        Duration::from_millis(1000),
    )
    .await
    .unwrap();
    let cursors = Cursors::default();
    let one = item("eli", card, 1, "k-idle", 1, 0);
    let x = pool.begin().await.unwrap();
    let sx = batch::read(&x, &[&fence], &[&one], &cursors).await.unwrap();
    let px = batch::plan(&[&one], &sx);
    assert!(matches!(px.verdicts[0], Verdict::Decided(0)));

    // Meanwhile a credit to eli's (locked) wallet goes through once
    // PostgreSQL has ended the idle transaction.
    let started = std::time::Instant::now();
    let (s, _, b) = app
        .call(
            Method::POST,
            "/v1/admin/wallets/eli/credits",
            Some(&app.admin_token()),
            Some(json!({"amount": "1.00", "reference": "idle-credit"})),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(started.elapsed() >= Duration::from_millis(500));
    let late = batch::write(&x, &[&fence], &[&one], &px, &sx, chrono::Utc::now()).await;
    assert!(
        matches!(late, Err(BatchError::Unavailable(_))),
        "the frozen batch's write must find its transaction gone: {late:?}"
    );
    drop(x);
    assert_eq!(app.balance("eli").await, "11.00");
    invariants::check(&app.db).await;
    app.stop().await;
}
