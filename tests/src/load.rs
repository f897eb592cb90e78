//! A background purchase load through the HTTP contract, recording every
//! accepted purchase so a test can check that each reaches a terminal state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::TestApp;

/// A purchase the api accepted (201/202/404/409).
#[derive(Debug, Clone)]
pub struct Accepted {
    pub user: String,
    pub id: String,
    pub status: u16,
    /// Time from sending the request to its answer.
    pub latency: Duration,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub accepted: Vec<Accepted>,
    /// Answers other than 201/202/404/409 (e.g. 503), and transport errors.
    pub other: Vec<String>,
}

pub struct Load {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<Outcome>>,
}

impl Load {
    /// `clients` loops buying 1 unit of a card from `cards` as a user from
    /// `users` (round robin), each with a fresh idempotency key, waiting up
    /// to `wait` seconds for the result.
    pub fn start(
        app: &TestApp,
        cards: &[Uuid],
        users: &[String],
        clients: usize,
        wait: u32,
    ) -> Self {
        let stop = CancellationToken::new();
        let counter = Arc::new(AtomicU64::new(0));
        let tokens: Arc<Vec<(String, String)>> =
            Arc::new(users.iter().map(|u| (u.clone(), app.token(u))).collect());
        let cards = Arc::new(cards.to_vec());
        let tasks = (0..clients)
            .map(|_| {
                let (http, url, stop) = (
                    app.http.clone(),
                    format!("{}/v1/purchases", app.api_url),
                    stop.clone(),
                );
                let (tokens, cards, counter) = (tokens.clone(), cards.clone(), counter.clone());
                tokio::spawn(async move {
                    let mut out = Outcome::default();
                    while !stop.is_cancelled() {
                        let n = counter.fetch_add(1, Ordering::Relaxed) as usize;
                        let (user, token) = &tokens[n % tokens.len()];
                        let card = cards[(n / tokens.len() + n) % cards.len()];
                        let sent = std::time::Instant::now();
                        let resp = http
                            .post(&url)
                            .bearer_auth(token)
                            .header("Idempotency-Key", Uuid::new_v4().to_string())
                            .header("Prefer", format!("wait={wait}"))
                            .json(&json!({"gift_card_id": card, "quantity": 1}))
                            .send()
                            .await;
                        match resp {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let latency = sent.elapsed();
                                let body: serde_json::Value = r.json().await.unwrap_or_default();
                                if matches!(status, 201 | 202 | 404 | 409) {
                                    let id = body["id"].as_str().unwrap_or_default().to_owned();
                                    out.accepted.push(Accepted {
                                        user: user.clone(),
                                        id,
                                        status,
                                        latency,
                                    });
                                } else {
                                    out.other.push(format!("{status}: {body}"));
                                }
                            }
                            Err(e) => out.other.push(format!("transport: {e}")),
                        }
                    }
                    out
                })
            })
            .collect();
        Self { stop, tasks }
    }

    pub async fn stop(self) -> Outcome {
        self.stop.cancel();
        let mut all = Outcome::default();
        for t in self.tasks {
            let o = t.await.expect("load task");
            all.accepted.extend(o.accepted);
            all.other.extend(o.other);
        }
        all
    }
}

/// Polls every accepted purchase until it is terminal (or panics after
/// `within`). Returns how many ended succeeded.
pub async fn wait_all_terminal(app: &TestApp, accepted: &[Accepted], within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    let results: Vec<String> = futures::stream::iter(accepted.iter().cloned())
        .map(|a| async move {
            let token = app.token(&a.user);
            loop {
                let r = app
                    .http
                    .get(format!("{}/v1/purchases/{}", app.api_url, a.id))
                    .bearer_auth(&token)
                    .send()
                    .await;
                if let Ok(r) = r {
                    let code = r.status();
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    assert_ne!(code.as_u16(), 404, "accepted purchase {} was lost", a.id);
                    if let Some(s) = body["status"].as_str().filter(|s| *s != "pending") {
                        return s.to_owned();
                    }
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "purchase {} still pending",
                    a.id
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.iter().filter(|s| *s == "succeeded").count()
}
