//! The nemesis ([`giftcard_tests::nemesis`]): seeded clients and faults
//! against real processes, a 3-node JetStream cluster and PostgreSQL, then
//! a check of the whole history.
//!
//! CI runs the fixed seeds below. A long run with a chosen seed:
//! `GIFTCARD_NEMESIS_SECONDS=1800 GIFTCARD_NEMESIS_SEED=7 cargo test -p
//! giftcard-tests --test nemesis -- --nocapture`, or
//! `./scripts/test.sh --nemesis-minutes 30 --seed 7`.

use std::time::Duration;

use giftcard_tests::nemesis::{self, Config};

const API: &str = env!("CARGO_BIN_EXE_giftcard-api-under-test");
const WORKER: &str = env!("CARGO_BIN_EXE_giftcard-worker-under-test");

/// The seeds CI runs, each for [`CI_SECONDS`].
const CI_SEEDS: [u64; 2] = [1, 2];
const CI_SECONDS: u64 = 90;

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nemesis_histories_keep_every_promise() {
    let seeds = match env_number("GIFTCARD_NEMESIS_SEED") {
        Some(seed) => vec![seed],
        None => CI_SEEDS.to_vec(),
    };
    let seconds = env_number("GIFTCARD_NEMESIS_SECONDS").unwrap_or(CI_SECONDS);
    for seed in seeds {
        let report = nemesis::run(Config {
            seed,
            duration: Duration::from_secs(seconds),
            clients: 6,
            api_binary: API.into(),
            worker_binary: WORKER.into(),
        })
        .await;
        eprintln!("{report}");
        assert!(report.anomalies.is_empty(), "{report}");
    }
}
