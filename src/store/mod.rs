//! The secret store port: the four Secrets Manager calls a rotation makes, over plain types,
//! and the failures it tells apart. Adapters: [`aws`] (the service) and, for tests only,
//! `memory` (behind the `test-util` feature).

use std::future::Future;

use secrecy::SecretString;

mod aws;
#[cfg(feature = "test-util")]
mod memory;

pub use aws::AwsSecretStore;
#[cfg(feature = "test-util")]
pub use memory::{MemoryStore, Op};

pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPENDING: &str = "AWSPENDING";
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";

/// What DescribeSecret tells the rotation.
#[derive(Debug, Clone, Default)]
pub struct SecretDescription {
    pub arn: String,
    /// `None` when the service left the field out (counted as enabled).
    pub rotation_enabled: Option<bool>,
    /// Version id → its staging labels.
    pub versions: Vec<(String, Vec<String>)>,
    /// The rest is read by the operator CLI (`pgrotatectl`) only; the rotation ignores it.
    pub name: Option<String>,
    /// RotationLambdaARN: the function Secrets Manager invokes to rotate the secret.
    pub rotation_lambda_arn: Option<String>,
    /// The rotation schedule, as `rate(N days)` or the secret's ScheduleExpression.
    pub rotation_schedule: Option<String>,
    /// KmsKeyId: `None` when the secret uses the AWS managed key `aws/secretsmanager`.
    pub kms_key_id: Option<String>,
    /// Seconds since the Unix epoch.
    pub last_rotated: Option<i64>,
    pub next_rotation: Option<i64>,
    pub last_changed: Option<i64>,
}

impl SecretDescription {
    pub fn stages_of(&self, version: &str) -> Option<&[String]> {
        self.versions
            .iter()
            .find(|(id, _)| id == version)
            .map(|(_, stages)| stages.as_slice())
    }

    pub fn version_with(&self, stage: &str) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, stages)| stages.iter().any(|s| s == stage))
            .map(|(id, _)| id.as_str())
    }
}

/// One version of a secret as ListSecretVersionIds shows it (operator CLI only).
#[derive(Debug, Clone, Default)]
pub struct VersionInfo {
    pub id: String,
    pub stages: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created: Option<i64>,
}

/// Which value to read.
#[derive(Debug, Clone, Copy)]
pub enum VersionRef<'a> {
    /// The version holding a staging label (AWSCURRENT, AWSPREVIOUS).
    Stage(&'a str),
    /// The rotation's own version, which must hold AWSPENDING.
    Pending(&'a str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// ResourceNotFoundException: no such secret, version or value.
    NotFound,
    AccessDenied,
    Throttled,
    /// The endpoint could not be reached or did not answer in time.
    Unreachable,
    Other,
}

/// A failed Secrets Manager call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Secrets Manager {operation} on {secret} failed: {detail}{hint}", hint = self.hint())]
pub struct StoreError {
    pub operation: &'static str,
    pub secret: String,
    pub kind: StoreErrorKind,
    pub detail: String,
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        self.kind == StoreErrorKind::NotFound
    }

    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            StoreErrorKind::Throttled | StoreErrorKind::Unreachable
        )
    }

    fn hint(&self) -> &'static str {
        match self.kind {
            StoreErrorKind::Unreachable => {
                " (Secrets Manager cannot be reached: a function in a VPC needs a Secrets Manager interface VPC endpoint or a NAT gateway)"
            }
            StoreErrorKind::NotFound => {
                " (check the ARN or name: the secret or version must exist in this account and region)"
            }
            StoreErrorKind::Throttled => {
                " (Secrets Manager throttled the call or failed internally, also on the SDK's retries: the rotation stays pending and Secrets Manager retries it; if this persists, check the account's Secrets Manager request quotas and what else calls it)"
            }
            StoreErrorKind::AccessDenied => {
                " (the function's execution role lacks this permission, or a KMS key policy refuses it: see the template's role)"
            }
            _ => "",
        }
    }
}

/// The calls a rotation makes. Implemented by [`AwsSecretStore`] and, for tests, by
/// `MemoryStore` (feature `test-util`).
pub trait SecretStore {
    fn describe(
        &self,
        secret_id: &str,
    ) -> impl Future<Output = Result<SecretDescription, StoreError>> + Send;

    fn get_value(
        &self,
        secret_id: &str,
        version: VersionRef<'_>,
    ) -> impl Future<Output = Result<SecretString, StoreError>> + Send;

    /// PutSecretValue with the token as ClientRequestToken and the stage AWSPENDING.
    fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        value: &SecretString,
        rotation_token: Option<&SecretString>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// UpdateSecretVersionStage moving AWSCURRENT from `from_version` to `token`.
    fn move_current(
        &self,
        secret_id: &str,
        token: &str,
        from_version: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The calls an operator makes besides the rotation's own (the `pgrotatectl` CLI): never
/// made by the function, so its role does not need them.
pub trait OperatorStore {
    /// ListSecretVersionIds (labelled versions, with their creation dates).
    fn list_versions(
        &self,
        secret_id: &str,
    ) -> impl Future<Output = Result<Vec<VersionInfo>, StoreError>> + Send;

    /// RotateSecret with the rotation already configured on the secret (no RotationLambdaARN,
    /// no rules: they stay as they are); returns the new version id.
    fn rotate_secret(
        &self,
        secret_id: &str,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    /// UpdateSecretVersionStage removing AWSPENDING from `version` (what Secrets Manager does
    /// after finishSecret, and how a stale pending version is dropped).
    fn remove_pending(
        &self,
        secret_id: &str,
        version: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
