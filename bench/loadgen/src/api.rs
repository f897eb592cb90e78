//! The few contract endpoints the load generator uses, and the wire types it reads.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rust_decimal::Decimal;
use serde::Deserialize;
use uuid::Uuid;

use crate::Config;

/// A purchase resource (`POST /v1/purchases`, `GET /v1/purchases/{id}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Purchase {
    pub id: Uuid,
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub gift_card_id: Uuid,
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

/// Shared HTTP client with one pre-minted token per seed user.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Arc<str>,
    tokens: Arc<Vec<String>>,
}

impl Api {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(config.clients)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(config.wait_secs + 15))
            .build()
            .context("building the HTTP client")?;
        let tokens = config
            .seed
            .users
            .iter()
            .map(|u| {
                giftcard_shared::auth::mint(
                    &config.secret,
                    &u.id,
                    false,
                    chrono::Duration::hours(1),
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            http,
            base: config.api_url.trim_end_matches('/').into(),
            tokens: Arc::new(tokens),
        })
    }

    /// `POST /v1/purchases` for one unit, as seed user `user`.
    pub async fn post_purchase(
        &self,
        user: usize,
        card: Uuid,
        key: &str,
        wait_secs: u64,
    ) -> Result<Reply, reqwest::Error> {
        let resp = self
            .http
            .post(format!("{}/v1/purchases", self.base))
            .bearer_auth(&self.tokens[user])
            .header("Idempotency-Key", key)
            .header("Prefer", format!("wait={wait_secs}"))
            .json(&serde_json::json!({"gift_card_id": card, "quantity": 1}))
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok(Reply::parse(status, &resp.bytes().await?))
    }

    /// `GET /v1/purchases/{id}` as seed user `user`.
    pub async fn get_purchase(&self, user: usize, id: Uuid) -> Result<Reply, reqwest::Error> {
        let resp = self
            .http
            .get(format!("{}/v1/purchases/{id}", self.base))
            .bearer_auth(&self.tokens[user])
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok(Reply::parse(status, &resp.bytes().await?))
    }

    /// `GET /v1/wallet` balance of seed user `user`.
    pub async fn balance(&self, user: usize) -> anyhow::Result<Decimal> {
        let resp = self
            .http
            .get(format!("{}/v1/wallet", self.base))
            .bearer_auth(&self.tokens[user])
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        anyhow::ensure!(
            status.is_success(),
            "{}",
            Reply::parse(status.as_u16(), &body).describe("GET /v1/wallet")
        );
        Ok(serde_json::from_slice::<Wallet>(&body)
            .context("parsing the wallet")?
            .balance)
    }
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
