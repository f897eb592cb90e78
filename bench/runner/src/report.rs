//! The report: machine and command, the comparison with the targets of
//! issue 14, CPU per purchase by process, the peers' SQL limits, the
//! profile, the soak, the R3 cluster, the scale-out; and a chart of
//! throughput and p99 latency by strategy and scenario.

use std::collections::BTreeMap;
use std::fmt::Write as _;

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
pub async fn machine() -> Value {
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
            s.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
        / 1024.0
        / 1024.0;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": format!("{mem:.1}"),
        "kernel": command("uname", &["-sr"]),
        "postgres": command("postgres", &["--version"]),
        "nats_server": command(&giftcard_tests::servers::nats_server_binary().display().to_string(), &["--version"]),
        "git_commit": command("git", &["rev-parse", "--short", "HEAD"]),
        "load_average_at_end": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "durability": "PostgreSQL defaults (fsync on, synchronous_commit on); NATS JetStream file storage, defaults (R1) unless stated; every publish acknowledged",
    })
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The compare runs averaged over rounds: one entry per (strategy, scenario).
pub fn means(results: &[Value]) -> Vec<Value> {
    let mut groups: BTreeMap<(usize, String, String), Vec<&Value>> = BTreeMap::new();
    let mut order: Vec<(String, String)> = Vec::new();
    for r in results {
        let key = (s(&r["scenario"]).to_owned(), s(&r["strategy"]).to_owned());
        if !order.contains(&key) {
            order.push(key.clone());
        }
        let pos = order.iter().position(|k| *k == key).unwrap_or(0);
        groups.entry((pos, key.0, key.1)).or_default().push(r);
    }
    groups
        .into_values()
        .map(|runs| {
            let mut m = runs[0].clone();
            let n = runs.len() as f64;
            let avg = |get: &dyn Fn(&Value) -> f64| runs.iter().map(|r| get(r)).sum::<f64>() / n;
            m["throughput_per_sec"] = avg(&|r| f(&r["throughput_per_sec"])).into();
            for q in ["p50", "p99"] {
                m["latency_ms"][q] = avg(&|r| f(&r["latency_ms"][q])).into();
            }
            if let Some(cpu) = runs[0]["cpu_us_per_purchase"].as_object() {
                for k in cpu.keys() {
                    m["cpu_us_per_purchase"][k] = avg(&|r| f(&r["cpu_us_per_purchase"][k])).into();
                }
            }
            m["rounds"] = runs.len().into();
            m["per_round_throughput"] = runs
                .iter()
                .map(|r| r["throughput_per_sec"].clone())
                .collect();
            m
        })
        .collect()
}

fn find<'a>(results: &'a [Value], strategy: &str, scenario: &str) -> Option<&'a Value> {
    results
        .iter()
        .find(|r| r["strategy"] == strategy && r["scenario"] == scenario)
}

pub fn markdown(doc: &Value, args: &Args) -> String {
    let mut md = String::from("# Benchmark: queue-driven pipeline vs database locking\n\n");
    if let Some(reason) = &args.provisional {
        let _ = writeln!(md, "> **PROVISIONAL**: {reason}. Ratios are directional; the final report is measured on a quiet machine.\n");
    }
    header(&mut md, &doc["machine"], args);
    if let Some(errors) = doc["errors"].as_object().filter(|e| !e.is_empty()) {
        md.push_str("## Suites that failed\n\n");
        for (suite, e) in errors {
            let _ = writeln!(md, "- **{suite}**: {}", s(e));
        }
        md.push('\n');
    }
    let compared = means(doc["compare"].as_array().map_or(&[][..], |v| v));
    if !compared.is_empty() {
        comparison(&mut md, &compared, args);
        targets(&mut md, &compared, args);
        cpu_table(&mut md, &compared);
        breakdown(&mut md, &compared);
        hot_bound(&mut md, &compared);
    }
    if let Some(limits) = doc["sql"].as_array().filter(|l| !l.is_empty()) {
        sql_limits(&mut md, limits, &compared, args);
    }
    if !compared.is_empty() {
        md.push_str(PEERS);
    }
    if doc["profile"].is_object() {
        profile(&mut md, &doc["profile"]);
    }
    if doc["soak"].is_object() {
        soak(&mut md, &doc["soak"]);
    }
    if doc["cluster"].is_object() {
        cluster(&mut md, &doc["cluster"], &compared);
    }
    if let Some(scale) = doc["scale"].as_array().filter(|l| !l.is_empty()) {
        scale_out(&mut md, scale, args);
    }
    if !compared.is_empty() {
        md.push_str("\n![throughput and p99 by strategy and scenario](chart.svg)\n");
    }
    md
}

/// Why each peer is as fast as we know how to make it.
const PEERS: &str = "
## The peers, and why each is as fast as it can be

- **One round trip** (`skip-locked`, `advisory-lock`): the purchase is one call of a PL/pgSQL function (`bench/peer/src/buy.rs`) that reads the card, claims the codes, debits the wallet and writes the ledger entry and the purchase row in one READ COMMITTED transaction. Statement by statement it was eight round trips (a look-up of the purchase, `BEGIN`, five statements, `COMMIT`), plus a ping per statement from the pool; under the advisory lock every one of them was spent holding the card's lock.
- **Plan choice**: the function runs with `plan_cache_mode = force_generic_plan` (planned once per connection; re-planning every call cost as much as running it), and the claim is `id = ANY (ARRAY(SELECT … LIMIT n FOR UPDATE SKIP LOCKED))`, whose generic plan stays on the indexes (an `IN (SELECT …)` join's generic plan can turn into a sequential scan).
- **Dead index entries**: a claimed code leaves a dead entry at the front of the card's available-codes index until vacuum; a claim that scans from the start of the card wades through all of them (the first `EXPLAIN` above: thousands of buffers after a few seconds of load). The peer remembers the last code it claimed per card and starts there (the second `EXPLAIN`: a handful), falling back to the start only when nothing is left after it.
- **Pool size**: the best connection count of the `pgbench` sweep above (the `sql` suite runs first and hands it to the peer; 32 without it): PostgreSQL does best with a few connections per core, and more only queue on the same cores.
- **Wallet contention**: none from the load generator: each client buys as its own share of the 1000 buyers, so no two requests debit one wallet at the same time.
- **HTTP**: axum with the same extractors as the api, no look-up before a purchase (a repeated Idempotency-Key collides on the purchase row and is answered from the stored one), HS256 tokens verified per request like the api.
- **Optimistic** (`optimistic`, `optimistic-random`): true to the origin (row version, 3 retries 1 s apart), statement by statement; only the look-up before each purchase and the per-statement ping are gone.
";

fn header(md: &mut String, machine: &Value, args: &Args) {
    let _ = writeln!(
        md,
        "Machine: {} ({} cores, {} GiB), {}; {}; {}. Commit {}. Load average at the end: {}. Durability: {}.\n",
        s(&machine["cpu"]),
        machine["cores"],
        s(&machine["memory_gib"]),
        s(&machine["kernel"]),
        s(&machine["postgres"]),
        s(&machine["nats_server"]),
        s(&machine["git_commit"]),
        s(&machine["load_average_at_end"]),
        s(&machine["durability"]),
    );
    let _ = writeln!(
        md,
        "Command: `./bench/run.sh --suites {} --clients {} --duration {} --rounds {}` (every process on this machine; {} closed-loop clients over {} buyers, each client its own share of them, waiting up to 30 s for each result; hot = one card, spread = {} cards, sellout = one card with {} codes and {} requests).\n",
        args.suites.join(","),
        args.clients,
        args.duration,
        args.rounds,
        args.clients,
        args.users,
        args.spread_cards,
        args.sellout_stock,
        args.sellout_stock * 4
    );
}

fn comparison(md: &mut String, results: &[Value], args: &Args) {
    if args.rounds > 1 {
        let _ = writeln!(
            md,
            "Means over {} rounds (A B A B); each round's throughput is in `results.json`.\n",
            args.rounds
        );
    }
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
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} |",
            s(&r["scenario"]),
            s(&r["strategy"]),
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
        );
    }
}

fn targets(md: &mut String, results: &[Value], args: &Args) {
    md.push_str("\n## Targets (issue 14)\n\n");
    let ratio = |scenario: &str| {
        let p = find(results, "pipeline", scenario)?;
        let k = find(results, "skip-locked", scenario)?;
        Some(f(&p["throughput_per_sec"]) / f(&k["throughput_per_sec"]).max(1e-9))
    };
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    if let Some(x) = ratio("hot") {
        let p99 = find(results, "pipeline", "hot").map_or(0.0, |p| f(&p["latency_ms"]["p99"]));
        let _ = writeln!(
            md,
            "- hot, {} clients: pipeline {x:.2}x skip-locked (target >= 3x) {}; pipeline p99 {p99:.1} ms (target < 50 ms) {}",
            args.clients,
            met(x >= 3.0),
            met(p99 < 50.0)
        );
    }
    if let Some(x) = ratio("spread") {
        let _ = writeln!(
            md,
            "- spread over {} cards: pipeline {x:.2}x skip-locked (target >= 2x) {}",
            args.spread_cards,
            met(x >= 2.0)
        );
    }
    let conflicts: f64 = results
        .iter()
        .filter(|r| r["strategy"] == "pipeline")
        .map(|r| f(&r["peer_conflicts"]))
        .sum();
    let _ = writeln!(
        md,
        "- pipeline conflicts: {conflicts} (target 0) {}",
        met(conflicts == 0.0)
    );
    if let Some(p) = find(results, "pipeline", "sellout") {
        let _ = writeln!(
            md,
            "- sellout: pipeline winners {} of stock {}, out of arrival order {} (target: exactly stock, 0)",
            p["invariants"]["succeeded"], args.sellout_stock, p["invariants"]["out_of_order"]
        );
    }
    if let Some(p) = find(results, "pipeline", "hot") {
        let peak = &p["memory_mib"]["peak_rss_mib"];
        let ok = ["api", "worker"].iter().all(|k| f(&peak[*k]) < 64.0);
        let _ = writeln!(
            md,
            "- memory under hot: api {:.0} MiB, worker {:.0} MiB (target: each < 64 MiB) {}",
            f(&peak["api"]),
            f(&peak["worker"]),
            met(ok)
        );
    }
}

/// Process names in a stable column order.
fn cpu_columns(results: &[Value]) -> Vec<String> {
    let preferred = ["loadgen", "api", "nats", "worker", "postgres"];
    let mut cols: Vec<String> = preferred.iter().map(|s| s.to_string()).collect();
    for r in results {
        if let Some(m) = r["cpu_us_per_purchase"].as_object() {
            for k in m.keys() {
                if !cols.contains(k) && k != "total" {
                    cols.push(k.clone());
                }
            }
        }
    }
    cols.push("total".into());
    cols
}

fn cpu_table(md: &mut String, results: &[Value]) {
    md.push_str("\n## CPU time per purchase, by process (µs)\n\n");
    md.push_str("User + system time from `/proc/<pid>/stat` at the start and the end of the measured window (PostgreSQL: the postmaster and every backend), divided by the purchases completed in it. `loadgen` is the load generator itself, sharing the machine.\n\n");
    let cols = cpu_columns(results);
    let _ = writeln!(md, "| scenario | strategy | {} |", cols.join(" | "));
    let _ = writeln!(md, "| --- | --- |{}", " ---: |".repeat(cols.len()));
    for r in results {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| match r["cpu_us_per_purchase"].get(c) {
                Some(v) if v.is_number() => format!("{:.0}", f(v)),
                _ => "-".into(),
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            s(&r["scenario"]),
            s(&r["strategy"]),
            cells.join(" | ")
        );
    }
}

fn breakdown(md: &mut String, results: &[Value]) {
    let rows: Vec<&Value> = results
        .iter()
        .filter(|r| r["pipeline_breakdown"].is_object())
        .collect();
    if rows.is_empty() {
        return;
    }
    md.push_str("\n## Where the pipeline's time goes\n\n");
    md.push_str("Means over each run, from the api's and the worker's `/metrics` (saved next to the results): messages per partition batch, partition batches per transaction (group commit), one transaction, a batch from pull to ack, and one JetStream publish up to its PubAck.\n\n");
    md.push_str("| scenario | batch size | batches per transaction | transaction ms | batch ms | publish ms |\n");
    md.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    for r in rows {
        let b = &r["pipeline_breakdown"];
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            s(&r["scenario"]),
            b["batch_size"],
            b["group_partitions"],
            b["transaction_ms"],
            b["batch_ms"],
            b["publish_ms"]
        );
    }
}

/// Why the hot scenario runs at the rate it does: one card is one
/// partition, so one worker loop and one PostgreSQL backend decide every
/// purchase of it, one batch after another.
fn hot_bound(md: &mut String, results: &[Value]) {
    let (Some(p), Some(k)) = (
        find(results, "pipeline", "hot"),
        find(results, "skip-locked", "hot"),
    ) else {
        return;
    };
    let b = &p["pipeline_breakdown"];
    let (size, batch_ms, txn_ms) = (
        f(&b["batch_size"]),
        f(&b["batch_ms"]),
        f(&b["transaction_ms"]),
    );
    if size <= 0.0 || batch_ms <= 0.0 {
        return;
    }
    let rate = f(&p["throughput_per_sec"]);
    let cpu = &p["cpu_us_per_purchase"];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy = f(&cpu["total"]) * rate / (cores * 1e4);
    let target = 3.0 * f(&k["throughput_per_sec"]);
    let _ = writeln!(
        md,
        "\n## What bounds the pipeline on one hot card\n\n\
         One card is one partition: one worker loop and one PostgreSQL backend decide all its purchases, one batch after another. \
         Its rate is the batch size over the batch time: {size:.1} / {batch_ms:.1} ms = {:.0}/s (measured: {rate:.0}/s). \
         The transaction takes {:.0} µs of wall time per purchase, of which PostgreSQL's CPU is {:.0} µs; \
         meanwhile the machine is {busy:.0}% busy ({:.0} µs of CPU per purchase over {cores} cores), so the bound is the card's serial loop, not the cores. \
         3x the skip-locked peer is {target:.0}/s: {:.0} µs per purchase for the whole loop, {}.\n\n\
         What would close it (not done; see the profile below): \
         fewer index entries per purchase (each writes eleven: a non-HOT update of its code into the primary key, `(gift_card_id, code)` and purchase indexes, four for its ledger line, four for its purchase row; index inserts and scans are about half of PostgreSQL's profile); \
         overlapping batch N+1's read and plan with batch N's commit, with commits kept in order (today the read's lock on the partition's fence serializes them); \
         one acknowledgement per batch (`AckPolicy::All`) and one reply per api per batch instead of one per message.",
        size * 1000.0 / batch_ms,
        txn_ms * 1000.0 / size,
        f(&cpu["postgres"]),
        f(&cpu["total"]),
        1e6 / target.max(1e-9),
        if 1e6 / target.max(1e-9) < f(&cpu["postgres"]) {
            "less than PostgreSQL's CPU per purchase alone"
        } else {
            "PostgreSQL's CPU per purchase included"
        }
    );
}

fn sql_limits(md: &mut String, limits: &[Value], compared: &[Value], args: &Args) {
    md.push_str("\n## The peers' SQL without HTTP\n\n");
    let _ = writeln!(
        md,
        "`pgbench -M prepared` runs exactly the peer's call (`bench/peer/src/buy.rs`; script saved as `pgbench-<strategy>.sql`) on the hot scenario's data, {} connections, {} s, after a short connection-count sweep; the peer runs with the sweep's best connection count as its pool. pgbench's client hardly takes any CPU, so the best of the sweep is the SQL's limit when PostgreSQL has every core; over HTTP the peer and the load generator share those cores, so the peer's limit is the cores divided by PostgreSQL's CPU per transaction at the sweep's best plus the peer's and the load generator's CPU per purchase (from the hot comparison). The peer should come within 10% of that limit.\n",
        args.clients, args.duration
    );
    md.push_str("| strategy | pgbench tx/s | latency ms | PostgreSQL CPU µs/tx | best of the sweep, tx/s (connections) | peer over HTTP, purchases/s | HTTP / best pgbench | limit sharing the cores, tx/s | HTTP / that limit | sweep (connections: tx/s, PostgreSQL µs/tx) |\n");
    md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
    for l in limits {
        let main = &l["main"];
        let runs: Vec<&Value> = l["sweep"].as_array().into_iter().flatten().collect();
        let best = runs
            .iter()
            .copied()
            .max_by(|a, b| f(&a["tps"]).total_cmp(&f(&b["tps"])))
            .unwrap_or(main);
        let strategy = s(&l["strategy"]);
        let hot = find(compared, strategy, "hot");
        let http = hot.map(|r| f(&r["throughput_per_sec"]));
        let shared = hot.map(|r| shared_limit(best, &r["cpu_us_per_purchase"], strategy));
        let ratio = |num: Option<f64>, den: f64| {
            num.map_or("-".into(), |n| format!("{:.2}", n / den.max(1e-9)))
        };
        let sweep: Vec<String> = runs
            .iter()
            .map(|r| {
                format!(
                    "{}: {:.0}, {:.0}",
                    r["clients"],
                    f(&r["tps"]),
                    f(&r["postgres_cpu_us"])
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "| {strategy} | {:.0} | {:.1} | {:.0} | {:.0} ({}) | {} | {} | {} | {} | {} |",
            f(&main["tps"]),
            f(&main["latency_ms"]),
            f(&main["postgres_cpu_us"]),
            f(&best["tps"]),
            best["clients"],
            http.map_or("-".into(), |h| format!("{h:.0}")),
            ratio(http, f(&best["tps"])),
            shared.map_or("-".into(), |v| format!("{v:.0}")),
            ratio(http, shared.unwrap_or(0.0)),
            sweep.join("; ")
        );
    }
    for l in limits {
        let _ = writeln!(
            md,
            "\n<details><summary>{}: EXPLAIN (ANALYZE, BUFFERS) of the claim after the pgbench run, from the start of the card, then from the cursor</summary>\n\n```\n{}\n\n{}\n```\n</details>",
            s(&l["strategy"]),
            s(&l["explain_from_start"]),
            s(&l["explain_from_cursor"])
        );
    }
}

/// What the peer's SQL can do when PostgreSQL shares this machine's cores
/// with the peer and the load generator: cores over the CPU one purchase
/// takes in all three (PostgreSQL's at the sweep's best connection count).
fn shared_limit(best: &Value, cpu_per_purchase: &Value, strategy: &str) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let us = f(&best["postgres_cpu_us"])
        + f(&cpu_per_purchase[strategy])
        + f(&cpu_per_purchase["loadgen"]);
    cores * 1e6 / us.max(1e-9)
}

fn profile(md: &mut String, run: &Value) {
    md.push_str("\n## Where the pipeline's CPU goes (profile, hot)\n\n");
    md.push_str("A separate hot run with `perf record -e cpu-clock --call-graph dwarf` on the api, the worker and PostgreSQL's backends for 10 s (the profiler slows them; its throughput is not compared). Each area's share of the samples times the process's CPU per purchase in that run gives µs per purchase.\n\n");
    let Some(profiles) = run["profiles"].as_array() else {
        return;
    };
    for p in profiles {
        let name = s(&p["process"]);
        let per = f(&run["cpu_us_per_purchase"][name]);
        let _ = writeln!(
            md,
            "**{name}**: {per:.0} µs per purchase, {:.0} ms of CPU sampled, [flame graph]({})\n",
            f(&p["sampled_ms"]),
            s(&p["flamegraph"])
        );
        md.push_str("| area | share | µs per purchase |\n| --- | ---: | ---: |\n");
        for a in p["areas"].as_array().into_iter().flatten() {
            let share = f(&a[1]);
            let _ = writeln!(
                md,
                "| {} | {:.1}% | {:.0} |",
                s(&a[0]),
                share * 100.0,
                share * per
            );
        }
        md.push_str("\n<details><summary>top functions (self)</summary>\n\n| function | share |\n| --- | ---: |\n");
        for t in p["top_self"].as_array().into_iter().flatten() {
            let _ = writeln!(
                md,
                "| `{}` | {:.1}% |",
                s(&t[0]).replace('|', "\\|"),
                f(&t[1]) * 100.0
            );
        }
        md.push_str("</details>\n\n");
    }
}

fn soak(md: &mut String, soak: &Value) {
    md.push_str("\n## Cost as the data grows (soak)\n\n");
    let _ = writeln!(
        md,
        "One running pipeline: a {}-purchase hot probe on an empty database, {} purchases selling out one card of {} codes, the same probe again. Last probe / first probe: **{:.2}** (target >= 0.90).\n",
        soak["probe"], soak["fill"], soak["fill"], f(&soak["ratio"])
    );
    md.push_str("| phase | purchases/s | p99 ms | activation_codes live / dead | heap / indexes MiB | purchases heap / indexes MiB | peak RSS api / worker MiB |\n");
    md.push_str("| --- | ---: | ---: | --- | --- | --- | --- |\n");
    let table = |stats: &Value, name: &str| -> Value {
        stats["tables"]
            .as_array()
            .and_then(|t| t.iter().find(|r| r["table"] == name).cloned())
            .unwrap_or_default()
    };
    for p in soak["phases"].as_array().into_iter().flatten() {
        let r = &p["result"];
        let codes = table(&p["before"], "activation_codes");
        let purchases = table(&p["before"], "purchases");
        let rss = &r["memory_mib"]["peak_rss_mib"];
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.1} | {} / {} (before) | {} / {} | {} / {} | {:.0} / {:.0} |",
            s(&p["phase"]),
            f(&r["throughput_per_sec"]),
            f(&r["latency_ms"]["p99"]),
            codes["live"],
            codes["dead"],
            codes["heap_mib"],
            codes["index_mib"],
            purchases["heap_mib"],
            purchases["index_mib"],
            f(&rss["api"]),
            f(&rss["worker"]),
        );
    }
    let _ = writeln!(md, "\nAfter the run: `{}`", soak["after"]);
}

fn cluster(md: &mut String, run: &Value, compared: &[Value]) {
    md.push_str("\n## On a 3-node NATS cluster (R3, `sync_interval: always`)\n\n");
    let single = find(compared, "pipeline", "hot");
    md.push_str("| NATS | purchases/s | p50 ms | p99 ms | CPU µs/purchase (total) |\n| --- | ---: | ---: | ---: | ---: |\n");
    if let Some(r) = single {
        let _ = writeln!(
            md,
            "| 1 node, R1, default sync | {:.0} | {:.1} | {:.1} | {:.0} |",
            f(&r["throughput_per_sec"]),
            f(&r["latency_ms"]["p50"]),
            f(&r["latency_ms"]["p99"]),
            f(&r["cpu_us_per_purchase"]["total"])
        );
    }
    let _ = writeln!(
        md,
        "| 3 nodes, R3, sync always | {:.0} | {:.1} | {:.1} | {:.0} |",
        f(&run["throughput_per_sec"]),
        f(&run["latency_ms"]["p50"]),
        f(&run["latency_ms"]["p99"]),
        f(&run["cpu_us_per_purchase"]["total"])
    );
    let _ = writeln!(
        md,
        "\nCPU µs per purchase by process on the cluster: `{}`",
        run["cpu_us_per_purchase"]
    );
}

fn scale_out(md: &mut String, runs: &[Value], args: &Args) {
    md.push_str("\n## Scale-out, simulated (spread)\n\n");
    let _ = writeln!(
        md,
        "Each worker replica in a cgroup of its own limited to {} of a core (`cpu.cfs_quota_us`), so that the workers, not the machine, bound the throughput until something shared saturates. Cores used = CPU seconds over the measured window / window.\n",
        args.worker_cpu
    );
    md.push_str("| workers | purchases/s | vs 1 worker | p99 ms | workers' cores (quota) | api cores | NATS cores | PostgreSQL cores | all processes' cores |\n");
    md.push_str("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    let base = runs
        .first()
        .map_or(1.0, |r| f(&r["throughput_per_sec"]).max(1e-9));
    for r in runs {
        let c = Cores::of(r);
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.2}x | {:.1} | {:.2} ({:.2}) | {:.2} | {:.2} | {:.2} | {:.2} |",
            r["workers"],
            f(&r["throughput_per_sec"]),
            f(&r["throughput_per_sec"]) / base,
            f(&r["latency_ms"]["p99"]),
            c.workers,
            f(&r["workers"]) * args.worker_cpu,
            c.api,
            c.nats,
            c.postgres,
            c.all,
        );
    }
    if let Some(r) = runs.last() {
        let c = Cores::of(r);
        let (name, cores) = [
            ("the api", c.api),
            ("NATS", c.nats),
            ("PostgreSQL", c.postgres),
        ]
        .into_iter()
        .fold(("", 0.0), |a, b| if b.1 > a.1 { b } else { a });
        let quota = f(&r["workers"]) * args.worker_cpu;
        let _ = writeln!(
            md,
            "\nAt {} workers the workers used {:.0}% of their quota; the busiest shared process was {name} at {cores:.2} cores ({:.0} µs per purchase), and all processes together used {:.2} of the machine's {} cores.",
            r["workers"],
            100.0 * c.workers / quota.max(1e-9),
            cores * 1e6 / f(&r["throughput_per_sec"]).max(1e-9),
            c.all,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
    }
}

/// Cores used over a run's measured window, by kind of process.
struct Cores {
    workers: f64,
    api: f64,
    nats: f64,
    postgres: f64,
    all: f64,
}

impl Cores {
    fn of(r: &Value) -> Self {
        let window = f(&r["window_secs"]).max(1e-9);
        let sum = |pred: &dyn Fn(&str) -> bool| -> f64 {
            r["cpu_seconds"].as_object().map_or(0.0, |m| {
                m.iter()
                    .filter(|(k, _)| pred(k))
                    .map(|(_, v)| f(v))
                    .sum::<f64>()
            }) / window
        };
        Self {
            workers: sum(&|k| k.starts_with("worker")),
            api: sum(&|k| k == "api"),
            nats: sum(&|k| k.starts_with("nats")),
            postgres: sum(&|k| k == "postgres"),
            all: sum(&|_| true),
        }
    }
}

/// Two panels: purchases/s and p99 latency, grouped by scenario, a bar per strategy.
pub fn chart(results: &[Value], path: &std::path::Path) -> anyhow::Result<()> {
    let scenarios: Vec<String> = unique(results.iter().map(|r| s(&r["scenario"]).to_owned()));
    let strategies: Vec<String> = unique(results.iter().map(|r| s(&r["strategy"]).to_owned()));
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
        let groups = scenarios.len().max(1) as f64;
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
