//! Parsed value types: once constructed, a value is valid ("parse, don't
//! validate"). Each constructor returns a [`DomainError`] whose message is
//! fit to show to the client that sent the bad value.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A value that failed validation; the message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DomainError(pub String);

fn invalid(msg: impl Into<String>) -> DomainError {
    DomainError(msg.into())
}

/// A strictly positive amount of money with at most two decimal places,
/// carried on the wire as a JSON string (`"10.00"`), never a float.
///
/// Parsing is exact: the text must be plain digits with at most two
/// decimals (`"10"`, `"10.5"`, `"10.50"`); anything else, including a third
/// decimal that is zero (`"1.000"`) or digits past what `Decimal` holds, is
/// refused, never rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(Decimal);

/// The largest amount accepted anywhere (a price, a credit: well inside
/// `NUMERIC(14,2)`, even times the largest quantity).
const MONEY_MAX: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);

/// The largest value a `NUMERIC(14,2)` column (a balance, a total) holds.
pub const NUMERIC_14_2_MAX: Decimal = Decimal::from_parts(276_447_231, 23_283, 0, false, 2);

impl Money {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (s.contains('.') && !digits(fraction)) {
            return Err(invalid(format!(
                "amount {s:?} must be a plain decimal string such as \"10.00\""
            )));
        }
        if fraction.len() > 2 {
            return Err(invalid(format!(
                "amount {s:?} must have at most 2 decimal places"
            )));
        }
        if whole.trim_start_matches('0').len() > 9 {
            return Err(invalid(format!("amount {s:?} must be below 1000000000")));
        }
        let d = Decimal::from_str(s).map_err(|_| {
            invalid(format!(
                "amount {s:?} must be a decimal string such as \"10.00\""
            ))
        })?;
        Self::from_decimal(d).map_err(|e| invalid(format!("amount {s:?}: {e}")))
    }

    pub fn from_decimal(d: Decimal) -> Result<Self, DomainError> {
        if d.is_sign_negative() || d.is_zero() {
            return Err(invalid("must be greater than zero"));
        }
        if d.normalize().scale() > 2 {
            return Err(invalid("must have at most 2 decimal places"));
        }
        if d >= MONEY_MAX {
            return Err(invalid("must be below 1000000000"));
        }
        let mut d = d;
        d.rescale(2);
        Ok(Self(d))
    }

    pub fn amount(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Money::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Formats a stored decimal as money on the wire (two places).
pub fn money_string(d: Decimal) -> String {
    let mut d = d;
    d.rescale(2);
    d.to_string()
}

/// How many codes one purchase buys: 1..=10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quantity(u8);

impl Quantity {
    pub const MAX: u8 = 10;

    pub fn parse(n: i64) -> Result<Self, DomainError> {
        if (1..=i64::from(Self::MAX)).contains(&n) {
            Ok(Self(n as u8))
        } else {
            Err(invalid(format!(
                "quantity must be between 1 and {}, got {n}",
                Self::MAX
            )))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Quantity {
    fn default() -> Self {
        Self(1)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        Quantity::parse(n).map_err(serde::de::Error::custom)
    }
}

/// A client-chosen idempotency key: 1..=255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        if s.is_empty() || s.len() > 255 {
            return Err(invalid(
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            ));
        }
        if !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(invalid(
                "Idempotency-Key must contain only visible ASCII characters (no spaces)",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for IdempotencyKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IdempotencyKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A user id: the JWT `sub`, 1..=128 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct UserId(String);

impl UserId {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let n = s.chars().count();
        if n == 0 || n > 128 {
            return Err(invalid("user id must be 1 to 128 characters"));
        }
        if s.chars().any(char::is_control) {
            return Err(invalid("user id must not contain control characters"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UserId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Namespace of the deterministic purchase ids derived from idempotency keys.
const PURCHASE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c2e_9b8d_4e57_a0c4_1d2b_3f4e_5a6b);

/// The purchase id for a request: deterministic for (user, idempotency key),
/// so that every retry of one key names the same purchase (and the same
/// `Nats-Msg-Id`); random without a key.
pub fn purchase_id_for(user: &UserId, key: Option<&IdempotencyKey>) -> Uuid {
    match key {
        Some(k) => {
            let name = format!("{}:{}\n{}", user.as_str().len(), user.as_str(), k.as_str());
            Uuid::new_v5(&PURCHASE_ID_NAMESPACE, name.as_bytes())
        }
        None => Uuid::new_v4(),
    }
}

/// A fingerprint of what a purchase request asks for, used to tell a retry
/// (same key, same body) from a reuse of the key for another body.
pub fn request_hash(gift_card_id: Uuid, quantity: Quantity) -> String {
    let mut h = Sha256::new();
    h.update(gift_card_id.as_bytes());
    h.update([quantity.get()]);
    hex::encode(&h.finalize()[..16])
}

/// Lifecycle of a purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PurchaseStatus {
    Pending,
    Succeeded,
    Failed,
    DeadLettered,
}

impl PurchaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::DeadLettered => "dead_lettered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "dead_lettered" => Self::DeadLettered,
            _ => return None,
        })
    }
}

/// Business outcomes a purchase can fail with (terminal results, never
/// dead letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureCode {
    GiftCardNotFound,
    GiftCardInactive,
    ActivationCodesNotAvailable,
    InsufficientFunds,
    Discarded,
}

impl FailureCode {
    pub const ALL: [Self; 5] = [
        Self::GiftCardNotFound,
        Self::GiftCardInactive,
        Self::ActivationCodesNotAvailable,
        Self::InsufficientFunds,
        Self::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GiftCardNotFound => "GIFT_CARD_NOT_FOUND",
            Self::GiftCardInactive => "GIFT_CARD_INACTIVE",
            Self::ActivationCodesNotAvailable => "ACTIVATION_CODES_NOT_AVAILABLE",
            Self::InsufficientFunds => "INSUFFICIENT_FUNDS",
            Self::Discarded => "DISCARDED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "GIFT_CARD_NOT_FOUND" => Self::GiftCardNotFound,
            "GIFT_CARD_INACTIVE" => Self::GiftCardInactive,
            "ACTIVATION_CODES_NOT_AVAILABLE" => Self::ActivationCodesNotAvailable,
            "INSUFFICIENT_FUNDS" => Self::InsufficientFunds,
            "DISCARDED" => Self::Discarded,
            _ => return None,
        })
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::GiftCardNotFound => "The gift card does not exist.",
            Self::GiftCardInactive => "The gift card is not on sale at the moment.",
            Self::ActivationCodesNotAvailable => {
                "No activation codes are currently available for this gift card."
            }
            Self::InsufficientFunds => "The wallet balance does not cover the purchase.",
            Self::Discarded => "An operator discarded this purchase after it was dead-lettered.",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_accepts_two_places_and_rejects_the_rest() {
        assert_eq!(Money::parse("10").unwrap().to_string(), "10.00");
        assert_eq!(Money::parse("0.01").unwrap().to_string(), "0.01");
        assert_eq!(Money::parse("1.50").unwrap().to_string(), "1.50");
        for bad in [
            "0",
            "-1.00",
            "1.001",
            "",
            " 1",
            "1e3",
            "abc",
            "0.00",
            "NaN",
            "1.000",
            "+1.00",
            "1.",
            ".5",
            "1..0",
            "0.0100000000000000000000000000001",
            "1000000000",
            "99999999999999999999999999999999",
        ] {
            assert!(Money::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            Money::parse("999999999.99").unwrap().to_string(),
            "999999999.99"
        );
        assert_eq!(Money::parse("007.5").unwrap().to_string(), "7.50");
        assert_eq!(NUMERIC_14_2_MAX.to_string(), "999999999999.99");
    }

    proptest::proptest! {
        /// Whatever the text, parsing never panics, and what it accepts
        /// prints back as the same amount with exactly two places: nothing
        /// is rounded.
        #[test]
        fn money_parse_is_exact_or_refuses(s in "\\PC{0,40}|[0-9]{0,12}(\\.[0-9]{0,4})?") {
            if let Ok(m) = Money::parse(&s) {
                let shown = m.to_string();
                let (whole, fraction) = s.split_once('.').unwrap_or((&s, ""));
                let want = format!("{}.{fraction:0<2}", whole.trim_start_matches('0'));
                proptest::prop_assert_eq!(shown.trim_start_matches('0'), want.as_str());
                proptest::prop_assert!(m.amount() > Decimal::ZERO && m.amount() < MONEY_MAX);
            }
        }
    }

    #[test]
    fn money_rejects_json_numbers() {
        assert!(serde_json::from_str::<Money>("10.5").is_err());
        assert_eq!(
            serde_json::from_str::<Money>("\"10.5\"")
                .unwrap()
                .to_string(),
            "10.50"
        );
    }

    #[test]
    fn quantity_bounds() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(11).is_err());
        assert_eq!(Quantity::parse(10).unwrap().get(), 10);
    }

    #[test]
    fn idempotency_key_is_visible_ascii() {
        assert!(IdempotencyKey::parse("abc-123").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"x".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("é").is_err());
    }

    #[test]
    fn purchase_ids_are_deterministic_per_user_and_key() {
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let k = IdempotencyKey::parse("k1").unwrap();
        assert_eq!(
            purchase_id_for(&alice, Some(&k)),
            purchase_id_for(&alice, Some(&k))
        );
        assert_ne!(
            purchase_id_for(&alice, Some(&k)),
            purchase_id_for(&bob, Some(&k))
        );
        assert_ne!(purchase_id_for(&alice, None), purchase_id_for(&alice, None));
    }
}
