//! `status`: readiness of the api (`GET /readyz`, no token).

use reqwest::Method;

use super::Ctx;
use crate::error::CtlError;
use crate::model::Readiness;
use crate::output::{print_key_values, print_raw};

pub async fn run(ctx: &Ctx) -> Result<(), CtlError> {
    let url = ctx.client.url(&["readyz"]);
    let reply = ctx
        .client
        .send(ctx.client.request(Method::GET, url.clone()))
        .await?;
    let state = reply
        .json::<Readiness>()
        .ok()
        .and_then(|r| r.status)
        .unwrap_or_else(|| {
            if reply.status.is_success() {
                "ready"
            } else {
                "unavailable"
            }
            .to_owned()
        });
    if ctx.json {
        print_raw(&reply);
    } else {
        print_key_values(&[
            ("api", url.as_str().trim_end_matches("/readyz").to_owned()),
            ("status", state.clone()),
            ("http", reply.status.as_u16().to_string()),
        ]);
    }
    if reply.status.is_success() {
        Ok(())
    } else {
        Err(CtlError::NotReady {
            url: url.to_string(),
            status: reply.status.as_u16(),
            state,
        })
    }
}
