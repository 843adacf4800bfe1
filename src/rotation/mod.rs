//! The four rotation steps and the checks before every step, written against the
//! [`SecretStore`] and [`Database`] ports only. setSecret's strategies live in [`single`] and
//! [`alternating`].

use std::time::Instant;

use secrecy::SecretString;

use crate::config::{Config, Strategy};
use crate::db::Database;
use crate::error::Error;
use crate::event::{RotationEvent, Step};
use crate::secret::{DbSecret, MasterSecret, RoleName};
use crate::store::{AWSCURRENT, AWSPENDING, SecretDescription, SecretStore, VersionRef};

mod alternating;
mod guard;
mod single;

use guard::{GuardedDb, Login};

pub use alternating::alternate_name;

/// What one step did, for its log line.
#[derive(Debug, Default)]
struct StepLog {
    arn: Option<String>,
    user: Option<String>,
    host: Option<String>,
    outcome: &'static str,
}

impl StepLog {
    fn describe(&mut self, secret: &DbSecret) {
        self.user = Some(secret.username.to_string());
        self.host = Some(format!("{}:{}", secret.host, secret.port));
    }
}

/// Runs rotation steps. Build it once per process: it holds the store and database clients.
pub struct Rotator<S, D> {
    store: S,
    /// Reached only through the guard's checked logins (`ALLOWED_DB_HOSTS`, vouched master).
    db: GuardedDb<D>,
    config: Config,
}

impl<S, D> Rotator<S, D>
where
    S: SecretStore + Sync,
    D: Database + Sync,
{
    pub fn new(store: S, db: D, config: Config) -> Rotator<S, D> {
        Rotator {
            store,
            db: GuardedDb::new(db, &config),
            config,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The database port, for tests that inspect it.
    pub fn database(&self) -> &D {
        self.db.unguarded()
    }

    /// Handles one invocation and logs one line at its end (never a secret value).
    pub async fn handle(&self, event: &RotationEvent) -> Result<(), Error> {
        self.handle_until(event, None).await
    }

    /// Handles one invocation that must end by `stop_by`: work still running then is dropped
    /// (an open transaction rolls back with its connection) and the step fails with a clear
    /// "ran out of time" error, rather than being killed by Lambda mid-statement. Every step
    /// is idempotent, so the service's next attempt resumes.
    pub async fn handle_until(
        &self,
        event: &RotationEvent,
        stop_by: Option<Instant>,
    ) -> Result<(), Error> {
        crate::crash::enter_step(&event.step);
        let started = Instant::now();
        let mut log = StepLog::default();
        let result = match stop_by {
            None => self.run(event, &mut log).await,
            Some(stop_by) => {
                match tokio::time::timeout_at(stop_by.into(), self.run(event, &mut log)).await {
                    Ok(result) => result,
                    Err(_) => Err(Error::OutOfTime {
                        step: event.step.clone(),
                        seconds: started.elapsed().as_secs_f64(),
                    }),
                }
            }
        };
        let arn = log.arn.as_deref().unwrap_or(&event.secret_id);
        let user = log.user.as_deref().unwrap_or("-");
        let host = log.host.as_deref().unwrap_or("-");
        let duration_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(()) => tracing::info!(
                step = %event.step,
                secret_arn = %arn,
                token = %event.token,
                strategy = self.config.strategy.as_str(),
                user,
                host,
                outcome = log.outcome,
                duration_ms,
                "rotation step succeeded"
            ),
            Err(error) => tracing::error!(
                step = %event.step,
                secret_arn = %arn,
                token = %event.token,
                strategy = self.config.strategy.as_str(),
                user,
                host,
                outcome = "failed",
                error_kind = error.kind(),
                error = %error,
                duration_ms,
                "rotation step failed"
            ),
        }
        result
    }

    async fn run(&self, event: &RotationEvent, log: &mut StepLog) -> Result<(), Error> {
        let description = self.store.describe(&event.secret_id).await?;
        log.arn = Some(description.arn.clone());
        if description.rotation_enabled == Some(false) {
            return Err(Error::RotationDisabled {
                secret: description.arn.clone(),
            });
        }
        let stages = description
            .stages_of(&event.token)
            .ok_or_else(|| Error::UnknownVersion {
                secret: description.arn.clone(),
                token: event.token.clone(),
            })?;
        if stages.iter().any(|s| s == AWSCURRENT) {
            log.outcome = "version already AWSCURRENT, nothing to do";
            return Ok(());
        }
        if !stages.iter().any(|s| s == AWSPENDING) {
            return Err(Error::NotPending {
                secret: description.arn.clone(),
                token: event.token.clone(),
                labels: if stages.is_empty() {
                    "none".into()
                } else {
                    stages.join(", ")
                },
            });
        }
        match Step::parse(&event.step)? {
            Step::Create => self.create_secret(&description, event, log).await,
            Step::Set => self.set_secret(&description, &event.token, log).await,
            Step::Test => self.test_secret(&description, &event.token, log).await,
            Step::Finish => self.finish_secret(&description, &event.token, log).await,
        }
    }

    pub(super) fn parse_secret(
        &self,
        arn: &str,
        label: &str,
        raw: &SecretString,
    ) -> Result<DbSecret, Error> {
        let secret = DbSecret::parse(raw).map_err(|problem| Error::SecretFormat {
            secret: arn.to_string(),
            label: label.to_string(),
            problem,
        })?;
        if self.config.strategy == Strategy::AlternatingUsers && secret.masterarn.is_none() {
            return Err(Error::SecretFormat {
                secret: arn.to_string(),
                label: label.to_string(),
                problem: "field \"masterarn\" is missing: the alternating-users strategy needs the ARN of the master secret".into(),
            });
        }
        Ok(secret)
    }

    async fn read_secret(
        &self,
        arn: &str,
        version: VersionRef<'_>,
        label: &str,
    ) -> Result<DbSecret, Error> {
        tracing::trace!(secret_arn = arn, ?version, "reading secret version");
        let raw = self.store.get_value(arn, version).await?;
        self.parse_secret(arn, label, &raw)
    }

    /// The user the pending secret must name.
    fn expected_pending_user(&self, current: &DbSecret) -> Result<RoleName, Error> {
        match self.config.strategy {
            Strategy::SingleUser => Ok(current.username.clone()),
            Strategy::AlternatingUsers => alternate_name(&current.username),
        }
    }

    async fn create_secret(
        &self,
        description: &SecretDescription,
        event: &RotationEvent,
        log: &mut StepLog,
    ) -> Result<(), Error> {
        let arn = description.arn.as_str();
        let current = self
            .read_secret(arn, VersionRef::Stage(AWSCURRENT), AWSCURRENT)
            .await?;
        log.describe(&current);
        // The first step refuses a host outside ALLOWED_DB_HOSTS, before anything is written.
        self.db.check_host(&current.host, AWSCURRENT)?;
        let username = self.expected_pending_user(&current)?;
        match self
            .store
            .get_value(arn, VersionRef::Pending(&event.token))
            .await
        {
            Ok(raw) => {
                self.parse_secret(arn, AWSPENDING, &raw)?;
                log.outcome = "pending version already created";
                return Ok(());
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let password = self.config.password.generate()?;
        let pending = current.with_credentials(&username, &password);
        self.store
            .put_pending(arn, &event.token, &pending, event.rotation_token.as_ref())
            .await?;
        log.outcome = "pending version created";
        Ok(())
    }

    async fn set_secret(
        &self,
        description: &SecretDescription,
        token: &str,
        log: &mut StepLog,
    ) -> Result<(), Error> {
        let arn = description.arn.as_str();
        let current = self
            .read_secret(arn, VersionRef::Stage(AWSCURRENT), AWSCURRENT)
            .await?;
        let pending = self
            .read_secret(arn, VersionRef::Pending(token), AWSPENDING)
            .await?;
        log.describe(&pending);
        self.check_pending_matches(&current, &pending)?;

        tracing::debug!(user = %pending.username, "checking whether the pending password already works");
        if self
            .db
            .can_log_in(&self.db.user_login(&pending, AWSPENDING)?)
            .await?
        {
            log.outcome = "pending password already set";
            return Ok(());
        }
        match self.config.strategy {
            Strategy::SingleUser => self.set_single_user(arn, &current, &pending, log).await,
            Strategy::AlternatingUsers => self.set_alternating(&current, &pending, log).await,
        }
    }

    fn check_pending_matches(&self, current: &DbSecret, pending: &DbSecret) -> Result<(), Error> {
        let expected_user = self.expected_pending_user(current)?;
        if pending.username != expected_user {
            return Err(Error::PendingMismatch(format!(
                "it names user {:?}, expected {:?}",
                pending.username.as_str(),
                expected_user.as_str()
            )));
        }
        if !pending.host.eq_ignore_ascii_case(&current.host) {
            return Err(Error::PendingMismatch(format!(
                "it names host {:?}, the current secret {:?}",
                pending.host, current.host
            )));
        }
        if pending.port != current.port {
            return Err(Error::PendingMismatch(format!(
                "it names port {}, the current secret {}",
                pending.port, current.port
            )));
        }
        if pending.dbname != current.dbname {
            return Err(Error::PendingMismatch(format!(
                "it names database {:?}, the current secret {:?}",
                pending.dbname, current.dbname
            )));
        }
        Ok(())
    }

    /// Reads the master secret named by `masterarn`; the guard decides whether its password
    /// may go to the user's host (see [`GuardedDb::master_login`]).
    async fn master_login(&self, user: &DbSecret) -> Result<Login, Error> {
        let arn = user.masterarn.as_deref().unwrap_or_default();
        let raw = match self
            .store
            .get_value(arn, VersionRef::Stage(AWSCURRENT))
            .await
        {
            Ok(raw) => raw,
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                return Err(Error::MasterSecret {
                    arn: arn.to_string(),
                    problem: format!("cannot be read: {e}"),
                });
            }
        };
        let master = MasterSecret::parse(&raw).map_err(|problem| Error::MasterSecret {
            arn: arn.to_string(),
            problem,
        })?;
        self.db.master_login(arn, user, master)
    }

    async fn test_secret(
        &self,
        description: &SecretDescription,
        token: &str,
        log: &mut StepLog,
    ) -> Result<(), Error> {
        let pending = self
            .read_secret(&description.arn, VersionRef::Pending(token), AWSPENDING)
            .await?;
        log.describe(&pending);
        let login = self.db.user_login(&pending, AWSPENDING)?;
        match self.db.session_user(&login).await {
            Ok(user) if pending.username == user.as_str() => {
                log.outcome = "pending credentials log in";
                Ok(())
            }
            Ok(user) => Err(Error::WrongSessionUser {
                expected: pending.username.to_string(),
                actual: user,
            }),
            Err(e) if e.is_auth_failure() => Err(Error::PendingDoesNotLogIn {
                user: pending.username.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    async fn finish_secret(
        &self,
        description: &SecretDescription,
        token: &str,
        log: &mut StepLog,
    ) -> Result<(), Error> {
        match description.version_with(AWSCURRENT) {
            Some(current) if current == token => {
                log.outcome = "version already AWSCURRENT";
                Ok(())
            }
            Some(current) => {
                self.store
                    .move_current(&description.arn, token, current)
                    .await?;
                log.outcome = "AWSCURRENT moved to the new version";
                Ok(())
            }
            None => Err(Error::SecretFormat {
                secret: description.arn.clone(),
                label: AWSCURRENT.into(),
                problem: "no version holds AWSCURRENT".into(),
            }),
        }
    }
}
