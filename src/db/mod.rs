//! The database port: what the rotation needs from PostgreSQL, as a trait over plain types,
//! and the connection failures it tells apart. Adapter: [`Postgres`]; statements: [`sql`].

use std::future::Future;
use std::time::Duration;

use secrecy::SecretString;

use crate::secret::{DbSecret, RoleName, SslMode};

mod postgres;
pub mod sql;
pub mod tls;

pub use postgres::Postgres;

/// Everything needed to open one connection.
#[derive(Clone)]
pub struct DbLogin {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub username: RoleName,
    pub password: SecretString,
    pub ssl: SslMode,
}

impl std::fmt::Debug for DbLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbLogin")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("ssl", &self.ssl)
            .finish()
    }
}

impl DbLogin {
    /// The connection a secret describes: its own `ssl` mode, else `default_ssl`.
    pub fn from_secret(secret: &DbSecret, default_ssl: SslMode) -> DbLogin {
        DbLogin {
            host: secret.host.clone(),
            port: secret.port,
            dbname: secret.dbname.clone(),
            username: secret.username.clone(),
            password: secret.password.clone(),
            ssl: secret.ssl.unwrap_or(default_ssl),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.dbname)
    }
}

/// The alternating-users change made as master: set `target`'s password (creating it when
/// missing) and keep `clone` equivalent to `primary`.
#[derive(Debug)]
pub struct AlternateChange<'a> {
    pub primary: &'a RoleName,
    pub clone: &'a RoleName,
    pub target: &'a RoleName,
    pub clone_default_role: bool,
}

/// Why a connection or statement failed, one variant per cause an operator fixes differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbFailure {
    #[error("password authentication failed")]
    AuthFailed,
    #[error(
        "the server requires TLS for this connection (pg_hba.conf rejects unencrypted connections): set \"ssl\" to \"verify-full\" in the secret or DEFAULT_SSL_MODE"
    )]
    TlsRequiredByServer,
    #[error(
        "the server does not offer TLS and ssl mode {0} never falls back to plaintext: enable ssl on the server, or set \"ssl\": \"disable\" in the secret if plaintext is intended"
    )]
    ServerWithoutTls(&'static str),
    #[error(
        "the server's certificate is not trusted ({0}): it must chain to a system root or an Amazon RDS certificate authority (built in), or be listed in SSL_CA_BUNDLE (a PEM bundle of its CA, or of the certificate itself when it is self-signed)"
    )]
    CertificateNotTrusted(String),
    #[error(
        "the server's certificate is expired or not yet valid: renew the server's certificate (or check the clock of the server)"
    )]
    CertificateExpired,
    #[error(
        "the server's certificate is not valid for this host name: connect by a name the certificate lists, or set \"ssl\": \"verify-ca\""
    )]
    HostnameMismatch,
    #[error(
        "cannot reach the server ({0}): check host and port, the security groups, and that the function runs in a subnet that routes to the database"
    )]
    Unreachable(String),
    #[error(
        "no answer within {0:?}: check the security groups and network route to the database, or raise DB_CONNECT_TIMEOUT"
    )]
    Timeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error(
        "the server runs PostgreSQL {0}; pgrotate needs PostgreSQL 10 or later (SCRAM-SHA-256 password verifiers): nothing was changed"
    )]
    ServerTooOld(String),
    #[error("{0}")]
    Server(String),
    /// The master user refused the change after reading the roles (nothing was changed).
    #[error("refused, nothing was changed: {0}")]
    Refused(Box<sql::RoleRefusal>),
}

/// A database failure, with where it happened (never the password).
#[derive(Debug, Clone, thiserror::Error)]
#[error("PostgreSQL {endpoint} as user {user:?}: {failure}")]
pub struct DbError {
    pub endpoint: String,
    pub user: String,
    pub failure: DbFailure,
}

impl DbError {
    pub fn new(login: &DbLogin, failure: DbFailure) -> DbError {
        DbError {
            endpoint: login.endpoint(),
            user: login.username.to_string(),
            failure,
        }
    }

    pub fn is_auth_failure(&self) -> bool {
        self.failure == DbFailure::AuthFailed
    }

    /// The refusal, when the master user refused to change a role.
    pub fn refusal(&self) -> Option<&sql::RoleRefusal> {
        match &self.failure {
            DbFailure::Refused(refusal) => Some(refusal),
            _ => None,
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(
            self.failure,
            DbFailure::Unreachable(_) | DbFailure::Timeout(_)
        )
    }
}

/// What the rotation asks of PostgreSQL. The futures need not be `Send`: the Lambda runtime
/// polls one invocation at a time.
pub trait Database {
    /// `Ok(true)` when the credentials log in, `Ok(false)` when the server refuses the
    /// password; any other failure (network, TLS) is an error, never a silent `false`.
    fn can_log_in(&self, login: &DbLogin) -> impl Future<Output = Result<bool, DbError>>;

    /// Logs in, runs a trivial query and returns `session_user`.
    fn session_user(&self, login: &DbLogin) -> impl Future<Output = Result<String, DbError>>;

    /// Logs in as `login` and changes that user's own password to `new_password`.
    fn set_own_password(
        &self,
        login: &DbLogin,
        new_password: &SecretString,
    ) -> impl Future<Output = Result<(), DbError>>;

    /// Logs in as the master user and, in one transaction, checks that `user` exists and is
    /// neither the master user nor privileged ([`sql::master_reset_refusal`]; refused:
    /// [`DbFailure::Refused`]), then changes its password.
    fn set_password_as_master(
        &self,
        master: &DbLogin,
        user: &RoleName,
        new_password: &SecretString,
    ) -> impl Future<Output = Result<(), DbError>>;

    /// Logs in as the master user and, in one transaction, reads the pair
    /// ([`sql::PAIR_FACTS_SQL`]), refuses an unsafe pair ([`sql::pair_refusal`]:
    /// [`DbFailure::Refused`]), else sets the alternate user's password (creating it with
    /// LOGIN when missing) and keeps the clone equivalent to the primary ([`sql::pair_plan`]).
    fn set_alternate_password(
        &self,
        master: &DbLogin,
        change: &AlternateChange<'_>,
        new_password: &SecretString,
    ) -> impl Future<Output = Result<(), DbError>>;
}
