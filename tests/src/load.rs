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
    /// Requests sent again to another api after no answer or a 503.
    pub failovers: usize,
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
        Self::start_on(
            app,
            std::slice::from_ref(&app.api_url),
            false,
            cards,
            users,
            clients,
            wait,
        )
    }

    /// Like [`Load::start`], spread over several apis as a load balancer
    /// would: client `i` starts on `apis[i % n]`; with `failover`, a request
    /// that gets no answer (connection refused or cut) or a 503 is sent
    /// again, with the same idempotency key, to the next api, until it is
    /// answered (at most 200 tries, 25 ms apart).
    pub fn start_on(
        app: &TestApp,
        apis: &[String],
        failover: bool,
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
        let urls: Arc<Vec<String>> =
            Arc::new(apis.iter().map(|a| format!("{a}/v1/purchases")).collect());
        let tasks = (0..clients)
            .map(|client| {
                let (http, stop) = (app.http.clone(), stop.clone());
                let (tokens, cards, counter, urls) =
                    (tokens.clone(), cards.clone(), counter.clone(), urls.clone());
                tokio::spawn(async move {
                    let mut out = Outcome::default();
                    let mut api = client % urls.len();
                    while !stop.is_cancelled() {
                        let n = counter.fetch_add(1, Ordering::Relaxed) as usize;
                        let (user, token) = &tokens[n % tokens.len()];
                        let card = cards[(n / tokens.len() + n) % cards.len()];
                        let key = Uuid::new_v4().to_string();
                        let sent = std::time::Instant::now();
                        for attempt in 0.. {
                            let resp = http
                                .post(&urls[api])
                                .bearer_auth(token)
                                .header("Idempotency-Key", &key)
                                .header("Prefer", format!("wait={wait}"))
                                .json(&json!({"gift_card_id": card, "quantity": 1}))
                                .send()
                                .await;
                            let failure = match resp {
                                Ok(r) => {
                                    let status = r.status().as_u16();
                                    let latency = sent.elapsed();
                                    let body: serde_json::Value =
                                        r.json().await.unwrap_or_default();
                                    if matches!(status, 201 | 202 | 404 | 409) {
                                        let id = body["id"].as_str().unwrap_or_default().to_owned();
                                        out.accepted.push(Accepted {
                                            user: user.clone(),
                                            id,
                                            status,
                                            latency,
                                        });
                                        break;
                                    }
                                    format!("{status}: {body}")
                                }
                                Err(e) => format!("transport: {e}"),
                            };
                            let retriable =
                                failure.starts_with("transport") || failure.starts_with("503");
                            if !(failover && retriable && attempt < 200) {
                                out.other.push(failure);
                                break;
                            }
                            out.failovers += 1;
                            api = (api + 1) % urls.len();
                            tokio::time::sleep(Duration::from_millis(25)).await;
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
            all.failovers += o.failovers;
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
