//! `buy`: POST /v1/purchases with `Prefer: wait=N` and an Idempotency-Key,
//! then, if the api answered 202, poll the purchase until it is terminal.

use std::time::Duration;

use giftcard_shared::domain::{IdempotencyKey, Quantity};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use tokio::time::{sleep, Instant};
use uuid::Uuid;

use super::purchases::print_purchase;
use super::Ctx;
use crate::cli::BuyArgs;
use crate::client::Reply;
use crate::error::CtlError;
use crate::model::Purchase;
use crate::output::print_raw;

pub const PREFER: HeaderName = HeaderName::from_static("prefer");
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

#[derive(Serialize)]
struct NewPurchase {
    gift_card_id: Uuid,
    quantity: Quantity,
}

/// The key to send: the caller's (validated), or a fresh UUID v4. The flag
/// says whether it was generated (and so must be shown to the user).
pub fn idempotency_key(given: Option<&str>) -> Result<(IdempotencyKey, bool), CtlError> {
    match given {
        Some(k) => IdempotencyKey::parse(k)
            .map(|k| (k, false))
            .map_err(|e| CtlError::Usage(format!("--idempotency-key: {e}"))),
        None => {
            let k = IdempotencyKey::parse(&Uuid::new_v4().to_string())
                .expect("a UUID is visible ASCII");
            Ok((k, true))
        }
    }
}

/// `Prefer: wait=<secs>` (RFC 7240) and `Idempotency-Key`.
pub fn purchase_headers(wait_secs: u8, key: &IdempotencyKey) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        PREFER,
        HeaderValue::from_str(&format!("wait={wait_secs}")).expect("ASCII"),
    );
    h.insert(
        IDEMPOTENCY_KEY,
        HeaderValue::from_str(key.as_str()).expect("an IdempotencyKey is visible ASCII"),
    );
    h
}

pub async fn run(ctx: &Ctx, args: BuyArgs) -> Result<(), CtlError> {
    let quantity = Quantity::parse(i64::from(args.quantity))
        .map_err(|e| CtlError::Usage(format!("--quantity: {e}")))?;
    let (key, generated) = idempotency_key(args.idempotency_key.as_deref())?;
    if generated {
        // Shown before sending: if anything goes wrong, retrying with this
        // key cannot buy twice.
        eprintln!(
            "idempotency key: {} (to retry safely: --idempotency-key {})",
            key.as_str(),
            key.as_str()
        );
    }
    let body = NewPurchase {
        gift_card_id: args.card,
        quantity,
    };
    let req = ctx
        .client
        .request(Method::POST, ctx.client.url(&["v1", "purchases"]))
        .headers(purchase_headers(args.wait, &key))
        .json(&body);
    let reply = ctx.client.send(req).await?;
    let purchase = decode_outcome(&reply)?;
    let (purchase, reply) = if purchase.is_terminal() || args.poll_timeout == 0 {
        (purchase, reply)
    } else {
        poll(ctx, purchase, reply, Duration::from_secs(args.poll_timeout)).await?
    };
    if ctx.json {
        print_raw(&reply);
    } else {
        print_purchase(&purchase);
    }
    outcome(purchase, args.poll_timeout)
}

/// 201/202 and the business failures 404/409 carry a purchase; anything
/// else (422, 503, ...) carries the api's error.
fn decode_outcome(reply: &Reply) -> Result<Purchase, CtlError> {
    let carries_purchase = reply.status.is_success()
        || matches!(reply.status, StatusCode::NOT_FOUND | StatusCode::CONFLICT);
    match reply.json::<Purchase>() {
        Ok(p) if carries_purchase => Ok(p),
        Err(e) if reply.status.is_success() => Err(e),
        _ => Err(reply.error()),
    }
}

/// Polls GET /v1/purchases/{id} with a spinner until the purchase is
/// terminal or `timeout` passes. Transient trouble (network, 5xx) is retried.
async fn poll(
    ctx: &Ctx,
    mut purchase: Purchase,
    mut reply: Reply,
    timeout: Duration,
) -> Result<(Purchase, Reply), CtlError> {
    let id = purchase.id;
    let spinner = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.set_message(format!("purchase {id} is pending"));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(200);
    let id_segment = id.to_string();
    while Instant::now() < deadline {
        sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
        interval = (interval * 3 / 2).min(Duration::from_secs(2));
        match ctx.client.get(&["v1", "purchases", &id_segment]).await {
            Ok(r) => {
                purchase = r.json()?;
                reply = r;
                if purchase.is_terminal() {
                    break;
                }
            }
            Err(e) if is_transient(&e) => {
                spinner.set_message(format!("purchase {id} is pending (retrying: {e})"))
            }
            Err(e) => {
                spinner.finish_and_clear();
                return Err(e);
            }
        }
    }
    spinner.finish_and_clear();
    Ok((purchase, reply))
}

fn is_transient(e: &CtlError) -> bool {
    match e {
        CtlError::Transport { .. } => true,
        CtlError::Api { status, .. } | CtlError::Unexpected { status, .. } => *status >= 500,
        _ => false,
    }
}

/// Succeeded is success; anything else is an error for the exit code.
fn outcome(p: Purchase, poll_timeout: u64) -> Result<(), CtlError> {
    match p.status.as_str() {
        "succeeded" => Ok(()),
        "pending" if poll_timeout == 0 => {
            eprintln!(
                "still pending; check it with `giftcardctl purchase show {}`",
                p.id
            );
            Ok(())
        }
        "pending" => Err(CtlError::StillPending {
            id: p.id,
            secs: poll_timeout,
        }),
        status => {
            let (code, message) = p
                .error_parts()
                .unwrap_or_else(|| (status.to_ascii_uppercase(), String::new()));
            Err(CtlError::PurchaseFailed {
                id: p.id,
                status: status.to_owned(),
                code,
                message,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefer_header_asks_for_the_given_wait() {
        let key = IdempotencyKey::parse("k-1").unwrap();
        for secs in [0u8, 5, 30] {
            let h = purchase_headers(secs, &key);
            assert_eq!(h.get("Prefer").unwrap(), format!("wait={secs}").as_str());
        }
    }

    #[test]
    fn the_idempotency_key_header_carries_the_key_unchanged() {
        let (key, generated) = idempotency_key(Some("order-42/retry")).unwrap();
        assert!(!generated);
        let h = purchase_headers(5, &key);
        assert_eq!(h.get("Idempotency-Key").unwrap(), "order-42/retry");
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn a_missing_key_is_generated_as_a_fresh_uuid_v4() {
        let (a, generated) = idempotency_key(None).unwrap();
        assert!(generated);
        let uuid = Uuid::parse_str(a.as_str()).unwrap();
        assert_eq!(uuid.get_version_num(), 4);
        assert_eq!(a.as_str(), uuid.hyphenated().to_string());
        let (b, _) = idempotency_key(None).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn an_invalid_key_is_refused_before_sending() {
        for bad in ["", "has space", "é", &"x".repeat(256)] {
            let e = idempotency_key(Some(bad)).unwrap_err();
            assert!(
                e.to_string().starts_with("--idempotency-key"),
                "{bad:?}: {e}"
            );
        }
    }

    fn reply(status: u16, text: &str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            request_id: None,
            location: None,
            text: text.to_owned(),
            what: "POST /v1/purchases".to_owned(),
        }
    }

    const FAILED: &str = r#"{"id":"6f1c0000-0000-4000-8000-000000000001","gift_card_id":"0b7e0000-0000-4000-8000-000000000002","quantity":1,"status":"failed","error":{"code":"INSUFFICIENT_FUNDS","message":"no"},"sequence":3}"#;

    #[test]
    fn business_failures_carry_a_purchase_and_other_errors_do_not() {
        let p = decode_outcome(&reply(409, FAILED)).unwrap();
        assert_eq!(p.error_parts().unwrap().0, "INSUFFICIENT_FUNDS");
        let e = outcome(p, 30).unwrap_err();
        assert!(e.to_string().contains("INSUFFICIENT_FUNDS"));
        let e = decode_outcome(&reply(
            422,
            r#"{"error":{"code":"IDEMPOTENCY_KEY_REUSED","message":"m"}}"#,
        ))
        .unwrap_err();
        assert!(matches!(e, CtlError::Api { status: 422, .. }));
        let e = decode_outcome(&reply(
            409,
            r#"{"error":{"code":"GIFT_CARD_INACTIVE","message":"m"}}"#,
        ))
        .unwrap_err();
        assert!(matches!(e, CtlError::Api { status: 409, .. }));
    }
}
