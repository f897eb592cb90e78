//! JWT (HS256) claims, minting and verification.

use chrono::{Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::domain::UserId;

/// The claims the api understands. `exp` is required.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: UserId,
    pub admin: bool,
    /// The token's `exp` (Unix seconds): the console's session ends then
    /// at the latest.
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the token has expired; request a new one")]
    Expired,
    #[error("the token is not a valid HS256 JWT signed with this service's secret")]
    Invalid,
    #[error("the token's subject is not a valid user id: {0}")]
    BadSubject(String),
}

/// Mints a token for `sub`, valid for `ttl`.
pub fn mint(secret: &str, sub: &str, admin: bool, ttl: Duration) -> anyhow::Result<String> {
    let claims = Claims {
        sub: sub.to_owned(),
        exp: (Utc::now() + ttl).timestamp(),
        role: admin.then(|| "admin".to_owned()),
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes())?,
    )?)
}

/// [`verify`] against each of `secrets` in turn (the current one first,
/// then the one being rotated out): the first whose signature matches
/// decides, so a token signed with either is accepted while both are
/// configured, and an expired one is reported as expired.
pub fn verify_any(secrets: &[&str], token: &str) -> Result<Principal, AuthError> {
    let mut outcome = Err(AuthError::Invalid);
    for secret in secrets {
        outcome = verify(secret, token);
        if !matches!(outcome, Err(AuthError::Invalid)) {
            break;
        }
    }
    outcome
}

/// Verifies signature, algorithm and expiry (no leeway), and parses the subject.
pub fn verify(secret: &str, token: &str) -> Result<Principal, AuthError> {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "sub"]);
    let key = DecodingKey::from_secret(secret.as_bytes()).map_err(|_| AuthError::Invalid)?;
    let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
        _ => AuthError::Invalid,
    })?;
    let user = UserId::parse(&data.claims.sub).map_err(|e| AuthError::BadSubject(e.0))?;
    Ok(Principal {
        user,
        admin: data.claims.role.as_deref() == Some("admin"),
        expires_at: data.claims.exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn during_a_rotation_tokens_of_either_secret_verify_and_others_do_not() {
        const OLD: &str = "fedcba9876543210fedcba9876543210";
        const OTHER: &str = "0000000000000000000000000000000000";
        let both = [SECRET, OLD];
        let new = mint(SECRET, "alice", false, Duration::minutes(5)).unwrap();
        let old = mint(OLD, "bob", true, Duration::minutes(5)).unwrap();
        assert_eq!(verify_any(&both, &new).unwrap().user.as_str(), "alice");
        let p = verify_any(&both, &old).unwrap();
        assert_eq!(p.user.as_str(), "bob");
        assert!(p.admin);
        let foreign = mint(OTHER, "eve", true, Duration::minutes(5)).unwrap();
        assert!(matches!(
            verify_any(&both, &foreign),
            Err(AuthError::Invalid)
        ));
        let expired_old = mint(OLD, "bob", false, Duration::minutes(-5)).unwrap();
        assert!(matches!(
            verify_any(&both, &expired_old),
            Err(AuthError::Expired)
        ));
        // Once the old secret is dropped, its tokens stop working.
        assert!(matches!(
            verify_any(&[SECRET], &old),
            Err(AuthError::Invalid)
        ));
    }

    #[test]
    fn minted_tokens_verify_and_expired_ones_do_not() {
        let t = mint(SECRET, "alice", true, Duration::minutes(5)).unwrap();
        let p = verify(SECRET, &t).unwrap();
        assert_eq!(p.user.as_str(), "alice");
        assert!(p.admin);
        let old = mint(SECRET, "alice", false, Duration::minutes(-5)).unwrap();
        assert!(matches!(verify(SECRET, &old), Err(AuthError::Expired)));
        assert!(matches!(
            verify("another-secret-another-secret-xx", &t),
            Err(AuthError::Invalid)
        ));
        assert!(matches!(verify(SECRET, "garbage"), Err(AuthError::Invalid)));
    }
}
