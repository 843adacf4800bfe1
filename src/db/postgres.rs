//! The PostgreSQL adapter of the [`Database`] port: connections with explicit TLS modes and
//! bounded time, password changes sent only as SCRAM-SHA-256 verifiers (statements from
//! [`super::sql`]), and the alternating pair kept equivalent in one transaction.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions, Connection, Row};

use super::sql::{
    PairState, alter_password_sql, login_password_sql, pair_statements, scram_verifier,
};
use super::{AlternateChange, Database, DbError, DbFailure, DbLogin};
use crate::secret::{RoleName, SslMode};

/// The sqlx-backed [`Database`].
#[derive(Debug, Clone)]
pub struct Postgres {
    ca_bundle: Option<Vec<u8>>,
    connect_timeout: Duration,
}

fn classify(error: &sqlx::Error, ssl: SslMode) -> DbFailure {
    if let sqlx::Error::Database(db) = error {
        let code = db.code().unwrap_or_default();
        let message = db.message();
        return match code.as_ref() {
            "28P01" => DbFailure::AuthFailed,
            "28000" if message.contains("no encryption") => DbFailure::TlsRequiredByServer,
            _ => DbFailure::Server(format!("{message} (SQLSTATE {code})")),
        };
    }
    let text = error.to_string();
    if text.contains("server does not support TLS") {
        return DbFailure::ServerWithoutTls(ssl.as_str());
    }
    if text.contains("NotValidForName") || text.contains("not valid for name") {
        return DbFailure::HostnameMismatch;
    }
    if text.contains("UnknownIssuer")
        || text.contains("BadSignature")
        || text.contains("invalid peer certificate")
    {
        return DbFailure::CertificateNotTrusted(text);
    }
    match error {
        sqlx::Error::Io(io) => DbFailure::Unreachable(io.to_string()),
        sqlx::Error::Tls(tls) => DbFailure::Tls(tls.to_string()),
        other => DbFailure::Server(other.to_string()),
    }
}

impl Postgres {
    pub fn new(ca_bundle: Option<Vec<u8>>, connect_timeout: Duration) -> Postgres {
        // The tree holds two rustls providers (ring for sqlx, aws-lc-rs for the AWS SDK), so
        // rustls cannot pick a process default by itself, and sqlx's verify-ca verifier asks
        // for one: without this, ssl "verify-ca" panics. An error means one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Postgres {
            ca_bundle,
            connect_timeout,
        }
    }

    fn options(&self, login: &DbLogin) -> PgConnectOptions {
        let ssl_mode = match login.ssl {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        };
        // Typed options, never a URL: any character in a password works. Statement logging is
        // off because a statement may carry a SCRAM verifier.
        let mut options = PgConnectOptions::new_without_pgpass()
            .host(&login.host)
            .port(login.port)
            .username(login.username.as_str())
            .password(login.password.expose_secret())
            .database(&login.dbname)
            .ssl_mode(ssl_mode)
            .application_name("pgrotate")
            .disable_statement_logging();
        if let Some(pem) = &self.ca_bundle {
            options = options.ssl_root_cert_from_pem(pem.clone());
        }
        options
    }

    /// Opens one connection, bounded by the connect timeout.
    pub async fn connect(&self, login: &DbLogin) -> Result<PgConnection, DbError> {
        let options = self.options(login);
        tracing::debug!(
            endpoint = %login.endpoint(),
            user = %login.username,
            ssl = login.ssl.as_str(),
            "connecting to PostgreSQL"
        );
        match tokio::time::timeout(self.connect_timeout, PgConnection::connect_with(&options)).await
        {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(DbError::new(login, classify(&e, login.ssl))),
            Err(_) => Err(DbError::new(
                login,
                DbFailure::Timeout(self.connect_timeout),
            )),
        }
    }

    async fn execute(
        connection: &mut PgConnection,
        login: &DbLogin,
        sql: &str,
    ) -> Result<(), DbError> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut *connection)
            .await
            .map(|_| ())
            .map_err(|e| DbError::new(login, classify(&e, login.ssl)))
    }

    async fn alternate_in_transaction(
        connection: &mut PgConnection,
        master: &DbLogin,
        change: &AlternateChange<'_>,
        verifier: &SecretString,
    ) -> Result<(), DbError> {
        let fail = |e: sqlx::Error| DbError::new(master, classify(&e, master.ssl));
        tracing::trace!(
            role = %change.target,
            "setting the password inside the pair's transaction"
        );
        let role_exists = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(change.target.as_str())
            .fetch_optional(&mut *connection)
            .await
            .map_err(fail)?
            .is_some();
        let sql = login_password_sql(change.target, role_exists, verifier);
        Self::execute(connection, master, sql.expose_secret()).await?;

        let member_of = |role: &RoleName, member: &RoleName| {
            sqlx::query(
                "SELECT 1 FROM pg_auth_members m
                   JOIN pg_roles r ON r.oid = m.roleid
                   JOIN pg_roles u ON u.oid = m.member
                  WHERE r.rolname = $1 AND u.rolname = $2",
            )
            .bind(role.to_string())
            .bind(member.to_string())
        };
        let primary_in_clone = member_of(change.clone, change.primary)
            .fetch_optional(&mut *connection)
            .await
            .map_err(fail)?
            .is_some();
        let clone_in_primary = member_of(change.primary, change.clone)
            .fetch_optional(&mut *connection)
            .await
            .map_err(fail)?
            .is_some();
        let primary_settings: Vec<String> = sqlx::query(
            "SELECT unnest(s.setconfig) AS entry
               FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
              WHERE r.rolname = $1 AND s.setdatabase = 0",
        )
        .bind(change.primary.as_str())
        .fetch_all(&mut *connection)
        .await
        .map_err(fail)?
        .iter()
        .map(|row| row.get::<String, _>("entry"))
        .collect();
        let state = PairState {
            primary_in_clone,
            clone_in_primary,
            primary_settings,
        };
        for sql in pair_statements(
            change.primary,
            change.clone,
            &state,
            change.clone_default_role,
        ) {
            Self::execute(connection, master, &sql).await?;
        }
        Ok(())
    }
}

impl Database for Postgres {
    async fn can_log_in(&self, login: &DbLogin) -> Result<bool, DbError> {
        match self.connect(login).await {
            Ok(connection) => {
                let _ = connection.close().await;
                Ok(true)
            }
            Err(e) if e.is_auth_failure() => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn session_user(&self, login: &DbLogin) -> Result<String, DbError> {
        let mut connection = self.connect(login).await?;
        let user: String = sqlx::query_scalar("SELECT session_user::text")
            .fetch_one(&mut connection)
            .await
            .map_err(|e| DbError::new(login, classify(&e, login.ssl)))?;
        let _ = connection.close().await;
        Ok(user)
    }

    async fn set_own_password(
        &self,
        login: &DbLogin,
        new_password: &SecretString,
    ) -> Result<(), DbError> {
        let mut connection = self.connect(login).await?;
        // A default role (ALTER ROLE ... SET role) would make another role current; a user
        // may only change the password of the session user.
        let sql = alter_password_sql(&login.username, &scram_verifier(new_password));
        let sql = format!("SET ROLE NONE; {}", sql.expose_secret());
        Self::execute(&mut connection, login, &sql).await?;
        let _ = connection.close().await;
        Ok(())
    }

    async fn set_password_as_master(
        &self,
        master: &DbLogin,
        user: &RoleName,
        new_password: &SecretString,
    ) -> Result<(), DbError> {
        let mut connection = self.connect(master).await?;
        let sql = alter_password_sql(user, &scram_verifier(new_password));
        Self::execute(&mut connection, master, sql.expose_secret()).await?;
        let _ = connection.close().await;
        Ok(())
    }

    async fn set_alternate_password(
        &self,
        master: &DbLogin,
        change: &AlternateChange<'_>,
        new_password: &SecretString,
    ) -> Result<(), DbError> {
        let mut connection = self.connect(master).await?;
        let verifier = scram_verifier(new_password);
        let fail = |e: sqlx::Error| DbError::new(master, classify(&e, master.ssl));
        let mut transaction = connection.begin().await.map_err(fail)?;
        Self::alternate_in_transaction(&mut transaction, master, change, &verifier).await?;
        transaction.commit().await.map_err(fail)?;
        let _ = connection.close().await;
        Ok(())
    }
}
