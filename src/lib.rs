//! pgrotate: an AWS Secrets Manager rotation function for PostgreSQL.
//!
//! Module map (data flows one way: entry point → `rotation` → ports → back):
//! - [`event`]: the rotation event, `RotationToken` redacted.
//! - [`config`]: environment settings, validated once at start-up.
//! - [`hosts`]: `ALLOWED_DB_HOSTS`, the hosts the function may connect to.
//! - [`secret`]: the secret JSON, typed over an order-preserving map; the `RoleName` newtype.
//! - [`password`]: the password generator.
//! - [`store`]: the `SecretStore` port, the Secrets Manager adapter and (feature `test-util`)
//!   an in-memory store with real label semantics.
//! - [`db`]: the `Database` port, the PostgreSQL adapter and the pure SQL builders.
//! - [`rotation`]: the four steps and their checks, generic over both ports.
//! - [`logging`]: tracing set-up that never lets a dependency log secrets.
//! - [`policy`]: the IAM documents template.yaml deploys, rendered from typed parameters
//!   (for `pgrotatectl policy`), equal to the template's over its configuration matrix.
//! - `error`: the error type.
//!
//! Modules are public only where a binary or an integration test reaches into them.

pub mod config;
mod crash;
pub mod db;
mod error;
pub mod event;
pub mod hosts;
pub mod logging;
pub mod password;
pub mod policy;
pub mod rotation;
pub mod secret;
pub mod store;

pub use config::{Config, Strategy};
pub use error::Error;
pub use event::RotationEvent;
pub use rotation::Rotator;
