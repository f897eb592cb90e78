//! `codes import|delete`: activation codes of a gift card.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use super::Ctx;
use crate::cli::CodesCmd;
use crate::csv_import::{csv_chunk, parse_codes};
use crate::error::CtlError;
use crate::model::ImportResult;
use crate::output::{print_key_values, print_raw};

pub async fn run(ctx: &Ctx, cmd: CodesCmd) -> Result<(), CtlError> {
    match cmd {
        CodesCmd::Import {
            card,
            file,
            chunk_size,
        } => {
            let chunk_size = usize::try_from(chunk_size).unwrap_or(usize::MAX);
            import(ctx, card, &file, chunk_size).await
        }
        CodesCmd::Delete { card, code } => {
            let card_id = card.to_string();
            let reply = ctx
                .client
                .delete(&["v1", "admin", "gift-cards", &card_id, "codes", &code])
                .await?;
            if ctx.json {
                print_raw(&reply);
            } else {
                println!("deleted the code from gift card {card}");
            }
            Ok(())
        }
    }
}

/// Validates the whole file, then sends it in chunks, each a complete CSV
/// document. Stops at the first failed chunk; a re-run is safe because the
/// api counts codes it already has as duplicates.
async fn import(ctx: &Ctx, card: Uuid, path: &Path, chunk_size: usize) -> Result<(), CtlError> {
    let file = File::open(path).map_err(|source| CtlError::Read {
        path: path.to_owned(),
        source,
    })?;
    let rows = parse_codes(BufReader::new(file)).map_err(|message| CtlError::InvalidCsv {
        path: path.to_owned(),
        message,
    })?;
    let total = rows.len();
    let url = ctx
        .client
        .url(&["v1", "admin", "gift-cards", &card.to_string(), "codes"]);
    let bar = progress_bar(total as u64);
    let (mut inserted, mut duplicates) = (0u64, 0u64);
    for (i, chunk) in rows.chunks(chunk_size).enumerate() {
        let first = i * chunk_size + 1;
        let last = first + chunk.len() - 1;
        let req = ctx
            .client
            .request(Method::POST, url.clone())
            .header(CONTENT_TYPE, "text/csv")
            .body(csv_chunk(chunk));
        let result = match ctx.client.call(req).await {
            Ok(reply) => reply.json::<ImportResult>(),
            Err(e) => Err(e),
        };
        match result {
            Ok(r) => {
                inserted += r.inserted;
                duplicates += r.duplicates;
                bar.inc(chunk.len() as u64);
            }
            Err(cause) => {
                bar.abandon();
                return Err(CtlError::ImportInterrupted {
                    first,
                    last,
                    total,
                    inserted,
                    duplicates,
                    cause: Box::new(cause),
                });
            }
        }
    }
    bar.finish_and_clear();
    if ctx.json {
        let summary = json!({ "rows": total, "inserted": inserted, "duplicates": duplicates });
        println!("{summary}");
    } else {
        print_key_values(&[
            ("rows", total.to_string()),
            ("inserted", inserted.to_string()),
            ("duplicates", duplicates.to_string()),
        ]);
    }
    Ok(())
}

/// Rows sent, rate and ETA on stderr; hidden when stderr is not a terminal.
fn progress_bar(total: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "[{elapsed_precise}] {wide_bar} {pos}/{len} rows ({per_sec}, ETA {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total).with_style(style)
}
