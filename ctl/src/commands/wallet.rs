//! `wallet credit|show`.

use giftcard_shared::domain::{Money, UserId};
use serde::Serialize;

use super::Ctx;
use crate::cli::WalletCmd;
use crate::error::CtlError;
use crate::model::Wallet;
use crate::output::{print_key_values, print_raw};

#[derive(Serialize)]
struct Credit<'a> {
    amount: Money,
    reference: &'a str,
}

pub async fn run(ctx: &Ctx, cmd: WalletCmd) -> Result<(), CtlError> {
    let reply = match &cmd {
        WalletCmd::Credit {
            user,
            amount,
            reference,
        } => {
            UserId::parse(user).map_err(|e| CtlError::Usage(format!("--user: {e}")))?;
            if reference.is_empty() {
                return Err(CtlError::Usage("--reference must not be empty".to_owned()));
            }
            let body = Credit {
                amount: *amount,
                reference,
            };
            ctx.client
                .post_json(&["v1", "admin", "wallets", user, "credits"], &body)
                .await?
        }
        WalletCmd::Show => ctx.client.get(&["v1", "wallet"]).await?,
    };
    if ctx.json {
        print_raw(&reply);
    } else {
        let w: Wallet = reply.json()?;
        print_key_values(&[("user_id", w.user_id), ("balance", w.balance)]);
    }
    Ok(())
}
