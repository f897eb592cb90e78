//! One module per area of the API; each command takes a ready [`Ctx`].

pub mod buy;
pub mod cards;
pub mod codes;
pub mod dlq;
pub mod purchases;
pub mod status;
pub mod wallet;

use crate::client::Client;

/// What every command gets: a client (with the token its area needs) and
/// the output mode.
pub struct Ctx {
    pub client: Client,
    /// `--json`: print the api's raw JSON instead of human output.
    pub json: bool,
}
