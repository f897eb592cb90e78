//! Integration tests: one binary, real NATS and PostgreSQL per test.

mod admin;
mod cli;
mod console;
mod console_browser;
mod dead_letters;
mod faults;
mod idempotency;
mod monitoring;
mod operations;
mod purchases;
mod security;
mod settings;
mod validation;
