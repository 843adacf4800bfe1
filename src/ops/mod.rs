//! The operator CLI's commands (`pgrotatectl`): `preflight`, `status`, `resume`, `rotate`
//! and `policy`, over the same ports, adapters, configuration and rotation steps as the function.
//! Each command returns an [`Output`] (a verdict, JSON and text); the binary only parses
//! arguments and prints.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::config::{Config, Strategy};
use crate::db::{DbError, Postgres};
use crate::error::Error;
use crate::rotation::Rotator;
use crate::store::{AwsSecretStore, StoreError};

pub mod logs;
pub mod policy;
pub mod preflight;
pub mod progress;
pub mod resume;
pub mod rotate;
pub mod state;
pub mod status;
pub mod time;

pub use progress::Progress;

/// The User-Agent application name of the CLI's AWS requests (`app/ctl-pgrotate`), so that
/// they are never mistaken for the function's (`app/pgrotate`).
pub const APP_NAME: &str = "ctl-pgrotate";

/// A command's failure (as opposed to a finding, which is part of a successful [`Output`]
/// whose `ok` is false).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Rotation(#[from] Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Database(#[from] DbError),
    /// The command will not do what was asked, and says why and what to do instead.
    #[error("{0}")]
    Refused(String),
}

impl OpsError {
    /// A short, stable name for `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            OpsError::Rotation(e) => e.kind(),
            OpsError::Store(_) => "SecretsManagerError",
            OpsError::Database(_) => "DatabaseError",
            OpsError::Refused(_) => "Refused",
        }
    }
}

/// What a command prints: `ok` decides the exit code (0 or 1).
#[derive(Debug, Clone)]
pub struct Output {
    pub ok: bool,
    pub json: Value,
    pub text: String,
}

impl Output {
    pub fn new<T: Serialize>(ok: bool, report: &T, text: String) -> Output {
        let json = serde_json::to_value(report)
            .unwrap_or_else(|e| serde_json::json!({"error": format!("cannot serialise: {e}")}));
        Output { ok, json, text }
    }
}

/// The environment every command runs in: the function's configuration (read from the same
/// variables), its Secrets Manager adapter, its PostgreSQL adapter and its rotation steps
/// (writing no metrics), the CloudWatch Logs reader and the progress reporter.
pub struct Context {
    pub config: Config,
    /// Set when the environment's configuration is invalid; `config` then holds the
    /// defaults (with the requested strategy), so `preflight` can still check the rest.
    pub config_error: Option<Error>,
    pub rotator: Rotator<AwsSecretStore, Postgres>,
    pub logs: logs::FunctionLogs,
    pub progress: Progress,
}

fn strategy_lookup(
    strategy: Option<Strategy>,
    env: impl Fn(&str) -> Option<String>,
) -> impl Fn(&str) -> Option<String> {
    move |name: &str| match (name, strategy) {
        ("ROTATION_STRATEGY", Some(s)) => Some(s.as_str().to_string()),
        _ => env(name),
    }
}

impl Context {
    /// Reads the configuration as the function does (`strategy` overrides
    /// `ROTATION_STRATEGY`) and builds the clients with the same endpoint overrides.
    pub async fn from_env(
        strategy: Option<Strategy>,
        progress: Progress,
    ) -> Result<Context, OpsError> {
        let env = |name: &str| std::env::var(name).ok();
        let (config, config_error) = match Config::from_lookup(strategy_lookup(strategy, env)) {
            Ok(config) => (config, None),
            Err(error) => {
                // The same settings without the variables the error names (their defaults),
                // else all defaults: preflight still checks everything else as configured.
                let message = error.to_string();
                let without_named = strategy_lookup(strategy, |name: &str| {
                    (!message.contains(name))
                        .then(|| std::env::var(name).ok())
                        .flatten()
                });
                let config = Config::from_lookup(without_named)
                    .or_else(|_| Config::from_lookup(strategy_lookup(strategy, |_: &str| None)))?;
                (config, Some(error))
            }
        };
        let store = AwsSecretStore::from_env_as(
            APP_NAME,
            config.secrets_manager_endpoint.as_deref(),
            config.secrets_manager_timeout,
        )
        .await;
        let db = Postgres::new(config.ca_bundle.clone(), config.connect_timeout);
        let logs = logs::FunctionLogs::from_env(config.secrets_manager_timeout).await;
        let rotator = Rotator::new(store, db, config.clone()).without_metrics();
        Ok(Context {
            config,
            config_error,
            rotator,
            logs,
            progress,
        })
    }

    /// Fails when the environment's configuration is invalid (every command but preflight).
    pub fn require_config(&self) -> Result<(), OpsError> {
        match &self.config_error {
            Some(Error::Config(message)) => Err(OpsError::Rotation(Error::Config(message.clone()))),
            Some(other) => Err(OpsError::Refused(other.to_string())),
            None => Ok(()),
        }
    }

    pub fn store(&self) -> &AwsSecretStore {
        self.rotator.store()
    }

    pub fn db(&self) -> &Postgres {
        self.rotator.database()
    }

    pub fn strategy(&self) -> Strategy {
        self.config.strategy
    }
}

/// How long to wait between two looks at a rotation in progress.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
