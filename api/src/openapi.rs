//! The OpenAPI document served at `/openapi.json`: what the handlers'
//! annotations say ([`crate::routes::ApiDoc`]), completed with the answers
//! every operation can give whatever its handler does, so that a client
//! generated from it knows them all:
//!
//! - 401 `UNAUTHENTICATED` on every authenticated operation, 403
//!   `FORBIDDEN` under `/v1/admin/`;
//! - 400 `VALIDATION_FAILED` where it takes parameters or a body, and 413
//!   `PAYLOAD_TOO_LARGE`, 415 `UNSUPPORTED_MEDIA_TYPE`, 422
//!   `VALIDATION_FAILED` where it takes a body;
//! - 503 `SERVICE_UNAVAILABLE` with `Retry-After` under `/v1/` (load
//!   shedding, the request timeout, PostgreSQL or NATS down);
//! - `X-Request-Id` on every response;
//! - `error.code` as an enumeration of every code the api answers with
//!   ([`crate::error::all_codes`]).
//!
//! What an annotation already says is kept.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use crate::routes::ApiDoc;

/// The completed document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
        complete(&mut doc);
        doc
    })
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn complete(doc: &mut Value) {
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            for method in METHODS {
                if let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) {
                    complete_operation(path, op);
                }
            }
        }
    }
    add_links(doc);
    let code = &mut doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"];
    if let Some(code) = code.as_object_mut() {
        code.insert("enum".into(), json!(crate::error::all_codes()));
    }
}

fn complete_operation(path: &str, op: &mut Map<String, Value>) {
    let secured = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let takes_body = op.contains_key("requestBody");
    let takes_parameters = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty());
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("responses is an object");
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status)
            .or_insert_with(|| error_response(description));
    };
    if takes_parameters || takes_body {
        add(
            "400",
            "VALIDATION_FAILED: a malformed parameter, header, query or body",
        );
    }
    if secured {
        add(
            "401",
            "UNAUTHENTICATED: the bearer token is missing, malformed, expired or badly signed",
        );
    }
    if secured && path.starts_with("/v1/admin/") {
        add("403", "FORBIDDEN: this operation needs an admin token");
    }
    if takes_body {
        add("413", "PAYLOAD_TOO_LARGE: the body is over the limit");
        add(
            "415",
            "UNSUPPORTED_MEDIA_TYPE: send the body as application/json",
        );
        add(
            "422",
            "VALIDATION_FAILED: a value in the body breaks a rule",
        );
    }
    if path.starts_with("/v1/") {
        add(
            "503",
            "SERVICE_UNAVAILABLE: nothing was done (the api is at its limit of requests in \
             flight, the request timed out, or PostgreSQL or NATS is unreachable); retry after \
             Retry-After seconds",
        );
    }
    for (status, response) in responses.iter_mut() {
        let Some(h) = response
            .as_object_mut()
            .map(|r| r.entry("headers").or_insert_with(|| json!({})))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        h.entry("X-Request-Id").or_insert_with(|| {
            json!({"description": "the request's id (the client's if it sent 1 to 128 visible ASCII characters)",
                   "schema": {"type": "string"}})
        });
        if status == "429" || status == "503" {
            h.entry("Retry-After").or_insert_with(retry_after);
        }
    }
}

/// OpenAPI links: which answer's values feed which operation (a client,
/// or a fuzzer's stateful phase, can follow them: create a card, import
/// its codes, buy it, read the purchase).
fn add_links(doc: &mut Value) {
    let card = json!({"id": "$response.body#/id"});
    let links = [
        (
            "/v1/admin/gift-cards",
            "post",
            "201",
            "GetGiftCard",
            "get_card",
            card.clone(),
            None,
        ),
        (
            "/v1/admin/gift-cards",
            "post",
            "201",
            "UpdateGiftCard",
            "update_card",
            card.clone(),
            None,
        ),
        (
            "/v1/admin/gift-cards",
            "post",
            "201",
            "ImportCodes",
            "import_codes",
            card,
            None,
        ),
        (
            "/v1/admin/gift-cards",
            "post",
            "201",
            "BuyIt",
            "create_purchase",
            json!({}),
            Some(json!({"gift_card_id": "$response.body#/id", "quantity": 1})),
        ),
        (
            "/v1/purchases",
            "post",
            "201",
            "GetPurchase",
            "get_purchase",
            json!({"id": "$response.body#/id"}),
            None,
        ),
        (
            "/v1/purchases",
            "post",
            "202",
            "GetPurchase",
            "get_purchase",
            json!({"id": "$response.body#/id"}),
            None,
        ),
        (
            "/v1/admin/dead-letters",
            "get",
            "200",
            "InspectDeadLetter",
            "inspect",
            json!({"id": "$response.body#/items/0/id"}),
            None,
        ),
    ];
    for (path, method, status, name, operation, parameters, body) in links {
        let response = &mut doc["paths"][path][method]["responses"][status];
        let Some(r) = response.as_object_mut() else {
            continue;
        };
        let mut link = json!({"operationId": operation});
        if parameters.as_object().is_some_and(|p| !p.is_empty()) {
            link["parameters"] = parameters;
        }
        if let Some(body) = body {
            link["requestBody"] = body;
        }
        r.entry("links")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("links is an object")
            .insert(name.to_owned(), link);
    }
}

fn retry_after() -> Value {
    json!({
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 1},
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_v1_operation_declares_its_errors() {
        let doc = document();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                let r = &op["responses"];
                if path.starts_with("/v1/") {
                    assert!(r.get("401").is_some(), "{method} {path}: no 401");
                    assert!(r.get("503").is_some(), "{method} {path}: no 503");
                    assert!(r["503"]["headers"].get("Retry-After").is_some());
                    checked += 1;
                }
                if path.starts_with("/v1/admin/") {
                    assert!(r.get("403").is_some(), "{method} {path}: no 403");
                }
                if op.get("requestBody").is_some() {
                    assert!(r.get("422").is_some(), "{method} {path}: no 422");
                }
            }
        }
        assert!(checked > 15, "only {checked} operations under /v1");
        assert!(doc["paths"]["/v1/purchases"]["post"]["responses"]
            .get("429")
            .is_some());
        let operations: Vec<&Value> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| METHODS.iter().filter_map(|m| item.get(*m)))
            .collect();
        let text = doc.to_string();
        for id in text.split("\"operationId\":\"").skip(1) {
            let id = id.split('"').next().unwrap();
            assert!(
                operations.iter().any(|op| op["operationId"] == id),
                "a link names operation {id}, which does not exist"
            );
        }
        let codes = &doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"];
        assert!(codes.as_array().unwrap().contains(&json!("RATE_LIMITED")));
    }
}
