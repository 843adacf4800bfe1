//! The crate's one error type: every failure a rotation can meet, worded so an operator knows
//! what went wrong and what to do next, and never carrying a secret value.

use crate::db::DbError;
use crate::store::StoreError;

/// Everything that can make a rotation step fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid rotation event: {0}")]
    Event(String),

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error(
        "rotation is not enabled for secret {secret}: enable rotation on the secret (RotateSecret with a RotationLambdaARN) before invoking this function"
    )]
    RotationDisabled { secret: String },

    #[error(
        "version {token} is not a version of secret {secret}: the ClientRequestToken must be the version id Secrets Manager created for this rotation"
    )]
    UnknownVersion { secret: String, token: String },

    #[error(
        "version {token} of secret {secret} is not labelled AWSPENDING (labels: {labels}): another rotation may have replaced it; start a new rotation with RotateSecret"
    )]
    NotPending {
        secret: String,
        token: String,
        labels: String,
    },

    #[error(
        "unknown step {0:?}: expected one of createSecret, setSecret, testSecret, finishSecret"
    )]
    UnknownStep(String),

    #[error("the {label} version of secret {secret} is not usable: {problem}")]
    SecretFormat {
        secret: String,
        label: String,
        problem: String,
    },

    #[error(
        "the pending secret does not match the current one: {0}; refusing to change a password of another user or database (delete the AWSPENDING version and rotate again)"
    )]
    PendingMismatch(String),

    #[error(
        "user name {name:?} is too long for an alternating-users rotation: its clone {clone_len} bytes long would exceed PostgreSQL's 63-byte limit; shorten the user name to at most 57 bytes"
    )]
    CloneNameTooLong { name: String, clone_len: usize },

    #[error("could not log in to set the new password of user {user:?}: tried {tried}; {hint}")]
    NoWorkingCredentials {
        user: String,
        tried: String,
        hint: String,
    },

    #[error(
        "host {host:?} of the {label} credentials is not in ALLOWED_DB_HOSTS ({allowed}): this function connects to no other host; if the secret is right, add the host to ALLOWED_DB_HOSTS (an exact name or *.domain), else fix \"host\" in the secret"
    )]
    HostNotAllowed {
        host: String,
        label: String,
        allowed: String,
    },

    #[error(
        "master secret {arn} has no \"host\" and ALLOWED_DB_HOSTS is not set, so nothing vouches for host {host:?} named by the user's secret (which whoever writes that secret chooses): the master password was not sent anywhere; set ALLOWED_DB_HOSTS to the database hosts this function rotates (needed for RDS-managed master secrets, which have no host), or add \"host\" to the master secret"
    )]
    MasterHostNotVouched { arn: String, host: String },

    #[error(
        "the current credentials (AWSCURRENT) of user {user:?} do not log in; an alternating-users rotation only proceeds from working credentials: fix AWSCURRENT first"
    )]
    CurrentDoesNotLogIn { user: String },

    #[error(
        "testSecret: the pending credentials of user {user:?} do not log in; setSecret did not take effect, so the rotation stops here and AWSCURRENT still works"
    )]
    PendingDoesNotLogIn { user: String },

    #[error(
        "testSecret: logged in with the pending credentials but session_user is {actual:?}, expected {expected:?}"
    )]
    WrongSessionUser { expected: String, actual: String },

    #[error("master secret {arn}: {problem}")]
    MasterSecret { arn: String, problem: String },

    #[error(
        "ran out of time in step {step} after {seconds:.1} s (the Lambda deadline is near): stopped before Lambda would kill the function; nothing was left half-done, and the next attempt of the rotation resumes. If this repeats, raise the function's timeout or check why the database or Secrets Manager is slow"
    )]
    OutOfTime { step: String, seconds: f64 },

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error(transparent)]
    Database(#[from] DbError),
}

impl Error {
    /// True when retrying the same step later may succeed without anyone changing anything
    /// (network trouble, throttling, a database that is restarting).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::OutOfTime { .. } => true,
            Error::Store(e) => e.is_transient(),
            Error::Database(e) => e.is_transient(),
            _ => false,
        }
    }

    /// A short, stable name for the kind of failure (the Lambda `errorType`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Event(_) => "InvalidEvent",
            Error::Config(_) => "InvalidConfiguration",
            Error::RotationDisabled { .. } => "RotationDisabled",
            Error::UnknownVersion { .. } => "UnknownVersion",
            Error::NotPending { .. } => "VersionNotPending",
            Error::UnknownStep(_) => "UnknownStep",
            Error::SecretFormat { .. } => "InvalidSecret",
            Error::PendingMismatch(_) => "PendingSecretMismatch",
            Error::CloneNameTooLong { .. } => "UserNameTooLong",
            Error::NoWorkingCredentials { .. } => "NoWorkingCredentials",
            Error::CurrentDoesNotLogIn { .. } => "CurrentCredentialsInvalid",
            Error::PendingDoesNotLogIn { .. } => "PendingCredentialsInvalid",
            Error::WrongSessionUser { .. } => "WrongSessionUser",
            Error::MasterSecret { .. } => "InvalidMasterSecret",
            Error::OutOfTime { .. } => "OutOfTime",
            Error::HostNotAllowed { .. } => "HostNotAllowed",
            Error::MasterHostNotVouched { .. } => "MasterHostNotVouched",
            Error::Store(_) => "SecretsManagerError",
            Error::Database(e) if e.refusal().is_some() => "RoleRefused",
            Error::Database(_) => "DatabaseError",
        }
    }
}
