//! The PostgreSQL adapter: connections with explicit TLS modes and bounded time, password
//! changes sent only as SCRAM-SHA-256 verifiers, and the alternating pair kept equivalent.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions, Connection, Row};

use crate::db::{AlternateChange, Database, DbError, DbFailure, DbLogin};
use crate::secret::SslMode;

/// Quotes a PostgreSQL identifier: any character but NUL, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal so it reads the same whatever `standard_conforming_strings` is.
pub fn quote_literal(value: &str) -> String {
    if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (random salt, 4096
/// iterations). Sending this instead of the password keeps the plaintext out of server logs.
pub fn scram_verifier(password: &SecretString) -> SecretString {
    SecretString::from(postgres_protocol::password::scram_sha_256(
        password.expose_secret().as_bytes(),
    ))
}

/// `ALTER ROLE name PASSWORD 'verifier'`.
fn alter_password_sql(user: &str, verifier: &SecretString) -> String {
    format!(
        "ALTER ROLE {} PASSWORD {}",
        quote_ident(user),
        quote_literal(verifier.expose_secret())
    )
}

/// Settings whose values pg_dump splits into a list of literals (`GUC_LIST_QUOTE`); any
/// other value is restored as one literal.
const LIST_QUOTED_SETTINGS: [&str; 6] = [
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// Splits a stored list setting (`"$user", public`) into its elements, as PostgreSQL's
/// SplitGUCList does.
fn split_setting_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        item.push('"');
                    } else {
                        break;
                    }
                } else {
                    item.push(c);
                }
            }
            while chars.peek().is_some_and(|c| *c != ',') {
                chars.next();
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                item.push(c);
                chars.next();
            }
            item = item.trim_end().to_string();
        }
        items.push(item);
        if chars.next().is_none() {
            break;
        }
    }
    items
}

/// `ALTER ROLE role SET name TO value` for one `name=value` entry of `pg_db_role_setting`.
pub fn set_role_setting_sql(role: &str, entry: &str) -> Option<String> {
    let (name, value) = entry.split_once('=')?;
    let quoted_name = name
        .split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".");
    let value = if LIST_QUOTED_SETTINGS.contains(&name) {
        split_setting_list(value)
            .iter()
            .map(|item| quote_literal(item))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        quote_literal(value)
    };
    Some(format!(
        "ALTER ROLE {} SET {quoted_name} TO {value}",
        quote_ident(role)
    ))
}

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
            .username(&login.username)
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
        sql: String,
    ) -> Result<(), DbError> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
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
            role = change.target,
            "setting the password inside the pair's transaction"
        );
        let role_exists = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(change.target)
            .fetch_optional(&mut *connection)
            .await
            .map_err(fail)?
            .is_some();
        let sql = if role_exists {
            format!(
                "ALTER ROLE {} WITH LOGIN PASSWORD {}",
                quote_ident(change.target),
                quote_literal(verifier.expose_secret())
            )
        } else {
            format!(
                "CREATE ROLE {} WITH LOGIN PASSWORD {}",
                quote_ident(change.target),
                quote_literal(verifier.expose_secret())
            )
        };
        Self::execute(connection, master, sql).await?;

        let primary = quote_ident(change.primary);
        let clone = quote_ident(change.clone);
        let member_of = |role: &str, member: &str| {
            sqlx::query(
                "SELECT 1 FROM pg_auth_members m
                   JOIN pg_roles r ON r.oid = m.roleid
                   JOIN pg_roles u ON u.oid = m.member
                  WHERE r.rolname = $1 AND u.rolname = $2",
            )
            .bind(role.to_string())
            .bind(member.to_string())
        };
        // A pair set up by the reference function may have the primary as a member of the
        // clone; PostgreSQL refuses the circular grant we need, so that grant goes first.
        if member_of(change.clone, change.primary)
            .fetch_optional(&mut *connection)
            .await
            .map_err(fail)?
            .is_some()
        {
            Self::execute(connection, master, format!("REVOKE {clone} FROM {primary}")).await?;
        }
        if member_of(change.primary, change.clone)
            .fetch_optional(&mut *connection)
            .await
            .map_err(fail)?
            .is_none()
        {
            Self::execute(connection, master, format!("GRANT {primary} TO {clone}")).await?;
        }

        let settings: Vec<String> = sqlx::query(
            "SELECT unnest(s.setconfig) AS entry
               FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
              WHERE r.rolname = $1 AND s.setdatabase = 0",
        )
        .bind(change.primary)
        .fetch_all(&mut *connection)
        .await
        .map_err(fail)?
        .iter()
        .map(|row| row.get::<String, _>("entry"))
        .collect();
        Self::execute(connection, master, format!("ALTER ROLE {clone} RESET ALL")).await?;
        for entry in settings.iter().filter(|e| !e.starts_with("role=")) {
            if let Some(sql) = set_role_setting_sql(change.clone, entry) {
                Self::execute(connection, master, sql).await?;
            }
        }
        if change.clone_default_role {
            Self::execute(
                connection,
                master,
                format!(
                    "ALTER ROLE {clone} SET role TO {}",
                    quote_literal(change.primary)
                ),
            )
            .await?;
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
        let sql = format!(
            "SET ROLE NONE; {}",
            alter_password_sql(&login.username, &scram_verifier(new_password))
        );
        Self::execute(&mut connection, login, sql).await?;
        let _ = connection.close().await;
        Ok(())
    }

    async fn set_password_as_master(
        &self,
        master: &DbLogin,
        user: &str,
        new_password: &SecretString,
    ) -> Result<(), DbError> {
        let mut connection = self.connect(master).await?;
        let sql = alter_password_sql(user, &scram_verifier(new_password));
        Self::execute(&mut connection, master, sql).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_with_inner_quotes_doubled() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("We \"R\" users"), "\"We \"\"R\"\" users\"");
        assert_eq!(quote_ident("ünï"), "\"ünï\"");
    }

    #[test]
    fn literals_survive_quotes_and_backslashes() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'c"), "E'a\\\\b''c'");
    }

    #[test]
    fn verifier_is_scram_and_never_contains_the_password() {
        let password = SecretString::from("correct horse battery staple".to_string());
        let verifier = scram_verifier(&password);
        let v = verifier.expose_secret();
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(!v.contains("correct horse"));
        assert_ne!(
            v,
            scram_verifier(&password).expose_secret(),
            "salt must be random"
        );
    }

    #[test]
    fn list_settings_are_split_into_literals_and_others_kept_whole() {
        assert_eq!(
            set_role_setting_sql("u_clone", "search_path=\"$user\", public, \"My Schema\"")
                .unwrap(),
            "ALTER ROLE \"u_clone\" SET \"search_path\" TO '$user', 'public', 'My Schema'"
        );
        assert_eq!(
            set_role_setting_sql("u", "statement_timeout=5s").unwrap(),
            "ALTER ROLE \"u\" SET \"statement_timeout\" TO '5s'"
        );
        assert_eq!(
            set_role_setting_sql("u", "DateStyle=ISO, MDY").unwrap(),
            "ALTER ROLE \"u\" SET \"DateStyle\" TO 'ISO, MDY'"
        );
        assert_eq!(
            set_role_setting_sql("u", "myext.flag=it's").unwrap(),
            "ALTER ROLE \"u\" SET \"myext\".\"flag\" TO 'it''s'"
        );
    }
}
