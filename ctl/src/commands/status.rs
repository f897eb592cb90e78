//! `status`: readiness of the api (`GET /readyz`, no token), then, with an
//! admin token, the workers and partitions (`GET /v1/admin/partitions`).

use std::fmt::Write as _;

use reqwest::Method;

use super::Ctx;
use crate::error::CtlError;
use crate::model::{PartitionsReport, Readiness};
use crate::output::{key_values, opt, print_key_values, print_raw, table};

/// How to see the partitions when no admin token was given.
pub const PARTITIONS_HINT: &str = "workers and partitions need an admin token: export \
     GIFTCARD_JWT_SECRET and pass --admin (or set GIFTCARD_TOKEN to an admin JWT)";

/// `has_token`: whether the client carries a token (an admin one, unless
/// the caller passed something else, which the api answers with 403).
pub async fn run(ctx: &Ctx, has_token: bool) -> Result<(), CtlError> {
    let url = ctx.client.url(&["readyz"]);
    let reply = ctx
        .client
        .send(ctx.client.request(Method::GET, url.clone()))
        .await?;
    let state = reply
        .json::<Readiness>()
        .ok()
        .and_then(|r| r.status)
        .unwrap_or_else(|| {
            if reply.status.is_success() {
                "ready"
            } else {
                "unavailable"
            }
            .to_owned()
        });
    let ready = reply.status.is_success();
    // With --json, one document: the partitions body when it will be
    // fetched, the readiness body otherwise.
    if ctx.json {
        if !(ready && has_token) {
            print_raw(&reply);
        }
    } else {
        print_key_values(&[
            ("api", url.as_str().trim_end_matches("/readyz").to_owned()),
            ("status", state.clone()),
            ("http", reply.status.as_u16().to_string()),
        ]);
    }
    if !ready {
        return Err(CtlError::NotReady {
            url: url.to_string(),
            status: reply.status.as_u16(),
            state,
        });
    }
    if !has_token {
        if ctx.json {
            eprintln!("hint: {PARTITIONS_HINT}");
        } else {
            println!("\n{PARTITIONS_HINT}");
        }
        return Ok(());
    }
    let reply = ctx.client.get(&["v1", "admin", "partitions"]).await?;
    if ctx.json {
        print_raw(&reply);
    } else {
        let report: PartitionsReport = reply.json()?;
        print!("\n{}", render(&report));
    }
    Ok(())
}

/// The workers table, the partitions table and the totals.
pub fn render(report: &PartitionsReport) -> String {
    let mut out = String::new();
    if report.workers.is_empty() {
        out.push_str("no workers registered\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .workers
            .iter()
            .map(|w| {
                let owned = match (w.partitions_owned, w.leases_held) {
                    (Some(o), Some(h)) if o != h => format!("{o} ({h} leases)"),
                    (owned, held) => opt(&owned.or(held)),
                };
                vec![w.id.clone(), owned, opt(&w.started_at), opt(&w.ops_addr)]
            })
            .collect();
        out.push_str(&table(
            &["worker", "partitions owned", "started", "ops addr"],
            &rows,
        ));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = report
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.owner.clone().unwrap_or_else(|| "(none)".to_owned()),
                opt(&p.token),
                opt(&p.pending),
                opt(&p.ack_pending),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("no partitions\n");
    } else {
        out.push_str(&table(
            &["partition", "owner", "token", "pending", "ack pending"],
            &rows,
        ));
    }
    let backlog: u64 = report
        .partitions
        .iter()
        .map(|p| p.pending.unwrap_or(0) + p.ack_pending.unwrap_or(0))
        .sum();
    let unowned = report
        .partitions
        .iter()
        .filter(|p| p.owner.is_none())
        .count();
    let no_consumer = report
        .partitions
        .iter()
        .filter(|p| p.pending.is_none())
        .count();
    let mut totals = vec![
        ("total backlog", backlog.to_string()),
        (
            "partitions without owner",
            format!("{unowned} of {}", report.partitions.len()),
        ),
        ("dead-letter backlog", opt(&report.dead_letter_backlog)),
    ];
    if no_consumer > 0 {
        totals.push((
            "partitions without consumer",
            format!("{no_consumer} (no worker has created them yet)"),
        ));
    }
    let _ = write!(out, "\n{}", key_values(&totals));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_workers_partitions_and_totals() {
        let report: PartitionsReport = serde_json::from_str(
            r#"{
              "partitions": [
                {"partition": 0, "owner": "worker-a", "token": 7, "acquired_at": "2026-01-01T00:00:00Z",
                 "pending": 3, "ack_pending": 2, "redelivered": 1},
                {"partition": 1, "owner": null, "token": null, "acquired_at": null,
                 "pending": 10, "ack_pending": 0, "redelivered": 0},
                {"partition": 2, "owner": "worker-b", "token": 12, "acquired_at": "2026-01-01T00:00:00Z",
                 "pending": 0, "ack_pending": 0, "redelivered": 0}
              ],
              "workers": [
                {"id": "worker-a", "started_at": "2026-01-01T00:00:00Z", "ops_addr": "10.0.0.1:9090",
                 "partitions_owned": 1, "leases_held": 1},
                {"id": "worker-b", "started_at": "2026-01-01T00:00:01Z", "ops_addr": "10.0.0.2:9090",
                 "partitions_owned": 2, "leases_held": 1}
              ],
              "dead_letter_backlog": 4
            }"#,
        )
        .unwrap();
        let expected = "\
WORKER    PARTITIONS OWNED  STARTED               OPS ADDR
worker-a  1                 2026-01-01T00:00:00Z  10.0.0.1:9090
worker-b  2 (1 leases)      2026-01-01T00:00:01Z  10.0.0.2:9090

PARTITION  OWNER     TOKEN  PENDING  ACK PENDING
0          worker-a  7      3        2
1          (none)    -      10       0
2          worker-b  12     0        0

total backlog:            15
partitions without owner: 1 of 3
dead-letter backlog:      4
";
        assert_eq!(render(&report), expected);
    }

    #[test]
    fn renders_a_fleet_without_workers_or_consumers() {
        let report: PartitionsReport = serde_json::from_str(
            r#"{"partitions": [{"partition": 0, "owner": null, "token": null, "acquired_at": null,
                 "pending": null, "ack_pending": null, "redelivered": null}],
                "workers": [], "dead_letter_backlog": 0}"#,
        )
        .unwrap();
        let out = render(&report);
        assert!(out.starts_with("no workers registered\n"), "{out}");
        assert!(
            out.contains("0          (none)  -      -        -\n"),
            "{out}"
        );
        assert!(
            out.contains("partitions without owner:    1 of 1\n"),
            "{out}"
        );
        assert!(out.contains("partitions without consumer: 1"), "{out}");
    }
}
