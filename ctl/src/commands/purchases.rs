//! `purchase show|list` and the purchase view shared with `buy`.

use serde_json::{json, Value};

use super::Ctx;
use crate::cli::PurchaseCmd;
use crate::error::CtlError;
use crate::model::{Page, Purchase};
use crate::output::{opt, print_key_values, print_raw, print_table};

pub async fn run(ctx: &Ctx, cmd: PurchaseCmd) -> Result<(), CtlError> {
    match cmd {
        PurchaseCmd::Show { id } => {
            let reply = ctx
                .client
                .get(&["v1", "purchases", &id.to_string()])
                .await?;
            if ctx.json {
                print_raw(&reply);
            } else {
                print_purchase(&reply.json()?);
            }
            Ok(())
        }
        PurchaseCmd::List { limit, all } => list(ctx, limit, all).await,
    }
}

/// One page, or with `all` every page by following `next_cursor`.
async fn list(ctx: &Ctx, limit: u8, all: bool) -> Result<(), CtlError> {
    let mut cursor: Option<String> = None;
    let mut raw_items: Vec<Value> = Vec::new();
    let next = loop {
        let mut url = ctx.client.url(&["v1", "purchases"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("limit", &limit.to_string());
            if let Some(c) = &cursor {
                q.append_pair("cursor", c);
            }
        }
        let reply = ctx
            .client
            .call(ctx.client.request(reqwest::Method::GET, url))
            .await?;
        if ctx.json && !all {
            print_raw(&reply);
            return Ok(());
        }
        let page: Page<Value> = reply.json()?;
        raw_items.extend(page.items);
        match page.next_cursor {
            // A cursor that does not move would loop forever.
            Some(c) if all && cursor.as_ref() != Some(&c) => cursor = Some(c),
            last => break last,
        }
    };
    if ctx.json {
        println!("{}", json!({ "items": raw_items, "next_cursor": next }));
        return Ok(());
    }
    let purchases = raw_items
        .into_iter()
        .map(serde_json::from_value::<Purchase>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CtlError::Unexpected {
            status: 200,
            what: "GET /v1/purchases".to_owned(),
            detail: format!("cannot decode a purchase: {e}"),
            request_id: None,
        })?;
    let rows: Vec<Vec<String>> = purchases
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.gift_card_id.to_string(),
                p.quantity.to_string(),
                p.status.clone(),
                opt(&p.total),
                opt(&p.sequence),
                opt(&p.created_at),
            ]
        })
        .collect();
    print_table(
        &[
            "id",
            "gift_card_id",
            "qty",
            "status",
            "total",
            "sequence",
            "created_at",
        ],
        &rows,
        "no purchases",
    );
    if let (Some(c), false) = (&next, all) {
        eprintln!("more purchases exist: use --all to list them all (next cursor {c})");
    }
    Ok(())
}

/// `key: value` lines; activation codes only for a succeeded purchase.
pub fn print_purchase(p: &Purchase) {
    let mut pairs = vec![
        ("id", p.id.to_string()),
        ("status", p.status.clone()),
        ("gift_card_id", p.gift_card_id.to_string()),
        ("quantity", p.quantity.to_string()),
        ("sequence", opt(&p.sequence)),
        ("unit_price", opt(&p.unit_price)),
        ("total", opt(&p.total)),
        ("created_at", opt(&p.created_at)),
        ("completed_at", opt(&p.completed_at)),
    ];
    if let Some(user) = &p.user_id {
        pairs.insert(1, ("user_id", user.clone()));
    }
    if let Some((code, message)) = p.error_parts() {
        let text = if message.is_empty() {
            code
        } else {
            format!("{code}: {message}")
        };
        pairs.push(("error", text));
    }
    print_key_values(&pairs);
    if p.status == "succeeded" {
        println!("activation_codes:");
        for code in p.activation_codes.iter().flatten() {
            println!("  {code}");
        }
    }
}
