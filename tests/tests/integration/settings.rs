//! Settings have one definition (clap, with `env =`): the servers' `--help`
//! lists each with its variable and default, and README.md's configuration
//! table says the same, both ways.

use std::collections::{BTreeMap, BTreeSet};

use clap::CommandFactory;
use giftcard_shared::config::{ApiSettings, ProvisionSettings, WorkerSettings};

const API: &str = env!("CARGO_BIN_EXE_giftcard-api-under-test");
const WORKER: &str = env!("CARGO_BIN_EXE_giftcard-worker-under-test");

/// Variables read outside the settings structs (telemetry set-up).
const OUTSIDE_SETTINGS: [(&str, &str); 3] = [
    ("GIFTCARD_LOG_FORMAT", "api, worker"),
    ("RUST_LOG", "api, worker"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "api, worker"),
];

/// Every environment variable of `command`: name → default (None if none).
fn variables(command: clap::Command) -> BTreeMap<String, Option<String>> {
    command
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?.to_owned();
            let default = a
                .get_default_values()
                .first()
                .map(|d| d.to_string_lossy().into_owned());
            Some((env, default))
        })
        .collect()
}

/// README.md's configuration table: variable → (used by, default cell).
fn readme_table() -> BTreeMap<String, (String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split("## Configuration")
        .nth(1)
        .expect("a Configuration section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line
            .split(" | ")
            .map(|c| c.trim_matches('|').trim())
            .collect();
        assert!(cells.len() >= 4, "odd row: {line}");
        for name in cells[0].split(", ") {
            rows.insert(
                name.trim_matches('`').to_owned(),
                (cells[1].to_owned(), cells[2].to_owned()),
            );
        }
    }
    assert!(
        rows.len() > 20,
        "README configuration table not found: {rows:?}"
    );
    rows
}

#[test]
fn the_readme_configuration_table_matches_the_settings_both_ways() {
    let programs = [
        ("api", variables(ApiSettings::command())),
        ("worker", variables(WorkerSettings::command())),
        ("nats", variables(ProvisionSettings::command())),
        ("giftcardctl", variables(giftcard_ctl::cli::Cli::command())),
    ];
    let table = readme_table();
    let mut defined: BTreeSet<String> = BTreeSet::new();
    for (program, vars) in &programs {
        for (name, default) in vars {
            defined.insert(name.clone());
            let (used_by, shown) = table
                .get(name)
                .unwrap_or_else(|| panic!("{name} ({program}) is missing from README.md"));
            assert!(
                used_by.split(", ").any(|p| p == *program),
                "README.md says {name} is used by {used_by:?}, but {program} reads it too"
            );
            match default {
                Some(d) => assert_eq!(
                    shown,
                    &format!("`{d}`"),
                    "README.md's default of {name} differs from {program}'s"
                ),
                None => assert!(
                    !shown.starts_with('`'),
                    "README.md gives {name} a default ({shown}) that {program} does not have"
                ),
            }
        }
    }
    for (name, (used_by, _)) in &table {
        if OUTSIDE_SETTINGS.iter().any(|(n, _)| n == name) {
            continue;
        }
        assert!(
            defined.contains(name),
            "README.md documents {name}, which nothing reads"
        );
        for program in used_by.split(", ") {
            let (_, vars) = programs
                .iter()
                .find(|(p, _)| *p == program)
                .unwrap_or_else(|| panic!("unknown program {program:?} for {name}"));
            assert!(
                vars.contains_key(name),
                "README.md says {program} reads {name}; it does not"
            );
        }
    }
}

#[test]
fn both_servers_answer_help_and_version_without_starting() {
    for (binary, name) in [(API, "giftcard-api"), (WORKER, "giftcard-worker")] {
        let out = std::process::Command::new(binary)
            .arg("--help")
            .env_clear()
            .env(
                "GIFTCARD_JWT_SECRET",
                "a-secret-that-must-never-be-printed-0123",
            )
            .output()
            .expect("run --help");
        assert!(out.status.success(), "{name} --help failed: {out:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        let command = if name == "giftcard-api" {
            ApiSettings::command()
        } else {
            WorkerSettings::command()
        };
        for var in variables(command).keys() {
            assert!(
                help.contains(var.as_str()),
                "{name} --help does not list {var}:\n{help}"
            );
        }
        assert!(help.contains("DATABASE_URL") && help.contains("GIFTCARD_PARTITIONS"));
        assert!(help.contains("[default: 64]"), "{help}");
        assert!(
            !help.contains("must-never-be-printed"),
            "a secret in --help:\n{help}"
        );

        let out = std::process::Command::new(binary)
            .arg("--version")
            .output()
            .expect("run --version");
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn a_bad_setting_stops_the_server_naming_the_variable_but_never_a_secret() {
    let out = std::process::Command::new(API)
        .env_clear()
        .env("DATABASE_URL", "postgres://x@127.0.0.1:1/x")
        .env("GIFTCARD_JWT_SECRET", "short-jwt-secret-value")
        .env("GIFTCARD_MESSAGE_SECRET", "m".repeat(40))
        .output()
        .expect("run the api");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GIFTCARD_JWT_SECRET is too short"), "{err}");
    assert!(
        !err.contains("short-jwt-secret-value"),
        "the secret was printed: {err}"
    );

    let out = std::process::Command::new(WORKER)
        .env_clear()
        .env("DATABASE_URL", "postgres://x@127.0.0.1:1/x")
        .env("GIFTCARD_MESSAGE_SECRET", "m".repeat(40))
        .env("GIFTCARD_PARTITIONS", "5000")
        .output()
        .expect("run the worker");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GIFTCARD_PARTITIONS"), "{err}");
}

#[test]
fn an_empty_optional_variable_means_unset() {
    // Compose and Kubernetes pass `${X:-}`: an empty value, not an invalid one.
    let out = std::process::Command::new(API)
        .env_clear()
        .env("DATABASE_URL", "postgres://x@127.0.0.1:1/x")
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env("GIFTCARD_JWT_SECRET", "j".repeat(40))
        .env("GIFTCARD_MESSAGE_SECRET", "m".repeat(40))
        .env("GIFTCARD_JWT_PREVIOUS_SECRET", "")
        .env("GIFTCARD_MESSAGE_PREVIOUS_SECRET", "")
        .env("GIFTCARD_API_METRICS_LISTEN", "")
        .env("NATS_TOKEN", "")
        .output()
        .expect("run the api");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach NATS"),
        "the settings were refused: {err}"
    );
}
