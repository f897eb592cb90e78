//! Where the bearer token comes from: `--as`/`--admin` mint one from
//! `GIFTCARD_JWT_SECRET`, otherwise `--token`/`GIFTCARD_TOKEN` is sent as is.
//! The secret is read from the environment only (never a flag, so it stays
//! out of shell history) and is never printed.

use chrono::{Duration, Utc};
use giftcard_shared::auth::mint;
use giftcard_shared::domain::UserId;
use serde_json::json;

use crate::error::{CtlError, Need};

pub const SECRET_VAR: &str = "GIFTCARD_JWT_SECRET";

/// Lifetime of the tokens minted for `--as`/`--admin`: one command's worth.
const SESSION_TTL_MINUTES: i64 = 15;

/// How the caller asked to authenticate.
pub struct Credentials {
    pub token: Option<String>,
    pub as_user: Option<String>,
    pub admin: bool,
}

impl Credentials {
    /// The token to send for a command that needs `need`.
    ///
    /// `--admin` and `--as` win over `--token`/`GIFTCARD_TOKEN`, so an
    /// exported token does not stop someone from acting as another user.
    /// Whether the token suits the command is the api's call (401/403, whose
    /// hints say what to pass instead).
    pub fn resolve(&self, need: Need, secret: Option<&str>) -> Result<String, CtlError> {
        if self.admin {
            return mint_with(
                secret,
                "admin",
                true,
                "--admin",
                Duration::minutes(SESSION_TTL_MINUTES),
            );
        }
        if let Some(user) = &self.as_user {
            return mint_with(
                secret,
                user,
                false,
                "--as",
                Duration::minutes(SESSION_TTL_MINUTES),
            );
        }
        match self.token.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => Ok(t.to_owned()),
            _ => Err(CtlError::MissingToken(need)),
        }
    }
}

/// Reads the secret from the environment; empty counts as unset.
pub fn secret_from_env() -> Option<String> {
    std::env::var(SECRET_VAR).ok().filter(|s| !s.is_empty())
}

fn mint_with(
    secret: Option<&str>,
    sub: &str,
    admin: bool,
    purpose: &'static str,
    ttl: Duration,
) -> Result<String, CtlError> {
    let secret = secret.ok_or(CtlError::MissingSecret { purpose })?;
    if secret.len() < 32 {
        return Err(CtlError::WeakSecret);
    }
    UserId::parse(sub).map_err(|e| CtlError::Usage(format!("subject {sub:?}: {e}")))?;
    mint(secret, sub, admin, ttl).map_err(CtlError::Mint)
}

/// `token --sub USER [--admin] [--ttl-hours H]`: prints a freshly minted JWT.
pub fn token_command(
    sub: Option<&str>,
    admin: bool,
    ttl_hours: u32,
    json_output: bool,
) -> Result<(), CtlError> {
    let sub = match (sub, admin) {
        (Some(s), _) => s,
        (None, true) => "admin",
        (None, false) => {
            return Err(CtlError::Usage(
                "token needs --sub USER (or --admin for an admin token with subject \"admin\")"
                    .to_owned(),
            ))
        }
    };
    let ttl = Duration::hours(i64::from(ttl_hours));
    let token = mint_with(
        secret_from_env().as_deref(),
        sub,
        admin,
        "the token command",
        ttl,
    )?;
    if json_output {
        let body = json!({
            "token": token,
            "sub": sub,
            "admin": admin,
            "expires_at": (Utc::now() + ttl).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        println!("{body}");
    } else {
        println!("{token}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn creds(token: Option<&str>, as_user: Option<&str>, admin: bool) -> Credentials {
        Credentials {
            token: token.map(str::to_owned),
            as_user: as_user.map(str::to_owned),
            admin,
        }
    }

    #[test]
    fn minting_flags_win_over_a_passed_token() {
        let t = creds(Some("given"), Some("alice"), false)
            .resolve(Need::User, Some(SECRET))
            .unwrap();
        let p = giftcard_shared::auth::verify(SECRET, &t).unwrap();
        assert_eq!(p.user.as_str(), "alice");
        assert!(!p.admin);
        let t = creds(Some("given"), None, true)
            .resolve(Need::Admin, Some(SECRET))
            .unwrap();
        let p = giftcard_shared::auth::verify(SECRET, &t).unwrap();
        assert_eq!(p.user.as_str(), "admin");
        assert!(p.admin);
    }

    #[test]
    fn missing_credentials_name_what_to_set_without_leaking_the_secret() {
        let e = creds(None, None, false)
            .resolve(Need::Admin, Some(SECRET))
            .unwrap_err();
        assert!(e.hint().contains("--admin") && e.hint().contains("GIFTCARD_TOKEN"));
        let e = creds(None, Some("bob"), false)
            .resolve(Need::User, None)
            .unwrap_err();
        assert!(e.to_string().contains(SECRET_VAR));
        let e = creds(None, None, true)
            .resolve(Need::Admin, Some("short"))
            .unwrap_err();
        assert!(!e.report().contains("tiny-s3cret") && !e.hint().contains("tiny-s3cret"));
        assert!(creds(Some("  "), None, false)
            .resolve(Need::User, None)
            .is_err());
        assert_eq!(
            creds(Some("tok"), None, false)
                .resolve(Need::User, None)
                .unwrap(),
            "tok"
        );
    }
}
