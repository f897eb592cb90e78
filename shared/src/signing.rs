//! Authentication of purchase messages.
//!
//! NATS permissions limit who may publish purchases, but a leaked credential
//! or a misconfigured server must not be enough to spend a wallet: the api
//! signs every purchase message with HMAC-SHA256 under
//! `GIFTCARD_MESSAGE_SECRET`, and the worker acts on no message whose
//! signature does not verify. The signature covers the subject, the payload
//! and every header the worker acts on ([`SignedParts`]), so a genuine
//! message re-published with another reply subject, request id or card
//! subject no longer verifies.
//!
//! The header value is `v1 <key id> <hex MAC>`; the key id (a fingerprint
//! of the secret) tells the verifier which secret signed, so a rotation
//! (`GIFTCARD_MESSAGE_PREVIOUS_SECRET`) costs no extra MAC.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::config::MessageKeys;
use crate::contract::{
    HEADER_DLQ_MSG_ID, HEADER_DLQ_SUBJECT, HEADER_REPLAY_OF, HEADER_REPLY_TO, HEADER_REQUEST_ID,
    HEADER_VERSION,
};

/// Header carrying the signature.
pub const HEADER_SIGNATURE: &str = "Giftcard-Signature";
/// Domain separation: what the MAC is of.
const CONTEXT: &[u8] = b"giftcard purchase message v1";

type HmacSha256 = Hmac<Sha256>;

/// Everything a signature covers, in this order.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignedParts<'a> {
    /// The card's subject (`purchases.<partition>.<card>`).
    pub subject: &'a str,
    /// `Nats-Msg-Id` (the purchase id, or a replay's id).
    pub msg_id: Option<&'a str>,
    /// `Giftcard-Reply-To`: where the worker sends the outcome.
    pub reply_to: Option<&'a str>,
    /// `Giftcard-Request-Id`: the HTTP request id, in the worker's logs.
    pub request_id: Option<&'a str>,
    /// `Giftcard-Replay-Of`: the dead letter a replay comes from.
    pub replay_of: Option<&'a str>,
    /// `Giftcard-Version`.
    pub version: Option<&'a str>,
    pub payload: &'a [u8],
}

impl<'a> SignedParts<'a> {
    /// The parts of a purchase message as it sits in the purchases stream.
    pub fn of_message(
        subject: &'a str,
        headers: Option<&'a async_nats::HeaderMap>,
        payload: &'a [u8],
    ) -> Self {
        let h = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        Self {
            subject,
            msg_id: h(async_nats::header::NATS_MESSAGE_ID.as_ref()),
            reply_to: h(HEADER_REPLY_TO),
            request_id: h(HEADER_REQUEST_ID),
            replay_of: h(HEADER_REPLAY_OF),
            version: h(HEADER_VERSION),
            payload,
        }
    }

    /// The parts of the original message inside a dead letter (the worker
    /// copies them into the dead letter's headers).
    pub fn of_dead_letter(headers: Option<&'a async_nats::HeaderMap>, payload: &'a [u8]) -> Self {
        let h = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        Self {
            subject: h(HEADER_DLQ_SUBJECT).unwrap_or(""),
            msg_id: h(HEADER_DLQ_MSG_ID),
            reply_to: h(HEADER_REPLY_TO),
            request_id: h(HEADER_REQUEST_ID),
            replay_of: h(HEADER_REPLAY_OF),
            version: h(HEADER_VERSION),
            payload,
        }
    }
}

/// The signature header of `headers`, if any.
pub fn signature_of(headers: Option<&async_nats::HeaderMap>) -> Option<&str> {
    headers
        .and_then(|h| h.get(HEADER_SIGNATURE))
        .map(|v| v.as_str())
}

/// One secret, ready to MAC.
#[derive(Clone)]
struct Key {
    id: String,
    mac: HmacSha256,
}

impl Key {
    fn new(secret: &str) -> Self {
        let fingerprint = Sha256::new()
            .chain_update(b"giftcard message key id\0")
            .chain_update(secret.as_bytes())
            .finalize();
        Self {
            id: hex::encode(&fingerprint[..4]),
            mac: HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length"),
        }
    }

    fn mac_of(&self, parts: &SignedParts<'_>) -> HmacSha256 {
        let mut mac = self.mac.clone();
        let field = |mac: &mut HmacSha256, bytes: Option<&[u8]>| match bytes {
            // Length-prefixed, so that no two part lists encode alike.
            Some(b) => {
                mac.update(&[1]);
                mac.update(&(b.len() as u64).to_be_bytes());
                mac.update(b);
            }
            None => mac.update(&[0]),
        };
        field(&mut mac, Some(CONTEXT));
        field(&mut mac, Some(parts.subject.as_bytes()));
        for h in [
            parts.msg_id,
            parts.reply_to,
            parts.request_id,
            parts.replay_of,
            parts.version,
        ] {
            field(&mut mac, h.map(str::as_bytes));
        }
        field(&mut mac, Some(parts.payload));
        mac
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

/// Which secret a verified signature was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    Current,
    /// The secret being rotated out.
    Previous,
}

/// Why a message is not authentic. The text goes into the dead letter's
/// reason, so it says what was wrong, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("unauthenticated: the message carries no {HEADER_SIGNATURE} header")]
    Missing,
    #[error("unauthenticated: the {HEADER_SIGNATURE} header is malformed")]
    Malformed,
    #[error(
        "unauthenticated: signed with an unknown key {0} (not GIFTCARD_MESSAGE_SECRET nor \
         GIFTCARD_MESSAGE_PREVIOUS_SECRET)"
    )]
    UnknownKey(String),
    #[error("unauthenticated: the signature does not match the message (altered or forged)")]
    Mismatch,
}

/// Signs and verifies purchase messages.
#[derive(Debug, Clone)]
pub struct MessageSigner {
    current: Key,
    previous: Option<Key>,
}

impl MessageSigner {
    /// From validated keys (the current secret is required).
    pub fn new(keys: &MessageKeys) -> Self {
        let current = keys
            .message_secret
            .as_ref()
            .expect("validated message keys have a current secret");
        Self {
            current: Key::new(current.expose()),
            previous: keys
                .message_previous_secret
                .as_ref()
                .map(|s| Key::new(s.expose())),
        }
    }

    /// The [`HEADER_SIGNATURE`] value for `parts`, with the current secret.
    pub fn sign(&self, parts: &SignedParts<'_>) -> String {
        let tag = self.current.mac_of(parts).finalize().into_bytes();
        format!("v1 {} {}", self.current.id, hex::encode(tag))
    }

    /// Checks `header` (the [`HEADER_SIGNATURE`] value, if any) against
    /// `parts`, in constant time.
    pub fn verify(
        &self,
        header: Option<&str>,
        parts: &SignedParts<'_>,
    ) -> Result<Signer, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let mut fields = header.split(' ');
        let (Some("v1"), Some(id), Some(tag), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(SignatureError::Malformed);
        };
        let tag = hex::decode(tag).map_err(|_| SignatureError::Malformed)?;
        let (key, signer) = if id == self.current.id {
            (&self.current, Signer::Current)
        } else {
            match &self.previous {
                Some(p) if id == p.id => (p, Signer::Previous),
                _ => return Err(SignatureError::UnknownKey(id.to_owned())),
            }
        };
        key.mac_of(parts)
            .verify_slice(&tag)
            .map(|()| signer)
            .map_err(|_| SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn parts(payload: &[u8]) -> SignedParts<'_> {
        SignedParts {
            subject: "purchases.3.0b7e2f4c-8a7d-4d9e-9f00-112233445566",
            msg_id: Some("6f1c"),
            reply_to: Some("giftcard.reply.abc.6f1c"),
            request_id: Some("req-1"),
            replay_of: None,
            version: Some("1"),
            payload,
        }
    }

    #[test]
    fn a_signed_message_verifies_and_any_change_breaks_it() {
        let s = MessageSigner::new(&MessageKeys::new(A, None));
        let p = parts(b"{\"v\":1}");
        let sig = s.sign(&p);
        assert_eq!(s.verify(Some(&sig), &p), Ok(Signer::Current));
        let changed = [
            SignedParts {
                reply_to: Some("_INBOX.forger"),
                ..p
            },
            SignedParts {
                request_id: None,
                ..p
            },
            SignedParts {
                subject: "purchases.4.0b7e2f4c-8a7d-4d9e-9f00-112233445566",
                ..p
            },
            SignedParts {
                msg_id: Some("6f1d"),
                ..p
            },
            SignedParts {
                replay_of: Some("x"),
                ..p
            },
            SignedParts {
                payload: b"{\"v\":2}",
                ..p
            },
        ];
        for c in changed {
            assert_eq!(
                s.verify(Some(&sig), &c),
                Err(SignatureError::Mismatch),
                "{c:?}"
            );
        }
    }

    #[test]
    fn empty_and_absent_headers_sign_differently() {
        let s = MessageSigner::new(&MessageKeys::new(A, None));
        let p = parts(b"x");
        let empty = SignedParts {
            request_id: Some(""),
            ..p
        };
        let absent = SignedParts {
            request_id: None,
            ..p
        };
        assert_ne!(s.sign(&empty), s.sign(&absent));
    }

    #[test]
    fn during_a_rotation_both_secrets_verify_and_others_do_not() {
        let old = MessageSigner::new(&MessageKeys::new(A, None));
        let rotating = MessageSigner::new(&MessageKeys::new(B, Some(A)));
        let new_only = MessageSigner::new(&MessageKeys::new(B, None));
        let p = parts(b"{}");
        let by_old = old.sign(&p);
        assert_eq!(rotating.verify(Some(&by_old), &p), Ok(Signer::Previous));
        assert_eq!(
            rotating.verify(Some(&rotating.sign(&p)), &p),
            Ok(Signer::Current)
        );
        assert!(matches!(
            new_only.verify(Some(&by_old), &p),
            Err(SignatureError::UnknownKey(_))
        ));
    }

    #[test]
    fn missing_and_malformed_signatures_are_refused() {
        let s = MessageSigner::new(&MessageKeys::new(A, None));
        let p = parts(b"{}");
        assert_eq!(s.verify(None, &p), Err(SignatureError::Missing));
        for bad in ["", "v1", "v2 x y", "v1 a b c", "v1 abcd zz"] {
            assert!(
                matches!(
                    s.verify(Some(bad), &p),
                    Err(SignatureError::Malformed | SignatureError::UnknownKey(_))
                ),
                "{bad}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever arrives on the queue (payload, signature header),
        /// decoding it and checking its signature never panics, and no
        /// made-up signature verifies.
        #[test]
        fn arbitrary_messages_are_decoded_or_refused_and_never_verify(
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            header in "v1 [0-9a-f]{0,16} [0-9a-f]{0,80}|\\PC{0,120}",
        ) {
            let s = MessageSigner::new(&MessageKeys::new(A, None));
            let _ = serde_json::from_slice::<crate::contract::PurchaseMessage>(&payload);
            let _ = serde_json::from_slice::<crate::contract::PurchaseReply>(&payload);
            proptest::prop_assert!(s.verify(Some(&header), &parts(&payload)).is_err());
        }
    }
}
