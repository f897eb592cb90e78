//! The nemesis's record of what happened: every client operation (its
//! request, when it was invoked and completed, what came back) and every
//! fault (what, when, until when). The checker reads it; a failure prints
//! the part of it that shows the anomaly.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

/// What a client did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// A new purchase, waiting for its outcome (`Prefer: wait`).
    BuySync,
    /// A new purchase, not waiting (`Prefer: respond-async`).
    BuyAsync,
    /// An earlier purchase sent again: same key, same body.
    Resend,
    /// An earlier key sent with another quantity of the same card.
    ReuseOtherBody,
    /// An earlier key sent for another card.
    ReuseOtherCard,
    /// `GET /v1/purchases/{id}`.
    Poll,
    /// A wallet credit (sometimes a reference sent before).
    Credit,
    /// A code import.
    Import,
    /// A code withdrawal.
    Withdraw,
    /// A price change.
    Reprice,
}

impl OpKind {
    pub fn is_purchase(self) -> bool {
        matches!(
            self,
            Self::BuySync
                | Self::BuyAsync
                | Self::Resend
                | Self::ReuseOtherBody
                | Self::ReuseOtherCard
        )
    }
}

/// One client operation.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub kind: OpKind,
    /// Since the start of the run.
    pub invoked: Duration,
    pub completed: Duration,
    pub user: String,
    pub card: Option<Uuid>,
    /// The idempotency key (purchases), reference (credits) or code
    /// (withdrawals).
    pub key: Option<String>,
    pub quantity: u8,
    /// The purchase id the request maps to (purchases, polls).
    pub purchase: Option<Uuid>,
    /// Amount (credits) or price (reprices).
    pub amount: Option<String>,
    /// Which api answered (0 or 1).
    pub api: usize,
    /// HTTP status; 0 when no answer came (connection refused or cut,
    /// timeout).
    pub status: u16,
    pub body: Value,
}

impl Op {
    /// Whether the request may or may not have taken effect.
    pub fn ambiguous(&self) -> bool {
        self.status == 0 || self.status >= 500
    }
}

/// What the nemesis did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    KillWorker,
    FreezeWorker,
    KillApi,
    StopPostgres,
    KillPostgres,
    KillNatsNode,
    KillNatsStreamLeader,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    /// Which process or node.
    pub target: String,
    pub started: Duration,
    /// When it was healed (None: until the end of the run).
    pub healed: Option<Duration>,
}

/// The shared record, appended to by every client and the nemesis.
#[derive(Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
    faults: Arc<Mutex<Vec<Fault>>>,
}

impl History {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            ops: Arc::default(),
            faults: Arc::default(),
        }
    }

    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().expect("history lock").push(op);
    }

    /// Records a fault that started now; returns its index for [`History::healed`].
    pub fn fault(&self, kind: FaultKind, target: impl Into<String>) -> usize {
        let mut faults = self.faults.lock().expect("history lock");
        faults.push(Fault {
            kind,
            target: target.into(),
            started: self.now(),
            healed: None,
        });
        faults.len() - 1
    }

    pub fn healed(&self, index: usize) {
        let now = self.now();
        if let Some(f) = self.faults.lock().expect("history lock").get_mut(index) {
            f.healed = Some(now);
        }
    }

    pub fn ops(&self) -> Vec<Op> {
        let mut ops = self.ops.lock().expect("history lock").clone();
        ops.sort_by_key(|o| o.invoked);
        ops
    }

    pub fn faults(&self) -> Vec<Fault> {
        self.faults.lock().expect("history lock").clone()
    }
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts by kind, for the report.
pub fn tally<K: Ord + fmt::Debug>(kinds: impl Iterator<Item = K>) -> String {
    let mut counts: BTreeMap<K, usize> = BTreeMap::new();
    for k in kinds {
        *counts.entry(k).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k:?} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn secs(d: Duration) -> String {
    format!("{:8.3}s", d.as_secs_f64())
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |v: &Value| {
            // The outcome, without activation codes' noise.
            let mut s = match v {
                Value::Object(o) if o.contains_key("status") => format!(
                    "{} {} {}{}",
                    o.get("status").and_then(Value::as_str).unwrap_or(""),
                    o.get("total").and_then(Value::as_str).unwrap_or(""),
                    o.get("error")
                        .and_then(|e| e.get("code"))
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                    o.get("activation_codes")
                        .and_then(Value::as_array)
                        .map(|c| format!(
                            " codes={}",
                            c.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join("|")
                        ))
                        .unwrap_or_default(),
                ),
                Value::Object(o) if o.contains_key("error") => {
                    o["error"]["code"].as_str().unwrap_or("error").to_owned()
                }
                Value::Null => String::new(),
                other => other.to_string(),
            };
            s.truncate(160);
            s
        };
        write!(
            f,
            "{} .. {} client {:>2} api {} {:?} user={} card={} key={} q={} purchase={} amount={} -> {} {}",
            secs(self.invoked),
            secs(self.completed),
            self.client,
            self.api,
            self.kind,
            self.user,
            self.card.map(|c| c.to_string()[..8].to_owned()).unwrap_or_default(),
            self.key.as_deref().unwrap_or(""),
            self.quantity,
            self.purchase.map(|p| p.to_string()[..8].to_owned()).unwrap_or_default(),
            self.amount.as_deref().unwrap_or(""),
            self.status,
            short(&self.body)
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} .. {} FAULT {:?} {}",
            secs(self.started),
            self.healed.map(secs).unwrap_or_else(|| "     end".into()),
            self.kind,
            self.target
        )
    }
}
