//! `giftcard-worker`: starts telemetry and calls [`giftcard_worker::run_with`].

fn main() {
    // Settings first, on the one thread there is: `--help` and `--version`
    // print and exit here, before anything starts.
    let settings = giftcard_shared::config::WorkerSettings::from_command_line();
    giftcard_shared::process::block_on(giftcard_shared::process::main(
        "giftcard-worker",
        giftcard_worker::run_with(settings),
    ));
}
