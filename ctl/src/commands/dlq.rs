//! `dlq list|inspect|replay|replay-all|discard`: dead-lettered purchases
//! (admin).
//!
//! `replay-all` is client-side by default: it lists every pending dead
//! letter first (following cursors), then replays them one at a time in the
//! listed order, oldest first, with a progress bar on stderr. Dead letters
//! created while it runs (e.g. a replay that fails again) are left for the
//! next run, so it always ends. A dead letter resolved in the meantime
//! (409 `DEAD_LETTER_RESOLVED`) is skipped; any other error stops the run,
//! and re-running it is safe because it replays only what is still pending.
//! `--server-side` has the api replay them in batches of 100, going on from
//! each batch's cursor until none is left.

use std::fmt;
use std::future::Future;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::Ctx;
use crate::cli::{Confirm, DlqCmd, DlqState};
use crate::client::{Client, Reply};
use crate::error::CtlError;
use crate::model::{DeadLetter, DeadLetterDetail, Page};
use crate::output::{indent, key_values, opt, print_raw, table, truncate};

const BASE: [&str; 3] = ["v1", "admin", "dead-letters"];
/// The api's largest page.
const MAX_PAGE: u16 = 500;
/// Reasons are cut to this many characters in tables.
const REASON_WIDTH: usize = 60;
/// The api's code for a dead letter that is no longer pending.
const RESOLVED: &str = "DEAD_LETTER_RESOLVED";
/// The api's code for a dead letter whose message no api signed.
const NOT_AUTHENTIC: &str = "DEAD_LETTER_NOT_AUTHENTIC";
/// The api's code for a dead letter whose message is past the stream's
/// retention.
const EXPIRED: &str = "DEAD_LETTER_EXPIRED";

/// Body of `POST /v1/admin/dead-letters/replay`: one batch.
#[derive(Serialize)]
struct ReplayFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    gift_card_id: Option<Uuid>,
    limit: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
}

/// Dead letters one server-side batch takes on.
const BATCH: u16 = 100;

/// The answer to one server-side batch.
#[derive(Debug, Deserialize)]
struct ReplayBatch {
    replayed: u64,
    #[serde(default)]
    not_authentic: u64,
    #[serde(default)]
    expired: u64,
    #[serde(default)]
    remaining: u64,
    next_cursor: Option<String>,
    stopped: Option<StopReason>,
}

#[derive(Debug, Deserialize)]
struct StopReason {
    code: String,
    message: String,
}

pub async fn run(ctx: &Ctx, cmd: DlqCmd) -> Result<(), CtlError> {
    match cmd {
        DlqCmd::List {
            card,
            state,
            limit,
            all,
        } => list(ctx, Filter { card, state, limit }, all).await,
        DlqCmd::Inspect { id } => inspect(ctx, id).await,
        DlqCmd::Replay { id } => {
            let reply = replay_one(&ctx.client, id).await?;
            if ctx.json {
                print_raw(&reply);
            } else {
                println!("dead letter {id} queued for replay");
            }
            Ok(())
        }
        DlqCmd::ReplayAll {
            card,
            server_side,
            confirm,
        } => {
            let pending = pending_ids(ctx, card).await?;
            let question = format!(
                "replay {} pending dead letter(s){}",
                pending.len(),
                card.map(|c| format!(" of card {c}")).unwrap_or_default()
            );
            if !pending.is_empty() && !confirmed(confirm, &question)? {
                return Ok(());
            }
            if server_side {
                replay_all_server_side(ctx, card).await
            } else {
                replay_all(ctx, card, &pending).await
            }
        }
        DlqCmd::Discard { id, confirm } => {
            let detail: DeadLetterDetail = ctx
                .client
                .get(&[BASE[0], BASE[1], BASE[2], &id.to_string()])
                .await?
                .json()?;
            let dl = &detail.dead_letter;
            let question = format!(
                "discard dead letter {id} (purchase {}, user {}, reason: {}): the purchase fails \
                 with DISCARDED",
                opt(&dl.purchase_id),
                opt(&dl.user_id),
                truncate(&dl.reason, REASON_WIDTH)
            );
            if !confirmed(confirm, &question)? {
                return Ok(());
            }
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

/// What `GET /v1/admin/dead-letters` is asked for; `None` leaves the api's
/// default (state `pending`, 100 per page).
#[derive(Debug, Clone, Copy, Default)]
struct Filter {
    card: Option<Uuid>,
    state: Option<DlqState>,
    limit: Option<u16>,
}

impl Filter {
    /// Whether only pending dead letters are listed (the api's default).
    fn pending_only(&self) -> bool {
        matches!(self.state, None | Some(DlqState::Pending))
    }
}

fn list_url(client: &Client, filter: &Filter, cursor: Option<&str>) -> Url {
    let mut url = client.url(&BASE);
    {
        let mut q = url.query_pairs_mut();
        if let Some(limit) = filter.limit {
            q.append_pair("limit", &limit.to_string());
        }
        if let Some(state) = filter.state {
            q.append_pair("state", state.as_str());
        }
        if let Some(card) = filter.card {
            q.append_pair("gift_card_id", &card.to_string());
        }
        if let Some(cursor) = cursor {
            q.append_pair("cursor", cursor);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    url
}

async fn fetch_page(ctx: &Ctx, filter: &Filter, cursor: Option<&str>) -> Result<Reply, CtlError> {
    let url = list_url(&ctx.client, filter, cursor);
    ctx.client.call(ctx.client.request(Method::GET, url)).await
}

/// Every page, following `next_cursor`; the items as the api sent them.
async fn fetch_all(ctx: &Ctx, filter: &Filter) -> Result<Vec<Value>, CtlError> {
    let mut cursor: Option<String> = None;
    let mut items = Vec::new();
    loop {
        let reply = fetch_page(ctx, filter, cursor.as_deref()).await?;
        let page: Page<Value> = reply.json()?;
        items.extend(page.items);
        match page.next_cursor {
            None => return Ok(items),
            // A cursor that does not move would loop forever.
            Some(c) if cursor.as_deref() == Some(c.as_str()) => {
                return Err(reply.unexpected(format!(
                    "next_cursor {c:?} repeats the cursor sent; the listing would never end"
                )))
            }
            Some(c) => cursor = Some(c),
        }
    }
}

fn decode_letters(items: Vec<Value>) -> Result<Vec<DeadLetter>, CtlError> {
    items
        .into_iter()
        .map(serde_json::from_value::<DeadLetter>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CtlError::Unexpected {
            status: 200,
            what: "GET /v1/admin/dead-letters".to_owned(),
            detail: format!("cannot decode a dead letter: {e}"),
            request_id: None,
        })
}

/// One page, or with `all` every page (500 per request unless `--limit`).
async fn list(ctx: &Ctx, filter: Filter, all: bool) -> Result<(), CtlError> {
    let (items, next) = if all {
        let filter = Filter {
            limit: filter.limit.or(Some(MAX_PAGE)),
            ..filter
        };
        (fetch_all(ctx, &filter).await?, None)
    } else {
        let reply = fetch_page(ctx, &filter, None).await?;
        if ctx.json {
            print_raw(&reply);
            return Ok(());
        }
        let page: Page<Value> = reply.json()?;
        (page.items, page.next_cursor)
    };
    if ctx.json {
        println!("{}", json!({ "items": items, "next_cursor": null }));
        return Ok(());
    }
    let letters = decode_letters(items)?;
    print!("{}", render_list(&letters, &filter));
    if let Some(c) = next {
        eprintln!("more dead letters exist: use --all to list them all (next cursor {c})");
    }
    Ok(())
}

/// The `dlq list` table, or a note when there is nothing to show.
fn render_list(letters: &[DeadLetter], filter: &Filter) -> String {
    if letters.is_empty() {
        let what = if filter.pending_only() {
            "no pending dead letters"
        } else {
            "no dead letters"
        };
        return format!("{what}\n");
    }
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                opt(&d.purchase_id),
                opt(&d.gift_card_id),
                opt(&d.attempts),
                opt(&d.state),
                opt(&d.dead_lettered_at),
                truncate(&d.reason, REASON_WIDTH),
            ]
        })
        .collect();
    table(
        &[
            "id",
            "purchase",
            "card",
            "attempts",
            "state",
            "dead-lettered at",
            "reason",
        ],
        &rows,
    )
}

async fn inspect(ctx: &Ctx, id: Uuid) -> Result<(), CtlError> {
    let reply = ctx
        .client
        .get(&[BASE[0], BASE[1], BASE[2], &id.to_string()])
        .await?;
    if ctx.json {
        print_raw(&reply);
    } else {
        print!("{}", render_detail(&reply.json()?));
    }
    Ok(())
}

/// `dlq inspect`: the fields, then the message, headers, history and events.
fn render_detail(d: &DeadLetterDetail) -> String {
    let dl = &d.dead_letter;
    let reason = if dl.reason.is_empty() {
        "-".to_owned()
    } else {
        dl.reason.clone()
    };
    let mut out = key_values(&[
        ("id", dl.id.to_string()),
        ("state", opt(&dl.state)),
        ("purchase_id", opt(&dl.purchase_id)),
        ("gift_card_id", opt(&dl.gift_card_id)),
        ("user_id", opt(&dl.user_id)),
        ("attempts", opt(&dl.attempts)),
        ("reason", reason),
        ("original_subject", opt(&dl.original_subject)),
        ("original_sequence", opt(&dl.original_sequence)),
        ("dead_lettered_at", opt(&dl.dead_lettered_at)),
        ("resolved_at", opt(&d.resolved_at)),
        ("resolved_by", opt(&d.resolved_by)),
        ("replayed_from", opt(&d.replayed_from)),
    ]);

    let (title, payload) = match &d.payload {
        Value::Null => (
            "payload",
            "(not available: the api could not read the message from the dead-letter stream)"
                .to_owned(),
        ),
        Value::String(text) => ("payload (not JSON, as text)", text.clone()),
        other => (
            "payload",
            serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()),
        ),
    };
    section(&mut out, title, &payload);

    let headers = if d.headers.is_empty() {
        "(none)".to_owned()
    } else {
        let pairs: Vec<(&str, String)> = d
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        key_values(&pairs)
    };
    section(&mut out, "headers", &headers);

    // The dead letter shown is marked in the history and the events.
    let this = |id: Uuid| {
        if id == dl.id {
            format!("{id} (this)")
        } else {
            id.to_string()
        }
    };
    let history = if d.history.is_empty() {
        "(none)".to_owned()
    } else {
        let rows: Vec<Vec<String>> = d
            .history
            .iter()
            .map(|h| {
                vec![
                    this(h.id),
                    opt(&h.state),
                    opt(&h.attempts),
                    opt(&h.dead_lettered_at),
                    truncate(&h.reason, REASON_WIDTH),
                ]
            })
            .collect();
        table(
            &["id", "state", "attempts", "dead-lettered at", "reason"],
            &rows,
        )
    };
    section(
        &mut out,
        "history (every dead-lettering of this purchase)",
        &history,
    );

    let events = if d.events.is_empty() {
        "(none)".to_owned()
    } else {
        let rows: Vec<Vec<String>> = d
            .events
            .iter()
            .map(|e| {
                vec![
                    opt(&e.at),
                    e.action.clone(),
                    e.actor.clone(),
                    this(e.dead_letter_id),
                    e.outcome.clone(),
                ]
            })
            .collect();
        table(&["at", "action", "actor", "dead letter", "outcome"], &rows)
    };
    section(&mut out, "events", &events);
    out
}

/// A blank line, `title:`, then `body` indented.
fn section(out: &mut String, title: &str, body: &str) {
    out.push('\n');
    out.push_str(title);
    out.push_str(":\n");
    out.push_str(&indent(body, "  "));
}

/// `POST /v1/admin/dead-letters/{id}/replay`.
async fn replay_one(client: &Client, id: Uuid) -> Result<Reply, CtlError> {
    let url = client.url(&[BASE[0], BASE[1], BASE[2], &id.to_string(), "replay"]);
    client.call(client.request(Method::POST, url)).await
}

/// The api replays them, a batch per request, going on from each batch's
/// `next_cursor` until none is left; progress on stderr.
async fn replay_all_server_side(ctx: &Ctx, card: Option<Uuid>) -> Result<(), CtlError> {
    let bar = progress_bar(0);
    let mut total = Tally::default();
    let mut cursor = None;
    loop {
        let filter = ReplayFilter {
            gift_card_id: card,
            limit: BATCH,
            cursor: cursor.take(),
        };
        let reply = ctx
            .client
            .post_json(&[BASE[0], BASE[1], BASE[2], "replay"], &filter)
            .await
            .inspect_err(|_| bar.abandon())?;
        let batch: ReplayBatch = reply.json()?;
        total.replayed += batch.replayed;
        total.not_authentic += batch.not_authentic;
        total.expired += batch.expired;
        let taken = total.replayed + total.not_authentic + total.expired;
        bar.set_length(taken + batch.remaining);
        bar.set_position(taken);
        if let Some(stop) = batch.stopped {
            bar.abandon();
            return Err(CtlError::Api {
                status: if stop.code == "SERVICE_UNAVAILABLE" {
                    503
                } else {
                    500
                },
                code: stop.code,
                message: format!(
                    "stopped after {}; re-running is safe (only dead letters still pending are \
                     replayed): {}",
                    total.render(false),
                    stop.message
                ),
                request_id: reply.request_id.clone(),
            });
        }
        match batch.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    bar.finish_and_clear();
    println!("{}", total.render(ctx.json));
    Ok(())
}

/// Whether to go ahead with `what`: `--yes` says so, `--dry-run` prints it
/// and changes nothing, otherwise a person at a terminal is asked; a script
/// without `--yes` is refused.
fn confirmed(confirm: Confirm, what: &str) -> Result<bool, CtlError> {
    use std::io::{BufRead, IsTerminal, Write};
    if confirm.dry_run {
        println!("dry run: would {what}; nothing changed");
        return Ok(false);
    }
    if confirm.yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CtlError::Usage(format!(
            "not confirmed: this would {what}; pass --yes to do it, or --dry-run to see it"
        )));
    }
    eprint!("{what}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    let yes = matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes");
    if !yes {
        eprintln!("nothing changed");
    }
    Ok(yes)
}

/// The ids of every pending dead letter (of `card`), oldest first.
async fn pending_ids(ctx: &Ctx, card: Option<Uuid>) -> Result<Vec<Uuid>, CtlError> {
    let filter = Filter {
        card,
        state: Some(DlqState::Pending),
        limit: Some(MAX_PAGE),
    };
    Ok(decode_letters(fetch_all(ctx, &filter).await?)?
        .into_iter()
        .map(|d| d.id)
        .collect())
}

/// Replays the listed pending dead letters one by one, oldest first.
async fn replay_all(ctx: &Ctx, card: Option<Uuid>, ids: &[Uuid]) -> Result<(), CtlError> {
    let bar = progress_bar(ids.len() as u64);
    let client = &ctx.client;
    let tally = replay_each(ids, card, &bar, |id| async move {
        replay_one(client, id).await.map(drop)
    })
    .await?;
    println!("{}", tally.render(ctx.json));
    Ok(())
}

/// What `replay-all` did so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
struct Tally {
    replayed: u64,
    /// Already replayed or discarded by the time their turn came.
    skipped: u64,
    /// Not signed by an api (forgeries): left pending, to be discarded.
    not_authentic: u64,
    /// Past the dead-letter stream's retention: left pending, to be
    /// discarded.
    expired: u64,
}

impl Tally {
    /// The summary line: `replayed: N, skipped: M`, or JSON.
    fn render(&self, json: bool) -> String {
        if json {
            json!({ "replayed": self.replayed, "skipped": self.skipped,
                    "not_authentic": self.not_authentic, "expired": self.expired })
            .to_string()
        } else {
            format!(
                "replayed: {}, skipped: {}, not authentic: {}, expired: {}",
                self.replayed, self.skipped, self.not_authentic, self.expired
            )
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Replayed,
    /// 409 `DEAD_LETTER_RESOLVED`: no longer pending.
    Skipped,
    /// 409 `DEAD_LETTER_NOT_AUTHENTIC`: never signed by an api.
    NotAuthentic,
    /// 409 `DEAD_LETTER_EXPIRED`: past the stream's retention.
    Expired,
}

/// What one replay's result means for the run; an `Err` stops it.
fn classify(result: Result<(), CtlError>) -> Result<Outcome, CtlError> {
    match result {
        Ok(()) => Ok(Outcome::Replayed),
        Err(CtlError::Api {
            status: 409, code, ..
        }) if code == RESOLVED => Ok(Outcome::Skipped),
        Err(CtlError::Api {
            status: 409, code, ..
        }) if code == NOT_AUTHENTIC => Ok(Outcome::NotAuthentic),
        Err(CtlError::Api {
            status: 409, code, ..
        }) if code == EXPIRED => Ok(Outcome::Expired),
        Err(e) => Err(e),
    }
}

/// Replays `ids` in order with `replay`, counting on `bar`; stops at the
/// first error that is not "already resolved".
async fn replay_each<F, Fut>(
    ids: &[Uuid],
    card: Option<Uuid>,
    bar: &ProgressBar,
    mut replay: F,
) -> Result<Tally, CtlError>
where
    F: FnMut(Uuid) -> Fut,
    Fut: Future<Output = Result<(), CtlError>>,
{
    let mut tally = Tally::default();
    for (i, &id) in ids.iter().enumerate() {
        match classify(replay(id).await) {
            Ok(Outcome::Replayed) => tally.replayed += 1,
            Ok(Outcome::Skipped) => {
                tally.skipped += 1;
                bar.set_message(format!("{} skipped (already resolved)", tally.skipped));
            }
            Ok(Outcome::NotAuthentic) => {
                tally.not_authentic += 1;
                bar.set_message(format!(
                    "{} not authentic (discard them)",
                    tally.not_authentic
                ));
            }
            Ok(Outcome::Expired) => {
                tally.expired += 1;
                bar.set_message(format!("{} expired (discard them)", tally.expired));
            }
            Err(cause) => {
                bar.abandon();
                return Err(CtlError::ReplayInterrupted {
                    id,
                    position: i + 1,
                    total: ids.len(),
                    replayed: tally.replayed,
                    skipped: tally.skipped,
                    card,
                    cause: Box::new(cause),
                });
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(tally)
}

/// Dead letters replayed, rate and ETA on stderr; hidden when stderr is not
/// a terminal.
fn progress_bar(total: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "[{elapsed_precise}] {wide_bar} {pos}/{len} dead letters ({rate}, ETA {eta}) {msg}",
    )
    .map(|style| {
        style.with_key("rate", |state: &ProgressState, w: &mut dyn fmt::Write| {
            let _ = write!(w, "{:.1}/s", state.per_sec());
        })
    })
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total).with_style(style)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID1: &str = "00000000-0000-4000-8000-000000000001";
    const ID2: &str = "00000000-0000-4000-8000-000000000002";
    const CARD: &str = "00000000-0000-4000-8000-0000000000c0";
    const PURCHASE: &str = "00000000-0000-4000-8000-0000000000e0";

    fn uuid(s: &str) -> Uuid {
        s.parse().unwrap()
    }

    fn ids(n: u128) -> Vec<Uuid> {
        (1..=n).map(Uuid::from_u128).collect()
    }

    fn api_error(status: u16, code: &str) -> CtlError {
        CtlError::Api {
            status,
            code: code.to_owned(),
            message: "m".to_owned(),
            request_id: None,
        }
    }

    /// Runs `replay_each` over as many ids as `results`, answering each
    /// replay with the next result; returns the outcome and the ids called.
    async fn run_replays(
        results: Vec<Result<(), CtlError>>,
        card: Option<Uuid>,
    ) -> (Result<Tally, CtlError>, Vec<Uuid>) {
        let ids = ids(results.len() as u128);
        let mut results = results.into_iter();
        let mut called = Vec::new();
        let outcome = replay_each(&ids, card, &ProgressBar::hidden(), |id| {
            called.push(id);
            let result = results.next().expect("one result per id");
            async move { result }
        })
        .await;
        (outcome, called)
    }

    #[tokio::test]
    async fn already_resolved_dead_letters_are_skipped_and_counted() {
        let (outcome, called) = run_replays(
            vec![
                Ok(()),
                Err(api_error(409, RESOLVED)),
                Ok(()),
                Err(api_error(409, RESOLVED)),
                Ok(()),
            ],
            None,
        )
        .await;
        assert_eq!(
            outcome.unwrap(),
            Tally {
                replayed: 3,
                skipped: 2,
                ..Tally::default()
            }
        );
        assert_eq!(called, ids(5), "every id, in the listed order");
    }

    #[tokio::test]
    async fn nothing_to_replay_is_an_empty_tally() {
        let (outcome, called) = run_replays(vec![], None).await;
        assert_eq!(outcome.unwrap(), Tally::default());
        assert!(called.is_empty());
    }

    #[tokio::test]
    async fn another_error_stops_the_run_and_says_how_far_it_got() {
        let card = uuid(CARD);
        let (outcome, called) = run_replays(
            vec![
                Ok(()),
                Err(api_error(409, RESOLVED)),
                Ok(()),
                Err(api_error(503, "SERVICE_UNAVAILABLE")),
                Ok(()),
            ],
            Some(card),
        )
        .await;
        assert_eq!(called, ids(4), "nothing is replayed after the failure");
        let err = outcome.unwrap_err();
        let CtlError::ReplayInterrupted {
            id,
            position,
            total,
            replayed,
            skipped,
            card: c,
            ref cause,
        } = err
        else {
            panic!("wrong error {err:?}");
        };
        assert_eq!(
            (id, position, total, replayed, skipped, c),
            (Uuid::from_u128(4), 4, 5, 2, 1, Some(card))
        );
        assert!(matches!(**cause, CtlError::Api { status: 503, .. }));
        let message = err.to_string();
        assert!(
            message.contains("(4 of 5)")
                && message.contains("2 replayed and 1 skipped")
                && message.contains("SERVICE_UNAVAILABLE"),
            "{message}"
        );
        let hint = err.hint();
        assert!(
            hint.contains("safe") && hint.contains(&format!("dlq replay-all --card {card}")),
            "{hint}"
        );
    }

    #[tokio::test]
    async fn only_a_409_dead_letter_resolved_counts_as_skipped() {
        for stop in [
            api_error(409, "IDEMPOTENCY_KEY_REUSED"),
            api_error(404, "NOT_FOUND"),
            api_error(400, RESOLVED),
        ] {
            let (outcome, called) = run_replays(vec![Err(stop), Ok(())], None).await;
            assert!(matches!(
                outcome,
                Err(CtlError::ReplayInterrupted {
                    position: 1,
                    replayed: 0,
                    skipped: 0,
                    ..
                })
            ));
            assert_eq!(called.len(), 1);
        }
        assert_eq!(
            classify(Err(api_error(409, RESOLVED))).unwrap(),
            Outcome::Skipped
        );
        assert_eq!(
            classify(Err(api_error(409, NOT_AUTHENTIC))).unwrap(),
            Outcome::NotAuthentic
        );
        assert_eq!(
            classify(Err(api_error(409, EXPIRED))).unwrap(),
            Outcome::Expired
        );
        assert_eq!(classify(Ok(())).unwrap(), Outcome::Replayed);
    }

    #[test]
    fn the_summary_is_a_line_or_json() {
        let t = Tally {
            replayed: 7,
            skipped: 2,
            not_authentic: 1,
            expired: 1,
        };
        assert_eq!(
            t.render(false),
            "replayed: 7, skipped: 2, not authentic: 1, expired: 1"
        );
        let v: Value = serde_json::from_str(&t.render(true)).unwrap();
        assert_eq!(
            v,
            json!({ "replayed": 7, "skipped": 2, "not_authentic": 1, "expired": 1 })
        );
    }

    #[test]
    fn list_urls_carry_only_the_filters_given() {
        let client = Client::new("http://h:8080".parse().unwrap(), None).unwrap();
        assert_eq!(
            list_url(&client, &Filter::default(), None).as_str(),
            "http://h:8080/v1/admin/dead-letters"
        );
        let filter = Filter {
            card: Some(uuid(CARD)),
            state: Some(DlqState::All),
            limit: Some(500),
        };
        assert_eq!(
            list_url(&client, &filter, Some("a1b2")).as_str(),
            format!(
                "http://h:8080/v1/admin/dead-letters?limit=500&state=all&gift_card_id={CARD}&cursor=a1b2"
            )
        );
    }

    fn letter(id: &str, reason: &str) -> DeadLetter {
        serde_json::from_value(json!({
            "id": id,
            "purchase_id": PURCHASE,
            "gift_card_id": CARD,
            "user_id": "alice",
            "reason": reason,
            "attempts": 8,
            "original_subject": "purchases.card.3",
            "original_sequence": 42,
            "state": "pending",
            "dead_lettered_at": "2025-01-02T03:04:05Z",
            "some_newer_field": true,
        }))
        .unwrap()
    }

    #[test]
    fn the_list_is_a_table_with_reasons_cut_to_60_characters() {
        let long = format!("database unavailable:\n{}", "x".repeat(100));
        let out = render_list(
            &[letter(ID1, "DB down"), letter(ID2, &long)],
            &Filter::default(),
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID  ") && lines[0].contains("DEAD-LETTERED AT"));
        assert!(lines[0].ends_with("REASON"));
        assert!(lines[1].starts_with(ID1));
        assert!(lines[1].contains(PURCHASE) && lines[1].contains(CARD));
        assert!(lines[1].contains(" 8 ") && lines[1].contains(" pending "));
        assert!(lines[1].ends_with("2025-01-02T03:04:05Z  DB down"));
        let reason = lines[2].split("03:04:05Z  ").nth(1).unwrap();
        assert_eq!(reason.chars().count(), REASON_WIDTH);
        assert!(reason.starts_with("database unavailable: xxx") && reason.ends_with('…'));
    }

    #[test]
    fn an_empty_list_says_what_was_asked_for() {
        assert_eq!(
            render_list(&[], &Filter::default()),
            "no pending dead letters\n"
        );
        let all = Filter {
            state: Some(DlqState::All),
            ..Filter::default()
        };
        assert_eq!(render_list(&[], &all), "no dead letters\n");
    }

    fn detail(payload: Value) -> DeadLetterDetail {
        serde_json::from_value(json!({
            "id": ID2,
            "purchase_id": PURCHASE,
            "gift_card_id": CARD,
            "user_id": "alice",
            "reason": "DB down",
            "attempts": 8,
            "original_subject": "purchases.card.3",
            "original_sequence": 42,
            "state": "replayed",
            "dead_lettered_at": "2025-01-02T03:04:05Z",
            "resolved_at": "2025-01-02T04:00:00Z",
            "resolved_by": "admin",
            "replayed_from": ID1,
            "payload": payload,
            "headers": { "Giftcard-Version": "1", "Nats-Msg-Id": "p:1" },
            "history": [
                { "id": ID1, "reason": "timeout", "attempts": 8, "state": "replayed",
                  "dead_lettered_at": "2025-01-01T00:00:00Z", "original_subject": "s",
                  "original_sequence": 1 },
                { "id": ID2, "reason": "DB down", "attempts": 8, "state": "replayed",
                  "dead_lettered_at": "2025-01-02T03:04:05Z", "original_subject": "s",
                  "original_sequence": 2 }
            ],
            "events": [
                { "dead_letter_id": ID1, "action": "dead_lettered", "actor": "worker",
                  "outcome": "attempts exhausted", "at": "2025-01-01T00:00:00Z" },
                { "dead_letter_id": ID2, "action": "replayed", "actor": "admin",
                  "outcome": "republished to purchases.card.3", "at": "2025-01-02T04:00:00Z" }
            ]
        }))
        .unwrap()
    }

    #[test]
    fn inspect_shows_fields_payload_headers_history_and_events() {
        let out = render_detail(&detail(json!({ "purchase_id": PURCHASE, "quantity": 2 })));
        assert!(
            out.starts_with(&format!("id:                {ID2}\n")),
            "{out}"
        );
        for line in [
            "state:             replayed\n",
            "original_sequence: 42\n",
            "resolved_by:       admin\n",
            &format!("replayed_from:     {ID1}\n"),
        ] {
            assert!(out.contains(line), "{line:?} missing from\n{out}");
        }
        assert!(
            out.contains(&format!(
                "\npayload:\n  {{\n    \"purchase_id\": \"{PURCHASE}\",\n    \"quantity\": 2\n  }}\n"
            )),
            "{out}"
        );
        assert!(
            out.contains("\nheaders:\n  Giftcard-Version: 1\n  Nats-Msg-Id:      p:1\n"),
            "{out}"
        );
        let history = out.split("\nhistory").nth(1).unwrap();
        assert!(history.contains("  ID ") && history.contains("DEAD-LETTERED AT"));
        assert!(history.contains(&format!("  {ID1}  ")));
        assert!(history.contains(&format!("  {ID2} (this)  ")));
        let events = out.split("\nevents:\n").nth(1).unwrap();
        let lines: Vec<&str> = events.lines().collect();
        assert_eq!(lines.len(), 3, "{events}");
        assert!(lines[0].starts_with("  AT ") && lines[0].ends_with("OUTCOME"));
        assert!(lines[1].contains("dead_lettered") && lines[1].ends_with("attempts exhausted"));
        assert!(lines[2].contains(&format!("{ID2} (this)")));
    }

    #[test]
    fn inspect_shows_a_text_payload_as_is_and_a_missing_one_as_such() {
        let out = render_detail(&detail(json!("not json\nat all")));
        assert!(out.contains("\npayload (not JSON, as text):\n  not json\n  at all\n"));
        let out = render_detail(&detail(Value::Null));
        assert!(out.contains("\npayload:\n  (not available"));
    }

    #[test]
    fn an_older_detail_without_the_new_sections_still_decodes() {
        let d: DeadLetterDetail =
            serde_json::from_value(json!({ "id": ID1, "reason": "r" })).unwrap();
        let out = render_detail(&d);
        assert!(out.contains("\nheaders:\n  (none)\n"));
        assert!(out.ends_with("\nevents:\n  (none)\n"));
    }
}
