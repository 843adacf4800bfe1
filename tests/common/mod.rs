//! Test support shared by the integration test binaries: the local stack's coordinates (from
//! the environment `integration/stack-up.sh` writes), fresh databases and users with random
//! names, and admin SQL.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod driver;
pub mod hostile;
pub mod lambda;
pub mod pg_log;
pub mod sm_proxy;
pub mod world;

use std::path::PathBuf;
use std::time::Duration;

use pgrotate::db::DbLogin;
use pgrotate::db::Postgres;
use pgrotate::db::sql::{quote_ident, quote_literal};
use pgrotate::secret::SslMode;
use secrecy::SecretString;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// A role name for the adapter's API (test names are always valid).
pub fn role(name: &str) -> pgrotate::secret::RoleName {
    pgrotate::secret::RoleName::parse(name).expect("a valid role name")
}

/// Where the local stack runs.
#[derive(Debug, Clone)]
pub struct Stack {
    pub host: String,
    pub port: u16,
    pub plain_port: u16,
    pub admin_user: String,
    pub admin_password: String,
    pub ca_path: PathBuf,
    pub pg_log: PathBuf,
    pub plain_log: PathBuf,
    pub sm_endpoint: String,
    /// The TLS-only cluster whose certificate is self-signed (PostgreSQL's documented recipe).
    pub selfsigned_port: u16,
    pub selfsigned_cert: PathBuf,
    /// Another self-signed certificate, of no server.
    pub other_selfsigned_cert: PathBuf,
    /// The TLS mode of the logins this handle makes (verify-full; disable for
    /// [`Stack::plaintext`]).
    pub ssl: SslMode,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the local stack. Run `bash integration/test.sh` \
             (it starts the stack), or `bash integration/stack-up.sh && source .stack/env` first."
        )
    })
}

impl Stack {
    /// The running stack; panics (never skips) when its environment is missing.
    pub fn get() -> Stack {
        Stack {
            host: var("PGROTATE_PG_HOST"),
            port: var("PGROTATE_PG_PORT")
                .parse()
                .expect("PGROTATE_PG_PORT is a port"),
            plain_port: var("PGROTATE_PG_PLAIN_PORT").parse().expect("a port"),
            admin_user: var("PGROTATE_PG_ADMIN_USER"),
            admin_password: var("PGROTATE_PG_ADMIN_PASSWORD"),
            ca_path: var("PGROTATE_PG_CA").into(),
            pg_log: var("PGROTATE_PG_LOG").into(),
            plain_log: var("PGROTATE_PG_PLAIN_LOG").into(),
            sm_endpoint: var("PGROTATE_SM_ENDPOINT"),
            selfsigned_port: var("PGROTATE_PG_SELFSIGNED_PORT")
                .parse()
                .expect("PGROTATE_PG_SELFSIGNED_PORT is a port"),
            selfsigned_cert: var("PGROTATE_PG_SELFSIGNED_CERT").into(),
            other_selfsigned_cert: var("PGROTATE_PG_OTHER_SELFSIGNED_CERT").into(),
            ssl: SslMode::VerifyFull,
        }
    }

    /// The same stack with the plaintext cluster as its PostgreSQL (port, log, `ssl`
    /// disable): the same admin user and password, the same helpers.
    pub fn plaintext(&self) -> Stack {
        Stack {
            port: self.plain_port,
            pg_log: self.plain_log.clone(),
            ssl: SslMode::Disable,
            ..self.clone()
        }
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca_path).expect("CA readable")
    }

    /// The adapter as the Lambda builds it, trusting the stack's CA.
    pub fn postgres(&self) -> Postgres {
        Postgres::new(
            pgrotate::db::tls::parse_pem(&self.ca_pem()).expect("the stack's CA parses"),
            Duration::from_secs(5),
        )
    }

    /// A test-side connection (sqlx, for admin SQL, migrations and the application's own
    /// queries), with the same host, credentials and TLS mode as `login`.
    pub async fn connect(&self, login: &DbLogin) -> Result<PgConnection, sqlx::Error> {
        use secrecy::ExposeSecret;
        use sqlx::ConnectOptions;
        use sqlx::postgres::{PgConnectOptions, PgSslMode};
        let ssl_mode = match login.ssl {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        };
        PgConnectOptions::new_without_pgpass()
            .host(&login.host)
            .port(login.port)
            .username(login.username.as_str())
            .password(login.password.expose_secret())
            .database(&login.dbname)
            .ssl_mode(ssl_mode)
            .ssl_root_cert_from_pem(self.ca_pem())
            .disable_statement_logging()
            .connect()
            .await
    }

    pub fn login(&self, dbname: &str, user: &str, password: &str) -> DbLogin {
        DbLogin {
            host: self.host.clone(),
            port: self.port,
            dbname: dbname.to_string(),
            username: pgrotate::secret::RoleName::parse(user).expect("a valid role name"),
            password: SecretString::from(password.to_string()),
            ssl: self.ssl,
        }
    }

    pub fn admin_login(&self, dbname: &str) -> DbLogin {
        self.login(dbname, &self.admin_user, &self.admin_password)
    }

    pub async fn admin(&self, dbname: &str) -> PgConnection {
        self.connect(&self.admin_login(dbname))
            .await
            .expect("admin connects")
    }

    /// Runs SQL as the superuser in `dbname`.
    pub async fn exec(&self, dbname: &str, sql: &str) {
        let mut c = self.admin(dbname).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        c.close().await.ok();
    }

    /// A fresh database with the application schema (sqlx migrations) applied.
    pub async fn fresh_database(&self) -> String {
        let name = unique("db");
        self.exec(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(&name)),
        )
        .await;
        let mut c = self.admin(&name).await;
        let migrator = sqlx::migrate::Migrator::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"),
        )
        .await
        .expect("migrations load");
        migrator.run(&mut c).await.expect("migrations apply");
        c.close().await.ok();
        name
    }

    /// A login user with `password`, a member of the application's read/write role.
    pub async fn create_app_user(&self, name: &str, password: &str) {
        self.exec(
            "postgres",
            &format!(
                "CREATE ROLE {} LOGIN PASSWORD {}; GRANT app_rw TO {}",
                quote_ident(name),
                quote_literal(password),
                quote_ident(name)
            ),
        )
        .await;
    }

    pub fn pg_log_text(&self) -> String {
        std::fs::read_to_string(&self.pg_log).unwrap_or_default()
    }
}

/// A name no other test uses (roles are cluster-wide and tests run in parallel).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())[..prefix.len() + 13].to_string()
}

/// Connects as `login` and runs a query, returning the error text on failure.
pub async fn try_query(stack: &Stack, login: &DbLogin, sql: &str) -> Result<(), String> {
    let mut c = stack.connect(login).await.map_err(|e| e.to_string())?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut c)
        .await
        .map_err(|e| e.to_string())?;
    c.close().await.ok();
    Ok(())
}
