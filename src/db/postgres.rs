//! The PostgreSQL adapter of the [`Database`] port, on tokio-postgres: typed connection
//! options, TLS from [`super::tls`] (TCP_NODELAY, SCRAM channel binding when the server offers
//! it), bounded time, failures classified from typed errors, password changes sent only as
//! SCRAM-SHA-256 verifiers (statements from [`super::sql`]), and the alternating pair kept
//! equivalent in one transaction. Every connection is closed on every path.

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig};
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinHandle;
use tokio_postgres::config::{ChannelBinding, SslMode as WireSslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, NoTls, TlsConnect};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config, SimpleQueryMessage, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::sql::{
    PairState, alter_password_sql, login_password_sql, pair_statements, scram_verifier,
};
use super::tls::TlsConfigs;
use super::{AlternateChange, Database, DbError, DbFailure, DbLogin};
use crate::secret::{RoleName, SslMode};

mod inspect;
pub use inspect::{ConnectionInfo, MasterFacts, RoleFacts, TlsInfo};

/// The first PostgreSQL version (`server_version_num`) that stores SCRAM verifiers.
const MIN_SERVER_VERSION: i32 = 100_000;

/// The tokio-postgres [`Database`]. Build it once per process: it keeps the TLS
/// configurations (and so the parsed trusted roots) for every connection.
#[derive(Debug)]
pub struct Postgres {
    tls: TlsConfigs,
    connect_timeout: Duration,
}

/// One open connection: the client, and the task driving its socket.
struct Session {
    client: Client,
    driver: JoinHandle<()>,
}

impl Session {
    /// Sends Terminate and waits (briefly) for the socket to close.
    async fn close(self) {
        drop(self.client);
        let mut driver = self.driver;
        if tokio::time::timeout(Duration::from_secs(1), &mut driver)
            .await
            .is_err()
        {
            driver.abort();
        }
    }
}

/// Records whether the TLS handshake was started, so that a server that answered the
/// SSLRequest with "no" is told apart from other failures without reading error text.
struct TrackTls<M> {
    inner: M,
    started: Arc<AtomicBool>,
}

struct TrackedConnect<T> {
    inner: T,
    started: Arc<AtomicBool>,
}

impl<M: MakeTlsConnect<Socket>> MakeTlsConnect<Socket> for TrackTls<M> {
    type Stream = M::Stream;
    type TlsConnect = TrackedConnect<M::TlsConnect>;
    type Error = M::Error;

    fn make_tls_connect(&mut self, hostname: &str) -> Result<Self::TlsConnect, Self::Error> {
        Ok(TrackedConnect {
            inner: self.inner.make_tls_connect(hostname)?,
            started: self.started.clone(),
        })
    }
}

impl<T: TlsConnect<Socket>> TlsConnect<Socket> for TrackedConnect<T> {
    type Stream = T::Stream;
    type Error = T::Error;
    type Future = T::Future;

    fn connect(self, stream: Socket) -> Self::Future {
        self.started.store(true, Ordering::Relaxed);
        self.inner.connect(stream)
    }
}

fn classify_tls(error: &rustls::Error) -> DbFailure {
    match error {
        rustls::Error::InvalidCertificate(cause) => match cause {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                DbFailure::HostnameMismatch
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => DbFailure::CertificateExpired,
            other => DbFailure::CertificateNotTrusted(format!("{other:?}")),
        },
        other => DbFailure::Tls(other.to_string()),
    }
}

/// Why a connection or statement failed, from the typed errors underneath.
fn classify(error: &tokio_postgres::Error, ssl: SslMode, tls_started: bool) -> DbFailure {
    if let Some(db) = error.as_db_error() {
        let code = db.code();
        if *code == SqlState::INVALID_PASSWORD {
            return DbFailure::AuthFailed;
        }
        // pg_hba.conf has no line for this connection: over plaintext, the usual cause is
        // a server that accepts only TLS (hostssl).
        if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION && ssl == SslMode::Disable {
            return DbFailure::TlsRequiredByServer;
        }
        return DbFailure::Server(format!("{} (SQLSTATE {})", db.message(), code.code()));
    }
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return classify_tls(tls);
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return classify_tls(tls);
            }
            return DbFailure::Unreachable(io.to_string());
        }
        source = cause.source();
    }
    if ssl != SslMode::Disable && !tls_started {
        return DbFailure::ServerWithoutTls(ssl.as_str());
    }
    DbFailure::Server(error.to_string())
}

impl Postgres {
    /// `ca_bundle`: the certificates of `SSL_CA_BUNDLE`, trusted besides the system roots
    /// and the built-in Amazon RDS authorities.
    pub fn new(ca_bundle: Vec<CertificateDer<'static>>, connect_timeout: Duration) -> Postgres {
        Postgres {
            tls: TlsConfigs::new(ca_bundle),
            connect_timeout,
        }
    }

    fn config(&self, login: &DbLogin) -> Config {
        // Typed options, never a URL: any character in a password works.
        let mut config = Config::new();
        config
            .host(&login.host)
            .port(login.port)
            .user(login.username.as_str())
            .password(login.password.expose_secret())
            .dbname(&login.dbname)
            .application_name("pgrotate")
            .connect_timeout(self.connect_timeout)
            .channel_binding(ChannelBinding::Prefer)
            .ssl_mode(match login.ssl {
                SslMode::Disable => WireSslMode::Disable,
                _ => WireSslMode::Require,
            });
        config
    }

    /// Opens one connection, bounded by the connect timeout as a whole (TCP, TLS and
    /// authentication), so a server that accepts and then stalls cannot hold the step.
    async fn connect(&self, login: &DbLogin) -> Result<Session, DbError> {
        self.connect_with(login, ChannelBinding::Prefer).await
    }

    async fn connect_with(
        &self,
        login: &DbLogin,
        channel_binding: ChannelBinding,
    ) -> Result<Session, DbError> {
        tracing::debug!(
            endpoint = %login.endpoint(),
            user = %login.username,
            ssl = login.ssl.as_str(),
            "connecting to PostgreSQL"
        );
        let mut config = self.config(login);
        config.channel_binding(channel_binding);
        let started = Arc::new(AtomicBool::new(false));
        let tls = self
            .tls
            .for_mode(login.ssl)
            .map_err(|e| DbError::new(login, DbFailure::Tls(e.to_string())))?;
        let attempt = async {
            match tls {
                None => open(&config, NoTls).await,
                Some(tls) => open(&config, tracked(tls, &started)).await,
            }
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(e)) => Err(DbError::new(
                login,
                classify(&e, login.ssl, started.load(Ordering::Relaxed)),
            )),
            Err(_) => Err(DbError::new(
                login,
                DbFailure::Timeout(self.connect_timeout),
            )),
        }
    }

    /// Whether a TLS login to `login` uses SCRAM channel binding (`SCRAM-SHA-256-PLUS`): the
    /// same connection with channel binding required succeeds only if the server offers it
    /// and the certificate allows it, which is exactly when the rotation's logins (channel
    /// binding preferred) use it.
    pub async fn uses_channel_binding(&self, login: &DbLogin) -> Result<bool, DbError> {
        if login.ssl == SslMode::Disable {
            return Ok(false);
        }
        match self.connect_with(login, ChannelBinding::Require).await {
            Ok(session) => {
                session.close().await;
                Ok(true)
            }
            Err(e) if e.is_auth_failure() => Err(e),
            Err(e) => match self.connect(login).await {
                Ok(session) => {
                    session.close().await;
                    Ok(false)
                }
                Err(_) => Err(e),
            },
        }
    }

    /// Runs `work` on a new connection and closes it whatever the outcome.
    async fn with_session<T>(
        &self,
        login: &DbLogin,
        work: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, DbError> {
        let session = self.connect(login).await?;
        let result = work(&session.client).await;
        session.close().await;
        result.map_err(|e| DbError::new(login, classify(&e, login.ssl, true)))
    }
}

fn tracked(tls: Arc<ClientConfig>, started: &Arc<AtomicBool>) -> TrackTls<MakeRustlsConnect> {
    TrackTls {
        inner: MakeRustlsConnect::new(Arc::unwrap_or_clone(tls)),
        started: started.clone(),
    }
}

async fn open<M>(config: &Config, tls: M) -> Result<Session, tokio_postgres::Error>
where
    M: MakeTlsConnect<Socket>,
    M::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await?;
    let driver = tokio::spawn(async move {
        // The connection ends when the client is dropped; an error here is a socket closed
        // under a finished session and changes nothing.
        let _ = connection.await;
    });
    Ok(Session { client, driver })
}

/// The server's `server_version_num` and `server_version`.
async fn server_version(client: &Client) -> Result<(i32, String), tokio_postgres::Error> {
    let row = client
        .query_typed_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version')",
            &[],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Refuses a server older than PostgreSQL 10, which would store a SCRAM verifier as a
/// literal password: checked before any password change.
async fn require_scram_server(client: &Client, login: &DbLogin) -> Result<(), DbError> {
    let (number, version) = server_version(client)
        .await
        .map_err(|e| DbError::new(login, classify(&e, login.ssl, true)))?;
    if number < MIN_SERVER_VERSION {
        return Err(DbError::new(login, DbFailure::ServerTooOld(version)));
    }
    Ok(())
}

/// Reads what the pair's plan depends on, in one round trip.
async fn pair_state(
    client: &Client,
    change: &AlternateChange<'_>,
) -> Result<(bool, PairState), tokio_postgres::Error> {
    let row = client
        .query_typed_one(
            "SELECT
               EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $3),
               EXISTS (SELECT 1 FROM pg_auth_members m
                         JOIN pg_roles r ON r.oid = m.roleid
                         JOIN pg_roles u ON u.oid = m.member
                        WHERE r.rolname = $2 AND u.rolname = $1),
               EXISTS (SELECT 1 FROM pg_auth_members m
                         JOIN pg_roles r ON r.oid = m.roleid
                         JOIN pg_roles u ON u.oid = m.member
                        WHERE r.rolname = $1 AND u.rolname = $2),
               ARRAY(SELECT unnest(s.setconfig)
                       FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
                      WHERE r.rolname = $1 AND s.setdatabase = 0)",
            &[
                (&change.primary.as_str(), Type::TEXT),
                (&change.clone.as_str(), Type::TEXT),
                (&change.target.as_str(), Type::TEXT),
            ],
        )
        .await?;
    Ok((
        row.try_get(0)?,
        PairState {
            primary_in_clone: row.try_get(1)?,
            clone_in_primary: row.try_get(2)?,
            primary_settings: row.try_get(3)?,
        },
    ))
}

async fn session_user(client: &Client) -> Result<String, tokio_postgres::Error> {
    let messages = client.simple_query("SELECT session_user").await?;
    Ok(messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default())
}

impl Database for Postgres {
    async fn can_log_in(&self, login: &DbLogin) -> Result<bool, DbError> {
        match self.connect(login).await {
            Ok(session) => {
                session.close().await;
                Ok(true)
            }
            Err(e) if e.is_auth_failure() => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn session_user(&self, login: &DbLogin) -> Result<String, DbError> {
        self.with_session(login, async |client| session_user(client).await)
            .await
    }

    async fn set_own_password(
        &self,
        login: &DbLogin,
        new_password: &SecretString,
    ) -> Result<(), DbError> {
        let session = self.connect(login).await?;
        let result = async {
            require_scram_server(&session.client, login).await?;
            // A default role (ALTER ROLE ... SET role) would make another role current; a
            // user may only change the password of the session user.
            let sql = alter_password_sql(&login.username, &scram_verifier(new_password));
            let sql = SecretString::from(format!("SET ROLE NONE; {}", sql.expose_secret()));
            session
                .client
                .batch_execute(sql.expose_secret())
                .await
                .map_err(|e| DbError::new(login, classify(&e, login.ssl, true)))
        }
        .await;
        session.close().await;
        result
    }

    async fn set_password_as_master(
        &self,
        master: &DbLogin,
        user: &RoleName,
        new_password: &SecretString,
    ) -> Result<(), DbError> {
        let session = self.connect(master).await?;
        let result = async {
            require_scram_server(&session.client, master).await?;
            let sql = alter_password_sql(user, &scram_verifier(new_password));
            session
                .client
                .batch_execute(sql.expose_secret())
                .await
                .map_err(|e| DbError::new(master, classify(&e, master.ssl, true)))
        }
        .await;
        session.close().await;
        result
    }

    async fn set_alternate_password(
        &self,
        master: &DbLogin,
        change: &AlternateChange<'_>,
        new_password: &SecretString,
    ) -> Result<(), DbError> {
        let session = self.connect(master).await?;
        let fail = |e: tokio_postgres::Error| DbError::new(master, classify(&e, master.ssl, true));
        let result = async {
            require_scram_server(&session.client, master).await?;
            let verifier = scram_verifier(new_password);
            let client = &session.client;
            tracing::trace!(
                role = %change.target,
                "setting the password inside the pair's transaction"
            );
            // One transaction: the facts, then the password statement and the pair's plan in
            // one batch. Dropping the connection before COMMIT rolls everything back.
            client.batch_execute("BEGIN").await.map_err(fail)?;
            let (target_exists, state) = pair_state(client, change).await.map_err(fail)?;
            let password = login_password_sql(change.target, target_exists, &verifier);
            let plan = pair_statements(
                change.primary,
                change.clone,
                &state,
                change.clone_default_role,
            );
            let batch = SecretString::from(format!(
                "{};\n{};\nCOMMIT",
                password.expose_secret(),
                plan.join(";\n")
            ));
            client
                .batch_execute(batch.expose_secret())
                .await
                .map_err(fail)
        }
        .await;
        session.close().await;
        result
    }
}
