//! `/console/dead-letters`: the list (filtered by card, state and reason,
//! paged), one dead letter in full with its history, and the replay and
//! discard forms. The work is done by the same functions as the JSON
//! routes (`routes::dead_letters`), with the operator as the actor.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::page::{self, banner, dash, layout, time, Nav, Tone};
use super::session::{Action, Operator};
use crate::error::ApiError;
use crate::routes::dead_letters::{detail, discard_one, list_page, replay_one, Filter};
use crate::state::AppState;

/// Rows per page of the list.
const PAGE: u64 = 50;

/// The list's query string (all optional; empty means "any").
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    pub card: String,
    /// `pending` (default), `replayed`, `discarded` or `all`.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub cursor: String,
}

/// A gift-card id typed by an operator: empty is none.
pub fn parse_card(card: &str) -> Result<Option<Uuid>, ApiError> {
    let card = card.trim();
    if card.is_empty() {
        return Ok(None);
    }
    card.parse().map(Some).map_err(|_| {
        ApiError::BadRequest(format!(
            "card {card:?} is not a gift-card id (a UUID such as 0b7e2f4c-8a7d-4d9e-9f00-112233445566)"
        ))
    })
}

impl ListQuery {
    fn filter(&self) -> Result<Filter, ApiError> {
        let state = (!self.state.is_empty()).then_some(self.state.as_str());
        Ok(Filter {
            state: Filter::parse_state(state)?,
            gift_card_id: parse_card(&self.card)?,
            reason: Some(self.reason.trim().to_owned()).filter(|r| !r.is_empty()),
            purchase_id: None,
        })
    }
}

/// `GET /console/dead-letters`.
pub async fn list(
    State(state): State<AppState>,
    operator: Operator,
    Query(q): Query<ListQuery>,
) -> Response {
    let rows = match q.filter() {
        Ok(filter) => {
            let cursor = Some(q.cursor.as_str()).filter(|c| !c.is_empty());
            list_page(&state, &filter, cursor, PAGE).await
        }
        Err(e) => Err(e),
    };
    let (status, content) = match rows {
        Ok((rows, next)) => (StatusCode::OK, table(&q, &rows, next.as_deref())),
        Err(e) => (
            e.status_and_code().0,
            banner(Tone::Refused, &page::user_text(&e)),
        ),
    };
    let body = html! { (filter_form(&q)) (content) };
    let markup = layout("Dead letters", Some(&operator), Nav::DeadLetters, body);
    (status, Html(markup.into_string())).into_response()
}

fn filter_form(q: &ListQuery) -> Markup {
    let state = if q.state.is_empty() {
        "pending"
    } else {
        q.state.as_str()
    };
    html! {
        form.filters method="get" action="/console/dead-letters" {
            label { "Card " input type="text" name="card" value=(q.card) placeholder="gift-card id" inputmode="text" autocomplete="off"; }
            label { "State "
                select name="state" {
                    @for s in ["pending", "replayed", "discarded", "all"] {
                        option value=(s) selected[s == state] { (s) }
                    }
                }
            }
            label { "Reason contains " input type="text" name="reason" value=(q.reason) placeholder="e.g. undecodable"; }
            button type="submit" { "Filter" }
        }
    }
}

fn table(
    q: &ListQuery,
    rows: &[giftcard_shared::entities::dead_letter::Model],
    next: Option<&str>,
) -> Markup {
    let filters = [
        ("card", q.card.as_str()),
        ("state", q.state.as_str()),
        ("reason", q.reason.as_str()),
    ];
    html! {
        @if rows.is_empty() {
            p #no-dead-letters { "No dead letters match." }
        } @else {
            div.scroll {
                table #dead-letters {
                    thead { tr {
                        th { "dead-lettered" } th { "state" } th { "reason" } th { "card" } th { "attempts" } th { "" }
                    } }
                    tbody {
                        @for dl in rows {
                            tr {
                                td { (time(dl.dead_lettered_at)) }
                                td { (state_word(&dl.state)) }
                                td.reason { (shorten(&dl.reason, 140)) }
                                td { @match dl.gift_card_id {
                                    Some(c) => a href=(format!("/console/cards/{c}")) { code { (short_id(c)) } },
                                    None => (dash()),
                                } }
                                td { (dl.attempts) }
                                td { a.open href=(format!("/console/dead-letters/{}", dl.id)) { "Open" } }
                            }
                        }
                    }
                }
            }
        }
        p.pager {
            @if let Some(next) = next {
                a rel="next" href=(format!("/console/dead-letters?{}", page::query(&[filters[0], filters[1], filters[2], ("cursor", next)]))) { "Next page →" }
                " "
            }
            @if q.state.is_empty() || q.state == "pending" {
                a.bulk href=(format!("/console/dead-letters/replay?{}", page::query(&filters[..1].iter().chain(&filters[2..]).copied().collect::<Vec<_>>()))) {
                    "Replay all pending that match…"
                }
            }
        }
    }
}

/// `GET /console/dead-letters/{id}`; `?outcome=` reports a finished action.
#[derive(Debug, Default, Deserialize)]
pub struct ShowQuery {
    #[serde(default)]
    pub outcome: String,
}

pub async fn show(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Response {
    let notice = match q.outcome.as_str() {
        "replayed" => Some(banner(Tone::Done, "replayed: the message is back on its card's subject. If it fails again it comes back as a new dead letter, listed below.")),
        "discarded" => Some(banner(Tone::Done, "discarded: its purchase, if it has one, is failed with DISCARDED.")),
        _ => None,
    };
    render(&state, &operator, &id, StatusCode::OK, notice).await
}

/// The page of dead letter `id` with `status` and an optional banner.
async fn render(
    state: &AppState,
    operator: &Operator,
    id: &str,
    status: StatusCode,
    notice: Option<Markup>,
) -> Response {
    let id = match id.parse::<Uuid>() {
        Ok(id) => id,
        Err(_) => return page::error(operator, ApiError::NotFound("no such dead letter".into())),
    };
    match detail(state, id).await {
        Ok(d) => {
            let body = super::dead_letter_page::body(&d, operator, notice);
            let title = format!("Dead letter {}", short_id(d.dead_letter.id));
            let markup = layout(&title, Some(operator), Nav::DeadLetters, body);
            (status, Html(markup.into_string())).into_response()
        }
        Err(e) => page::error(operator, e),
    }
}

/// The replay and discard forms' fields.
#[derive(Debug, Deserialize)]
pub struct Confirm {
    #[serde(default)]
    pub confirm: String,
}

/// `POST /console/dead-letters/{id}/replay`.
pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    action: Action<Confirm>,
) -> Response {
    act(&state, &id, action, "replayed").await
}

/// `POST /console/dead-letters/{id}/discard`.
pub async fn discard(
    State(state): State<AppState>,
    Path(id): Path<String>,
    action: Action<Confirm>,
) -> Response {
    act(&state, &id, action, "discarded").await
}

async fn act(state: &AppState, id: &str, action: Action<Confirm>, done: &str) -> Response {
    let op = &action.operator;
    if action.form.confirm != "yes" {
        let text =
            "nothing was done: tick the confirmation box next to the button, then press it again";
        return render(
            state,
            op,
            id,
            StatusCode::BAD_REQUEST,
            Some(banner(Tone::Refused, text)),
        )
        .await;
    }
    let Ok(uuid) = id.parse::<Uuid>() else {
        return page::error(op, ApiError::NotFound("no such dead letter".into()));
    };
    let outcome = if done == "replayed" {
        replay_one(state, uuid, &op.subject).await
    } else {
        discard_one(state, uuid, &op.subject).await
    };
    match outcome {
        Ok(()) => {
            Redirect::to(&format!("/console/dead-letters/{uuid}?outcome={done}")).into_response()
        }
        Err(e @ (ApiError::Conflict { .. } | ApiError::Unavailable(_))) => {
            let (status, code) = e.status_and_code();
            let text = match code {
                "DEAD_LETTER_NOT_AUTHENTIC" | "DEAD_LETTER_EXPIRED" => e.to_string(),
                _ => format!("not {done}: {e}"),
            };
            render(state, op, id, status, Some(banner(Tone::Refused, &text))).await
        }
        Err(e) => page::error(op, e),
    }
}

/// A state as a word with a symbol.
pub fn state_word(state: &str) -> Markup {
    let symbol = match state {
        "pending" => "●",
        "replayed" => "↻",
        "discarded" => "✗",
        _ => "?",
    };
    html! { span class=(format!("state {state}")) { (symbol) " " (state) } }
}

/// The first block of a UUID (enough to tell rows apart; the full id is
/// in the link).
pub fn short_id(id: Uuid) -> String {
    id.to_string()[..8].to_owned()
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        s.chars().take(max).collect::<String>() + "…"
    }
}
