//! The page of one dead letter: what it is, the replay and discard forms,
//! every dead-lettering of the same purchase (or message) and every action
//! taken, and the message itself.

use maud::{html, Markup};

use super::dead_letters::{short_id, state_word};
use super::page::{banner, dash, opt_time, time, Tone};
use super::session::Operator;
use crate::routes::dead_letters::{DeadLetterDetail, DeadLetterView};

/// The page's content.
pub fn body(d: &DeadLetterDetail, operator: &Operator, notice: Option<Markup>) -> Markup {
    let dl = &d.dead_letter;
    let pending = dl.state == "pending";
    html! {
        @if let Some(n) = notice { (n) }
        @else if pending && dl.reason.starts_with("unauthenticated") {
            (banner(Tone::Warning, "no api signed this message, so a replay will be refused: discard it, \
                and find out who publishes on the queue (docs/security.md)."))
        }
        (summary(d))
        @if pending {
            (actions(dl, operator))
        } @else {
            p #resolved {
                "Resolved: " (state_word(&dl.state)) " by " strong { (d.resolved_by.as_deref().unwrap_or("?")) }
                " at " (opt_time(d.resolved_at)) ". "
                @if d.history.iter().any(|h| h.state == "pending" && h.id != dl.id) {
                    strong { "A later dead-lettering of it is pending: see below." }
                } @else {
                    "Nothing more to do here."
                }
            }
        }
        (history(d))
        (events(d))
        (message(d))
    }
}

fn summary(d: &DeadLetterDetail) -> Markup {
    let dl = &d.dead_letter;
    html! {
        dl.summary #summary {
            dt { "id" } dd { code { (dl.id) } }
            dt { "state" } dd #state { (state_word(&dl.state)) }
            dt { "reason" } dd.reason #reason { (dl.reason) }
            dt { "attempts" } dd { (dl.attempts) }
            dt { "card" } dd { @match dl.gift_card_id {
                Some(c) => a href=(format!("/console/cards/{c}")) { code { (c) } },
                None => (dash()),
            } }
            dt { "purchase" } dd { @match dl.purchase_id {
                Some(p) => a href=(format!("/console/purchases/{p}")) { code { (p) } },
                None => "none (the message could not be read)",
            } }
            dt { "user" } dd { (dl.user_id.as_deref().unwrap_or("—")) }
            dt { "subject" } dd { code { (dl.original_subject) } " (stream sequence " (dl.original_sequence) ")" }
            dt { "dead-lettered" } dd { (time(dl.dead_lettered_at)) }
            @if let Some(from) = d.replayed_from {
                dt { "replay of" } dd { a href=(format!("/console/dead-letters/{from}")) { code { (from) } } }
            }
        }
    }
}

fn actions(dl: &DeadLetterView, operator: &Operator) -> Markup {
    html! {
        section.actions aria-labelledby="h-act" {
            h2 #h-act { "Act on it" }
            form.act #replay method="post" action=(format!("/console/dead-letters/{}/replay", dl.id)) {
                input type="hidden" name="csrf" value=(operator.csrf);
                label {
                    input type="checkbox" name="confirm" value="yes" required;
                    " Yes, republish this message to " code { (dl.original_subject) } " (processed again, in order, \
                      behind the card's queued purchases; a purchase already done is answered from its result)"
                }
                button type="submit" { "Replay" }
            }
            form.act #discard method="post" action=(format!("/console/dead-letters/{}/discard", dl.id)) {
                input type="hidden" name="csrf" value=(operator.csrf);
                label {
                    input type="checkbox" name="confirm" value="yes" required;
                    " Yes, discard it (its purchase, if any, fails with DISCARDED; the message stays in the stream)"
                }
                button.danger type="submit" { "Discard" }
            }
        }
    }
}

fn history(d: &DeadLetterDetail) -> Markup {
    html! {
        section aria-labelledby="h-history" {
            h2 #h-history { "Every dead-lettering" }
            p.note { "Of this purchase, or for a message without one, of this message through its replays." }
            div.scroll {
                table #history {
                    thead { tr { th { "when" } th { "dead letter" } th { "state" } th { "reason" } th { "attempts" } } }
                    tbody {
                        @for h in &d.history {
                            tr {
                                td { (time(h.dead_lettered_at)) }
                                td { @if h.id == d.dead_letter.id { strong { "this one" } } @else {
                                    a href=(format!("/console/dead-letters/{}", h.id)) { code { (short_id(h.id)) } }
                                } }
                                td { (state_word(&h.state)) }
                                td.reason { (h.reason) }
                                td { (h.attempts) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn events(d: &DeadLetterDetail) -> Markup {
    html! {
        section aria-labelledby="h-events" {
            h2 #h-events { "Every action" }
            div.scroll {
                table #events {
                    thead { tr { th { "when" } th { "action" } th { "by" } th { "outcome" } th { "dead letter" } } }
                    tbody {
                        @for e in &d.events {
                            tr {
                                td { (time(e.at)) }
                                td { (e.action) }
                                td.actor { (e.actor) }
                                td { (e.outcome) }
                                td { code { (short_id(e.dead_letter_id)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn message(d: &DeadLetterDetail) -> Markup {
    let payload = match &d.payload {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => "(the message could not be read from PURCHASES_DLQ)".to_owned(),
        json => serde_json::to_string_pretty(json).unwrap_or_default(),
    };
    html! {
        section aria-labelledby="h-message" {
            h2 #h-message { "The message" }
            h3 { "Headers" }
            div.scroll {
                table #headers {
                    tbody {
                        @for (k, v) in &d.headers {
                            tr { th scope="row" { code { (k) } } td { code.wrap { (v) } } }
                        }
                    }
                }
            }
            h3 { "Payload" }
            pre #payload { (payload) }
        }
    }
}
