//! Looking things up: a purchase by id (status, position in its card's
//! queue, timings; activation codes masked but their last characters) and
//! the cards with their stock.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use giftcard_shared::contract::{partition_of, PurchaseView};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::dead_letters::{short_id, state_word};
use super::page::{self, banner, dash, layout, masked_code, opt_time, time, Nav, Tone};
use super::session::Operator;
use crate::error::ApiError;
use crate::routes::catalog::{expiring_codes, load_card, load_cards, GiftCardView};
use crate::routes::dead_letters::{list_page, Filter};
use crate::routes::purchases::find;
use crate::state::AppState;

/// "Expiring soon" means within this many days.
pub const EXPIRING_DAYS: i32 = 30;

#[derive(Debug, Default, Deserialize)]
pub struct IdQuery {
    #[serde(default)]
    pub id: String,
}

fn search_form(action: &str, label: &str, value: &str) -> Markup {
    html! {
        form.filters method="get" action=(action) {
            label { (label) " " input type="text" name="id" value=(value) required autocomplete="off" placeholder="UUID"; }
            button type="submit" { "Look up" }
        }
    }
}

/// `GET /console/purchases[?id=]`: the search form, or a redirect to the
/// purchase.
pub async fn purchases(operator: Operator, Query(q): Query<IdQuery>) -> Response {
    let id = q.id.trim();
    if let Ok(uuid) = id.parse::<Uuid>() {
        return Redirect::to(&format!("/console/purchases/{uuid}")).into_response();
    }
    let body = html! {
        @if !id.is_empty() {
            (banner(Tone::Refused, &format!("{id:?} is not a purchase id (a UUID)")))
        }
        (search_form("/console/purchases", "Purchase id", id))
    };
    page::ok(layout("Purchases", Some(&operator), Nav::Purchases, body))
}

/// `GET /console/purchases/{id}`.
pub async fn purchase(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
) -> Response {
    let not_found = || ApiError::NotFound("no purchase has this id".into());
    let Ok(id) = id.parse::<Uuid>() else {
        return page::error(&operator, not_found());
    };
    let view = match find(&state, id).await {
        Ok(Some(v)) => v,
        Ok(None) => return page::error(&operator, not_found()),
        Err(e) => return page::error(&operator, e),
    };
    let of_purchase = Filter {
        purchase_id: Some(id),
        ..Default::default()
    };
    let dead = list_page(&state, &of_purchase, None, 20).await;
    let body = html! {
        (search_form("/console/purchases", "Another purchase id", ""))
        (purchase_summary(&view, state.settings.common.partitions))
        @match dead {
            Ok((rows, _)) if !rows.is_empty() => {
                h2 { "Dead letters of this purchase" }
                ul #purchase-dead-letters {
                    @for dl in rows {
                        li { a href=(format!("/console/dead-letters/{}", dl.id)) { code { (short_id(dl.id)) } } " "
                             (state_word(&dl.state)) " " (time(dl.dead_lettered_at)) ": " (dl.reason) }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => { (banner(Tone::Refused, &format!("dead letters: {}", page::user_text(&e)))) }
        }
    };
    let title = format!("Purchase {}", short_id(id));
    page::ok(layout(&title, Some(&operator), Nav::Purchases, body))
}

fn purchase_summary(v: &PurchaseView, partitions: u16) -> Markup {
    let took = v
        .completed_at
        .map(|c| (c - v.created_at).num_milliseconds());
    html! {
        dl.summary #purchase {
            dt { "id" } dd { code { (v.id) } }
            dt { "status" } dd #status { strong { (v.status.as_str()) } }
            @if let Some(e) = &v.error {
                dt { "error" } dd { code { (e.code) } " " (e.message) }
            }
            dt { "user" } dd { (v.user_id) }
            dt { "card" } dd { a href=(format!("/console/cards/{}", v.gift_card_id)) { code { (v.gift_card_id) } } }
            dt { "quantity" } dd { (v.quantity) }
            dt { "unit price / total" } dd { (v.unit_price.as_deref().unwrap_or("—")) " / " (v.total.as_deref().unwrap_or("—")) }
            dt { "queue position" } dd { "stream sequence " (v.sequence) ", partition " (partition_of(v.gift_card_id, partitions)) }
            dt { "accepted" } dd { (time(v.created_at)) }
            dt { "completed" } dd { (opt_time(v.completed_at)) @if let Some(ms) = took { " (" (ms) " ms after acceptance)" } }
            dt { "activation codes" } dd #codes {
                @match &v.activation_codes {
                    Some(codes) => { @for c in codes { code.masked { (masked_code(c)) } " " } }
                    None => (dash()),
                }
            }
        }
        p.note { "Codes are masked: only their last characters are shown, to tell them apart." }
    }
}

/// `GET /console/cards[?id=]`: every card with its stock.
pub async fn cards(
    State(state): State<AppState>,
    operator: Operator,
    Query(q): Query<IdQuery>,
) -> Response {
    if let Ok(uuid) = q.id.trim().parse::<Uuid>() {
        return Redirect::to(&format!("/console/cards/{uuid}")).into_response();
    }
    let body = match load_cards(&state.db).await {
        Ok(cards) => html! {
            (search_form("/console/cards", "Card id", q.id.trim()))
            div.scroll {
                table #cards {
                    thead { tr { th { "card" } th { "price" } th { "active" } th { "available codes" } } }
                    tbody {
                        @for c in &cards {
                            tr {
                                td { a href=(format!("/console/cards/{}", c.id)) { (c.name) } }
                                td { (c.price) }
                                td { (if c.active { "yes" } else { "no" }) }
                                td { (c.available_codes) }
                            }
                        }
                    }
                }
            }
        },
        Err(e) => banner(Tone::Refused, &page::user_text(&e.into())),
    };
    page::ok(layout("Cards", Some(&operator), Nav::Cards, body))
}

/// `GET /console/cards/{id}`: one card's stock.
pub async fn card(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return page::error(&operator, ApiError::NotFound("no card has this id".into()));
    };
    let loaded = async {
        let card = load_card(&state.db, id)
            .await?
            .ok_or(ApiError::GiftCardNotFound(id))?;
        let expiring = expiring_codes(&state.db, id, EXPIRING_DAYS).await?;
        Ok::<_, ApiError>((card, expiring))
    }
    .await;
    match loaded {
        Ok((card, expiring)) => {
            let title = format!("Card {}", card.name);
            page::ok(layout(
                &title,
                Some(&operator),
                Nav::Cards,
                card_body(&card, expiring),
            ))
        }
        Err(e) => page::error(&operator, e),
    }
}

fn card_body(c: &GiftCardView, expiring: i64) -> Markup {
    html! {
        dl.summary #card {
            dt { "id" } dd { code { (c.id) } }
            dt { "name" } dd { (c.name) }
            dt { "price / value" } dd { (c.price) " / " (c.value) }
            dt { "active" } dd { (if c.active { "yes" } else { "no: purchases fail with GIFT_CARD_INACTIVE" }) }
            dt { "available codes" } dd #available { strong { (c.available_codes) } }
            dt { "of which expire within " (EXPIRING_DAYS) " days" } dd #expiring { strong { (expiring) } }
            dt { "created / updated" } dd { (time(c.created_at)) " / " (time(c.updated_at)) }
        }
        @if c.available_codes == 0 {
            (banner(Tone::Warning, "out of stock: purchases of this card fail with ACTIVATION_CODES_NOT_AVAILABLE until codes are imported"))
        }
        p { a href=(format!("/console/dead-letters?{}", page::query(&[("card", &c.id.to_string()), ("state", "all")]))) {
            "Dead letters of this card"
        } }
    }
}
