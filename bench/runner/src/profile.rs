//! Flame graphs of the api, the worker and PostgreSQL's backends under the
//! hot load: `perf record`
//! (software `cpu-clock` events, DWARF call graphs: this VM has no hardware
//! counters), folded and drawn with inferno. Also a ranked summary: the
//! share of each process's samples spent in each area (HTTP, JSON, NATS
//! client, PostgreSQL client, tracing, runtime, kernel, …), which times the
//! process's CPU per purchase says how many microseconds each area costs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use serde::Serialize;

/// Sampling frequency (Hz) and how long the profile runs.
const FREQUENCY: &str = "499";
pub const SECONDS: u64 = 10;

/// Areas a stack is counted in (the first whose pattern any frame
/// contains, checked from the leaf up), in this order.
const AREAS: &[(&str, &[&str])] = &[
    (
        "JSON (serde_json)",
        &["serde_json", "serde::de", "serde::ser"],
    ),
    (
        "JWT / HMAC / SHA-2",
        &["jsonwebtoken", "hmac", "sha2", "base64"],
    ),
    (
        "tracing / spans / OpenTelemetry",
        &["tracing", "opentelemetry"],
    ),
    (
        "metrics",
        &["metrics::", "metrics_exporter", "metrics_util"],
    ),
    ("NATS client (async_nats)", &["async_nats"]),
    (
        "PostgreSQL client (sqlx, sea-orm)",
        &["sqlx", "sea_orm", "sea_query"],
    ),
    (
        "HTTP server (hyper, axum, tower)",
        &["hyper", "axum", "tower", "http::"],
    ),
    ("async runtime (tokio)", &["tokio"]),
    (
        "memory allocation",
        &[
            "malloc",
            "_int_free",
            "__libc_free",
            "cfree",
            "realloc",
            "__rust_alloc",
            "__rust_dealloc",
            "AllocSet",
            "palloc",
            "pfree",
        ],
    ),
    ("PostgreSQL: index inserts", &["btinsert", "_bt_doinsert"]),
    (
        "PostgreSQL: index scans",
        &["btgettuple", "_bt_first", "_bt_next", "index_getnext"],
    ),
    (
        "PostgreSQL: WAL and commit",
        &["XLog", "RecordTransactionCommit", "CommitTransaction"],
    ),
    (
        "PostgreSQL: planning and executor start-up",
        &[
            "ExecutorStart",
            "ExecInitNode",
            "GetCachedPlan",
            "pg_plan_query",
            "standard_planner",
        ],
    ),
    (
        "PostgreSQL: heap and constraints",
        &[
            "heap_insert",
            "heap_update",
            "heap_lock_tuple",
            "ExecConstraints",
        ],
    ),
    (
        "PostgreSQL: protocol (parse, bind, send)",
        &[
            "exec_parse_message",
            "exec_bind_message",
            "pq_getbyte",
            "pq_flush",
            "printtup",
        ],
    ),
    (
        "kernel (syscalls, network, scheduling)",
        &[
            "[kernel",
            "_sys_",
            "entry_SYSCALL",
            "do_syscall",
            "finish_task_switch",
        ],
    ),
];

#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub process: String,
    /// Sampled CPU time, ms (the folded stacks weigh each sample by its period).
    pub sampled_ms: f64,
    /// Area → share of the samples (0..1), largest first.
    pub areas: Vec<(String, f64)>,
    /// The 20 functions with the most samples at the top of the stack.
    pub top_self: Vec<(String, f64)>,
    pub flamegraph: String,
}

fn tool(name: &str) -> anyhow::Result<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let local = repo.join(".tools/bin").join(name);
    if local.exists() {
        return Ok(local);
    }
    which(name).with_context(|| {
        format!("{name} not found: ./bench/run.sh installs it (apt-get install -y linux-perf; cargo install inferno --locked --root .tools)")
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// Starts `perf record` on `pids` (one profile) for [`SECONDS`]; wait with [`finish`].
pub fn start(
    name: &str,
    pids: &[u32],
    dir: &Path,
) -> anyhow::Result<(std::process::Child, PathBuf)> {
    let data = dir.join(format!("perf-{name}.data"));
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let child = Command::new(tool("perf")?)
        .args([
            "record",
            "-F",
            FREQUENCY,
            "-e",
            "cpu-clock",
            "--call-graph",
            "dwarf,16384",
        ])
        .args(["-p", &pids.join(","), "-o"])
        .arg(&data)
        .args(["--", "sleep", &SECONDS.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf record")?;
    Ok((child, data))
}

/// Waits for the recording, folds it and draws `flame-<name>.svg`.
pub fn finish(
    name: &str,
    mut recording: std::process::Child,
    data: &Path,
    dir: &Path,
) -> anyhow::Result<Profile> {
    recording.wait().context("waiting for perf record")?;
    let script = Command::new(tool("perf")?)
        .args(["script", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .context("running perf script")?;
    let folded = pipe(&tool("inferno-collapse-perf")?, &[], &script.stdout)?;
    let svg = pipe(
        &tool("inferno-flamegraph")?,
        &["--title", &format!("{name} under the hot load")],
        &folded,
    )?;
    let svg_name = format!("flame-{name}.svg");
    std::fs::write(dir.join(&svg_name), svg)?;
    std::fs::write(dir.join(format!("flame-{name}.folded")), &folded)?;
    let _ = std::fs::remove_file(data);
    Ok(summarize(name, &String::from_utf8_lossy(&folded), svg_name))
}

/// The processes whose parent is `pid` (PostgreSQL's backends).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1;
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

fn pipe(program: &Path, args: &[&str], input: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", program.display()))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok(out.stdout)
}

/// Shares of the samples by area and by leaf function, from folded stacks
/// (`frame;frame;…;leaf count` per line).
pub fn summarize(name: &str, folded: &str, flamegraph: String) -> Profile {
    let mut total = 0u64;
    let mut areas: BTreeMap<&str, u64> = BTreeMap::new();
    let mut leaves: BTreeMap<String, u64> = BTreeMap::new();
    for line in folded.lines() {
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        total += count;
        let frames: Vec<&str> = stack.split(';').collect();
        let area = frames
            .iter()
            .rev()
            .find_map(|f| {
                AREAS
                    .iter()
                    .find(|(_, pats)| pats.iter().any(|p| f.contains(p)))
                    .map(|(a, _)| *a)
            })
            .unwrap_or("other (application code)");
        *areas.entry(area).or_default() += count;
        let leaf = frames.last().copied().unwrap_or("?");
        *leaves.entry(short(leaf)).or_default() += count;
    }
    let share = |n: u64| n as f64 / total.max(1) as f64;
    let mut areas: Vec<(String, f64)> = areas
        .into_iter()
        .map(|(a, n)| (a.to_owned(), share(n)))
        .collect();
    areas.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut top: Vec<(String, f64)> = leaves.into_iter().map(|(f, n)| (f, share(n))).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(20);
    Profile {
        process: name.to_owned(),
        sampled_ms: total as f64 / 1e6,
        areas,
        top_self: top,
        flamegraph,
    }
}

/// A frame without its symbol hash (`::h` and 16 hex digits), at most 90 characters.
fn short(frame: &str) -> String {
    let f = match frame.rsplit_once("::h") {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => frame,
    };
    f.chars().take(90).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_stacks_are_attributed_leaf_first() {
        let folded = "main;tokio::run;hyper::proto::parse;serde_json::de::from_slice 3\n\
                      main;tokio::run;hyper::proto::parse 1\n\
                      main;tokio::run;sqlx_postgres::io::send;[kernel.kallsyms] 4\n\
                      main;giftcard_worker::decide 2\n";
        let p = summarize("api", folded, "x.svg".into());
        assert_eq!(p.sampled_ms, 1e-5);
        let get = |a: &str| p.areas.iter().find(|(n, _)| n == a).map(|(_, s)| *s);
        assert_eq!(get("JSON (serde_json)"), Some(0.3));
        assert_eq!(get("HTTP server (hyper, axum, tower)"), Some(0.1));
        assert_eq!(get("kernel (syscalls, network, scheduling)"), Some(0.4));
        assert_eq!(get("other (application code)"), Some(0.2));
        assert_eq!(p.top_self[0].0, "[kernel.kallsyms]");
        assert_eq!(
            short("hyper::proto::h1::io::Buffered::poll::h0123456789abcdef"),
            "hyper::proto::h1::io::Buffered::poll"
        );
    }
}
