//! The secret store port (the four Secrets Manager calls a rotation makes) and its adapter
//! over the AWS SDK, which turns SDK failures into errors that say what to do.

use std::future::Future;

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use secrecy::{ExposeSecret, SecretString};

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
/// [`crate::memory::MemoryStore`].
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

/// The Secrets Manager adapter. Build it once per process and reuse it.
#[derive(Debug, Clone)]
pub struct AwsSecretStore {
    client: aws_sdk_secretsmanager::Client,
}

impl AwsSecretStore {
    pub fn new(client: aws_sdk_secretsmanager::Client) -> AwsSecretStore {
        AwsSecretStore { client }
    }

    /// Loads the AWS configuration from the environment (region, credentials,
    /// `AWS_ENDPOINT_URL[_SECRETS_MANAGER]`), with bounded timeouts and `app/pgrotate` in the
    /// user agent; `endpoint` (from `SECRETS_MANAGER_ENDPOINT`) overrides the endpoint.
    pub async fn from_env(endpoint: Option<&str>, timeout: std::time::Duration) -> AwsSecretStore {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(3).min(timeout))
            .operation_attempt_timeout(timeout)
            .operation_timeout(timeout * 2)
            .build();
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(timeouts)
            .app_name(aws_config::AppName::new("pgrotate").expect("a valid app name"))
            .load()
            .await;
        let mut builder = aws_sdk_secretsmanager::config::Builder::from(&shared);
        if let Some(url) = endpoint {
            builder = builder.endpoint_url(url);
        }
        AwsSecretStore::new(aws_sdk_secretsmanager::Client::from_conf(builder.build()))
    }
}

fn store_error<E, R>(operation: &'static str, secret: &str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let (kind, detail) = match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("UnknownError");
            let kind = match code {
                "ResourceNotFoundException" => StoreErrorKind::NotFound,
                "AccessDeniedException" | "AccessDenied" | "UnrecognizedClientException" => {
                    StoreErrorKind::AccessDenied
                }
                "ThrottlingException" | "TooManyRequestsException" => StoreErrorKind::Throttled,
                "InternalServiceError" | "InternalFailure" | "ServiceUnavailable" => {
                    StoreErrorKind::Throttled
                }
                _ => StoreErrorKind::Other,
            };
            (
                kind,
                format!("{code}: {}", e.message().unwrap_or("no message")),
            )
        }
        SdkError::TimeoutError(_) => (
            StoreErrorKind::Unreachable,
            "no answer before the timeout".to_string(),
        ),
        SdkError::DispatchFailure(failure) => {
            let kind = if failure.is_io() || failure.is_timeout() {
                StoreErrorKind::Unreachable
            } else {
                StoreErrorKind::Other
            };
            (
                kind,
                format!(
                    "request not sent: {}",
                    aws_smithy_types::error::display::DisplayErrorContext(&err)
                ),
            )
        }
        _ => (
            StoreErrorKind::Other,
            aws_smithy_types::error::display::DisplayErrorContext(&err).to_string(),
        ),
    };
    StoreError {
        operation,
        secret: secret.to_string(),
        kind,
        detail,
    }
}

impl SecretStore for AwsSecretStore {
    async fn describe(&self, secret_id: &str) -> Result<SecretDescription, StoreError> {
        let out = self
            .client
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| store_error("DescribeSecret", secret_id, e))?;
        let versions = out
            .version_ids_to_stages()
            .map(|map| {
                map.iter()
                    .map(|(id, stages)| (id.clone(), stages.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(SecretDescription {
            arn: out.arn().unwrap_or(secret_id).to_string(),
            rotation_enabled: out.rotation_enabled(),
            versions,
        })
    }

    async fn get_value(
        &self,
        secret_id: &str,
        version: VersionRef<'_>,
    ) -> Result<SecretString, StoreError> {
        let request = self.client.get_secret_value().secret_id(secret_id);
        let request = match version {
            VersionRef::Stage(stage) => request.version_stage(stage),
            VersionRef::Pending(token) => request.version_id(token).version_stage(AWSPENDING),
        };
        let out = request
            .send()
            .await
            .map_err(|e| store_error("GetSecretValue", secret_id, e))?;
        match out.secret_string {
            Some(value) => Ok(SecretString::from(value)),
            None => Err(StoreError {
                operation: "GetSecretValue",
                secret: secret_id.to_string(),
                kind: StoreErrorKind::Other,
                detail: "the version has no SecretString (binary secrets are not supported)".into(),
            }),
        }
    }

    async fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        value: &SecretString,
        rotation_token: Option<&SecretString>,
    ) -> Result<(), StoreError> {
        self.client
            .put_secret_value()
            .secret_id(secret_id)
            .client_request_token(token)
            .secret_string(value.expose_secret())
            .version_stages(AWSPENDING)
            .set_rotation_token(rotation_token.map(|t| t.expose_secret().to_string()))
            .send()
            .await
            .map_err(|e| store_error("PutSecretValue", secret_id, e))?;
        Ok(())
    }

    async fn move_current(
        &self,
        secret_id: &str,
        token: &str,
        from_version: &str,
    ) -> Result<(), StoreError> {
        self.client
            .update_secret_version_stage()
            .secret_id(secret_id)
            .version_stage(AWSCURRENT)
            .move_to_version_id(token)
            .remove_from_version_id(from_version)
            .send()
            .await
            .map_err(|e| store_error("UpdateSecretVersionStage", secret_id, e))?;
        Ok(())
    }
}
