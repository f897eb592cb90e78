//! The seed file written by the bench runner: cards with their stock, users with their credit.

use std::path::Path;

use anyhow::Context;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `{"cards":[{"id","price","stock"}], "users":[{"id","credit"}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seed {
    pub cards: Vec<SeedCard>,
    pub users: Vec<SeedUser>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedCard {
    pub id: Uuid,
    pub price: Decimal,
    /// Activation codes imported for the card.
    pub stock: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedUser {
    pub id: String,
    /// Wallet balance before the run.
    pub credit: Decimal,
}

impl Seed {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading seed {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing seed {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runner_format() {
        let s: Seed = serde_json::from_str(
            r#"{"cards":[{"id":"0b7e0000-0000-4000-8000-000000000001","price":"1.00","stock":5}],
                "users":[{"id":"bench-user-0","credit":"1000.00"}]}"#,
        )
        .unwrap();
        assert_eq!(s.cards[0].stock, 5);
        assert_eq!(s.cards[0].price, Decimal::new(100, 2));
        assert_eq!(s.users[0].credit, Decimal::new(100_000, 2));
    }
}
