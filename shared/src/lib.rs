//! Everything the api, the worker and the operator CLI must agree on.
//!
//! - [`domain`]: parsed, validated value types (`Money`, `Quantity`,
//!   `IdempotencyKey`, `UserId`) and the purchase status/error vocabulary.
//! - [`contract`]: the versioned NATS contract: subjects, headers, the
//!   purchase message and the worker's reply.
//! - [`config`]: the one layered configuration (environment variables),
//!   validated at start, secrets redacted in `Debug`.
//! - [`auth`]: JWT claims, minting and verification.
//! - [`topology`]: idempotent creation and verification of the JetStream
//!   streams, consumers and KV buckets.
//! - [`entities`]: SeaORM entities for the PostgreSQL schema that
//!   `giftcard-migrations` creates.
//! - [`process`]: what every binary does around its `run(...)`.
//! - [`purchases`]: reading a stored purchase back as its client view.
//! - [`telemetry`]: tracing subscriber and Prometheus recorder set-up.

pub mod auth;
pub mod config;
pub mod contract;
pub mod db;
pub mod domain;
pub mod entities;
pub mod nats;
pub mod process;
pub mod purchases;
pub mod signing;
pub mod telemetry;
pub mod tls;
pub mod topology;
