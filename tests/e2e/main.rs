//! End-to-end tests: the release binary under a Lambda runtime API emulator, rotating real
//! PostgreSQL users (TLS, SCRAM) through the Secrets Manager emulator (moto), driven the way
//! Secrets Manager drives a rotation. Each test uses its own database, users and secrets, so
//! the tests run in parallel; they fail (never skip) when the local stack is not running.
//!
//! Run with the stack up: `source .stack/env && cargo test --release --test e2e`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod attacks;
mod catalogue;
mod crashes;
mod faults;
mod load;
mod operator;
mod pg_restart;
mod policy_recordings;
mod refusals;
mod rotations;
mod selfsigned;
mod sm_faults;
