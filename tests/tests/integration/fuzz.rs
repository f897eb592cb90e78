//! A fuzzing pass over the HTTP surface: Schemathesis generates requests
//! (valid and invalid ones) for every operation of `/openapi.json` and
//! sends them to a real api process, with a real worker, NATS and
//! PostgreSQL behind it. Nothing it sends may get a 5xx.
//!
//! Schemathesis is pinned with hashes in `tests/schemathesis.requirements.txt`
//! and installed into `.tools/schemathesis` by
//! `scripts/install-schemathesis.sh`, which `./scripts/test.sh` runs; the
//! seed is fixed, so a run is repeatable.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use giftcard_tests::processes::ApiProcess;
use giftcard_tests::TestApp;

const API: &str = env!("CARGO_BIN_EXE_giftcard-api-under-test");

/// Test cases per operation and phase: about two minutes on 2 cores.
const EXAMPLES: &str = "300";
const SEED: &str = "20261201";
/// What must hold for every answer (Schemathesis' names).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
    response_schema_conformance,response_headers_conformance,ignored_auth";

/// What CPython 3.11 raises at random inside `ast.parse` when Hypothesis
/// describes a strategy from several threads (CPython gh-106905): a crash
/// of the tool, not an answer of the api. One more run is allowed for it.
const CPYTHON_AST_BUG: &str = "AST constructor recursion depth mismatch";

fn schemathesis() -> PathBuf {
    let path = std::env::var_os("GIFTCARD_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| giftcard_tests::servers::repo_root().join(".tools/schemathesis/bin/st"));
    assert!(
        path.exists(),
        "{} is missing: run ./scripts/install-schemathesis.sh (./scripts/test.sh does), \
         or set GIFTCARD_SCHEMATHESIS to an `st` executable",
        path.display()
    );
    path
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_in_the_openapi_surface() {
    let st = schemathesis();
    let app = TestApp::spawn().await;
    let api = ApiProcess::spawn_api(API.as_ref(), &app, "fuzz-api", &[]);
    api.wait_ready(&app.http).await;
    let mut app = app;
    app.api_url = api.url.clone();
    // Something for it to find: a card with stock and a funded wallet.
    let card = app.card_with_stock("1.00", 50).await;
    app.credit("admin", "100.00").await;
    eprintln!("fuzzing {} (card {card})", api.url);

    let requests_before = api
        .metric(&app.http, "giftcard_api_http_requests_total")
        .await;
    let report = tempfile::tempdir().expect("report dir");
    let mut run = fuzz(&st, &api, &app, report.path()).await;
    if !run.status.success() && String::from_utf8_lossy(&run.stdout).contains(CPYTHON_AST_BUG) {
        eprintln!("schemathesis crashed inside CPython ({CPYTHON_AST_BUG}); running it again");
        run = fuzz(&st, &api, &app, report.path()).await;
    }
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let requests = api
        .metric(&app.http, "giftcard_api_http_requests_total")
        .await
        - requests_before;
    let server_errors = server_errors(&app, &api).await;
    eprintln!("{stdout}\n{stderr}");
    eprintln!(
        "schemathesis sent {} requests; {} answered 5xx",
        requests as u64, server_errors as u64
    );
    assert_eq!(server_errors, 0.0, "the api answered 5xx (above)");
    assert!(
        run.status.success(),
        "schemathesis found failures (above; its seed is {SEED})"
    );
    assert!(
        requests > 300.0,
        "only {requests} requests: nothing was fuzzed"
    );
    assert!(api.alive(), "the api survived");
    app.stop().await;
}

/// Requests the api process answered with a 5xx, by its own metrics.
async fn server_errors(app: &TestApp, api: &ApiProcess) -> f64 {
    let requests = "giftcard_api_http_requests_total";
    api.metric_where(&app.http, requests, &[("status_class", "5xx")])
        .await
}

/// One Schemathesis run against `api`, its junit report in `report`.
async fn fuzz(st: &Path, api: &ApiProcess, app: &TestApp, report: &Path) -> Output {
    let (st, url, token) = (st.to_owned(), api.url.clone(), app.admin_token());
    let report = report.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new(st)
            .args(["run", &format!("{url}/openapi.json")])
            .args(["--checks", CHECKS])
            .args(["--max-examples", EXAMPLES, "--seed", SEED])
            .args(["--phases", "examples,coverage,fuzzing,stateful"])
            .args(["--workers", "2", "--request-timeout", "60"])
            .args(["--suppress-health-check", "all", "--no-color"])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--report", "junit", "--report-dir"])
            .arg(&report)
            .env("NO_COLOR", "1")
            .output()
            .expect("run schemathesis")
    })
    .await
    .expect("schemathesis task")
}
