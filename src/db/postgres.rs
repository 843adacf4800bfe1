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
    MASTER_RIGHTS_SQL, MasterRights, MirroredAttributes, PAIR_FACTS_SQL, PairFacts, ReachableRole,
    RoleFacts as PairRoleFacts, TARGET_FACTS_SQL, alter_password_sql, master_reset_refusal,
    master_rights_refusal, pair_plan, scram_verifier,
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
        // What to do about the server's refusals an operator meets at login.
        let fix = if *code == SqlState::UNDEFINED_DATABASE {
            ": fix \"dbname\" in the secret (the database must exist; the function creates none)"
        } else if *code == SqlState::TOO_MANY_CONNECTIONS {
            ": the server is at its connection limit; the rotation is retried, raise max_connections or the role's CONNECTION LIMIT if this persists"
        } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            ": pg_hba.conf or the role refuses this login (LOGIN, CONNECT privilege, hba entry); let the user log in from the function's network"
        } else {
            ""
        };
        return DbFailure::Server(format!("{} (SQLSTATE {}){fix}", db.message(), code.code()));
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
        crate::crash::point("db before connect");
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(session)) => {
                crate::crash::point("db after connect");
                Ok(session)
            }
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

/// The master user's rights and the server's version ([`MASTER_RIGHTS_SQL`]); a server older
/// than PostgreSQL 10 is refused here, before any change.
async fn master_rights(client: &Client, master: &DbLogin) -> Result<MasterRights, DbError> {
    let fail = |e: tokio_postgres::Error| DbError::new(master, classify(&e, master.ssl, true));
    let row = client
        .query_typed_one(MASTER_RIGHTS_SQL, &[])
        .await
        .map_err(fail)?;
    let rights = MasterRights {
        name: row.try_get(0).map_err(fail)?,
        server_version_num: row.try_get(1).map_err(fail)?,
        server_version: row.try_get(2).map_err(fail)?,
        superuser: row.try_get(3).map_err(fail)?,
        createrole: row.try_get(4).map_err(fail)?,
        createdb: row.try_get(5).map_err(fail)?,
    };
    if rights.server_version_num < MIN_SERVER_VERSION {
        return Err(DbError::new(
            master,
            DbFailure::ServerTooOld(rights.server_version),
        ));
    }
    Ok(rights)
}

/// The roles `target` is or can act as ([`TARGET_FACTS_SQL`]), in one round trip.
async fn target_facts(
    client: &Client,
    target: &RoleName,
) -> Result<Vec<ReachableRole>, tokio_postgres::Error> {
    let rows = client
        .query_typed(TARGET_FACTS_SQL, &[(&target.as_str(), Type::TEXT)])
        .await?;
    rows.iter()
        .map(|row| {
            Ok(ReachableRole {
                name: row.try_get("name")?,
                is_target: row.try_get("is_target")?,
                superuser: row.try_get("rolsuper")?,
                createrole: row.try_get("rolcreaterole")?,
                replication: row.try_get("rolreplication")?,
                bypassrls: row.try_get("rolbypassrls")?,
                is_master: row.try_get("is_master")?,
                master_admin: row.try_get("master_admin")?,
            })
        })
        .collect()
}

/// What the pair's plan depends on ([`PAIR_FACTS_SQL`]), in one round trip.
async fn pair_facts(
    client: &Client,
    change: &AlternateChange<'_>,
) -> Result<PairFacts, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            PAIR_FACTS_SQL,
            &[
                (&change.primary.as_str(), Type::TEXT),
                (&change.clone.as_str(), Type::TEXT),
            ],
        )
        .await?;
    let mut facts = PairFacts::default();
    for row in &rows {
        let databases: Vec<String> = row.try_get("database_setting_databases")?;
        let entries: Vec<String> = row.try_get("database_setting_entries")?;
        let role = PairRoleFacts {
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
            master_admin: row.try_get("master_admin")?,
            member_of_partner: row.try_get("member_of_partner")?,
            settings: row.try_get("settings")?,
            database_settings: databases.into_iter().zip(entries).collect(),
        };
        if row.try_get("is_primary")? {
            facts.primary = Some(role);
        } else {
            facts.clone = Some(role);
        }
    }
    Ok(facts)
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
            crate::crash::point("db before ALTER ROLE");
            session
                .client
                .batch_execute(sql.expose_secret())
                .await
                .map_err(|e| DbError::new(login, classify(&e, login.ssl, true)))?;
            crate::crash::point("db after ALTER ROLE");
            Ok(())
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
        let fail = |e: tokio_postgres::Error| DbError::new(master, classify(&e, master.ssl, true));
        let result = async {
            let client = &session.client;
            let rights = master_rights(client, master).await?;
            // One transaction: the target's roles read, refused or changed.
            client.batch_execute("BEGIN").await.map_err(fail)?;
            let reachable = target_facts(client, user).await.map_err(fail)?;
            let admin = reachable.iter().any(|r| r.is_target && r.master_admin);
            if let Some(refusal) = master_reset_refusal(user, &reachable)
                .or_else(|| master_rights_refusal(&rights, &[(user.as_str(), admin)], false))
            {
                return Err(DbError::new(master, DbFailure::Refused(Box::new(refusal))));
            }
            let sql = alter_password_sql(user, &scram_verifier(new_password));
            crate::crash::point("db before ALTER ROLE");
            client
                .batch_execute(sql.expose_secret())
                .await
                .map_err(fail)?;
            crate::crash::point("db after ALTER ROLE, before COMMIT");
            client.batch_execute("COMMIT").await.map_err(fail)?;
            crate::crash::point("db after COMMIT");
            Ok(())
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
            let client = &session.client;
            let rights = master_rights(client, master).await?;
            let verifier = scram_verifier(new_password);
            tracing::trace!(
                role = %change.target,
                "setting the password inside the pair's transaction"
            );
            // One transaction in four round trips whatever the pair holds: BEGIN, the facts,
            // the password and the pair's plan in one batch, COMMIT. A connection dropped
            // before COMMIT rolls everything back.
            client.batch_execute("BEGIN").await.map_err(fail)?;
            let mut facts = pair_facts(client, change).await.map_err(fail)?;
            facts.server_version_num = rights.server_version_num;
            let plan = pair_plan(
                change.primary,
                change.clone,
                change.target,
                &facts,
                &verifier,
                change.clone_default_role,
            )
            .map_err(|refusal| DbError::new(master, DbFailure::Refused(Box::new(refusal))))?;
            if let Some(refusal) =
                master_rights_refusal(&rights, &facts.admin_needed(), facts.gives_createdb())
            {
                return Err(DbError::new(master, DbFailure::Refused(Box::new(refusal))));
            }
            let batch = SecretString::from(
                std::iter::once(plan.password.expose_secret().to_string())
                    .chain(plan.statements)
                    .collect::<Vec<_>>()
                    .join(";\n"),
            );
            crate::crash::point("db before ALTER ROLE");
            client
                .batch_execute(batch.expose_secret())
                .await
                .map_err(fail)?;
            crate::crash::point("db after ALTER ROLE, before COMMIT");
            client.batch_execute("COMMIT").await.map_err(fail)?;
            crate::crash::point("db after COMMIT");
            Ok(())
        }
        .await;
        session.close().await;
        result
    }
}
