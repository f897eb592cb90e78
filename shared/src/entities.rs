//! SeaORM entities of the PostgreSQL schema (created by `giftcard-migrations`).
//!
//! The worker's batch statements are set-based SQL in `giftcard-worker`;
//! these entities serve the api's reads and the admin writes.

pub mod activation_code;
pub mod dead_letter;
pub mod gift_card;
pub mod partition_fence;
pub mod purchase;
pub mod wallet;
pub mod wallet_entry;
