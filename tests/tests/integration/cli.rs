//! `giftcardctl` against a real deployment: its exit codes tell scripts
//! what kind of failure happened, and destructive commands ask first.

use clap::Parser;
use giftcard_ctl::error::ExitClass;
use giftcard_ctl::Cli;
use giftcard_tests::{Options, TestApp};

/// Runs `giftcardctl ARGS` against `app` (with `token`); the exit class.
async fn ctl(app: &TestApp, token: &str, args: &[&str]) -> Result<(), ExitClass> {
    let mut argv = vec!["giftcardctl", "--api-url", &app.api_url, "--token", token];
    argv.extend_from_slice(args);
    giftcard_ctl::run(Cli::try_parse_from(argv).expect("valid command line"))
        .await
        .map_err(|e| e.class())
}

#[tokio::test]
async fn exit_codes_tell_not_found_conflict_auth_usage_unavailable_and_network_apart() {
    let mut app = TestApp::spawn_with(Options::default()).await;
    let user = app.token("scripter");
    let admin = app.admin_token();
    let card = app.card_with_stock("1.00", 1).await;
    app.credit("scripter", "5.00").await;
    let card = card.to_string();

    assert_eq!(
        ctl(&app, &user, &["buy", "--card", &card, "--wait", "10"]).await,
        Ok(())
    );
    assert_eq!(
        ctl(&app, &user, &["buy", "--card", &card, "--wait", "10"]).await,
        Err(ExitClass::Conflict),
        "sold out"
    );
    assert_eq!(
        ctl(
            &app,
            &user,
            &["purchase", "show", &uuid::Uuid::new_v4().to_string()]
        )
        .await,
        Err(ExitClass::NotFound)
    );
    assert_eq!(
        ctl(&app, "not-a-token", &["cards", "list"]).await,
        Err(ExitClass::Auth)
    );
    assert_eq!(
        ctl(&app, &user, &["dlq", "list"]).await,
        Err(ExitClass::Auth),
        "a user is not an admin"
    );
    let bad_csv = app.nats.store.path().join("bad.csv");
    std::fs::write(&bad_csv, "not,a,code,file\n").unwrap();
    assert_eq!(
        ctl(
            &app,
            &admin,
            &[
                "codes",
                "import",
                "--card",
                &card,
                bad_csv.to_str().unwrap()
            ]
        )
        .await,
        Err(ExitClass::Usage)
    );
    let closed = format!("http://127.0.0.1:{}", giftcard_tests::servers::free_port());
    let argv = [
        "giftcardctl",
        "--api-url",
        &closed,
        "--token",
        &user,
        "cards",
        "list",
    ];
    let e = giftcard_ctl::run(Cli::try_parse_from(argv).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.class(), ExitClass::Network);
    assert_eq!(e.exit_code(), 7);

    app.nats.stop();
    assert_eq!(
        ctl(&app, &user, &["buy", "--card", &card, "--wait", "0"]).await,
        Err(ExitClass::Unavailable),
        "NATS down: 503"
    );
    app.nats.restart();
    app.stop().await;
}

/// The state of dead letter `id`.
async fn dead_letter_state(app: &TestApp, admin: &str, id: &str) -> String {
    let path = format!("/v1/admin/dead-letters/{id}");
    let (_, _, d) = app
        .call(reqwest::Method::GET, &path, Some(admin), None, &[])
        .await;
    d["state"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn destructive_dead_letter_commands_need_yes_and_dry_run_changes_nothing() {
    let app = TestApp::spawn().await;
    let card = app.card_with_stock("1.00", 1).await;
    // A signed but undecodable message: dead-lettered at once.
    let subject = giftcard_shared::contract::purchase_subject(card, app.options.partitions);
    let mut headers = async_nats::HeaderMap::new();
    TestApp::sign(&subject, &mut headers, b"not json");
    let js = async_nats::jetstream::new(app.nats_client().await);
    js.publish_with_headers(subject, headers, "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let admin = app.admin_token();
    let id = loop {
        let (_, _, list) = app
            .call(
                reqwest::Method::GET,
                "/v1/admin/dead-letters",
                Some(&admin),
                None,
                &[],
            )
            .await;
        if let Some(id) = list["items"][0]["id"].as_str() {
            break id.to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // Not a terminal and no --yes: refused, nothing changed.
    assert_eq!(
        ctl(&app, &admin, &["dlq", "discard", &id]).await,
        Err(ExitClass::Usage)
    );
    assert_eq!(
        ctl(&app, &admin, &["dlq", "replay-all"]).await,
        Err(ExitClass::Usage)
    );
    assert_eq!(
        ctl(&app, &admin, &["dlq", "discard", &id, "--dry-run"]).await,
        Ok(())
    );
    assert_eq!(
        ctl(&app, &admin, &["dlq", "replay-all", "--dry-run"]).await,
        Ok(())
    );
    assert_eq!(dead_letter_state(&app, &admin, &id).await, "pending");

    assert_eq!(
        ctl(&app, &admin, &["dlq", "discard", &id, "--yes"]).await,
        Ok(())
    );
    assert_eq!(dead_letter_state(&app, &admin, &id).await, "discarded");
    app.stop().await;
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let cli = Cli::try_parse_from(["giftcardctl", "completions", shell]).unwrap();
        assert!(matches!(
            cli.command,
            giftcard_ctl::cli::Command::Completions { .. }
        ));
    }
    let mut out = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::Bash,
        &mut <Cli as clap::CommandFactory>::command(),
        "giftcardctl",
        &mut out,
    );
    let script = String::from_utf8(out).unwrap();
    assert!(script.contains("replay-all") && script.contains("--dry-run"));
}
