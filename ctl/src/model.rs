//! The api's resources as the CLI reads them. Money and timestamps stay the
//! strings the api sent (never floats); unknown fields are ignored so that a
//! newer api does not break an older CLI.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Deserialize)]
pub struct Items<T> {
    pub items: Vec<T>,
}

#[derive(Debug, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct GiftCard {
    pub id: Uuid,
    pub name: String,
    pub price: String,
    pub value: String,
    pub active: bool,
    #[serde(default)]
    pub available_codes: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct Purchase {
    pub id: Uuid,
    #[serde(default)]
    pub user_id: Option<String>,
    pub gift_card_id: Uuid,
    pub quantity: u32,
    pub status: String,
    #[serde(default)]
    pub unit_price: Option<String>,
    #[serde(default)]
    pub total: Option<String>,
    #[serde(default)]
    pub activation_codes: Option<Vec<String>>,
    #[serde(default)]
    pub error: Option<Value>,
    #[serde(default)]
    pub sequence: Option<i64>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
}

impl Purchase {
    pub fn is_terminal(&self) -> bool {
        self.status != "pending"
    }

    /// The failure's code and message, whether the api sends `error` as
    /// `{"code", "message"}` or as a plain string.
    pub fn error_parts(&self) -> Option<(String, String)> {
        match self.error.as_ref()? {
            Value::Null => None,
            Value::String(s) => Some((s.clone(), String::new())),
            Value::Object(o) => {
                let field = |k: &str| {
                    o.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                Some((field("code"), field("message")))
            }
            other => Some((other.to_string(), String::new())),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Wallet {
    pub user_id: String,
    pub balance: String,
}

/// A dead letter as listed (`GET /v1/admin/dead-letters`), and each entry
/// of a dead letter's history.
#[derive(Debug, Deserialize)]
pub struct DeadLetter {
    pub id: Uuid,
    #[serde(default)]
    pub purchase_id: Option<Uuid>,
    #[serde(default)]
    pub gift_card_id: Option<Uuid>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub attempts: Option<i64>,
    #[serde(default)]
    pub original_subject: Option<String>,
    #[serde(default)]
    pub original_sequence: Option<i64>,
    /// `pending`, `replayed` or `discarded`.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub dead_lettered_at: Option<String>,
}

/// `GET /v1/admin/dead-letters/{id}`: a dead letter with its message,
/// headers, history and events.
#[derive(Debug, Deserialize)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    pub dead_letter: DeadLetter,
    #[serde(default)]
    pub resolved_at: Option<String>,
    #[serde(default)]
    pub resolved_by: Option<String>,
    #[serde(default)]
    pub replayed_from: Option<Uuid>,
    /// The message as dead-lettered: JSON, a string when it was not JSON,
    /// or null when the api could not read it from the stream.
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Every dead-lettering of the same purchase, oldest first.
    #[serde(default)]
    pub history: Vec<DeadLetter>,
    #[serde(default)]
    pub events: Vec<DeadLetterEvent>,
}

#[derive(Debug, Deserialize)]
pub struct DeadLetterEvent {
    pub dead_letter_id: Uuid,
    /// `dead_lettered`, `replayed` or `discarded`.
    pub action: String,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub outcome: String,
    #[serde(default)]
    pub at: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ImportResult {
    pub inserted: u64,
    pub duplicates: u64,
}

#[derive(Debug, Deserialize)]
pub struct Replayed {
    pub replayed: u64,
}

#[derive(Debug, Deserialize)]
pub struct Readiness {
    #[serde(default)]
    pub status: Option<String>,
}

/// `GET /v1/admin/partitions`: ownership and backlog of every partition.
#[derive(Debug, Deserialize)]
pub struct PartitionsReport {
    pub partitions: Vec<PartitionStatus>,
    #[serde(default)]
    pub workers: Vec<WorkerStatus>,
    #[serde(default)]
    pub dead_letter_backlog: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct PartitionStatus {
    pub partition: u32,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub token: Option<i64>,
    #[serde(default)]
    pub acquired_at: Option<String>,
    /// Null while the partition's consumer does not exist.
    #[serde(default)]
    pub pending: Option<u64>,
    #[serde(default)]
    pub ack_pending: Option<u64>,
    #[serde(default)]
    pub redelivered: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct WorkerStatus {
    pub id: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub ops_addr: Option<String>,
    #[serde(default)]
    pub partitions_owned: Option<u64>,
    /// Leases naming this worker when the api looked.
    #[serde(default)]
    pub leases_held: Option<u64>,
}
