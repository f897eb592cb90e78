//! Feature modules own their routes; [`router`] merges them over one
//! [`AppState`] and [`ApiDoc`] collects their OpenAPI descriptions.

pub mod admin;
pub mod catalog;
pub mod dead_letters;
pub mod docs;
pub mod ops;
pub mod partitions;
pub mod purchases;

use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ApiError;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Gift-card purchase pipeline", version = "1.0.0",
         description = "Queue-driven gift-card purchases: distinct activation codes for concurrent buyers."),
    paths(
        purchases::create_purchase, purchases::get_purchase, purchases::list_purchases,
        catalog::list_cards, catalog::get_card, catalog::get_wallet,
        admin::create_card, admin::update_card, admin::import_codes, admin::delete_code,
        admin::credit_wallet,
        dead_letters::list, dead_letters::inspect, dead_letters::replay, dead_letters::replay_all, dead_letters::discard,
        partitions::list,
        ops::healthz, ops::readyz, ops::metrics_text, ops::openapi, docs::page,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every route; `/metrics` only `with_metrics` (else it has a listener of
/// its own).
pub fn router(with_metrics: bool) -> Router<AppState> {
    Router::new()
        .merge(purchases::router())
        .merge(catalog::router())
        .merge(admin::router())
        .merge(dead_letters::router())
        .merge(partitions::router())
        .merge(ops::router(with_metrics))
        .merge(docs::router())
        .fallback(|| async { ApiError::NotFound("no such route; see GET /openapi.json".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}
