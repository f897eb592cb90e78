//! The nemesis's clients: seeded random users of the HTTP contract, over
//! two apis (a request that gets no answer, or a 503, is sent again to the
//! other one, as a load balancer's client would). Every attempt is
//! recorded in the [`History`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use giftcard_shared::domain::{purchase_id_for, IdempotencyKey, UserId};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use super::history::{History, Op, OpKind};

/// A purchase request sent (for resends and key reuse).
#[derive(Debug, Clone)]
pub struct Sent {
    pub user: String,
    pub key: String,
    pub card: Uuid,
    pub quantity: u8,
}

/// What the clients share: endpoints, identities, cards, and what was sent.
pub struct World {
    pub apis: Vec<String>,
    pub http: reqwest::Client,
    pub users: Vec<String>,
    pub tokens: HashMap<String, String>,
    pub admin: String,
    /// Cards whose stock only shrinks (no imports or withdrawals after the
    /// start): their winners must be in sequence order.
    pub stable: Vec<Uuid>,
    /// Cards with imports, withdrawals and (de)activations.
    pub churn: Vec<Uuid>,
    /// Each card's price at creation.
    pub initial_prices: HashMap<Uuid, String>,
    pub seed: u64,
    sent: Mutex<Vec<Sent>>,
    codes: Mutex<HashMap<Uuid, Vec<String>>>,
    credits: Mutex<Vec<(String, String, String)>>,
    counter: AtomicU64,
}

pub const PRICES: [&str; 3] = ["1.00", "2.00", "3.00"];

impl World {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        apis: Vec<String>,
        http: reqwest::Client,
        users: Vec<String>,
        tokens: HashMap<String, String>,
        admin: String,
        stable: Vec<Uuid>,
        churn: Vec<Uuid>,
        initial_prices: HashMap<Uuid, String>,
        codes: HashMap<Uuid, Vec<String>>,
        seed: u64,
    ) -> Self {
        Self {
            apis,
            http,
            users,
            tokens,
            admin,
            stable,
            churn,
            initial_prices,
            seed,
            sent: Mutex::default(),
            codes: Mutex::new(codes),
            credits: Mutex::default(),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    fn cards(&self) -> Vec<Uuid> {
        self.stable.iter().chain(&self.churn).copied().collect()
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().expect("sent lock").clone()
    }
}

/// One HTTP request as a client sends it.
struct Request {
    method: Method,
    path: String,
    token: String,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

/// One client: a loop of random operations until `deadline`.
pub async fn run(client: usize, world: Arc<World>, history: History, deadline: Duration) {
    let mut rng = StdRng::seed_from_u64(
        world
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(client as u64),
    );
    while history.now() < deadline {
        let pick = rng.random_range(0..100u32);
        match pick {
            0..30 => buy(&world, &history, client, &mut rng, OpKind::BuySync).await,
            30..48 => buy(&world, &history, client, &mut rng, OpKind::BuyAsync).await,
            48..56 => reuse(&world, &history, client, &mut rng, OpKind::Resend).await,
            56..60 => reuse(&world, &history, client, &mut rng, OpKind::ReuseOtherBody).await,
            60..64 => reuse(&world, &history, client, &mut rng, OpKind::ReuseOtherCard).await,
            64..72 => poll(&world, &history, client, &mut rng).await,
            72..82 => credit(&world, &history, client, &mut rng).await,
            82..88 => import(&world, &history, client, &mut rng).await,
            88..94 => withdraw(&world, &history, client, &mut rng).await,
            _ => reprice(&world, &history, client, &mut rng).await,
        }
        let pause = rng.random_range(5..80);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Sends `req` to a random api; without an answer (or with a 503) sends it
/// again to the other one, up to 4 attempts. Each attempt is one op.
async fn send(
    world: &World,
    history: &History,
    rng: &mut StdRng,
    req: Request,
    template: Op,
) -> (u16, Value) {
    let mut api = rng.random_range(0..world.apis.len());
    let mut last = (0, Value::Null);
    for attempt in 0..4 {
        let invoked = history.now();
        let mut r = world
            .http
            .request(
                req.method.clone(),
                format!("{}{}", world.apis[api], req.path),
            )
            .bearer_auth(&req.token);
        if let Some(b) = &req.body {
            r = r.json(b);
        }
        for (k, v) in &req.headers {
            r = r.header(*k, v);
        }
        let (status, body) = match r.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                (
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }
            Err(e) => (0, Value::String(format!("transport: {e}"))),
        };
        let mut op = template.clone();
        if attempt > 0 && op.kind.is_purchase() {
            op.kind = OpKind::Resend;
        }
        op.invoked = invoked;
        op.completed = history.now();
        op.api = api;
        op.status = status;
        op.body = body.clone();
        if op.purchase.is_none() {
            op.purchase = body["id"].as_str().and_then(|s| s.parse().ok());
        }
        history.record(op);
        last = (status, body);
        if !(status == 0 || status == 503) {
            break;
        }
        api = (api + 1) % world.apis.len();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
    }
    last
}

fn template(client: usize, kind: OpKind, user: &str) -> Op {
    Op {
        client,
        kind,
        invoked: Duration::ZERO,
        completed: Duration::ZERO,
        user: user.to_owned(),
        card: None,
        key: None,
        quantity: 0,
        purchase: None,
        amount: None,
        api: 0,
        status: 0,
        body: Value::Null,
    }
}

fn pick<T: Clone>(rng: &mut StdRng, from: &[T]) -> T {
    from[rng.random_range(0..from.len())].clone()
}

/// The purchase id a (user, key) maps to.
pub fn purchase_id(user: &str, key: &str) -> Uuid {
    purchase_id_for(
        &UserId::parse(user).expect("user"),
        Some(&IdempotencyKey::parse(key).expect("key")),
    )
}

async fn purchase(
    world: &World,
    history: &History,
    client: usize,
    rng: &mut StdRng,
    kind: OpKind,
    sent: Sent,
) {
    let prefer = match kind {
        OpKind::BuyAsync => "respond-async".to_owned(),
        _ => format!("wait={}", rng.random_range(1..4)),
    };
    let mut op = template(client, kind, &sent.user);
    op.card = Some(sent.card);
    op.key = Some(sent.key.clone());
    op.quantity = sent.quantity;
    op.purchase = Some(purchase_id(&sent.user, &sent.key));
    let req = Request {
        method: Method::POST,
        path: "/v1/purchases".into(),
        token: world.tokens[&sent.user].clone(),
        body: Some(json!({"gift_card_id": sent.card, "quantity": sent.quantity})),
        headers: vec![("Idempotency-Key", sent.key.clone()), ("Prefer", prefer)],
    };
    send(world, history, rng, req, op).await;
}

async fn buy(world: &World, history: &History, client: usize, rng: &mut StdRng, kind: OpKind) {
    let sent = Sent {
        user: pick(rng, &world.users),
        key: format!("k{}-{client}-{}", world.seed, world.next()),
        card: pick(rng, &world.cards()),
        quantity: rng.random_range(1..4),
    };
    world.sent.lock().expect("sent lock").push(sent.clone());
    purchase(world, history, client, rng, kind, sent).await;
}

async fn reuse(world: &World, history: &History, client: usize, rng: &mut StdRng, kind: OpKind) {
    let Some(mut sent) = ({
        let all = world.sent.lock().expect("sent lock");
        (!all.is_empty()).then(|| pick(rng, &all))
    }) else {
        return buy(world, history, client, rng, OpKind::BuySync).await;
    };
    match kind {
        OpKind::ReuseOtherBody => sent.quantity = sent.quantity % 3 + 1,
        OpKind::ReuseOtherCard => {
            let others: Vec<Uuid> = world
                .cards()
                .into_iter()
                .filter(|c| *c != sent.card)
                .collect();
            sent.card = pick(rng, &others);
        }
        _ => {}
    }
    purchase(world, history, client, rng, kind, sent).await;
}

async fn poll(world: &World, history: &History, client: usize, rng: &mut StdRng) {
    let Some(sent) = ({
        let all = world.sent.lock().expect("sent lock");
        (!all.is_empty()).then(|| pick(rng, &all))
    }) else {
        return;
    };
    let id = purchase_id(&sent.user, &sent.key);
    let mut op = template(client, OpKind::Poll, &sent.user);
    op.purchase = Some(id);
    op.key = Some(sent.key.clone());
    let req = Request {
        method: Method::GET,
        path: format!("/v1/purchases/{id}"),
        token: world.tokens[&sent.user].clone(),
        body: None,
        headers: Vec::new(),
    };
    send(world, history, rng, req, op).await;
}

async fn credit(world: &World, history: &History, client: usize, rng: &mut StdRng) {
    let earlier = {
        let all = world.credits.lock().expect("credits lock");
        (!all.is_empty() && rng.random_range(0..10) == 0).then(|| pick(rng, &all))
    };
    let (user, reference, amount) = earlier.unwrap_or_else(|| {
        let c = (
            pick(rng, &world.users),
            format!("cr{}-{client}-{}", world.seed, world.next()),
            pick(rng, &["5.00", "10.00", "20.00"]).to_owned(),
        );
        world.credits.lock().expect("credits lock").push(c.clone());
        c
    });
    let mut op = template(client, OpKind::Credit, &user);
    op.key = Some(reference.clone());
    op.amount = Some(amount.clone());
    let req = Request {
        method: Method::POST,
        path: format!("/v1/admin/wallets/{user}/credits"),
        token: world.admin.clone(),
        body: Some(json!({"amount": amount, "reference": reference})),
        headers: Vec::new(),
    };
    send(world, history, rng, req, op).await;
}

async fn import(world: &World, history: &History, client: usize, rng: &mut StdRng) {
    let card = pick(rng, &world.churn);
    let n = rng.random_range(3..12);
    let batch = world.next();
    let codes: Vec<String> = (0..n)
        .map(|i| format!("N{}-{client}-{batch}-{i}", world.seed))
        .collect();
    // Known before the answer: a lost answer may still have imported them.
    world
        .codes
        .lock()
        .expect("codes lock")
        .entry(card)
        .or_default()
        .extend(codes.iter().cloned());
    let mut op = template(client, OpKind::Import, "admin");
    op.card = Some(card);
    op.quantity = n as u8;
    let rows: Vec<Value> = codes
        .iter()
        .map(|c| json!({"code": c, "expires_on": null}))
        .collect();
    let req = Request {
        method: Method::POST,
        path: format!("/v1/admin/gift-cards/{card}/codes"),
        token: world.admin.clone(),
        body: Some(json!({ "codes": rows })),
        headers: Vec::new(),
    };
    send(world, history, rng, req, op).await;
}

async fn withdraw(world: &World, history: &History, client: usize, rng: &mut StdRng) {
    let card = pick(rng, &world.churn);
    let Some(code) = ({
        let codes = world.codes.lock().expect("codes lock");
        codes
            .get(&card)
            .filter(|c| !c.is_empty())
            .map(|c| pick(rng, c))
    }) else {
        return;
    };
    let mut op = template(client, OpKind::Withdraw, "admin");
    op.card = Some(card);
    op.key = Some(code.clone());
    let req = Request {
        method: Method::DELETE,
        path: format!("/v1/admin/gift-cards/{card}/codes/{code}"),
        token: world.admin.clone(),
        body: None,
        headers: Vec::new(),
    };
    send(world, history, rng, req, op).await;
}

async fn reprice(world: &World, history: &History, client: usize, rng: &mut StdRng) {
    let card = pick(rng, &world.cards());
    let price = pick(rng, &PRICES).to_owned();
    let mut body = json!({ "price": price });
    // Churn cards are sometimes switched off (and on again).
    if world.churn.contains(&card) {
        body["active"] = json!(rng.random_range(0..4) != 0);
    }
    let mut op = template(client, OpKind::Reprice, "admin");
    op.card = Some(card);
    op.amount = Some(price);
    let req = Request {
        method: Method::PATCH,
        path: format!("/v1/admin/gift-cards/{card}"),
        token: world.admin.clone(),
        body: Some(body),
        headers: Vec::new(),
    };
    send(world, history, rng, req, op).await;
}
