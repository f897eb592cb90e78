//! Test harness: real NATS JetStream and PostgreSQL servers on free ports
//! ([`servers`]), a fresh database and a fresh NATS server per test, and the
//! api and worker started in-process on port 0 ([`TestApp`]).
//!
//! Tests drive the system only through the HTTP contract, plus direct SQL
//! for the invariant checks ([`invariants`]); the console's tests drive a
//! real headless Chromium ([`browser`]). [`cluster`] runs a 3-node
//! JetStream cluster; [`nemesis`] runs seeded clients and faults against a
//! whole deployment and checks the history.

pub mod browser;
pub mod cluster;
pub mod invariants;
pub mod load;
pub mod nemesis;
pub mod processes;
pub mod servers;

use std::time::Duration;

use giftcard_shared::config::{
    ApiSettings, CommonSettings, DatabaseUrl, MessageKeys, Secret, WorkerSettings,
};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use servers::{NatsServer, PgCluster, Role};

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
/// The key purchase messages are signed with in tests.
pub const MESSAGE_SECRET: &str = "test-message-key-test-message-key-0123";

/// `max_bytes` of the purchases stream of a test deployment.
pub const TEST_PURCHASES_MAX_BYTES: i64 = 256 * 1024 * 1024;

/// Knobs of a test deployment.
#[derive(Debug, Clone)]
pub struct Options {
    pub partitions: u16,
    pub batch_size: usize,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub start_worker: bool,
    /// Run a private PostgreSQL cluster (for tests that stop it).
    pub own_postgres: bool,
    /// TLS and extra users of the deployment's NATS server.
    pub nats: servers::NatsOptions,
    /// The purchases stream's duplicate window, if not the default (tests
    /// of what happens to a key reused after the window).
    pub duplicate_window: Option<Duration>,
}

impl Options {
    /// The defaults without the in-process worker (tests that start worker
    /// processes, or none).
    pub fn without_worker() -> Self {
        Self {
            start_worker: false,
            ..Self::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            partitions: 4,
            batch_size: 64,
            max_attempts: 8,
            retry_base: Duration::from_millis(100),
            start_worker: true,
            own_postgres: false,
            nats: servers::NatsOptions::default(),
            duplicate_window: None,
        }
    }
}

struct Running {
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.handle).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("process failed: {e:#}"),
            Ok(Err(e)) => panic!("process panicked: {e}"),
            Err(_) => panic!("process did not stop within 30 s"),
        }
    }
}

/// One deployment: NATS, a database, the api, and (optionally) a worker.
pub struct TestApp {
    /// This test's database name.
    pub db_name: String,
    pub nats: NatsServer,
    /// The private cluster, with `Options::own_postgres`.
    pub pg: Option<PgCluster>,
    pub db: DatabaseConnection,
    pub db_url: String,
    pub api_url: String,
    pub http: reqwest::Client,
    pub options: Options,
    api: Option<Running>,
    worker: Option<Running>,
}

fn init_logs() {
    giftcard_shared::tls::install_crypto_provider();
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn,async_nats=error".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        init_logs();
        let pg = options.own_postgres.then(PgCluster::start);
        let admin_url = match &pg {
            Some(c) => c.url("postgres"),
            None => servers::shared_pg_admin_url(),
        };
        let name = format!("t_{}", Uuid::new_v4().simple());
        let admin = Database::connect(&admin_url)
            .await
            .expect("connect to the test cluster");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let db_url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("odd admin url"),
        };
        let db = Database::connect(&db_url)
            .await
            .expect("connect test database");
        <migration::Migrator as migration::MigratorTrait>::up(&db, None)
            .await
            .expect("migrations apply");
        let nats = NatsServer::start_with(options.nats.clone());
        let mut app = Self {
            db_name: name.clone(),
            nats,
            pg,
            db,
            db_url,
            api_url: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(128)
                .build()
                .expect("http client"),
            options: options.clone(),
            api: None,
            worker: None,
        };
        app.provision().await;
        app.start_api().await;
        if options.start_worker {
            app.start_worker().await;
        }
        app
    }

    /// The topology the provisioning step creates for this deployment.
    pub fn topology_options(&self) -> giftcard_shared::topology::TopologyOptions {
        let mut t = giftcard_shared::topology::TopologyOptions::new(self.options.partitions, 1);
        t.lease_ttl = self.worker_settings().lease_ttl;
        if let Some(window) = self.options.duplicate_window {
            t.duplicate_window = window;
        }
        // Small: JetStream reserves a stream's max bytes on the store
        // (test servers size theirs from the free disk).
        t.max_bytes = TEST_PURCHASES_MAX_BYTES;
        t
    }

    /// Runs the provisioning step (`giftcard-migrate nats`) as the
    /// giftcard-provisioner identity.
    pub async fn provision(&self) {
        self.nats.provision(&self.topology_options()).await;
    }

    /// Settings every service shares, connecting to NATS as `role`.
    pub fn common(&self, role: Role) -> CommonSettings {
        CommonSettings {
            database_url: DatabaseUrl::new(self.db_url.clone()),
            nats: self.nats.settings(role),
            partitions: self.options.partitions,
            db_max_connections: 10,
        }
    }

    pub fn message_keys() -> MessageKeys {
        MessageKeys::new(MESSAGE_SECRET, None)
    }

    pub fn api_settings(&self) -> ApiSettings {
        ApiSettings {
            common: self.common(Role::Api),
            keys: Self::message_keys(),
            jwt_secret: Some(Secret::new(SECRET)),
            jwt_previous_secret: None,
            listen: "127.0.0.1:0".parse().expect("addr"),
            metrics_listen: None,
            default_wait: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(5),
            // Off: tests drive many purchases per user; the limits have
            // tests of their own.
            user_rate_limit: 0,
            max_in_flight: 1024,
            max_waiting_purchases: 768,
            http_header_timeout: Duration::from_secs(30),
        }
    }

    pub fn worker_settings(&self) -> WorkerSettings {
        let mut s = WorkerSettings::with_defaults(self.common(Role::Worker), Self::message_keys());
        s.batch_size = self.options.batch_size;
        s.max_attempts = self.options.max_attempts;
        s.retry_base = self.options.retry_base;
        s.retry_max = Duration::from_secs(2);
        s.ack_wait = Duration::from_secs(5);
        s.lease_ttl = Duration::from_secs(3);
        s.lease_renew = Duration::from_millis(500);
        s
    }

    /// Adds the signature an api would put on a message to `subject` with
    /// these headers and payload (for tests that craft messages).
    pub fn sign(subject: &str, headers: &mut async_nats::HeaderMap, payload: &[u8]) {
        use giftcard_shared::signing::{MessageSigner, SignedParts, HEADER_SIGNATURE};
        let signer = MessageSigner::new(&Self::message_keys());
        let signature = signer.sign(&SignedParts::of_message(subject, Some(headers), payload));
        headers.insert(HEADER_SIGNATURE, signature.as_str());
    }

    /// A client of this deployment's NATS as the unrestricted test user.
    pub async fn nats_client(&self) -> async_nats::Client {
        self.nats.connect(Role::Test).await
    }

    pub async fn start_api(&mut self) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        self.api_url = format!("http://{}", listener.local_addr().expect("addr"));
        let settings = self.api_settings();
        let db = giftcard_shared::db::connect(&settings.common, true)
            .await
            .expect("db pool");
        let nats = self.nats.connect(Role::Api).await;
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(giftcard_api::run(
            settings,
            listener,
            db,
            nats,
            shutdown.clone(),
        ));
        self.api = Some(Running { shutdown, handle });
        self.wait_ready(&format!("{}/readyz", self.api_url)).await;
    }

    pub async fn start_worker(&mut self) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let settings = self.worker_settings();
        let db = giftcard_shared::db::connect(&settings.common, true)
            .await
            .expect("db pool");
        let nats = self.nats.connect(Role::Worker).await;
        let shutdown = CancellationToken::new();
        let ready = format!("http://{}/healthz", listener.local_addr().expect("addr"));
        let handle = tokio::spawn(giftcard_worker::run(
            settings,
            listener,
            db,
            nats,
            shutdown.clone(),
        ));
        self.worker = Some(Running { shutdown, handle });
        self.wait_ready(&ready).await;
    }

    pub async fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop().await;
        }
    }

    pub async fn stop(mut self) {
        self.stop_worker().await;
        if let Some(a) = self.api.take() {
            a.stop().await;
        }
    }

    async fn wait_ready(&self, url: &str) {
        for _ in 0..300 {
            if let Ok(r) = self.http.get(url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{url} did not become ready within 15 s");
    }

    /// Asserts that PostgreSQL logged no lock wait (over 5 ms) and no
    /// deadlock in this test's database (invariant 5).
    pub fn assert_no_lock_waits(&self) {
        match servers::lock_waits_in(&self.db_name, self.pg.as_ref()) {
            Some(waits) => assert!(
                waits.is_empty(),
                "lock waits on the purchase path:\n{}",
                waits.join("\n")
            ),
            None => eprintln!(
                "lock waits not checked: GIFTCARD_TEST_DATABASE_URL names an external cluster"
            ),
        }
    }

    pub fn token(&self, user: &str) -> String {
        giftcard_shared::auth::mint(SECRET, user, false, chrono::Duration::minutes(30))
            .expect("mint")
    }

    pub fn admin_token(&self) -> String {
        giftcard_shared::auth::mint(SECRET, "admin", true, chrono::Duration::minutes(30))
            .expect("mint")
    }

    /// Sends a request; returns status, headers and the JSON body (Null if none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        self.call_at(&self.api_url, method, path, token, body, headers)
            .await
    }

    /// [`TestApp::call`] against the api at `base` (another api process).
    pub async fn call_at(
        &self,
        base: &str,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = self.http.request(method, format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, json)
    }

    /// Creates a card and returns its id.
    pub async fn create_card(&self, price: &str) -> Uuid {
        let (s, _, b) = self
            .call(
                reqwest::Method::POST,
                "/v1/admin/gift-cards",
                Some(&self.admin_token()),
                Some(json!({"name": "Card", "price": price, "value": price})),
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["id"].as_str().expect("id").parse().expect("uuid")
    }

    /// Imports `codes` (never expiring) into `card`.
    pub async fn import_codes(&self, card: Uuid, codes: &[String]) {
        let rows: Vec<Value> = codes
            .iter()
            .map(|c| json!({"code": c, "expires_on": null}))
            .collect();
        let (s, _, b) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/admin/gift-cards/{card}/codes"),
                Some(&self.admin_token()),
                Some(json!({ "codes": rows })),
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    /// Imports one code expiring on `date` (YYYY-MM-DD) into `card`.
    pub async fn import_codes_expiring(&self, card: Uuid, code: &str, date: &str) {
        let (s, _, b) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/admin/gift-cards/{card}/codes"),
                Some(&self.admin_token()),
                Some(json!({"codes": [{"code": code, "expires_on": date}]})),
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["inserted"], 1, "{b}");
    }

    /// A card with `stock` fresh codes.
    pub async fn card_with_stock(&self, price: &str, stock: usize) -> Uuid {
        let card = self.create_card(price).await;
        let codes: Vec<String> = (0..stock)
            .map(|i| format!("C{i:05}-{}", Uuid::new_v4().simple()))
            .collect();
        if !codes.is_empty() {
            self.import_codes(card, &codes).await;
        }
        card
    }

    pub async fn credit(&self, user: &str, amount: &str) {
        let (s, _, b) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/admin/wallets/{user}/credits"),
                Some(&self.admin_token()),
                Some(json!({"amount": amount, "reference": Uuid::new_v4().to_string()})),
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    /// `POST /v1/purchases` as `user`.
    pub async fn buy(
        &self,
        user: &str,
        card: Uuid,
        quantity: u8,
        key: Option<&str>,
        prefer: &str,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut headers = vec![("Prefer", prefer)];
        if let Some(k) = key {
            headers.push(("Idempotency-Key", k));
        }
        self.call(
            reqwest::Method::POST,
            "/v1/purchases",
            Some(&self.token(user)),
            Some(json!({"gift_card_id": card, "quantity": quantity})),
            &headers,
        )
        .await
    }

    /// Waits (up to 30 s) until the api lists at least `n` pending dead
    /// letters; returns them.
    pub async fn dead_letters_at_least(&self, n: usize) -> Vec<Value> {
        for _ in 0..300 {
            let (s, _, b) = self
                .call(
                    reqwest::Method::GET,
                    "/v1/admin/dead-letters",
                    Some(&self.admin_token()),
                    None,
                    &[],
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            let items = b["items"].as_array().cloned().unwrap_or_default();
            if items.len() >= n {
                return items;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("fewer than {n} pending dead letters after 30 s");
    }

    /// Polls `GET /v1/purchases/{id}` until it is terminal.
    pub async fn wait_terminal(&self, user: &str, id: &str) -> Value {
        let token = self.token(user);
        for _ in 0..600 {
            let (s, _, b) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/purchases/{id}"),
                    Some(&token),
                    None,
                    &[],
                )
                .await;
            assert_eq!(s, StatusCode::OK, "GET purchase {id}: {b}");
            if b["status"] != "pending" {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("purchase {id} still pending after 30 s");
    }

    /// Messages in the purchase stream (accepted purchases, published).
    pub async fn nats_purchases(&self) -> u64 {
        let js = async_nats::jetstream::new(self.nats_client().await);
        match js
            .get_stream(giftcard_shared::contract::PURCHASES_STREAM)
            .await
        {
            Ok(mut s) => s.info().await.map_or(0, |i| i.state.messages),
            Err(_) => 0,
        }
    }

    /// Rows in `purchases` (each decided purchase once).
    pub async fn purchase_count(&self) -> i64 {
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT count(*) AS n FROM purchases".to_owned(),
            ))
            .await
            .expect("count purchases")
            .expect("one row");
        row.try_get::<i64>("", "n").expect("count")
    }

    pub async fn balance(&self, user: &str) -> String {
        let (s, _, b) = self
            .call(
                reqwest::Method::GET,
                "/v1/wallet",
                Some(&self.token(user)),
                None,
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["balance"].as_str().expect("balance").to_owned()
    }
}

/// Asserts the contract's error body and code; returns the message.
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) -> String {
    assert_eq!(status.as_u16(), want_status, "body: {body}");
    assert_eq!(body["error"]["code"], want_code, "body: {body}");
    let msg = body["error"]["message"]
        .as_str()
        .expect("error.message is a string");
    assert!(!msg.is_empty());
    msg.to_owned()
}
