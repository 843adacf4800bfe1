//! The Secrets Manager adapter of the [`SecretStore`] port, over the AWS SDK: bounded
//! timeouts, and SDK failures turned into errors that say what to do.

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use secrecy::{ExposeSecret, SecretString};

use super::{
    AWSCURRENT, AWSPENDING, OperatorStore, SecretDescription, SecretStore, StoreError,
    StoreErrorKind, VersionInfo, VersionRef,
};

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
        Self::load(
            aws_config::defaults(aws_config::BehaviorVersion::latest()),
            endpoint,
            timeout,
        )
        .await
    }

    /// The same for a program other than the function (the operator CLI), whose requests
    /// carry `app/<app_name>` in their User-Agent instead of the function's `app/pgrotate`.
    pub async fn from_env_as(
        app_name: &str,
        endpoint: Option<&str>,
        timeout: std::time::Duration,
    ) -> AwsSecretStore {
        Self::load_as(
            aws_config::defaults(aws_config::BehaviorVersion::latest()),
            endpoint,
            timeout,
            app_name,
        )
        .await
    }

    /// The same from a given loader (tests set region and credentials on it).
    pub async fn load(
        loader: aws_config::ConfigLoader,
        endpoint: Option<&str>,
        timeout: std::time::Duration,
    ) -> AwsSecretStore {
        Self::load_as(loader, endpoint, timeout, "pgrotate").await
    }

    async fn load_as(
        loader: aws_config::ConfigLoader,
        endpoint: Option<&str>,
        timeout: std::time::Duration,
        app_name: &str,
    ) -> AwsSecretStore {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(3).min(timeout))
            .operation_attempt_timeout(timeout)
            .operation_timeout(timeout * 2)
            .build();
        let mut loader = loader.timeout_config(timeouts);
        if let Ok(app_name) = aws_config::AppName::new(app_name.to_string()) {
            loader = loader.app_name(app_name);
        }
        let shared = loader.load().await;
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
            // A connection refused, reset or closed before the answer (hyper's
            // IncompleteMessage is a transient "other" error): the endpoint is not there.
            let transient =
                failure.as_other() == Some(aws_smithy_types::retry::ErrorKind::TransientError);
            let kind = if failure.is_io() || failure.is_timeout() || transient {
                StoreErrorKind::Unreachable
            } else {
                StoreErrorKind::Other
            };
            (
                kind,
                format!(
                    "no answer: {}",
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
        crate::crash::point("before DescribeSecret");
        let out = self
            .client
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| store_error("DescribeSecret", secret_id, e))?;
        crate::crash::point("after DescribeSecret");
        let versions = out
            .version_ids_to_stages()
            .map(|map| {
                map.iter()
                    .map(|(id, stages)| (id.clone(), stages.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let rotation_schedule = out.rotation_rules().and_then(|rules| {
            rules.schedule_expression().map(str::to_string).or_else(|| {
                rules
                    .automatically_after_days()
                    .map(|days| format!("rate({days} days)"))
            })
        });
        Ok(SecretDescription {
            arn: out.arn().unwrap_or(secret_id).to_string(),
            rotation_enabled: out.rotation_enabled(),
            versions,
            name: out.name().map(str::to_string),
            rotation_lambda_arn: out
                .rotation_lambda_arn()
                .filter(|arn| !arn.is_empty())
                .map(str::to_string),
            rotation_schedule,
            kms_key_id: out.kms_key_id().map(str::to_string),
            last_rotated: out.last_rotated_date().map(|d| d.secs()),
            next_rotation: out.next_rotation_date().map(|d| d.secs()),
            last_changed: out.last_changed_date().map(|d| d.secs()),
        })
    }

    async fn get_value(
        &self,
        secret_id: &str,
        version: VersionRef<'_>,
    ) -> Result<SecretString, StoreError> {
        crate::crash::point("before GetSecretValue");
        let request = self.client.get_secret_value().secret_id(secret_id);
        let request = match version {
            VersionRef::Stage(stage) => request.version_stage(stage),
            VersionRef::Pending(token) => request.version_id(token).version_stage(AWSPENDING),
        };
        let out = request
            .send()
            .await
            .map_err(|e| store_error("GetSecretValue", secret_id, e))?;
        crate::crash::point("after GetSecretValue");
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
        crate::crash::point("before PutSecretValue");
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
        crate::crash::point("after PutSecretValue");
        Ok(())
    }

    async fn move_current(
        &self,
        secret_id: &str,
        token: &str,
        from_version: &str,
    ) -> Result<(), StoreError> {
        crate::crash::point("before UpdateSecretVersionStage");
        self.client
            .update_secret_version_stage()
            .secret_id(secret_id)
            .version_stage(AWSCURRENT)
            .move_to_version_id(token)
            .remove_from_version_id(from_version)
            .send()
            .await
            .map_err(|e| store_error("UpdateSecretVersionStage", secret_id, e))?;
        crate::crash::point("after UpdateSecretVersionStage");
        Ok(())
    }
}

impl OperatorStore for AwsSecretStore {
    async fn list_versions(&self, secret_id: &str) -> Result<Vec<VersionInfo>, StoreError> {
        let mut versions = Vec::new();
        let mut next_token = None;
        loop {
            let out = self
                .client
                .list_secret_version_ids()
                .secret_id(secret_id)
                .set_next_token(next_token)
                .send()
                .await
                .map_err(|e| store_error("ListSecretVersionIds", secret_id, e))?;
            for version in out.versions() {
                versions.push(VersionInfo {
                    id: version.version_id().unwrap_or_default().to_string(),
                    stages: version.version_stages().to_vec(),
                    created: version.created_date().map(|d| d.secs()),
                });
            }
            next_token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if next_token.is_none() {
                return Ok(versions);
            }
        }
    }

    async fn rotate_secret(&self, secret_id: &str) -> Result<String, StoreError> {
        let out = self
            .client
            .rotate_secret()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| store_error("RotateSecret", secret_id, e))?;
        out.version_id()
            .map(str::to_string)
            .ok_or_else(|| StoreError {
                operation: "RotateSecret",
                secret: secret_id.to_string(),
                kind: StoreErrorKind::Other,
                detail: "the answer has no VersionId".into(),
            })
    }

    async fn remove_pending(&self, secret_id: &str, version: &str) -> Result<(), StoreError> {
        self.client
            .update_secret_version_stage()
            .secret_id(secret_id)
            .version_stage(AWSPENDING)
            .remove_from_version_id(version)
            .send()
            .await
            .map_err(|e| store_error("UpdateSecretVersionStage", secret_id, e))?;
        Ok(())
    }
}
