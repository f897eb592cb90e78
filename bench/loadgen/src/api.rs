//! The few contract endpoints the load generator uses, over one keep-alive
//! HTTP/1.1 connection per client, and the wire types it reads.
//!
//! The load generator shares the machine with what it measures, so a
//! request costs it as little as it can: every client task owns its own
//! connection (hyper's connection-level client: no pool, no lock, no
//! per-request URL parsing), and everything that does not change between
//! requests is built once: the bearer token of each user, the body of each
//! card, the `Prefer` header. Only the `Idempotency-Key` is new per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rust_decimal::Decimal;
use serde::Deserialize;
use uuid::Uuid;

use crate::Config;

/// A purchase resource (`POST /v1/purchases`, `GET /v1/purchases/{id}`):
/// only the fields the checks read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Purchase {
    pub id: Uuid,
    #[serde(default = "one")]
    pub quantity: u32,
    /// `pending | succeeded | failed | dead_lettered`.
    pub status: String,
    #[serde(default)]
    pub unit_price: Option<Decimal>,
    #[serde(default)]
    pub total: Option<Decimal>,
    #[serde(default)]
    pub activation_codes: Option<Vec<String>>,
    #[serde(default)]
    pub error: Option<ApiError>,
    #[serde(default)]
    pub sequence: Option<u64>,
}

fn one() -> u32 {
    1
}

impl Purchase {
    pub fn is_pending(&self) -> bool {
        self.status == "pending"
    }

    /// The failure code of a terminal, unsuccessful purchase.
    pub fn failure_code(&self) -> Option<String> {
        match self.status.as_str() {
            "succeeded" | "pending" => None,
            other => Some(
                self.error
                    .as_ref()
                    .map_or_else(|| other.to_uppercase(), |e| e.code.clone()),
            ),
        }
    }
}

/// `{"code", "message"}` of the contract's error body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ApiError {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ApiError,
}

#[derive(Deserialize)]
struct Wallet {
    balance: Decimal,
}

/// A response, classified by body shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Purchase(u16, Purchase),
    Error(u16, ApiError),
    Other(u16, String),
}

impl Reply {
    pub fn parse(status: u16, body: &[u8]) -> Self {
        if let Ok(p) = serde_json::from_slice::<Purchase>(body) {
            return Self::Purchase(status, p);
        }
        if let Ok(e) = serde_json::from_slice::<ErrorBody>(body) {
            return Self::Error(status, e.error);
        }
        let text = String::from_utf8_lossy(body);
        Self::Other(status, text.chars().take(200).collect())
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::Purchase(s, _) | Self::Error(s, _) | Self::Other(s, _) => *s,
        }
    }

    /// One line for error samples.
    pub fn describe(&self, what: &str) -> String {
        match self {
            Self::Purchase(s, p) => format!("{what} {s}: purchase {} status {}", p.id, p.status),
            Self::Error(s, e) => format!("{what} {s} {}: {}", e.code, e.message),
            Self::Other(s, t) => format!("{what} {s}: {t}"),
        }
    }
}

/// A request that got no HTTP answer.
#[derive(Debug)]
pub struct Transport {
    /// The connection could not be made: the server never saw the request.
    pub connect: bool,
    pub message: String,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What every connection shares: the server and the pre-built headers and bodies.
struct Target {
    addr: SocketAddr,
    host: HeaderValue,
    /// `Bearer <jwt>` of each seed user.
    tokens: Vec<HeaderValue>,
    /// `{"gift_card_id": …, "quantity": 1}` of each seed card.
    bodies: Vec<Bytes>,
    prefer: HeaderValue,
    /// Longest a request may take before it counts as a transport error.
    timeout: Duration,
}

/// The server under test; [`Api::connect`] gives each client its own connection.
#[derive(Clone)]
pub struct Api(Arc<Target>);

impl Api {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let url = config.api_url.trim_end_matches('/');
        let authority = url
            .strip_prefix("http://")
            .with_context(|| format!("--api-url {url}: only http://host:port is supported"))?;
        let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .with_context(|| format!("{authority} resolves to no address"))?;
        let tokens = config
            .seed
            .users
            .iter()
            .map(|u| {
                let jwt = giftcard_shared::auth::mint(
                    &config.secret,
                    &u.id,
                    false,
                    chrono::Duration::hours(6),
                )?;
                Ok(HeaderValue::from_str(&format!("Bearer {jwt}"))?)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bodies = config
            .seed
            .cards
            .iter()
            .map(|c| Bytes::from(format!(r#"{{"gift_card_id":"{}","quantity":1}}"#, c.id)))
            .collect();
        Ok(Self(Arc::new(Target {
            addr,
            host: HeaderValue::from_str(authority)?,
            tokens,
            bodies,
            prefer: HeaderValue::from_str(&format!("wait={}", config.wait_secs))?,
            timeout: Duration::from_secs(config.wait_secs + 15),
        })))
    }

    /// A client's own connection, opened on first use and again after an error.
    pub fn connect(&self) -> Conn {
        Conn {
            api: self.clone(),
            sender: None,
        }
    }
}

/// One client's keep-alive HTTP/1.1 connection.
pub struct Conn {
    api: Api,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// `POST /v1/purchases` for one unit of seed card `card`, as seed user `user`.
    pub async fn post_purchase(
        &mut self,
        user: usize,
        card: usize,
        key: Uuid,
    ) -> Result<Reply, Transport> {
        let t = &self.api.0;
        let mut buf = Uuid::encode_buffer();
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/purchases")
            .header(HOST, t.host.clone())
            .header(AUTHORIZATION, t.tokens[user].clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                "idempotency-key",
                key.hyphenated().encode_lower(&mut buf) as &str,
            )
            .header("prefer", t.prefer.clone())
            .body(Full::new(t.bodies[card].clone()));
        let (status, body) = self.send(req).await?;
        Ok(Reply::parse(status, &body))
    }

    /// `GET /v1/purchases/{id}` as seed user `user`.
    pub async fn get_purchase(&mut self, user: usize, id: Uuid) -> Result<Reply, Transport> {
        let (status, body) = self.get(user, &format!("/v1/purchases/{id}")).await?;
        Ok(Reply::parse(status, &body))
    }

    /// `GET /v1/wallet` balance of seed user `user`.
    pub async fn balance(&mut self, user: usize) -> anyhow::Result<Decimal> {
        let (status, body) = self
            .get(user, "/v1/wallet")
            .await
            .map_err(|e| anyhow::anyhow!("GET /v1/wallet: {e}"))?;
        anyhow::ensure!(
            status == 200,
            "{}",
            Reply::parse(status, &body).describe("GET /v1/wallet")
        );
        Ok(serde_json::from_slice::<Wallet>(&body)
            .context("parsing the wallet")?
            .balance)
    }

    async fn get(&mut self, user: usize, path: &str) -> Result<(u16, Bytes), Transport> {
        let t = &self.api.0;
        let req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(HOST, t.host.clone())
            .header(AUTHORIZATION, t.tokens[user].clone())
            .body(Full::new(Bytes::new()));
        self.send(req).await
    }

    async fn send(
        &mut self,
        req: Result<Request<Full<Bytes>>, hyper::http::Error>,
    ) -> Result<(u16, Bytes), Transport> {
        let req = req.map_err(|e| Transport {
            connect: true,
            message: format!("building the request: {e}"),
        })?;
        let timeout = self.api.0.timeout;
        let sender = self.ready().await?;
        let exchange = async {
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        let result = tokio::time::timeout(timeout, exchange).await;
        match result {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(self.broken(format!("{e}: {}", source_chain(&e)))),
            Err(_) => Err(self.broken(format!("no answer within {timeout:?}"))),
        }
    }

    /// The connection, (re)opened if needed and ready for a request.
    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, Transport> {
        if let Some(s) = &mut self.sender {
            if s.ready().await.is_ok() {
                return Ok(self.sender.as_mut().expect("just checked"));
            }
            self.sender = None;
        }
        let connect = |message: String| Transport {
            connect: true,
            message,
        };
        let addr = self.api.0.addr;
        let stream =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| connect(format!("connecting to {addr}: timed out")))?
                .map_err(|e| connect(format!("connecting to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect(format!("HTTP handshake with {addr}: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(self.sender.insert(sender))
    }

    /// Drops a connection that failed mid-request; the error is ambiguous.
    fn broken(&mut self, message: String) -> Transport {
        self.sender = None;
        Transport {
            connect: false,
            message,
        }
    }
}

/// The error's sources, `: `-separated (hyper hides the cause otherwise).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        out.push(s.to_string());
        source = s.source();
    }
    out.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_bodies() {
        let p = br#"{"id":"6f1c0000-0000-4000-8000-000000000000","user_id":"u","gift_card_id":"0b7e0000-0000-4000-8000-000000000000",
            "quantity":1,"status":"failed","unit_price":null,"total":null,"activation_codes":null,
            "error":{"code":"INSUFFICIENT_FUNDS","message":"no"},"sequence":7,"created_at":"x","completed_at":null}"#;
        let Reply::Purchase(409, p) = Reply::parse(409, p) else {
            panic!("not a purchase")
        };
        assert_eq!(p.failure_code().as_deref(), Some("INSUFFICIENT_FUNDS"));
        assert_eq!(p.sequence, Some(7));
        let e = Reply::parse(
            503,
            br#"{"error":{"code":"SERVICE_UNAVAILABLE","message":"m"}}"#,
        );
        assert!(matches!(e, Reply::Error(503, ref e) if e.code == "SERVICE_UNAVAILABLE"));
        assert!(matches!(Reply::parse(500, b"boom"), Reply::Other(500, _)));
    }
}
