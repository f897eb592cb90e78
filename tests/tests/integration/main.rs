//! Integration tests: one binary, real NATS and PostgreSQL per test.

mod abuse;
mod admin;
mod cli;
mod console;
mod console_browser;
mod conventions;
mod dead_letters;
mod faults;
mod fuzz;
mod idempotency;
mod monitoring;
mod operations;
mod purchases;
mod security;
mod settings;
mod validation;
