//! `GET /docs`: the API reference, Swagger UI rendering `/openapi.json`.
//!
//! Swagger UI is vendored (`api/assets/swagger-ui/`, fetched from the npm
//! registry and hash-checked by `scripts/vendor-swagger-ui.sh`) and
//! compiled into the binary: the page loads nothing from anywhere but this
//! api, which its Content-Security-Policy enforces. No token is needed to
//! read it; "Try it out" sends the token a reader enters under
//! "Authorize" to this api only.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

const BUNDLE: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js");
const CSS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui.css");

/// Nothing but this api's own scripts, styles (Swagger UI sets inline
/// styles), images and calls; no frames, forms or plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Gift-card purchase pipeline: API reference</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"#;

/// Starts Swagger UI on `/openapi.json`; `validatorUrl: null` keeps it from
/// calling the public validator.
const INIT: &str = r##"window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  tryItOutEnabled: false,
  persistAuthorization: false,
});
"##;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/docs", get(page))
        .route(
            "/docs/init.js",
            get(|| asset("text/javascript", INIT.as_bytes())),
        )
        .route(
            "/docs/swagger-ui-bundle.js",
            get(|| asset("text/javascript", BUNDLE)),
        )
        .route("/docs/swagger-ui.css", get(|| asset("text/css", CSS)))
}

/// The API reference page (Swagger UI over `/openapi.json`).
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, content_type = "text/html", description = "the page")))]
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}

async fn asset(content_type: &'static str, body: &'static [u8]) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    /// The embedded files are the ones `scripts/vendor-swagger-ui.sh`
    /// checked and recorded.
    #[test]
    fn the_vendored_files_match_their_recorded_hashes() {
        let sums = include_str!("../../assets/swagger-ui/SHA256SUMS");
        for (name, bytes) in [
            ("swagger-ui-bundle.js", super::BUNDLE),
            ("swagger-ui.css", super::CSS),
        ] {
            let line = sums
                .lines()
                .find(|l| l.ends_with(&format!("  {name}")))
                .unwrap_or_else(|| panic!("SHA256SUMS has no line for {name}"));
            let want = line.split_whitespace().next().unwrap();
            assert_eq!(
                hex::encode(Sha256::digest(bytes)),
                want,
                "{name} was changed"
            );
        }
    }
}
