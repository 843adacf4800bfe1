//! pgrotate: an AWS Secrets Manager rotation function for PostgreSQL.
//!
//! Module map (data flows one way: entry point → `rotation` → ports → back):
//! - [`event`]: the rotation event, `RotationToken` redacted.
//! - [`config`]: environment settings, validated once at start-up.
//! - [`secret`]: the secret JSON, typed over an order-preserving map.
//! - [`password`]: the password generator.
//! - [`store`]: the `SecretStore` port and the Secrets Manager adapter.
//! - [`memory`]: an in-memory `SecretStore` with real label semantics, for tests.
//! - [`db`]: the `Database` port and its failure kinds.
//! - [`postgres`]: the PostgreSQL adapter (TLS, SCRAM verifiers, the alternating pair).
//! - [`rotation`]: the four steps and their checks, generic over both ports.
//! - [`logging`]: tracing set-up that never lets a dependency log secrets.
//! - [`error`]: the error type.

pub mod config;
pub mod db;
pub mod error;
pub mod event;
pub mod logging;
pub mod memory;
pub mod password;
pub mod postgres;
pub mod rotation;
pub mod secret;
pub mod store;

pub use config::{Config, Strategy};
pub use error::Error;
pub use event::RotationEvent;
pub use rotation::Rotator;
