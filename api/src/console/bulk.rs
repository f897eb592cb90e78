//! Bulk replay: `GET /console/dead-letters/replay` counts the pending dead
//! letters a filter covers and asks for confirmation; each
//! `POST /console/dead-letters/replay` replays one batch of them
//! ([`replay_batch`]) and answers where it got to. The page's script posts
//! batch after batch and moves a progress bar; without a script, each
//! answer is a page with a "Continue" button. The state of a run lives in
//! the form (filter, last dead letter covered, cursor, counts), so any api replica can
//! serve the next batch and closing the page stops the run.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use maud::{html, Markup};
use sea_orm::PaginatorTrait;
use serde::Deserialize;

use super::dead_letters::parse_card;
use super::page::{self, banner, layout, Nav, Tone};
use super::session::{Action, Operator, FETCH_HEADER};
use crate::error::ApiError;
use crate::routes::dead_letters::{
    pending_after, replay_batch, replay_bound, Filter, ReplayCursor,
};
use crate::state::AppState;

/// Dead letters replayed per request.
pub const BATCH: u64 = 25;

/// What a bulk replay covers (pending dead letters only).
#[derive(Debug, Default, Deserialize)]
pub struct Scope {
    #[serde(default)]
    pub card: String,
    #[serde(default)]
    pub reason: String,
}

impl Scope {
    fn filter(&self) -> Result<Filter, ApiError> {
        Ok(Filter {
            state: Some("pending"),
            gift_card_id: parse_card(&self.card)?,
            reason: Some(self.reason.trim().to_owned()).filter(|r| !r.is_empty()),
            purchase_id: None,
        })
    }

    fn describe(&self) -> String {
        let mut parts = vec!["pending".to_owned()];
        if !self.card.trim().is_empty() {
            parts.push(format!("of card {}", self.card.trim()));
        }
        if !self.reason.trim().is_empty() {
            parts.push(format!("whose reason contains {:?}", self.reason.trim()));
        }
        parts.join(", ")
    }
}

/// `GET /console/dead-letters/replay`: how many, and the confirmation.
pub async fn confirm(
    State(state): State<AppState>,
    operator: Operator,
    Query(scope): Query<Scope>,
) -> Response {
    let total = async {
        let filter = scope.filter()?;
        let upto = replay_bound(&state).await?;
        let total = pending_after(&filter, upto, None).count(&state.db).await?;
        Ok::<_, ApiError>((upto, total))
    }
    .await;
    let body = match total {
        Err(e) => banner(Tone::Refused, &page::user_text(&e)),
        Ok((_, 0)) => html! {
            p #nothing { "No dead letter is " (scope.describe()) ": nothing to replay." }
            p { a href="/console/dead-letters" { "Back to the dead letters" } }
        },
        Ok((upto, total)) => html! {
            p { "Dead letters " (scope.describe()) ": " strong #total { (total) } "." }
            ul {
                li { "They are replayed in their original stream order, so each card's purchases go back in the order they first came, "
                     (BATCH) " per request." }
                li { "A replay that fails again comes back as a new dead letter; this run does not replay it again." }
                li { "Dead letters no api signed are refused, counted and left pending: discard them." }
                li { "Every replay is recorded with your name (" (operator.subject) ")." }
            }
            (form(&operator, &scope, upto, None, (0, 0), total, false))
        },
    };
    page::ok(layout(
        "Replay dead letters",
        Some(&operator),
        Nav::DeadLetters,
        body,
    ))
}

/// The form that starts (or continues) a run.
fn form(
    op: &Operator,
    scope: &Scope,
    upto: i64,
    after: Option<ReplayCursor>,
    (replayed, not_authentic): (u64, u64),
    left: u64,
    confirmed: bool,
) -> Markup {
    let after = after.map(|c| c.encode()).unwrap_or_default();
    let done = replayed + not_authentic;
    html! {
        form.bulk #bulk method="post" action="/console/dead-letters/replay" data-bulk {
            input type="hidden" name="csrf" value=(op.csrf);
            input type="hidden" name="card" value=(scope.card);
            input type="hidden" name="reason" value=(scope.reason);
            input type="hidden" name="upto" value=(upto);
            input type="hidden" name="after" value=(after);
            input type="hidden" name="replayed" value=(replayed);
            input type="hidden" name="not_authentic" value=(not_authentic);
            @if confirmed {
                input type="hidden" name="confirm" value="yes";
            } @else {
                label { input type="checkbox" name="confirm" value="yes" required; " Yes, replay " (left) " dead letter(s)" }
            }
            button type="submit" { @if confirmed { "Continue (" (left) " left)" } @else { "Replay them" } }
            " "
            button type="button" hidden data-bulk-stop { "Stop" }
            progress #bulk-progress max=(done + left) value=(done) { (done) " of " (done + left) }
            p #bulk-status aria-live="polite" { }
        }
    }
}

/// One batch's form fields.
#[derive(Debug, Deserialize)]
pub struct BatchForm {
    #[serde(default)]
    confirm: String,
    #[serde(flatten)]
    scope: Scope,
    #[serde(default)]
    upto: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    replayed: String,
    #[serde(default)]
    not_authentic: String,
}

fn parse_after(s: &str) -> Result<Option<ReplayCursor>, ApiError> {
    if s.is_empty() {
        return Ok(None);
    }
    ReplayCursor::decode(s).map(Some).ok_or_else(|| {
        ApiError::BadRequest("the form's position is damaged; start the replay again".into())
    })
}

/// `POST /console/dead-letters/replay`: one batch.
pub async fn run_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    action: Action<BatchForm>,
) -> Response {
    let fetch = headers.contains_key(FETCH_HEADER);
    let (op, f) = (&action.operator, &action.form);
    let outcome = async {
        if f.confirm != "yes" {
            return Err(ApiError::BadRequest(
                "nothing was replayed: tick the confirmation box first".into(),
            ));
        }
        let filter = f.scope.filter()?;
        let upto = f.upto.parse::<i64>().map_err(|_| {
            ApiError::BadRequest("the form's last dead letter is damaged; start again".into())
        })?;
        let after = parse_after(&f.after)?;
        let batch = replay_batch(&state, &filter, upto, after, BATCH, &op.subject).await?;
        Ok((upto, batch))
    }
    .await;
    let count = |s: &str| s.parse::<u64>().unwrap_or(0);
    let (upto, batch) = match outcome {
        Ok(v) => v,
        Err(e) if fetch => {
            let status = e.status_and_code().0;
            return (
                status,
                Json(serde_json::json!({ "error": page::user_text(&e) })),
            )
                .into_response();
        }
        Err(e) => return page::error(op, e),
    };
    let totals = (
        count(&f.replayed) + batch.result.replayed,
        count(&f.not_authentic) + batch.result.not_authentic + batch.result.expired,
    );
    if fetch {
        return Json(serde_json::json!({
            "replayed": totals.0,
            "not_authentic": totals.1,
            "remaining": batch.remaining,
            "after": batch.next.map(|c| c.encode()).unwrap_or_default(),
            "done": batch.remaining == 0,
            "error": batch.stopped.as_ref().map(|s| s.message.as_str()),
        }))
        .into_response();
    }
    let body = html! {
        (progress_banner(totals, batch.remaining))
        @if let Some(stopped) = &batch.stopped {
            (banner(Tone::Refused, &format!("stopped: {}", stopped.message)))
        }
        @if batch.remaining > 0 {
            (form(op, &f.scope, upto, batch.next, totals, batch.remaining, true))
        } @else {
            p { a href="/console/dead-letters" { "Back to the dead letters" } }
        }
    };
    (
        StatusCode::OK,
        Html(layout("Replay dead letters", Some(op), Nav::DeadLetters, body).into_string()),
    )
        .into_response()
}

fn progress_banner((replayed, not_authentic): (u64, u64), remaining: u64) -> Markup {
    let text = format!(
        "replayed {replayed}; {not_authentic} left pending (not signed by an api, or past the stream's retention: discard them); {remaining} left."
    );
    banner(
        if remaining == 0 {
            Tone::Done
        } else {
            Tone::Warning
        },
        &text,
    )
}
