//! The api's metrics: names, help lines and zero series, so that every
//! metric is on `/metrics` (with its `# HELP`) from the first scrape.
//! README.md's metrics table documents each one; a test keeps them equal.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub const PURCHASES: &str = "giftcard_api_purchases_total";
pub const PURCHASE_SECONDS: &str = "giftcard_api_purchase_seconds";
pub const ACCEPT_SECONDS: &str = "giftcard_api_accept_seconds";
pub const PUBLISH_SECONDS: &str = "giftcard_api_publish_seconds";
pub const DATABASE_UP: &str = "giftcard_api_database_up";
pub const SHUTDOWN_ANSWERED: &str = "giftcard_api_shutdown_answered_total";
pub const CODES_IMPORTED: &str = "giftcard_api_codes_imported_total";
pub const DLQ_REPLAYED: &str = "giftcard_api_dead_letters_replayed_total";
pub const DLQ_DISCARDED: &str = "giftcard_api_dead_letters_discarded_total";
pub const NATS_CONNECTED: &str = "giftcard_api_nats_connected";
pub const HTTP_REQUESTS: &str = "giftcard_api_http_requests_total";
pub const HTTP_SECONDS: &str = "giftcard_api_http_request_duration_seconds";
pub const RATE_LIMITED: &str = "giftcard_api_purchases_rate_limited_total";
pub const SHED: &str = "giftcard_api_requests_shed_total";
pub const NOT_HELD: &str = "giftcard_api_purchases_not_held_total";
pub const IN_FLIGHT: &str = "giftcard_api_requests_in_flight";
pub const WAITING: &str = "giftcard_api_purchases_waiting";

/// The answers counted by [`PURCHASES`].
pub const PURCHASE_STATUSES: [&str; 4] = ["201", "202", "404", "409"];

/// Describes every metric and creates its series at zero.
pub fn describe() {
    describe_counter!(
        PURCHASES,
        "Purchase requests answered, by HTTP status (201 succeeded, 202 pending, 404 unknown card, 409 business failure)"
    );
    describe_histogram!(
        PURCHASE_SECONDS,
        Unit::Seconds,
        "POST /v1/purchases from request to answer, including the wait for the outcome"
    );
    describe_histogram!(
        ACCEPT_SECONDS,
        Unit::Seconds,
        "Time to durably accept a purchase (publish and JetStream PubAck)"
    );
    describe_histogram!(
        PUBLISH_SECONDS,
        Unit::Seconds,
        "JetStream publish up to the PubAck, failed and timed-out ones included"
    );
    describe_gauge!(
        DATABASE_UP,
        "1 while PostgreSQL answers the api's probe (every second), else 0"
    );
    describe_counter!(
        SHUTDOWN_ANSWERED,
        "Waiting purchase requests answered 202 early because the api was shutting down"
    );
    describe_counter!(CODES_IMPORTED, "Activation codes inserted by imports");
    describe_counter!(DLQ_REPLAYED, "Dead letters replayed by an operator");
    describe_counter!(DLQ_DISCARDED, "Dead letters discarded by an operator");
    describe_gauge!(
        NATS_CONNECTED,
        "1 while the api is connected to NATS (checked every second), else 0"
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route template and status class (2xx, 4xx, 5xx, …)"
    );
    describe_histogram!(
        HTTP_SECONDS,
        Unit::Seconds,
        "HTTP request handling time, by method, route template and status class"
    );
    describe_counter!(
        RATE_LIMITED,
        "Purchases refused with 429 because their user exceeded GIFTCARD_USER_RATE_LIMIT"
    );
    describe_counter!(
        SHED,
        "Requests refused with 503 at once because GIFTCARD_MAX_IN_FLIGHT requests were in flight"
    );
    describe_counter!(
        NOT_HELD,
        "Purchases answered 202 as soon as queued because GIFTCARD_MAX_WAITING_PURCHASES were already waiting"
    );
    describe_gauge!(
        IN_FLIGHT,
        "Requests under /v1 being worked on (at the scrape)"
    );
    describe_gauge!(
        WAITING,
        "Purchase requests held open waiting for their outcome (at the scrape)"
    );
    giftcard_shared::telemetry::record_build_info("giftcard-api");

    for status in PURCHASE_STATUSES {
        metrics::counter!(PURCHASES, "status" => status).increment(0);
    }
    for h in [PURCHASE_SECONDS, ACCEPT_SECONDS, PUBLISH_SECONDS] {
        let _ = metrics::histogram!(h);
    }
    for c in [
        SHUTDOWN_ANSWERED,
        CODES_IMPORTED,
        DLQ_REPLAYED,
        DLQ_DISCARDED,
        RATE_LIMITED,
        SHED,
        NOT_HELD,
    ] {
        metrics::counter!(c).increment(0);
    }
    for g in [IN_FLIGHT, WAITING] {
        metrics::gauge!(g).set(0.0);
    }
}
