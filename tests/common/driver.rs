//! Drives rotations through the Secrets Manager emulator (moto) the way Secrets Manager does:
//! the secret gets `RotationEnabled` and a `RotationLambdaARN`, a new version (the token)
//! carries `AWSPENDING` with no value, the four steps run with that token, and after
//! `finishSecret` the driver removes `AWSPENDING` as the service does.
//!
//! moto's own `RotateSecret` would invoke a Lambda function registered in moto; here it is
//! given the ARN of a function moto does not know. moto then records exactly the service's
//! state change (the token version labelled `AWSPENDING`, no value, rotation enabled) and
//! fails with `ResourceNotFoundException` "Resource not found for ARN"; that one error counts
//! as success. The steps are invoked in-process ([`InProcess`], a `Rotator` over the real
//! Secrets Manager adapter) or through the release binary ([`super::lambda::Lambda`]).
//!
//! Also here: the emulator's KMS (customer managed keys), its request recorder, and checks of
//! a secret's credentials against the database.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use pgrotate::db::Postgres;
use pgrotate::db::{Database, DbLogin};
use pgrotate::secret::{DbSecret, SslMode};
use pgrotate::store::AwsSecretStore;
use pgrotate::{Config, RotationEvent, Rotator, Strategy};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Stack;
use super::lambda::{self, Lambda, Outcome};

pub use super::lambda::REGION;

pub const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];

/// Version id → its staging labels (sorted), for versions that hold at least one label.
pub type Labels = BTreeMap<String, Vec<String>>;

/// Something that runs one rotation step: the binary under the runtime emulator, or the
/// rotation engine in this process.
pub trait Invoker {
    fn invoke(&self, event: &Value) -> impl Future<Output = Outcome>;
}

impl Invoker for Lambda {
    fn invoke(&self, event: &Value) -> impl Future<Output = Outcome> {
        Lambda::invoke(self, event)
    }
}

/// The rotation engine run in this process over the real Secrets Manager adapter and
/// PostgreSQL adapter, with errors shaped like the binary's (`error.kind()`, message).
pub struct InProcess {
    rotator: Rotator<AwsSecretStore, Postgres>,
}

impl InProcess {
    pub async fn new(stack: &Stack, strategy: Strategy) -> InProcess {
        let ca = stack.ca_path.to_string_lossy().into_owned();
        let config = Config::from_lookup(|name| match name {
            "ROTATION_STRATEGY" => Some(strategy.as_str().to_string()),
            "SSL_CA_BUNDLE" => Some(ca.clone()),
            "ALLOWED_DB_HOSTS" => Some(stack.host.clone()),
            _ => None,
        })
        .expect("a valid configuration");
        let shared = sdk_config(&stack.sm_endpoint, Some("pgrotate")).await;
        let sm_config = aws_sdk_secretsmanager::config::Builder::from(&shared).build();
        let store = AwsSecretStore::new(aws_sdk_secretsmanager::Client::from_conf(sm_config));
        let db = Postgres::new(config.ca_bundle.clone(), config.connect_timeout);
        InProcess {
            rotator: Rotator::new(store, db, config),
        }
    }
}

impl Invoker for InProcess {
    async fn invoke(&self, event: &Value) -> Outcome {
        let event =
            RotationEvent::from_json(event).map_err(|e| (e.kind().to_string(), e.to_string()))?;
        self.rotator
            .handle(&event)
            .await
            .map_err(|e| (e.kind().to_string(), e.to_string()))?;
        Ok(Value::Null)
    }
}

/// A step that failed, with the rotation it belonged to.
#[derive(Debug, Clone)]
pub struct StepFailure {
    pub token: String,
    pub step: String,
    pub error_type: String,
    pub error_message: String,
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed: {}: {}",
            self.step, self.error_type, self.error_message
        )
    }
}

/// The SDK configuration for the emulator: region, test credentials, endpoint, and an app
/// name when given (the function's client carries `app/pgrotate` in its User-Agent).
async fn sdk_config(endpoint: &str, app_name: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "e2e"))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(30))
                .build(),
        );
    if let Some(name) = app_name {
        loader =
            loader.app_name(aws_config::AppName::new(name.to_string()).expect("a valid app name"));
    }
    loader.load().await
}

/// Admin access to the emulator, the way Secrets Manager itself and an operator see it.
pub struct Driver {
    pub sm: aws_sdk_secretsmanager::Client,
    pub kms: aws_sdk_kms::Client,
    pub endpoint: String,
    /// The RotationLambdaARN given to RotateSecret: a function moto does not know.
    pub lambda_arn: String,
}

impl Driver {
    /// A driver whose rotations name `function_name` as their rotation function.
    pub async fn new(endpoint: &str, function_name: &str) -> Driver {
        let config = sdk_config(endpoint, None).await;
        Driver {
            sm: aws_sdk_secretsmanager::Client::new(&config),
            kms: aws_sdk_kms::Client::new(&config),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            lambda_arn: lambda::function_arn(function_name),
        }
    }

    /// A customer managed symmetric key in the emulator's KMS; returns its ARN.
    pub async fn create_kms_key(&self, description: &str) -> String {
        let out = self
            .kms
            .create_key()
            .description(description)
            .send()
            .await
            .unwrap_or_else(|e| panic!("KMS CreateKey: {}", error_text(&e)));
        out.key_metadata()
            .and_then(|m| m.arn())
            .expect("CreateKey returns the key's ARN")
            .to_string()
    }

    /// Creates a secret (under `kms_key` when given); returns its ARN.
    pub async fn create_secret(&self, name: &str, value: &str, kms_key: Option<&str>) -> String {
        let out = self
            .sm
            .create_secret()
            .name(name)
            .secret_string(value)
            .set_kms_key_id(kms_key.map(str::to_string))
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateSecret {name}: {}", error_text(&e)));
        out.arn().expect("CreateSecret returns the ARN").to_string()
    }

    /// Starts a rotation with a fresh token, as RotateSecret does; returns the token.
    pub async fn start_rotation(&self, secret: &str) -> String {
        let token = uuid::Uuid::new_v4().to_string();
        self.start_rotation_with(secret, &token).await;
        token
    }

    /// RotateSecret with `token`: moto labels a new version `token` AWSPENDING (no value),
    /// moves AWSPENDING off other versions, enables rotation with our RotationLambdaARN, then
    /// fails to find that function; that failure is the expected end.
    pub async fn start_rotation_with(&self, secret: &str, token: &str) {
        let result = self
            .sm
            .rotate_secret()
            .secret_id(secret)
            .client_request_token(token)
            .rotation_lambda_arn(&self.lambda_arn)
            .rotation_rules(
                aws_sdk_secretsmanager::types::RotationRulesType::builder()
                    .automatically_after_days(30)
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(e)
                if e.code() == Some("ResourceNotFoundException")
                    && e.message()
                        .is_some_and(|m| m.contains("Resource not found for ARN")) => {}
            Err(e) => panic!("RotateSecret {secret}: {}", error_text(&e)),
        }
        let labels = self.labels(secret).await;
        assert_eq!(
            labels.get(token).map(Vec::as_slice),
            Some(&["AWSPENDING".to_string()][..]),
            "after RotateSecret the token must be the AWSPENDING version: {labels:?}"
        );
    }

    /// What the service does after finishSecret: removes AWSPENDING from the token.
    pub async fn end_rotation(&self, secret: &str, token: &str) {
        self.sm
            .update_secret_version_stage()
            .secret_id(secret)
            .version_stage("AWSPENDING")
            .remove_from_version_id(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("UpdateSecretVersionStage {secret}: {}", error_text(&e)));
    }

    /// CancelRotateSecret: turns rotation off (RotationEnabled false).
    pub async fn cancel_rotation(&self, secret: &str) {
        self.sm
            .cancel_rotate_secret()
            .secret_id(secret)
            .send()
            .await
            .unwrap_or_else(|e| panic!("CancelRotateSecret {secret}: {}", error_text(&e)));
    }

    /// Adds a version holding `stages` (e.g. a tampered or broken AWSCURRENT).
    pub async fn put_value(&self, secret: &str, value: &str, stages: &[&str]) -> String {
        let token = uuid::Uuid::new_v4().to_string();
        self.sm
            .put_secret_value()
            .secret_id(secret)
            .client_request_token(&token)
            .secret_string(value)
            .set_version_stages(Some(stages.iter().map(|s| s.to_string()).collect()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PutSecretValue {secret}: {}", error_text(&e)));
        token
    }

    pub async fn describe(
        &self,
        secret: &str,
    ) -> aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput {
        self.sm
            .describe_secret()
            .secret_id(secret)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DescribeSecret {secret}: {}", error_text(&e)))
    }

    /// The labelled versions of a secret.
    pub async fn labels(&self, secret: &str) -> Labels {
        let out = self.describe(secret).await;
        out.version_ids_to_stages()
            .map(|m| {
                m.iter()
                    .filter(|(_, stages)| !stages.is_empty())
                    .map(|(id, stages)| {
                        let mut stages = stages.clone();
                        stages.sort();
                        (id.clone(), stages)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The version holding `stage`, if any.
    pub async fn version_with(&self, secret: &str, stage: &str) -> Option<String> {
        self.labels(secret)
            .await
            .into_iter()
            .find(|(_, stages)| stages.iter().any(|s| s == stage))
            .map(|(id, _)| id)
    }

    /// The secret string of the version holding `stage`, `None` when there is none (or it has
    /// no value).
    pub async fn value(&self, secret: &str, stage: &str) -> Option<String> {
        match self
            .sm
            .get_secret_value()
            .secret_id(secret)
            .version_stage(stage)
            .send()
            .await
        {
            Ok(out) => out.secret_string().map(str::to_string),
            Err(e) if e.code() == Some("ResourceNotFoundException") => None,
            Err(e) => panic!("GetSecretValue {secret} {stage}: {}", error_text(&e)),
        }
    }

    /// The JSON of the version holding `stage`; panics when there is none.
    pub async fn json(&self, secret: &str, stage: &str) -> Value {
        let raw = self
            .value(secret, stage)
            .await
            .unwrap_or_else(|| panic!("{secret} has no {stage} value"));
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{secret} {stage} is not JSON: {e}"))
    }

    /// The event Secrets Manager sends for one step.
    pub fn event(secret: &str, token: &str, step: &str, rotation_token: Option<&str>) -> Value {
        let mut event = json!({"SecretId": secret, "ClientRequestToken": token, "Step": step});
        if let Some(rt) = rotation_token {
            event["RotationToken"] = json!(rt);
        }
        event
    }

    /// Runs `steps` in order with `token`, each invoked `times` times in a row; stops at the
    /// first failure.
    pub async fn run_steps<I: Invoker>(
        &self,
        invoker: &I,
        secret: &str,
        token: &str,
        steps: &[&str],
        rotation_token: Option<&str>,
        times: usize,
    ) -> Result<(), StepFailure> {
        for step in steps {
            for _ in 0..times {
                let event = Driver::event(secret, token, step, rotation_token);
                if let Err((error_type, error_message)) = invoker.invoke(&event).await {
                    return Err(StepFailure {
                        token: token.to_string(),
                        step: step.to_string(),
                        error_type,
                        error_message,
                    });
                }
            }
        }
        Ok(())
    }

    /// One whole rotation as Secrets Manager runs it: RotateSecret, the four steps, then
    /// AWSPENDING removed. Returns the token. On a failed step the rotation stops there (the
    /// token keeps AWSPENDING, as in the service).
    pub async fn rotate<I: Invoker>(
        &self,
        invoker: &I,
        secret: &str,
        rotation_token: Option<&str>,
    ) -> Result<String, StepFailure> {
        let token = self.start_rotation(secret).await;
        self.run_steps(invoker, secret, &token, &STEPS, rotation_token, 1)
            .await?;
        self.end_rotation(secret, &token).await;
        Ok(token)
    }

    // --- moto's request recorder (moto_api/_internal/recorder) ---------------------------

    pub async fn recorder_reset(&self) {
        self.moto_api("POST", "/moto-api/recorder/reset-recording")
            .await;
    }

    pub async fn recorder_start(&self) {
        self.moto_api("POST", "/moto-api/recorder/start-recording")
            .await;
    }

    pub async fn recorder_stop(&self) {
        self.moto_api("POST", "/moto-api/recorder/stop-recording")
            .await;
    }

    /// The recording: one JSON object per line, `{"headers", "method", "url", "body",
    /// "body_encoded"}` per request since the last reset.
    pub async fn recorder_download(&self) -> String {
        self.moto_api("GET", "/moto-api/recorder/download-recording")
            .await
    }

    /// A plain HTTP/1.0 request to the emulator's own API; returns the body.
    async fn moto_api(&self, method: &str, path: &str) -> String {
        let authority = self
            .endpoint
            .strip_prefix("http://")
            .expect("the emulator endpoint is plain http");
        let authority = authority.split('/').next().unwrap_or(authority);
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .unwrap_or_else(|e| panic!("connect to {authority}: {e}"));
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the request");
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer within 30 s"))
            .expect("read the answer");
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or((response.as_str(), ""));
        let status = head.lines().next().unwrap_or_default();
        assert!(
            status.split_whitespace().nth(1) == Some("200"),
            "{method} {path}: {status}"
        );
        body.to_string()
    }
}

/// An SDK error with its code and message (the default Display says only "service error").
pub fn error_text<E: ProvideErrorMetadata + std::fmt::Debug>(e: &E) -> String {
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => format!("{e:?}"),
    }
}

// --- the database side ---------------------------------------------------------------------

/// How a login with a secret's credentials went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// Logged in; `session_user` is this name.
    Ok(String),
    /// The server refused the password.
    Refused,
    /// Anything else (network, TLS, a bad secret).
    Error(String),
}

impl Login {
    pub fn mark(&self) -> &'static str {
        match self {
            Login::Ok(_) => "✓",
            Login::Refused | Login::Error(_) => "✗",
        }
    }
}

/// The connection the secret describes, as the function makes it (TLS verify-full by default).
pub fn secret_login(secret: &Value) -> Result<DbLogin, String> {
    let parsed = DbSecret::parse(&SecretString::from(secret.to_string()))?;
    Ok(DbLogin::from_secret(&parsed, SslMode::VerifyFull))
}

/// Logs in with the secret's credentials and reads `session_user`.
pub async fn login(stack: &Stack, secret: &Value) -> Login {
    let login = match secret_login(secret) {
        Ok(login) => login,
        Err(e) => return Login::Error(e),
    };
    match stack.postgres().session_user(&login).await {
        Ok(user) => Login::Ok(user),
        Err(e) if e.is_auth_failure() => Login::Refused,
        Err(e) => Login::Error(e.to_string()),
    }
}

/// Logs in with the secret's credentials and uses the application's tables as the
/// application does: a customer and an order written, both read back, the order updated.
pub async fn app_read_write(stack: &Stack, secret: &Value) -> Result<(), String> {
    let login = secret_login(secret)?;
    let mut c = stack.connect(&login).await.map_err(|e| e.to_string())?;
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let result: Result<(), sqlx::Error> = async {
        let customer: i64 = sqlx::query_scalar(
            "INSERT INTO app.customers (email, full_name) VALUES ($1, 'E2E Customer') RETURNING id",
        )
        .bind(&email)
        .fetch_one(&mut c)
        .await?;
        let order: i64 = sqlx::query_scalar(
            "INSERT INTO app.orders (customer_id, total_cents) VALUES ($1, 1250) RETURNING id",
        )
        .bind(customer)
        .fetch_one(&mut c)
        .await?;
        sqlx::query("UPDATE app.orders SET status = 'paid' WHERE id = $1")
            .bind(order)
            .execute(&mut c)
            .await?;
        let (status, email_back): (String, String) = sqlx::query_as(
            "SELECT o.status, c.email FROM app.orders o JOIN app.customers c ON c.id = o.customer_id WHERE o.id = $1",
        )
        .bind(order)
        .fetch_one(&mut c)
        .await?;
        assert_eq!((status.as_str(), email_back.as_str()), ("paid", email.as_str()));
        Ok(())
    }
    .await;
    c.close().await.ok();
    result.map_err(|e| e.to_string())
}

/// The stored SCRAM verifiers of `users` (absent users map to `None`), to prove a password
/// did not change.
pub async fn stored_verifiers(stack: &Stack, users: &[&str]) -> BTreeMap<String, Option<String>> {
    let mut c = stack.admin("postgres").await;
    let mut out = BTreeMap::new();
    for user in users {
        let verifier: Option<Option<String>> =
            sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
                .bind(*user)
                .fetch_optional(&mut c)
                .await
                .expect("read pg_authid");
        out.insert(user.to_string(), verifier.flatten());
    }
    c.close().await.ok();
    out
}

/// The function's deployment for the local stack: the strategy, the stack's CA as
/// `SSL_CA_BUNDLE`, TLS verify-full by default, the stack's host as the only
/// `ALLOWED_DB_HOSTS` (which vouches for it to the RDS-style master secrets without a host),
/// the emulator as Secrets Manager endpoint
/// (`AWS_ENDPOINT_URL_SECRETS_MANAGER`), region and test credentials as Lambda provides them.
pub fn deployment(stack: &Stack, strategy: Strategy, function_name: &str) -> lambda::Deployment {
    lambda::Deployment::new(function_name)
        .env("ROTATION_STRATEGY", strategy.as_str())
        .env("SSL_CA_BUNDLE", &stack.ca_path.to_string_lossy())
        .env("DEFAULT_SSL_MODE", "verify-full")
        .env("ALLOWED_DB_HOSTS", &stack.host)
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &stack.sm_endpoint)
        .env("AWS_REGION", REGION)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_SESSION_TOKEN", "testing")
}

/// A random password of letters and digits (for the users the tests create).
pub fn random_password() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    format!("{}{}", &a[..12], &b[..12])
}
