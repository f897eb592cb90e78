//! Connecting to NATS as one of the service identities: credentials, TLS
//! and an inbox prefix of the identity's own (its NATS permissions allow it
//! to subscribe to nothing else, see `deploy/nats/permissions.conf`).

use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions};

use crate::config::NatsSettings;

/// Who connects: the identity's name (client name in NATS monitoring) and
/// its inbox prefix.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    pub name: &'static str,
    pub inbox_prefix: &'static str,
}

pub const API: Identity = Identity {
    name: "giftcard-api",
    inbox_prefix: "_INBOX_giftcard_api",
};
pub const WORKER: Identity = Identity {
    name: "giftcard-worker",
    inbox_prefix: "_INBOX_giftcard_worker",
};
pub const PROVISIONER: Identity = Identity {
    name: "giftcard-provisioner",
    inbox_prefix: "_INBOX_giftcard_provisioner",
};

/// Why a connection could not be made, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "NATS at {url} refused the credentials of {identity} ({detail}); check NATS_USER and \
         NATS_PASSWORD, NATS_TOKEN, NATS_CREDS_FILE or NATS_NKEY_SEED_FILE against the server's \
         accounts (deploy/nats/accounts.conf)"
    )]
    Refused {
        url: String,
        identity: &'static str,
        detail: String,
    },
    #[error(
        "TLS with NATS at {url} failed ({detail}); check NATS_TLS_CA_FILE (the CA that signed \
         the server's certificate), NATS_TLS_CERT_FILE/NATS_TLS_KEY_FILE, and that the URL \
         names the host in the certificate"
    )]
    Tls { url: String, detail: String },
    #[error("cannot read {var} ({detail}): fix the path or unset it")]
    File { var: &'static str, detail: String },
    #[error(
        "cannot reach NATS at {url} ({detail}); start it (./scripts/stack.sh) or fix NATS_URL"
    )]
    Unreachable { url: String, detail: String },
}

/// The connect options of `settings` for `identity` (no server contacted).
pub async fn options(
    settings: &NatsSettings,
    identity: Identity,
) -> Result<ConnectOptions, ConnectError> {
    crate::tls::install_crypto_provider();
    let mut opts = match &settings.creds_file {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| ConnectError::File {
                var: "NATS_CREDS_FILE",
                detail: e.to_string(),
            })?,
        None => ConnectOptions::new(),
    };
    opts = opts
        .name(identity.name)
        .custom_inbox_prefix(identity.inbox_prefix)
        .connection_timeout(Duration::from_secs(5));
    if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
        opts = opts.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(token) = &settings.token {
        opts = opts.token(token.expose().to_owned());
    }
    if let Some(path) = &settings.nkey_seed_file {
        let seed = std::fs::read_to_string(path).map_err(|e| ConnectError::File {
            var: "NATS_NKEY_SEED_FILE",
            detail: e.to_string(),
        })?;
        opts = opts.nkey(seed.trim().to_owned());
    }
    if settings.tls() {
        // Servers discovered from the cluster are announced by bare IP,
        // which their certificates do not name: with TLS, only the servers
        // of NATS_URL are used.
        opts = opts.require_tls(true).ignore_discovered_servers();
    }
    if let Some(ca) = &settings.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&settings.tls_cert_file, &settings.tls_key_file) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(opts)
}

/// Connects as `identity`. A refused credential, a TLS failure and an
/// unreachable server are told apart in the error.
pub async fn connect(
    settings: &NatsSettings,
    identity: Identity,
) -> Result<async_nats::Client, ConnectError> {
    let opts = options(settings, identity).await?;
    opts.connect(settings.servers())
        .await
        .map_err(|e| classify(settings, identity, e))
}

fn classify(
    settings: &NatsSettings,
    identity: Identity,
    e: async_nats::ConnectError,
) -> ConnectError {
    let url = settings.url.clone();
    let detail = e.to_string();
    match e.kind() {
        // Authentication: the nkey or creds seed could not sign the nonce.
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            ConnectError::Refused {
                url,
                identity: identity.name,
                detail,
            }
        }
        ConnectErrorKind::Tls => ConnectError::Tls { url, detail },
        // rustls reports an untrusted or unexpected certificate as I/O.
        ConnectErrorKind::Io if detail.contains("certificate") => ConnectError::Tls { url, detail },
        _ => ConnectError::Unreachable { url, detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unreadable_or_malformed_credential_files_are_reported_by_their_variable() {
        let dir = std::env::temp_dir().join(format!("giftcard-nats-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.creds");
        std::fs::write(&bad, "not a credentials file").unwrap();
        let mut s = NatsSettings::plain("nats://127.0.0.1:1");
        s.creds_file = Some(bad);
        let e = options(&s, API).await.unwrap_err().to_string();
        assert!(e.contains("NATS_CREDS_FILE"), "{e}");

        let mut s = NatsSettings::plain("nats://127.0.0.1:1");
        s.nkey_seed_file = Some(dir.join("missing.nk"));
        let e = options(&s, API).await.unwrap_err().to_string();
        assert!(e.contains("NATS_NKEY_SEED_FILE"), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }
}
