//! `cards create|list|show|update`: the gift-card catalog.

use giftcard_shared::domain::Money;
use serde::Serialize;

use super::Ctx;
use crate::cli::CardsCmd;
use crate::error::CtlError;
use crate::model::{GiftCard, Items};
use crate::output::{opt, print_key_values, print_raw, print_table};

#[derive(Serialize)]
struct NewCard<'a> {
    name: &'a str,
    price: Money,
    value: Money,
}

#[derive(Serialize)]
struct CardPatch<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active: Option<bool>,
}

pub async fn run(ctx: &Ctx, cmd: CardsCmd) -> Result<(), CtlError> {
    let reply = match &cmd {
        CardsCmd::Create { name, price, value } => {
            let body = NewCard {
                name,
                price: *price,
                value: *value,
            };
            ctx.client
                .post_json(&["v1", "admin", "gift-cards"], &body)
                .await?
        }
        CardsCmd::List => ctx.client.get(&["v1", "gift-cards"]).await?,
        CardsCmd::Show { id } => {
            ctx.client
                .get(&["v1", "gift-cards", &id.to_string()])
                .await?
        }
        CardsCmd::Update {
            id,
            name,
            price,
            active,
        } => {
            if name.is_none() && price.is_none() && active.is_none() {
                return Err(CtlError::Usage(
                    "cards update needs at least one of --name, --price, --active".to_owned(),
                ));
            }
            let body = CardPatch {
                name: name.as_deref(),
                price: *price,
                active: *active,
            };
            let id = id.to_string();
            ctx.client
                .patch_json(&["v1", "admin", "gift-cards", &id], &body)
                .await?
        }
    };
    if ctx.json {
        print_raw(&reply);
        return Ok(());
    }
    if let CardsCmd::List = cmd {
        let cards: Items<GiftCard> = reply.json()?;
        let rows: Vec<Vec<String>> = cards.items.iter().map(card_row).collect();
        print_table(
            &["id", "name", "price", "value", "active", "available_codes"],
            &rows,
            "no gift cards",
        );
    } else {
        print_card(&reply.json()?);
    }
    Ok(())
}

fn card_row(c: &GiftCard) -> Vec<String> {
    vec![
        c.id.to_string(),
        c.name.clone(),
        c.price.clone(),
        c.value.clone(),
        c.active.to_string(),
        opt(&c.available_codes),
    ]
}

fn print_card(c: &GiftCard) {
    print_key_values(&[
        ("id", c.id.to_string()),
        ("name", c.name.clone()),
        ("price", c.price.clone()),
        ("value", c.value.clone()),
        ("active", c.active.to_string()),
        ("available_codes", opt(&c.available_codes)),
    ]);
}
