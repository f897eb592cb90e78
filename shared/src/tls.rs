//! One TLS crypto provider for the whole process.
//!
//! NATS, PostgreSQL and HTTP clients all use rustls; with more than one
//! provider compiled in, rustls cannot pick one by itself and panics at the
//! first TLS connection. Every binary calls [`install_crypto_provider`]
//! before it connects anywhere (the NATS connection does it too).

/// Installs ring as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: another provider is already installed, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
