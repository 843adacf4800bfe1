//! The rotation's only door to the database: every login is built here, from a secret, and
//! checked first — `ALLOWED_DB_HOSTS` for every connection (current, pending, previous,
//! master), and for the master user a vouched host — so no path of the rotation can connect
//! anywhere else or send the master password to a host whoever writes a secret chose.

use secrecy::SecretString;

use crate::config::Config;
use crate::db::{AlternateChange, Database, DbError, DbLogin};
use crate::error::Error;
use crate::hosts::AllowedHosts;
use crate::secret::{DbSecret, MasterSecret, RoleName, SslMode};

/// A login that passed the checks. Its field is private to this module, so only
/// [`GuardedDb`] builds one, and the database is reached only with one.
pub(super) struct Login(DbLogin);

impl Login {
    pub(super) fn username(&self) -> &RoleName {
        &self.0.username
    }
}

/// The [`Database`] port behind the host checks.
pub(super) struct GuardedDb<D> {
    db: D,
    allowed: Option<AllowedHosts>,
    default_ssl: SslMode,
}

impl<D: Database> GuardedDb<D> {
    pub(super) fn new(db: D, config: &Config) -> GuardedDb<D> {
        GuardedDb {
            db,
            allowed: config.allowed_db_hosts.clone(),
            default_ssl: config.default_ssl,
        }
    }

    /// The database port itself, for tests that inspect it (the rotation never uses it).
    pub(super) fn unguarded(&self) -> &D {
        &self.db
    }

    /// Refuses a host outside `ALLOWED_DB_HOSTS` (when set); `label` says whose credentials
    /// name it (AWSCURRENT, AWSPENDING, AWSPREVIOUS, master).
    pub(super) fn check_host(&self, host: &str, label: &str) -> Result<(), Error> {
        match &self.allowed {
            Some(allowed) if !allowed.allows(host) => {
                tracing::debug!(host, label, "host refused by ALLOWED_DB_HOSTS");
                Err(Error::HostNotAllowed {
                    host: host.to_string(),
                    label: label.to_string(),
                    allowed: allowed.to_string(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The login a user secret describes.
    pub(super) fn user_login(&self, secret: &DbSecret, label: &str) -> Result<Login, Error> {
        self.user_login_with_password(secret, &secret.password, label)
    }

    /// The login a user secret describes, with another version's password (AWSPREVIOUS).
    pub(super) fn user_login_with_password(
        &self,
        secret: &DbSecret,
        password: &SecretString,
        label: &str,
    ) -> Result<Login, Error> {
        self.check_host(&secret.host, label)?;
        let mut login = DbLogin::from_secret(secret, self.default_ssl);
        login.password = password.clone();
        Ok(Login(login))
    }

    /// The master user's login into the user's database. The master password goes only to
    /// a vouched host: the master secret's own `host` (which must be the user's), or, for a
    /// master secret without one, a host `ALLOWED_DB_HOSTS` lists.
    pub(super) fn master_login(
        &self,
        arn: &str,
        user: &DbSecret,
        master: MasterSecret,
    ) -> Result<Login, Error> {
        let master_error = |problem: String| Error::MasterSecret {
            arn: arn.to_string(),
            problem,
        };
        if let Some(host) = master
            .host
            .as_ref()
            .filter(|h| !h.eq_ignore_ascii_case(&user.host))
        {
            return Err(master_error(format!(
                "names host {host:?} but the user's secret names {:?}: the master secret must be the one of the user's server",
                user.host
            )));
        }
        if let Some(port) = master.port.filter(|p| *p != user.port) {
            return Err(master_error(format!(
                "names port {port} but the user's secret names {}",
                user.port
            )));
        }
        if master.host.is_none() && self.allowed.is_none() {
            return Err(Error::MasterHostNotVouched {
                arn: arn.to_string(),
                host: user.host.clone(),
            });
        }
        self.check_host(&user.host, "master")?;
        Ok(Login(DbLogin {
            host: user.host.clone(),
            port: user.port,
            dbname: user.dbname.clone(),
            username: master.username,
            password: master.password,
            ssl: master.ssl.or(user.ssl).unwrap_or(self.default_ssl),
        }))
    }

    pub(super) async fn can_log_in(&self, login: &Login) -> Result<bool, DbError> {
        self.db.can_log_in(&login.0).await
    }

    pub(super) async fn session_user(&self, login: &Login) -> Result<String, DbError> {
        self.db.session_user(&login.0).await
    }

    pub(super) async fn set_own_password(
        &self,
        login: &Login,
        new_password: &SecretString,
    ) -> Result<(), DbError> {
        self.db.set_own_password(&login.0, new_password).await
    }

    pub(super) async fn set_password_as_master(
        &self,
        master: &Login,
        user: &RoleName,
        new_password: &SecretString,
    ) -> Result<(), DbError> {
        self.db
            .set_password_as_master(&master.0, user, new_password)
            .await
    }

    pub(super) async fn set_alternate_password(
        &self,
        master: &Login,
        change: &AlternateChange<'_>,
        new_password: &SecretString,
    ) -> Result<(), DbError> {
        self.db
            .set_alternate_password(&master.0, change, new_password)
            .await
    }
}
