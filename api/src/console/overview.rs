//! `/console/`: readiness, throughput, dead letters, workers and
//! partitions, refreshed by the page's script every few seconds from
//! `/console/live/overview` (the same markup, without the shell).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use chrono::Utc;
use maud::{html, Markup};
use sea_orm::PaginatorTrait;

use super::page::{self, dash, layout, opt_time, time, up_down, Nav};
use super::rates::{Rates, Window, PERIOD};
use super::session::Operator;
use crate::error::ApiResult;
use crate::routes::dead_letters::Filter;
use crate::routes::partitions::{report, PartitionsReport};
use crate::state::AppState;

/// How often the page refreshes itself.
const REFRESH_SECS: u64 = 5;

/// `GET /console/`.
pub async fn page(
    State(state): State<AppState>,
    Extension(rates): Extension<Arc<Rates>>,
    operator: Operator,
) -> Response {
    let live = live(&state, &rates).await;
    let body = html! {
        p.live-status data-live-status { "Refreshes every " (REFRESH_SECS) " s." }
        div #overview data-live="/console/live/overview" data-every=(REFRESH_SECS) { (live) }
    };
    page::ok(layout("Overview", Some(&operator), Nav::Overview, body))
}

/// `GET /console/live/overview`: the page's content alone.
pub async fn fragment(
    State(state): State<AppState>,
    Extension(rates): Extension<Arc<Rates>>,
    _operator: Operator,
) -> Response {
    Html(live(&state, &rates).await.into_string()).into_response()
}

async fn live(state: &AppState, rates: &Rates) -> Markup {
    let (fleet, pending) = tokio::join!(report(state), pending_dead_letters(state));
    html! {
        p.updated { "As of " (time(Utc::now())) }
        div.cards {
            (readiness(state))
            (throughput(rates))
            (dead_letters(pending, fleet.as_ref().ok().map(|f| f.dead_letter_backlog)))
        }
        @match fleet {
            Ok(fleet) => { (workers(&fleet)) (partitions(&fleet)) }
            Err(e) => {
                (page::banner(page::Tone::Refused, &format!("workers and partitions: {}", page::user_text(&e))))
            }
        }
    }
}

async fn pending_dead_letters(state: &AppState) -> ApiResult<u64> {
    let pending = Filter {
        state: Some("pending"),
        ..Default::default()
    };
    Ok(pending.select().count(&state.db).await?)
}

fn readiness(state: &AppState) -> Markup {
    html! {
        section.card aria-labelledby="h-ready" {
            h2 #h-ready { "Readiness" }
            dl {
                dt { "NATS" } dd { (up_down(state.nats_up())) }
                dt { "PostgreSQL" } dd { (up_down(state.db_up())) }
            }
            p.note { "As this api process sees them (its /readyz)." }
        }
    }
}

fn throughput(rates: &Rates) -> Markup {
    let windows = [
        ("last minute", rates.window(Duration::from_secs(60))),
        ("last 5 minutes", rates.window(Duration::from_secs(300))),
    ];
    let ms = |s: Option<f64>| match s {
        Some(s) => html! { (format!("{:.1} ms", s * 1000.0)) },
        None => dash(),
    };
    html! {
        section.card.wide aria-labelledby="h-rate" {
            h2 #h-rate { "Purchases" }
            div.scroll { table.compact {
                thead { tr { th { "window" } th { "per second" } th { "p99 answer" } th { "p99 accept" } } }
                tbody {
                    @for (name, w) in windows {
                        tr {
                            th scope="row" { (name) }
                            @match w {
                                Some(Window { seconds, purchases_per_second, answer_p99, accept_p99 }) => {
                                    td { (format!("{purchases_per_second:.2}")) small { " over " (format!("{seconds:.0}")) " s" } }
                                    td { (ms(answer_p99)) }
                                    td { (ms(accept_p99)) }
                                }
                                None => { td colspan="3" { "not measured yet" } }
                            }
                        }
                    }
                }
            } }
            @let series = rates.series();
            @if series.len() > 1 {
                (page::sparkline(&series, "purchases per second, last 5 minutes"))
            }
            p.note {
                "This api replica's answers to POST /v1/purchases (giftcard_api_purchases_total), \
                 sampled every " (PERIOD.as_secs()) " s. p99 answer includes the client's Prefer: wait \
                 (giftcard_api_purchase_seconds); p99 accept is publish + PubAck \
                 (giftcard_api_accept_seconds); both estimated from histogram buckets. Other replicas \
                 serve their own share."
            }
        }
    }
}

fn dead_letters(pending: ApiResult<u64>, stream: Option<u64>) -> Markup {
    html! {
        section.card aria-labelledby="h-dlq" {
            h2 #h-dlq { "Dead letters" }
            dl {
                dt { "waiting for an operator" }
                dd {
                    @match pending {
                        Ok(n) => { a href="/console/dead-letters" { strong.count { (n) } } }
                        Err(e) => { "unknown: " (page::user_text(&e)) }
                    }
                }
                dt { "messages in PURCHASES_DLQ" }
                dd { @match stream { Some(n) => (n), None => (dash()) } }
            }
            p.note { "The stream keeps replayed and discarded ones too." }
        }
    }
}

fn workers(fleet: &PartitionsReport) -> Markup {
    html! {
        section aria-labelledby="h-workers" {
            h2 #h-workers { "Workers (" (fleet.workers.len()) " live)" }
            @if fleet.workers.is_empty() {
                (page::banner(page::Tone::Warning, "no worker is registered: purchases wait in the queue until one starts"))
            } @else {
                div.scroll {
                    table #workers {
                        thead { tr { th { "worker" } th { "partitions owned" } th { "started" } th { "address" } } }
                        tbody {
                            @for w in &fleet.workers {
                                tr {
                                    td { code { (w.id) } }
                                    td { (w.leases_held) small { " (reports " (w.partitions_owned) ")" } }
                                    td { (time(w.started_at)) }
                                    td { code { (w.ops_addr) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn partitions(fleet: &PartitionsReport) -> Markup {
    let owned = fleet
        .partitions
        .iter()
        .filter(|p| p.owner.is_some())
        .count();
    let backlog: u64 = fleet
        .partitions
        .iter()
        .map(|p| p.pending.unwrap_or(0) + p.ack_pending.unwrap_or(0))
        .sum();
    html! {
        section aria-labelledby="h-partitions" {
            h2 #h-partitions { "Partitions" }
            p { (owned) " of " (fleet.partitions.len()) " owned; backlog " (backlog) " message(s)." }
            @if owned < fleet.partitions.len() {
                (page::banner(page::Tone::Warning, "some partitions have no owner: their cards' purchases wait until a worker takes them"))
            }
            div.scroll {
                table #partitions {
                    thead { tr {
                        th { "partition" } th { "owner" } th { "fencing token" } th { "since" }
                        th { "backlog" } th { "redelivered" }
                    } }
                    tbody {
                        @for p in &fleet.partitions {
                            tr {
                                td { (p.partition) }
                                td { @match &p.owner { Some(o) => code { (o) }, None => strong { "none" } } }
                                td { @match p.token { Some(t) => (t), None => (dash()) } }
                                td { (opt_time(p.acquired_at)) }
                                td { @match (p.pending, p.ack_pending) {
                                    (Some(a), Some(b)) => (a + b),
                                    _ => (dash()),
                                } }
                                td { @match p.redelivered { Some(r) => (r), None => (dash()) } }
                            }
                        }
                    }
                }
            }
            p.note { "Backlog: messages of the partition not yet acknowledged by its owner (pending + in flight)." }
        }
    }
}
