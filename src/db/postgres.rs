//! The PostgreSQL adapter of the [`Database`] port: connections with explicit TLS modes and
//! bounded time, password changes sent only as SCRAM-SHA-256 verifiers (statements from
//! [`super::sql`]), and the alternating pair kept equivalent in one transaction.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions, Connection, Row};

use super::sql::{
    MirroredAttributes, PAIR_FACTS_SQL, PairFacts, ReachableRole, RoleFacts, TARGET_FACTS_SQL,
    alter_password_sql, master_reset_refusal, pair_plan, scram_verifier,
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
        self.checked_reset_as_master(master, user, new_password)
            .await
    }

    async fn set_alternate_password(
        &self,
        master: &DbLogin,
        change: &AlternateChange<'_>,
        new_password: &SecretString,
    ) -> Result<(), DbError> {
        self.checked_pair_change(master, change, new_password).await
    }
}

// --- the master user's changes: facts read, plan computed (sql.rs), run, one transaction ---

fn reachable_role(row: &sqlx::postgres::PgRow) -> Result<ReachableRole, sqlx::Error> {
    Ok(ReachableRole {
        name: row.try_get("name")?,
        is_target: row.try_get("is_target")?,
        superuser: row.try_get("rolsuper")?,
        createrole: row.try_get("rolcreaterole")?,
        replication: row.try_get("rolreplication")?,
        bypassrls: row.try_get("rolbypassrls")?,
        is_master: row.try_get("is_master")?,
    })
}

fn role_facts(row: &sqlx::postgres::PgRow) -> Result<(bool, RoleFacts), sqlx::Error> {
    let databases: Vec<String> = row.try_get("database_setting_databases")?;
    let entries: Vec<String> = row.try_get("database_setting_entries")?;
    let facts = RoleFacts {
        name: row.try_get("name")?,
        superuser: row.try_get("rolsuper")?,
        createrole: row.try_get("rolcreaterole")?,
        replication: row.try_get("rolreplication")?,
        bypassrls: row.try_get("rolbypassrls")?,
        attributes: MirroredAttributes {
            createdb: row.try_get("rolcreatedb")?,
            inherit: row.try_get("rolinherit")?,
            connection_limit: row.try_get("rolconnlimit")?,
            valid_until: row.try_get("valid_until")?,
        },
        is_master: row.try_get("is_master")?,
        member_of_partner: row.try_get("member_of_partner")?,
        settings: row.try_get("settings")?,
        database_settings: databases.into_iter().zip(entries).collect(),
    };
    Ok((row.try_get("is_primary")?, facts))
}

impl Postgres {
    /// Single user's master fallback: [`TARGET_FACTS_SQL`], [`master_reset_refusal`], then
    /// the password statement, in one transaction.
    async fn checked_reset_as_master(
        &self,
        master: &DbLogin,
        user: &RoleName,
        new_password: &SecretString,
    ) -> Result<(), DbError> {
        let mut connection = self.connect(master).await?;
        let fail = |e: sqlx::Error| DbError::new(master, classify(&e, master.ssl));
        let mut transaction = connection.begin().await.map_err(fail)?;
        let rows = sqlx::query(TARGET_FACTS_SQL)
            .bind(user.as_str())
            .fetch_all(&mut *transaction)
            .await
            .map_err(fail)?;
        let reachable = rows
            .iter()
            .map(reachable_role)
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        if let Some(refusal) = master_reset_refusal(user, &reachable) {
            let _ = transaction.rollback().await;
            let _ = connection.close().await;
            return Err(DbError::new(master, DbFailure::Refused(refusal)));
        }
        let sql = alter_password_sql(user, &scram_verifier(new_password));
        Self::execute(&mut transaction, master, sql.expose_secret()).await?;
        transaction.commit().await.map_err(fail)?;
        let _ = connection.close().await;
        Ok(())
    }

    /// Alternating users: [`PAIR_FACTS_SQL`], [`pair_plan`] (or its refusal), then the
    /// plan's statements, in one transaction.
    async fn checked_pair_change(
        &self,
        master: &DbLogin,
        change: &AlternateChange<'_>,
        new_password: &SecretString,
    ) -> Result<(), DbError> {
        let mut connection = self.connect(master).await?;
        let fail = |e: sqlx::Error| DbError::new(master, classify(&e, master.ssl));
        let mut transaction = connection.begin().await.map_err(fail)?;
        let rows = sqlx::query(PAIR_FACTS_SQL)
            .bind(change.primary.as_str())
            .bind(change.clone.as_str())
            .fetch_all(&mut *transaction)
            .await
            .map_err(fail)?;
        let mut facts = PairFacts::default();
        for row in &rows {
            match role_facts(row).map_err(fail)? {
                (true, role) => facts.primary = Some(role),
                (false, role) => facts.clone = Some(role),
            }
        }
        let plan = match pair_plan(
            change.primary,
            change.clone,
            change.target,
            &facts,
            &scram_verifier(new_password),
            change.clone_default_role,
        ) {
            Ok(plan) => plan,
            Err(refusal) => {
                let _ = transaction.rollback().await;
                let _ = connection.close().await;
                return Err(DbError::new(master, DbFailure::Refused(refusal)));
            }
        };
        tracing::trace!(
            role = %change.target,
            statements = plan.statements.len(),
            "setting the password inside the pair's transaction"
        );
        Self::execute(&mut transaction, master, plan.password.expose_secret()).await?;
        for sql in &plan.statements {
            Self::execute(&mut transaction, master, sql).await?;
        }
        transaction.commit().await.map_err(fail)?;
        let _ = connection.close().await;
        Ok(())
    }
}
