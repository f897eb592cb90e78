//! The report: machine description, the results table with the targets of
//! issue 5, and a chart of throughput and p99 latency by strategy and
//! scenario.

use plotters::prelude::*;
use serde_json::{json, Value};

use crate::Args;

fn command(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// What the benchmark ran on.
pub async fn machine(pg: &giftcard_tests::PgCluster) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(0.0)
                    / 1024.0
                    / 1024.0
            })
        })
        .unwrap_or(0.0);
    let _ = pg;
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": format!("{mem:.1}"),
        "kernel": command("uname", &["-sr"]),
        "postgres": command("postgres", &["--version"]),
        "nats_server": command(&giftcard_tests::servers::nats_server_binary().display().to_string(), &["--version"]),
        "git_commit": command("git", &["rev-parse", "--short", "HEAD"]),
        "durability": "PostgreSQL defaults (fsync on, synchronous_commit on); NATS JetStream file storage, defaults; every publish acknowledged",
    })
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn find<'a>(results: &'a [Value], strategy: &str, scenario: &str) -> Option<&'a Value> {
    results
        .iter()
        .find(|r| r["strategy"] == strategy && r["scenario"] == scenario)
}

pub fn markdown(results: &[Value], machine: &Value, args: &Args) -> String {
    let mut md = String::from("# Benchmark: queue-driven pipeline vs database locking\n\n");
    md.push_str(&format!(
        "Machine: {} ({} cores, {} GiB), {}; {}; {}. Commit {}. Durability: {}.\n\n",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["memory_gib"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?"),
        machine["postgres"].as_str().unwrap_or("?"),
        machine["nats_server"].as_str().unwrap_or("?"),
        machine["git_commit"].as_str().unwrap_or("?"),
        machine["durability"].as_str().unwrap_or("?"),
    ));
    md.push_str(&format!(
        "Command: `./bench/run.sh --clients {} --duration {}` (every process on this machine; {} clients waiting up to 30 s for each result; hot = one card, spread = {} cards, sellout = one card with {} codes and {} requests).\n\n",
        args.clients, args.duration, args.clients, args.spread_cards, args.sellout_stock, args.sellout_stock * 4
    ));
    md.push_str("| scenario | strategy | purchases/s | p50 ms | p99 ms | succeeded | failures | conflicts | out of order | invariants | peak RSS MiB |\n");
    md.push_str("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- |\n");
    for r in results {
        let inv = &r["invariants"];
        let ok =
            inv["duplicate_codes"] == 0 && inv["over_stock"] == 0 && inv["wallet_mismatches"] == 0;
        let failures: Vec<String> = r["failures"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k} {v}")).collect())
            .unwrap_or_default();
        let rss: Vec<String> = r["memory_mib"]["peak_rss_mib"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k} {:.0}", f(v))).collect())
            .unwrap_or_default();
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} |\n",
            r["scenario"].as_str().unwrap_or(""),
            r["strategy"].as_str().unwrap_or(""),
            f(&r["throughput_per_sec"]),
            f(&r["latency_ms"]["p50"]),
            f(&r["latency_ms"]["p99"]),
            inv["succeeded"],
            if failures.is_empty() {
                "-".to_owned()
            } else {
                failures.join(", ")
            },
            f(&r["peer_conflicts"]),
            inv["out_of_order"],
            if ok {
                "ok".to_owned()
            } else {
                format!("VIOLATED {inv}")
            },
            rss.join(", "),
        ));
    }
    md.push_str("\n## Targets\n\n");
    let ratio = |scenario: &str| {
        let p = find(results, "pipeline", scenario)?;
        let s = find(results, "skip-locked", scenario)?;
        Some(f(&p["throughput_per_sec"]) / f(&s["throughput_per_sec"]).max(1e-9))
    };
    if let Some(x) = ratio("hot") {
        let p99 = find(results, "pipeline", "hot").map_or(0.0, |p| f(&p["latency_ms"]["p99"]));
        md.push_str(&format!(
            "- hot, {} clients: pipeline {x:.2}x skip-locked (target >= 3x) {}; pipeline p99 {p99:.1} ms (target < 100 ms) {}\n",
            args.clients,
            if x >= 3.0 { "met" } else { "MISSED" },
            if p99 < 100.0 { "met" } else { "MISSED" }
        ));
    }
    if let Some(x) = ratio("spread") {
        md.push_str(&format!(
            "- spread over {} cards: pipeline {x:.2}x skip-locked (target >= 1.5x) {}\n",
            args.spread_cards,
            if x >= 1.5 { "met" } else { "MISSED" }
        ));
    }
    if let Some(p) = find(results, "pipeline", "sellout") {
        md.push_str(&format!(
            "- sellout: pipeline winners {} of stock {}, out of arrival order {} (target: exactly stock, 0)\n",
            p["invariants"]["succeeded"], args.sellout_stock, p["invariants"]["out_of_order"]
        ));
    }
    if let Some(p) = find(results, "pipeline", "hot") {
        md.push_str(&format!(
            "- memory under hot: {} (target: api and worker each < 64 MiB)\n",
            p["memory_mib"]["peak_rss_mib"]
        ));
    }
    let breakdown: Vec<&Value> = results
        .iter()
        .filter(|r| r["pipeline_breakdown"].is_object())
        .collect();
    if !breakdown.is_empty() {
        md.push_str("\n## Where the pipeline's time goes\n\n");
        md.push_str("Means over each run, from the api's and the worker's `/metrics` (saved next to the results): messages per partition batch, partition batches per transaction (group commit), one transaction, a batch from pull to ack, and one JetStream publish up to its PubAck.\n\n");
        md.push_str("| scenario | batch size | batches per transaction | transaction ms | batch ms | publish ms |\n");
        md.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
        for r in breakdown {
            let b = &r["pipeline_breakdown"];
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r["scenario"].as_str().unwrap_or(""),
                b["batch_size"],
                b["group_partitions"],
                b["transaction_ms"],
                b["batch_ms"],
                b["publish_ms"],
            ));
        }
    }
    md.push_str("\n![throughput and p99 by strategy and scenario](chart.svg)\n");
    md
}

/// Two panels: purchases/s and p99 latency, grouped by scenario, a bar per strategy.
pub fn chart(results: &[Value], path: &std::path::Path) -> anyhow::Result<()> {
    let scenarios: Vec<String> = unique(
        results
            .iter()
            .map(|r| r["scenario"].as_str().unwrap_or("").to_owned()),
    );
    let strategies: Vec<String> = unique(
        results
            .iter()
            .map(|r| r["strategy"].as_str().unwrap_or("").to_owned()),
    );
    let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    for (panel, (title, key)) in panels.iter().zip([
        ("purchases per second", "throughput"),
        ("p99 latency (ms)", "p99"),
    ]) {
        let value = |r: &Value| {
            if key == "throughput" {
                f(&r["throughput_per_sec"])
            } else {
                f(&r["latency_ms"]["p99"])
            }
        };
        let max = results.iter().map(value).fold(1.0, f64::max) * 1.15;
        let groups = scenarios.len() as f64;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..groups, 0.0..max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(scenarios.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.01 {
                    scenarios.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .draw()?;
        let width = 0.8 / strategies.len().max(1) as f64;
        for (si, strategy) in strategies.iter().enumerate() {
            let color = Palette99::pick(si).to_rgba();
            let bars: Vec<Rectangle<(f64, f64)>> = scenarios
                .iter()
                .enumerate()
                .filter_map(|(gi, scenario)| {
                    let r = find(results, strategy, scenario)?;
                    let x0 = gi as f64 + 0.1 + si as f64 * width;
                    Some(Rectangle::new(
                        [(x0, 0.0), (x0 + width * 0.9, value(r))],
                        color.filled(),
                    ))
                })
                .collect();
            chart
                .draw_series(bars)?
                .label(strategy.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn unique(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in it {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}
