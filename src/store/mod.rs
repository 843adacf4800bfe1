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
