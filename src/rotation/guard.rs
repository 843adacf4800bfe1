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

impl<D> GuardedDb<D> {
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
            // The user's secret may only raise the master login's TLS above the deployment's
            // default, never lower it: whoever writes that secret must not be able to send
            // the master login over plaintext.
            ssl: master
                .ssl
                .unwrap_or_else(|| user.ssl.unwrap_or(self.default_ssl).max(self.default_ssl)),
        }))
    }
}

impl<D: Database> GuardedDb<D> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(vars: &[(&str, &str)]) -> GuardedDb<()> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = Config::from_lookup(|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
        .unwrap();
        GuardedDb::new((), &config)
    }

    fn user(host: &str) -> DbSecret {
        DbSecret::parse(&SecretString::from(format!(
            r#"{{"engine":"postgres","host":"{host}","username":"app","password":"user-pw"}}"#
        )))
        .unwrap()
    }

    fn master(json: &str) -> MasterSecret {
        MasterSecret::parse(&SecretString::from(json.to_string())).unwrap()
    }

    const RDS_MASTER: &str = r#"{"username":"postgres","password":"master-pw"}"#;

    #[test]
    fn every_kind_of_login_is_refused_outside_the_list_naming_its_label() {
        let g = guard(&[("ALLOWED_DB_HOSTS", "*.db.internal")]);
        let evil = user("evil.example.net");
        let pw = SecretString::from("previous-pw".to_string());
        let refusals = [
            g.user_login(&evil, "AWSCURRENT").err(),
            g.user_login(&evil, "AWSPENDING").err(),
            g.user_login_with_password(&evil, &pw, "AWSPREVIOUS").err(),
            g.master_login("arn:m", &evil, master(RDS_MASTER)).err(),
        ];
        for (refusal, label) in
            refusals
                .iter()
                .zip(["AWSCURRENT", "AWSPENDING", "AWSPREVIOUS", "master"])
        {
            let text = refusal.as_ref().unwrap().to_string();
            assert!(
                text.contains(label) && text.contains("evil.example.net"),
                "{text}"
            );
            assert!(text.contains("ALLOWED_DB_HOSTS (*.db.internal)"), "{text}");
            for secret in ["user-pw", "previous-pw", "master-pw"] {
                assert!(!text.contains(secret), "{text}");
            }
        }
        let good = user("pg.db.internal");
        assert!(g.user_login(&good, "AWSCURRENT").is_ok());
        assert!(
            g.user_login_with_password(&good, &pw, "AWSPREVIOUS")
                .is_ok()
        );
        assert!(g.master_login("arn:m", &good, master(RDS_MASTER)).is_ok());
    }

    #[test]
    fn without_a_list_user_logins_go_anywhere_but_the_master_needs_its_own_host() {
        let g = guard(&[]);
        let secret = user("db.example.com");
        assert!(g.user_login(&secret, "AWSCURRENT").is_ok());
        let err = g
            .master_login("arn:m", &secret, master(RDS_MASTER))
            .err()
            .unwrap();
        assert!(matches!(err, Error::MasterHostNotVouched { .. }), "{err}");
        let own_host = r#"{"username":"postgres","password":"master-pw","host":"DB.example.com"}"#;
        let login = g.master_login("arn:m", &secret, master(own_host)).unwrap();
        assert_eq!(login.username().as_str(), "postgres");
        assert_eq!(login.0.host, "db.example.com");
        let other_host = r#"{"username":"postgres","password":"master-pw","host":"elsewhere"}"#;
        let err = g
            .master_login("arn:m", &secret, master(other_host))
            .err()
            .unwrap();
        assert!(matches!(err, Error::MasterSecret { .. }), "{err}");
    }

    #[test]
    fn the_previous_password_is_used_on_the_current_secrets_host() {
        let g = guard(&[]);
        let pw = SecretString::from("previous-pw".to_string());
        let login = g
            .user_login_with_password(&user("db.example.com"), &pw, "AWSPREVIOUS")
            .unwrap();
        assert_eq!(login.0.host, "db.example.com");
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&login.0.password),
            "previous-pw"
        );
    }
}
