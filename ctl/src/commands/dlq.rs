//! `dlq list|replay|replay-all|discard`: dead-lettered purchases (admin).

use reqwest::Method;
use serde::Serialize;
use uuid::Uuid;

use super::Ctx;
use crate::cli::DlqCmd;
use crate::error::CtlError;
use crate::model::{DeadLetter, Items, Replayed};
use crate::output::{opt, print_raw, print_table};

#[derive(Serialize)]
struct ReplayFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    gift_card_id: Option<Uuid>,
}

const BASE: [&str; 3] = ["v1", "admin", "dead-letters"];

pub async fn run(ctx: &Ctx, cmd: DlqCmd) -> Result<(), CtlError> {
    match cmd {
        DlqCmd::List { card, limit } => list(ctx, card, limit).await,
        DlqCmd::Replay { id } => {
            let url = ctx
                .client
                .url(&[BASE[0], BASE[1], BASE[2], &id.to_string(), "replay"]);
            let reply = ctx
                .client
                .call(ctx.client.request(Method::POST, url))
                .await?;
            if ctx.json {
                print_raw(&reply);
            } else {
                println!("dead letter {id} queued for replay");
            }
            Ok(())
        }
        DlqCmd::ReplayAll { card } => {
            let reply = ctx
                .client
                .post_json(
                    &[BASE[0], BASE[1], BASE[2], "replay"],
                    &ReplayFilter { gift_card_id: card },
                )
                .await?;
            if ctx.json {
                print_raw(&reply);
            } else {
                let r: Replayed = reply.json()?;
                println!("replayed: {}", r.replayed);
            }
            Ok(())
        }
        DlqCmd::Discard { id } => {
            let reply = ctx
                .client
                .delete(&[BASE[0], BASE[1], BASE[2], &id.to_string()])
                .await?;
            if ctx.json {
                print_raw(&reply);
            } else {
                println!("dead letter {id} discarded; its purchase is failed with DISCARDED");
            }
            Ok(())
        }
    }
}

async fn list(ctx: &Ctx, card: Option<Uuid>, limit: Option<u8>) -> Result<(), CtlError> {
    let mut url = ctx.client.url(&BASE);
    {
        let mut q = url.query_pairs_mut();
        if let Some(limit) = limit {
            q.append_pair("limit", &limit.to_string());
        }
        if let Some(card) = card {
            q.append_pair("gift_card_id", &card.to_string());
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let reply = ctx
        .client
        .call(ctx.client.request(Method::GET, url))
        .await?;
    if ctx.json {
        print_raw(&reply);
        return Ok(());
    }
    let letters: Items<DeadLetter> = reply.json()?;
    let rows: Vec<Vec<String>> = letters
        .items
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                opt(&d.purchase_id),
                opt(&d.gift_card_id),
                opt(&d.user_id),
                opt(&d.attempts),
                opt(&d.dead_lettered_at),
                d.reason.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "id",
            "purchase_id",
            "gift_card_id",
            "user_id",
            "attempts",
            "dead_lettered_at",
            "reason",
        ],
        &rows,
        "no dead letters",
    );
    Ok(())
}
