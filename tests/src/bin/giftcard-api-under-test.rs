//! The `giftcard-api` binary, built with the tests so that process tests
//! always run the current code (a package's tests only get its own
//! binaries from Cargo).

fn main() {
    // Settings first, on the one thread there is: `--help` and `--version`
    // print and exit here, before anything starts.
    let settings = giftcard_shared::config::ApiSettings::from_command_line();
    giftcard_shared::process::block_on(giftcard_shared::process::main(
        "giftcard-api",
        giftcard_api::run_with(settings),
    ));
}
