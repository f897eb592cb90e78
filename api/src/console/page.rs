//! The page shell (header, navigation, the operator and the logout form)
//! and the small pieces every page uses: banners, times, masked codes,
//! error pages. Everything is escaped by maud; no inline script or style.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::assets;
use super::session::Operator;
use crate::error::ApiError;

/// The navigation entries; the current one is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    DeadLetters,
    Purchases,
    Cards,
    None,
}

const NAV: [(Nav, &str, &str); 4] = [
    (Nav::Overview, "/console/", "Overview"),
    (Nav::DeadLetters, "/console/dead-letters", "Dead letters"),
    (Nav::Purchases, "/console/purchases", "Purchases"),
    (Nav::Cards, "/console/cards", "Cards"),
];

/// A whole page.
pub fn layout(title: &str, operator: Option<&Operator>, nav: Nav, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (title) " · giftcard console" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(assets::url("console.css"));
                script src=(assets::url("console.js")) defer {}
            }
            body {
                header.top {
                    a.brand href="/console/" { "giftcard console" }
                    @if let Some(op) = operator {
                        nav aria-label="Sections" {
                            @for (entry, href, label) in NAV {
                                @if entry == nav {
                                    a href=(href) aria-current="page" { (label) }
                                } @else {
                                    a href=(href) { (label) }
                                }
                            }
                        }
                        form.logout method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(op.csrf);
                            span.who { "Signed in as " strong { (op.subject) } }
                            " "
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// What a banner reports; each kind has its own word, so it reads without
/// colour.
#[derive(Debug, Clone, Copy)]
pub enum Tone {
    Done,
    Warning,
    Refused,
}

pub fn banner(tone: Tone, text: &str) -> Markup {
    let (class, word, role) = match tone {
        Tone::Done => ("banner done", "Done:", "status"),
        Tone::Warning => ("banner warning", "Note:", "status"),
        Tone::Refused => ("banner refused", "Refused:", "alert"),
    };
    html! { p class=(class) role=(role) { strong { (word) } " " (text) } }
}

/// A timestamp, to the second, in UTC.
pub fn time(at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S UTC")) } }
}

pub fn opt_time(at: Option<DateTime<Utc>>) -> Markup {
    match at {
        Some(at) => time(at),
        None => html! { "—" },
    }
}

/// An activation code with all but its last 4 characters hidden (half of
/// it, at most, for codes shorter than 8 characters).
pub fn masked_code(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    let shown = if chars.len() >= 8 { 4 } else { chars.len() / 2 };
    let hidden = chars.len() - shown;
    "•".repeat(hidden) + &chars[hidden..].iter().collect::<String>()
}

/// A yes/no state, as a word and a symbol (not a colour).
pub fn up_down(up: bool) -> Markup {
    if up {
        html! { span.state.good { "✓ up" } }
    } else {
        html! { span.state.bad { "✗ DOWN" } }
    }
}

/// A page that only says something (errors, refusals).
pub fn message(
    status: StatusCode,
    operator: Option<&Operator>,
    title: &str,
    text: &str,
) -> Response {
    let body = html! {
        (banner(Tone::Refused, text))
        p { a href="/console/" { "Back to the overview" } }
    };
    (
        status,
        Html(layout(title, operator, Nav::None, body).into_string()),
    )
        .into_response()
}

/// An error of the shared functions as a page: the contract's message for
/// what the operator can act on, nothing internal for a 5xx (logged).
pub fn error(operator: &Operator, e: ApiError) -> Response {
    let (status, code) = e.status_and_code();
    let text = user_text(&e);
    message(status, Some(operator), &title_of(code), &text)
}

/// What to tell an operator about `e`.
pub fn user_text(e: &ApiError) -> String {
    match e {
        ApiError::Internal(cause) => {
            tracing::error!(error = format!("{cause:#}"), "console: internal error");
            "an internal error occurred; retry, and look in the api's logs if it persists".into()
        }
        other => other.to_string(),
    }
}

fn title_of(code: &str) -> String {
    match code {
        "NOT_FOUND" | "GIFT_CARD_NOT_FOUND" => "Not found".into(),
        "SERVICE_UNAVAILABLE" => "Unavailable".into(),
        "VALIDATION_FAILED" => "Bad request".into(),
        _ => "Error".into(),
    }
}

/// A rendered page with status 200.
pub fn ok(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// A query string from pairs, skipping empty values.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .copied()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    serde_urlencoded::to_string(kept).unwrap_or_default()
}

/// A `<svg>` sparkline of `values` (oldest first), scaled to its maximum.
pub fn sparkline(values: &[f64], label: &str) -> Markup {
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    let (w, h) = (300.0, 40.0);
    let step = if values.len() > 1 {
        w / (values.len() - 1) as f64
    } else {
        w
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = if max > 0.0 { h - v / max * h } else { h };
            format!("{:.1},{:.1}", i as f64 * step, y)
        })
        .collect();
    html! {
        svg.spark viewBox="0 0 300 40" preserveAspectRatio="none" role="img" aria-label=(label) {
            polyline points=(points.join(" ")) {}
        }
    }
}

/// Non-breaking text for empty cells.
pub fn dash() -> Markup {
    PreEscaped("—".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_show_only_their_last_characters() {
        assert_eq!(masked_code("ABCD-0001-XYZ9"), "••••••••••XYZ9");
        assert_eq!(masked_code("ABCDEFGH"), "••••EFGH");
        assert_eq!(masked_code("ABCDEF"), "•••DEF");
        assert_eq!(masked_code("AB"), "•B");
        assert_eq!(masked_code("A"), "•");
    }

    #[test]
    fn text_is_escaped_and_nothing_is_inline() {
        let page = layout(
            "<script>alert(1)</script>",
            None,
            Nav::None,
            html! { p { ("\"><img src=x onerror=alert(1)>") } },
        )
        .into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img src=x"), "{page}");
        assert!(!page.contains("style="), "{page}");
        assert!(!page.contains("<style"), "{page}");
        assert!(page.contains("&lt;script&gt;"), "{page}");
    }
}
