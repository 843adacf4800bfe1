//! End-to-end tests: the release binary under a Lambda runtime API emulator, rotating real
//! PostgreSQL users (TLS, SCRAM) through the Secrets Manager emulator (moto), driven the way
//! Secrets Manager drives a rotation. Each test uses its own database, users and secrets, so
//! the tests run in parallel; they fail (never skip) when the local stack is not running.
//!
//! Run with the stack up: `source .stack/env && cargo test --release --test e2e`.

mod common;
#[path = "common/driver.rs"]
mod driver;
#[path = "common/lambda.rs"]
mod lambda;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{Stack, unique};
use driver::{
    Driver, InProcess, Labels, Login, STEPS, StepFailure, app_read_write, deployment, login,
    random_password, stored_verifiers,
};
use lambda::{Lambda, Outcome};
use pgrotate::Strategy;
use serde_json::{Value, json};

const FUNCTION: &str = "pgrotate-e2e";

/// One test's world: the stack, an admin driver, a fresh migrated database.
struct World {
    stack: Stack,
    driver: Driver,
    db: String,
}

impl World {
    async fn new(function_name: &str) -> World {
        let stack = Stack::get();
        let driver = Driver::new(&stack.sm_endpoint, function_name).await;
        let db = stack.fresh_database().await;
        World { stack, driver, db }
    }

    async fn lambda(&self, strategy: Strategy) -> Lambda {
        Lambda::start(deployment(&self.stack, strategy, FUNCTION)).await
    }

    /// The JSON of a user secret for this world's database (an extra field included, which
    /// every rotation must carry along).
    fn user_json(&self, user: &str, password: &str, master_arn: Option<&str>) -> Value {
        let mut v = json!({
            "engine": "postgres",
            "host": self.stack.host,
            "username": user,
            "password": password,
            "dbname": self.db,
            "port": self.stack.port,
            "team": "e2e",
        });
        if let Some(arn) = master_arn {
            v["masterarn"] = json!(arn);
        }
        v
    }

    /// An RDS-style master secret (only username and password) for the stack's superuser.
    async fn master_secret(&self, kms: Option<&str>) -> String {
        let value = json!({
            "username": self.stack.admin_user,
            "password": self.stack.admin_password,
        });
        self.driver
            .create_secret(&unique("e2e/master"), &value.to_string(), kms)
            .await
    }

    /// A new application user (member of app_rw) and its secret. Returns (ARN, user name).
    async fn user_secret(&self, strategy: Strategy, kms: Option<&str>) -> (String, String) {
        self.user_secret_with_master(strategy, kms, None).await
    }

    async fn user_secret_with_master(
        &self,
        strategy: Strategy,
        kms: Option<&str>,
        master_kms: Option<&str>,
    ) -> (String, String) {
        let user = unique("e2e");
        let password = random_password();
        self.stack.create_app_user(&user, &password).await;
        let master = match strategy {
            Strategy::SingleUser => None,
            Strategy::AlternatingUsers => Some(self.master_secret(master_kms).await),
        };
        let value = self.user_json(&user, &password, master.as_deref());
        let arn = self
            .driver
            .create_secret(&unique("e2e/app"), &value.to_string(), kms)
            .await;
        (arn, user)
    }

    async fn current(&self, arn: &str) -> Value {
        self.driver.json(arn, "AWSCURRENT").await
    }
}

fn alternate(user: &str) -> String {
    match user.strip_suffix("_clone") {
        Some(primary) => primary.to_string(),
        None => format!("{user}_clone"),
    }
}

fn str_field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} missing in a secret"))
}

/// What a secret looked like before a rotation.
struct Before {
    value: Value,
    labels: Labels,
    /// The AWSCURRENT value before the previous rotation (alternating users: same user as
    /// the new current one, with the password that must now be dead).
    older: Option<Value>,
}

impl Before {
    async fn take(world: &World, arn: &str, older: Option<Value>) -> Before {
        Before {
            value: world.current(arn).await,
            labels: world.driver.labels(arn).await,
            older,
        }
    }

    fn current_version(&self) -> &str {
        self.labels
            .iter()
            .find(|(_, s)| s.iter().any(|s| s == "AWSCURRENT"))
            .map(|(id, _)| id.as_str())
            .expect("a version holds AWSCURRENT")
    }
}

/// Everything a finished rotation must leave behind. Returns the new AWSCURRENT value.
async fn check_rotated(
    world: &World,
    arn: &str,
    strategy: Strategy,
    token: &str,
    before: &Before,
    context: &str,
) -> Value {
    let labels = world.driver.labels(arn).await;
    let expected: Labels = BTreeMap::from([
        (token.to_string(), vec!["AWSCURRENT".to_string()]),
        (
            before.current_version().to_string(),
            vec!["AWSPREVIOUS".to_string()],
        ),
    ]);
    assert_eq!(labels, expected, "{context}: labels after the rotation");

    let current = world.current(arn).await;
    let previous = world.driver.json(arn, "AWSPREVIOUS").await;
    assert_eq!(
        previous, before.value,
        "{context}: AWSPREVIOUS holds the previous value"
    );

    // Every field but the credentials carried over, in order.
    let strip = |v: &Value| {
        let mut v = v.clone();
        let map = v.as_object_mut().expect("an object");
        map.insert("username".into(), Value::Null);
        map.insert("password".into(), Value::Null);
        serde_json::to_string(&v).expect("serialises")
    };
    assert_eq!(
        strip(&current),
        strip(&before.value),
        "{context}: fields other than username and password are kept, in order"
    );
    assert_ne!(
        current["password"], before.value["password"],
        "{context}: a new password"
    );
    let old_user = str_field(&before.value, "username");
    let new_user = str_field(&current, "username");
    match strategy {
        Strategy::SingleUser => assert_eq!(new_user, old_user, "{context}: same user"),
        Strategy::AlternatingUsers => {
            assert_eq!(new_user, alternate(old_user), "{context}: the other user")
        }
    }

    assert_eq!(
        login(&world.stack, &current).await,
        Login::Ok(new_user.to_string()),
        "{context}: AWSCURRENT logs in"
    );
    app_read_write(&world.stack, &current)
        .await
        .unwrap_or_else(|e| panic!("{context}: AWSCURRENT reads and writes app tables: {e}"));

    match strategy {
        Strategy::SingleUser => assert_eq!(
            login(&world.stack, &before.value).await,
            Login::Refused,
            "{context}: single user: the old password is rejected"
        ),
        Strategy::AlternatingUsers => {
            assert_eq!(
                login(&world.stack, &before.value).await,
                Login::Ok(old_user.to_string()),
                "{context}: alternating: the previous user still logs in"
            );
            app_read_write(&world.stack, &before.value)
                .await
                .unwrap_or_else(|e| {
                    panic!("{context}: the previous user still reads and writes: {e}")
                });
            if let Some(older) = &before.older {
                assert_eq!(
                    str_field(older, "username"),
                    new_user,
                    "{context}: two rotations ago the current user was the same"
                );
                assert_eq!(
                    login(&world.stack, older).await,
                    Login::Refused,
                    "{context}: alternating: the credentials from two rotations ago are dead"
                );
            }
        }
    }
    current
}

/// No secret value in the function's logs or in the PostgreSQL server log.
///
/// - function logs (TRACE): no password of any version (initial ones and the master's
///   included), no SCRAM verifier, no RotationToken, no secret JSON;
/// - server log (`log_statement=all`): no password the function set, no RotationToken, no
///   secret JSON. (The initial passwords are set by the tests' own `CREATE ROLE` in
///   plaintext; the function's password changes are sent as SCRAM verifiers.)
fn assert_logs_clean(
    stack: &Stack,
    function_logs: &str,
    values: &[Value],
    new_values: &[Value],
    rotation_tokens: &[&str],
) {
    assert!(
        function_logs.contains("rotation step"),
        "the function logged its steps:\n{function_logs}"
    );
    assert!(
        function_logs.contains("TRACE") || function_logs.contains("DEBUG"),
        "the function ran at its most verbose level:\n{function_logs}"
    );
    let pg_log = stack.pg_log_text();
    assert!(
        !pg_log.is_empty(),
        "the server log {} is readable",
        stack.pg_log.display()
    );
    let secret_json_markers = [
        "\"password\":",
        "\"password\" :",
        "\"engine\":\"",
        "\"masterarn\":",
    ];
    for marker in secret_json_markers {
        assert!(
            !function_logs.contains(marker),
            "function logs hold secret JSON ({marker}):\n{function_logs}"
        );
    }
    assert!(
        !function_logs.contains("SCRAM-SHA-256$"),
        "function logs hold a SCRAM verifier:\n{function_logs}"
    );
    for value in values {
        let password = str_field(value, "password");
        assert!(
            !function_logs.contains(password),
            "function logs hold a password:\n{function_logs}"
        );
        assert!(
            !function_logs.contains(&value.to_string()),
            "function logs hold a secret value"
        );
        assert!(
            !pg_log.contains(&value.to_string()),
            "the server log holds a secret value"
        );
    }
    for value in new_values {
        let password = str_field(value, "password");
        assert!(
            !pg_log.contains(password),
            "the server log {} holds a password the function set",
            stack.pg_log.display()
        );
    }
    for rt in rotation_tokens {
        assert!(
            !function_logs.contains(rt),
            "function logs hold the RotationToken"
        );
        assert!(
            !pg_log.contains(rt),
            "the server log holds the RotationToken"
        );
    }
}

/// Every password change the function made for `users` reached the server as a SCRAM-SHA-256
/// verifier (`ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$4096:...'`), never as plaintext. With
/// `log_statement=all` the server logs that statement, verifier included: PostgreSQL offers
/// a non-superuser no way to keep its own `ALTER ROLE` out of the log.
fn assert_changes_sent_as_verifiers(stack: &Stack, users: &[&str]) {
    let pg_log = stack.pg_log_text();
    for user in users {
        let role = pgrotate::postgres::quote_ident(user);
        let changes: Vec<&str> = pg_log
            .lines()
            .filter(|l| {
                l.contains(&format!("ALTER ROLE {role} PASSWORD "))
                    || l.contains(&format!("ROLE {role} WITH LOGIN PASSWORD "))
            })
            .collect();
        assert!(
            !changes.is_empty(),
            "no password change of {user} in the server log"
        );
        for line in changes {
            assert!(
                line.contains("PASSWORD 'SCRAM-SHA-256$4096:"),
                "a password change of {user} not sent as a SCRAM verifier"
            );
        }
    }
}

/// Three rotations in a row through the binary, every state checked after each.
async fn three_rotations(strategy: Strategy) {
    let world = World::new(FUNCTION).await;
    let mut lambda = world.lambda(strategy).await;
    let (arn, user) = world.user_secret(strategy, None).await;
    let master = world.current(&arn).await["masterarn"]
        .as_str()
        .map(str::to_string);

    let mut values = vec![world.current(&arn).await];
    let mut older = None;
    for round in 1..=3 {
        let before = Before::take(&world, &arn, older.clone()).await;
        let token = world
            .driver
            .rotate(&lambda, &arn, None)
            .await
            .unwrap_or_else(|e| panic!("rotation {round}: {e}\n{}", lambda.logs()));
        let context = format!("{} rotation {round}", strategy.as_str());
        let current = check_rotated(&world, &arn, strategy, &token, &before, &context).await;
        older = Some(before.value);
        values.push(current);
    }
    assert_eq!(
        lambda.starts(),
        1,
        "one cold start served the three rotations"
    );
    assert_eq!(lambda.invocations(), 12);

    lambda.stop().await;
    let mut all = values.clone();
    if let Some(master) = master {
        all.push(world.driver.json(&master, "AWSCURRENT").await);
    }
    assert_logs_clean(&world.stack, &lambda.logs(), &all, &values[1..], &[]);
    let clone = alternate(&user);
    let changed: &[&str] = match strategy {
        Strategy::SingleUser => &[&user],
        Strategy::AlternatingUsers => &[&user, &clone],
    };
    assert_changes_sent_as_verifiers(&world.stack, changed);
}

#[tokio::test]
async fn single_user_three_rotations_through_the_binary() {
    three_rotations(Strategy::SingleUser).await;
}

#[tokio::test]
async fn alternating_users_three_rotations_through_the_binary() {
    three_rotations(Strategy::AlternatingUsers).await;
}

/// A rotation with a RotationToken in every event, for a secret under the default key and
/// one under a customer managed KMS key (for alternating users the master secret sits under
/// a second key). The function reaches Secrets Manager through `SECRETS_MANAGER_ENDPOINT`
/// here (the reference's variable), the other tests through
/// `AWS_ENDPOINT_URL_SECRETS_MANAGER`; and it logs JSON (`AWS_LAMBDA_LOG_FORMAT=JSON`), the
/// others text.
async fn rotation_token_and_kms(strategy: Strategy) {
    let world = World::new(FUNCTION).await;
    let endpoint = world.stack.sm_endpoint.clone();
    let mut lambda = Lambda::start(
        deployment(&world.stack, strategy, FUNCTION)
            .without("AWS_ENDPOINT_URL_SECRETS_MANAGER")
            .env("SECRETS_MANAGER_ENDPOINT", &endpoint)
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON"),
    )
    .await;
    let key = world.driver.create_kms_key("pgrotate e2e secrets").await;
    let master_key = world.driver.create_kms_key("pgrotate e2e master").await;
    assert!(
        key.starts_with("arn:aws:kms:us-east-1:123456789012:key/"),
        "{key}"
    );

    let (plain_arn, _) = world.user_secret(strategy, None).await;
    let (kms_arn, _) = world
        .user_secret_with_master(strategy, Some(&key), Some(&master_key))
        .await;

    let mut values = Vec::new();
    let mut new_values = Vec::new();
    let mut rotation_tokens = Vec::new();
    for (arn, kms) in [(&plain_arn, None), (&kms_arn, Some(&key))] {
        let before = Before::take(&world, arn, None).await;
        values.push(before.value.clone());
        if let Some(master) = before.value["masterarn"].as_str() {
            values.push(world.driver.json(master, "AWSCURRENT").await);
            if kms.is_some() {
                assert_eq!(
                    world.driver.describe(master).await.kms_key_id(),
                    Some(master_key.as_str()),
                    "the master secret is under the second key"
                );
            }
        }
        let rotation_token = format!("rt-{}", uuid::Uuid::new_v4().simple());
        let token = world
            .driver
            .rotate(&lambda, arn, Some(&rotation_token))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", lambda.logs()));
        let context = format!("{} RotationToken kms={}", strategy.as_str(), kms.is_some());
        let current = check_rotated(&world, arn, strategy, &token, &before, &context).await;
        assert_eq!(
            world.driver.describe(arn).await.kms_key_id(),
            kms.map(String::as_str),
            "{context}: the secret keeps its key"
        );
        values.push(current.clone());
        new_values.push(current);
        rotation_tokens.push(rotation_token);
    }
    lambda.stop().await;
    let logs = lambda.logs();
    for line in logs.lines() {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("AWS_LAMBDA_LOG_FORMAT=JSON: a line that is not JSON ({e}): {line}")
        });
        assert!(entry["level"].is_string(), "{line}");
    }
    let tokens: Vec<&str> = rotation_tokens.iter().map(String::as_str).collect();
    assert_logs_clean(&world.stack, &lambda.logs(), &values, &new_values, &tokens);
}

#[tokio::test]
async fn single_user_rotation_token_and_customer_managed_key() {
    rotation_token_and_kms(Strategy::SingleUser).await;
}

#[tokio::test]
async fn alternating_users_rotation_token_and_customer_managed_key() {
    rotation_token_and_kms(Strategy::AlternatingUsers).await;
}

/// Every step invoked twice in a row (a retried invocation) ends like a single run.
async fn every_step_twice(strategy: Strategy) {
    let world = World::new(FUNCTION).await;
    let mut lambda = world.lambda(strategy).await;
    let (arn, _) = world.user_secret(strategy, None).await;
    let mut older = None;
    let mut values = vec![world.current(&arn).await];
    for round in 1..=2 {
        let before = Before::take(&world, &arn, older.clone()).await;
        let token = world.driver.start_rotation(&arn).await;
        world
            .driver
            .run_steps(&lambda, &arn, &token, &STEPS, None, 2)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", lambda.logs()));
        world.driver.end_rotation(&arn, &token).await;
        let context = format!("{} every step twice, rotation {round}", strategy.as_str());
        values.push(check_rotated(&world, &arn, strategy, &token, &before, &context).await);
        older = Some(before.value);
    }
    assert_eq!(lambda.invocations(), 16);
    lambda.stop().await;
    assert_logs_clean(&world.stack, &lambda.logs(), &values, &values[1..], &[]);
}

#[tokio::test]
async fn single_user_every_step_invoked_twice() {
    every_step_twice(Strategy::SingleUser).await;
}

#[tokio::test]
async fn alternating_users_every_step_invoked_twice() {
    every_step_twice(Strategy::AlternatingUsers).await;
}

/// The process killed after 1, 2, 3 and 4 steps of a rotation; a new process then gets the
/// service's retry (the four steps again, same token). Each ends like an uninterrupted
/// rotation, with the pending credentials created before the kill.
async fn killed_between_steps(strategy: Strategy) {
    let world = World::new(FUNCTION).await;
    let mut lambda = world.lambda(strategy).await;
    let (arn, _) = world.user_secret(strategy, None).await;
    let mut older = None;
    let mut values = vec![world.current(&arn).await];
    for done in 1..=STEPS.len() {
        let before = Before::take(&world, &arn, older.clone()).await;
        let token = world.driver.start_rotation(&arn).await;
        world
            .driver
            .run_steps(&lambda, &arn, &token, &STEPS[..done], None, 1)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", lambda.logs()));
        let created = world.driver.json(&arn, "AWSPENDING").await;
        lambda.restart().await;
        world
            .driver
            .run_steps(&lambda, &arn, &token, &STEPS, None, 1)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "after a kill after {}: {e}\n{}",
                    STEPS[done - 1],
                    lambda.logs()
                )
            });
        world.driver.end_rotation(&arn, &token).await;
        let context = format!("{} killed after {}", strategy.as_str(), STEPS[done - 1]);
        let current = check_rotated(&world, &arn, strategy, &token, &before, &context).await;
        assert_eq!(
            current, created,
            "{context}: the retry kept the pending credentials created before the kill"
        );
        values.push(current);
        older = Some(before.value);
    }
    assert_eq!(lambda.starts(), 5, "a cold start after every kill");
    lambda.stop().await;
    assert_logs_clean(&world.stack, &lambda.logs(), &values, &values[1..], &[]);
}

#[tokio::test]
async fn single_user_rotation_resumes_after_the_process_is_killed_between_steps() {
    killed_between_steps(Strategy::SingleUser).await;
}

#[tokio::test]
async fn alternating_users_rotation_resumes_after_the_process_is_killed_between_steps() {
    killed_between_steps(Strategy::AlternatingUsers).await;
}

/// Asserts that an invocation failed with `error_type` and a message holding every fragment.
fn assert_failed(outcome: &Outcome, error_type: &str, fragments: &[&str], case: &str) {
    match outcome {
        Ok(v) => panic!("{case}: expected {error_type}, the invocation succeeded ({v})"),
        Err((t, m)) => {
            assert_eq!(t, error_type, "{case}: errorType (message: {m})");
            for f in fragments {
                assert!(
                    m.contains(f),
                    "{case}: errorMessage {m:?} should mention {f:?}"
                );
            }
        }
    }
}

/// Same for a failed rotation: the step it stopped at, errorType and message.
fn assert_step_failed(
    result: &Result<(), StepFailure>,
    step: &str,
    error_type: &str,
    fragments: &[&str],
    case: &str,
) {
    match result {
        Ok(()) => {
            panic!("{case}: expected {step} to fail with {error_type}, the rotation succeeded")
        }
        Err(failure) => {
            assert_eq!(failure.step, step, "{case}: the failing step ({failure})");
            assert_failed(
                &Err((failure.error_type.clone(), failure.error_message.clone())),
                error_type,
                fragments,
                case,
            );
        }
    }
}

/// Bad events: each fails with its documented error; labels, pending value and passwords
/// stay as they were.
#[tokio::test]
async fn bad_events_fail_with_their_documented_errors_and_change_nothing() {
    let world = World::new(FUNCTION).await;
    let mut lambda = world.lambda(Strategy::SingleUser).await;
    let (arn, user) = world.user_secret(Strategy::SingleUser, None).await;
    let current_value = world.current(&arn).await;
    let current_version = world.driver.version_with(&arn, "AWSCURRENT").await.unwrap();
    // A rotation replaced by a newer one: its version has no label left.
    let replaced = world.driver.start_rotation(&arn).await;
    let token = world.driver.start_rotation(&arn).await;
    let labels = world.driver.labels(&arn).await;
    assert!(!labels.contains_key(&replaced), "{labels:?}");
    let verifiers = stored_verifiers(&world.stack, &[&user]).await;

    let unknown = uuid::Uuid::new_v4().to_string();
    let event = |token: &str, step: &str| Driver::event(&arn, token, step, None);
    let mut cases: Vec<(String, Outcome, &str, Vec<String>)> = Vec::new();
    let mut case = |name: &str, outcome, error_type: &'static str, fragments: &[&str]| {
        cases.push((
            name.to_string(),
            outcome,
            error_type,
            fragments.iter().map(|s| s.to_string()).collect(),
        ));
    };

    let no_token = json!({"SecretId": arn, "Step": "createSecret"});
    case(
        "ClientRequestToken missing",
        lambda.invoke(&no_token).await,
        "InvalidEvent",
        &["ClientRequestToken is missing"],
    );
    let no_secret = json!({"ClientRequestToken": token, "Step": "createSecret"});
    case(
        "SecretId missing",
        lambda.invoke(&no_secret).await,
        "InvalidEvent",
        &["SecretId is missing"],
    );
    let no_step = json!({"SecretId": arn, "ClientRequestToken": token});
    case(
        "Step missing",
        lambda.invoke(&no_step).await,
        "InvalidEvent",
        &["Step is missing"],
    );
    let numeric = json!({"SecretId": arn, "ClientRequestToken": 7, "Step": "createSecret"});
    case(
        "token not a string",
        lambda.invoke(&numeric).await,
        "InvalidEvent",
        &["ClientRequestToken must be a string"],
    );
    case(
        "event a JSON string",
        lambda.invoke(&json!("createSecret")).await,
        "InvalidEvent",
        &["JSON object"],
    );
    case(
        "event not JSON",
        lambda.invoke_raw(b"createSecret, please".to_vec()).await,
        // Shaped by lambda_runtime before the handler runs (pgrotate never sees the payload).
        "&lambda_runtime::deserializer::DeserializeError",
        &["failed to deserialize the incoming data"],
    );
    case(
        "unknown step",
        lambda.invoke(&event(&token, "deleteSecret")).await,
        "UnknownStep",
        &[
            "deleteSecret",
            "createSecret",
            "setSecret",
            "testSecret",
            "finishSecret",
        ],
    );
    for step in STEPS {
        case(
            &format!("{step}: token not a version"),
            lambda.invoke(&event(&unknown, step)).await,
            "UnknownVersion",
            &[&unknown, "is not a version of secret", &arn],
        );
        case(
            &format!("{step}: token not pending"),
            lambda.invoke(&event(&replaced, step)).await,
            "VersionNotPending",
            &[&replaced, "is not labelled AWSPENDING", "labels: none"],
        );
        // A token already AWSCURRENT: nothing to do, whatever the step.
        let outcome = lambda.invoke(&event(&current_version, step)).await;
        assert_eq!(
            outcome,
            Ok(Value::Null),
            "{step} with the AWSCURRENT version"
        );
    }

    // Rotation turned off (CancelRotateSecret) while the rotation is pending.
    world.driver.cancel_rotation(&arn).await;
    assert_eq!(
        world.driver.describe(&arn).await.rotation_enabled(),
        Some(false)
    );
    for step in STEPS {
        case(
            &format!("{step}: rotation disabled"),
            lambda.invoke(&event(&token, step)).await,
            "RotationDisabled",
            &["rotation is not enabled for secret", &arn],
        );
    }

    for (name, outcome, error_type, fragments) in &cases {
        let fragments: Vec<&str> = fragments.iter().map(String::as_str).collect();
        assert_failed(outcome, error_type, &fragments, name);
        if let Err((_, message)) = outcome {
            assert!(
                !message.contains(str_field(&current_value, "password")),
                "{name}: no password in the error"
            );
        }
    }
    assert_eq!(world.driver.labels(&arn).await, labels, "labels unchanged");
    assert_eq!(
        world.driver.value(&arn, "AWSPENDING").await,
        None,
        "no pending value written"
    );
    assert_eq!(
        world.current(&arn).await,
        current_value,
        "AWSCURRENT unchanged"
    );
    assert_eq!(
        stored_verifiers(&world.stack, &[&user]).await,
        verifiers,
        "password unchanged"
    );
    assert_eq!(
        login(&world.stack, &current_value).await,
        Login::Ok(user.clone())
    );
    lambda.stop().await;
    assert_logs_clean(&world.stack, &lambda.logs(), &[current_value], &[], &[]);
}

/// Bad secrets: each rotation stops at the documented step and error, names the field and
/// never the password; labels and database passwords stay as they were.
#[tokio::test]
async fn bad_secrets_fail_with_their_documented_errors_and_change_nothing() {
    let world = World::new(FUNCTION).await;
    let mut lambda = world.lambda(Strategy::SingleUser).await;
    let user = unique("e2e");
    let password = random_password();
    world.stack.create_app_user(&user, &password).await;
    let good = world.user_json(&user, &password, None);
    let verifiers = stored_verifiers(&world.stack, &[&user]).await;
    let without = |field: &str| {
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove(field);
        v.to_string()
    };
    let with = |field: &str, value: Value| {
        let mut v = good.clone();
        v[field] = value;
        v.to_string()
    };
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "host missing",
            without("host"),
            &["field \"host\" is missing"],
        ),
        (
            "username missing",
            without("username"),
            &["field \"username\" is missing"],
        ),
        (
            "password missing",
            without("password"),
            &["field \"password\" is missing"],
        ),
        (
            "engine missing",
            without("engine"),
            &["field \"engine\" is missing"],
        ),
        (
            "wrong engine",
            with("engine", json!("mysql")),
            &["field \"engine\" must be \"postgres\" or \"aurora-postgresql\""],
        ),
        (
            "port as text",
            with("port", json!("five-four-three-two")),
            &["field \"port\" must be a port number"],
        ),
        (
            "port out of range",
            with("port", json!(70000)),
            &["field \"port\" must be a port number"],
        ),
        (
            "ssl unknown",
            with("ssl", json!("prefer")),
            &["field \"ssl\" must be one of"],
        ),
        (
            "not JSON",
            format!("engine=postgres host=localhost password={password}"),
            &["not valid JSON"],
        ),
        (
            "JSON but not an object",
            json!(["postgres", password]).to_string(),
            &["must be a JSON object"],
        ),
    ];
    let mut values = vec![good.clone()];
    for (name, value, fragments) in cases {
        let arn = world
            .driver
            .create_secret(&unique("e2e/bad"), &value, None)
            .await;
        let token = world.driver.start_rotation(&arn).await;
        let labels = world.driver.labels(&arn).await;
        let result = world
            .driver
            .run_steps(&lambda, &arn, &token, &STEPS, None, 1)
            .await;
        let mut expected = vec![
            "the AWSCURRENT version of secret",
            arn.as_str(),
            "is not usable",
        ];
        expected.extend_from_slice(fragments);
        assert_step_failed(&result, "createSecret", "InvalidSecret", &expected, name);
        let message = result.unwrap_err().error_message;
        assert!(
            !message.contains(&password),
            "{name}: the error never shows the password"
        );
        assert_eq!(
            world.driver.labels(&arn).await,
            labels,
            "{name}: labels unchanged"
        );
        assert_eq!(
            world.driver.value(&arn, "AWSPENDING").await,
            None,
            "{name}: nothing written"
        );
        if let Ok(v) = serde_json::from_str::<Value>(&value)
            && v.is_object()
            && v.get("password").is_some()
        {
            values.push(v);
        }
    }
    assert_eq!(
        stored_verifiers(&world.stack, &[&user]).await,
        verifiers,
        "password unchanged"
    );
    assert_eq!(login(&world.stack, &good).await, Login::Ok(user));
    lambda.stop().await;
    let logs = lambda.logs();
    assert!(!logs.contains(&password), "function logs hold a password");
    assert_logs_clean(&world.stack, &logs, &values, &[], &[]);
}

/// Alternating users: masterarn missing or unreadable, a master secret that is not JSON, a
/// user name too long for its clone. Each fails with its documented error; labels stay, and
/// no clone is created or changed.
#[tokio::test]
async fn alternating_users_bad_master_and_long_names_fail_and_change_nothing() {
    let world = World::new(FUNCTION).await;
    let mut lambda = world.lambda(Strategy::AlternatingUsers).await;
    let master = world.master_secret(None).await;
    let broken_master = world
        .driver
        .create_secret(
            &unique("e2e/master"),
            "username=postgres password=secret",
            None,
        )
        .await;
    let missing_master = format!(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}-AbCdEf",
        unique("e2e/nothing")
    );

    let user = unique("e2e");
    let password = random_password();
    world.stack.create_app_user(&user, &password).await;
    // 58 bytes: its clone would be 64, one more than PostgreSQL allows.
    let long_user = format!("{user}_{}", "x".repeat(58 - user.len() - 1));
    assert_eq!(long_user.len(), 58);
    world.stack.create_app_user(&long_user, &password).await;
    let clone = alternate(&user);
    let users = [user.as_str(), clone.as_str(), long_user.as_str()];
    let verifiers = stored_verifiers(&world.stack, &users).await;
    assert_eq!(verifiers[&clone], None, "no clone yet");

    struct Case<'a> {
        name: &'a str,
        value: Value,
        step: &'a str,
        error_type: &'a str,
        fragments: Vec<String>,
    }
    let cases = [
        Case {
            name: "masterarn missing",
            value: world.user_json(&user, &password, None),
            step: "createSecret",
            error_type: "InvalidSecret",
            fragments: vec!["field \"masterarn\" is missing".into()],
        },
        Case {
            name: "master secret does not exist",
            value: world.user_json(&user, &password, Some(&missing_master)),
            step: "setSecret",
            error_type: "InvalidMasterSecret",
            fragments: vec![
                missing_master.clone(),
                "cannot be read".into(),
                "ResourceNotFoundException".into(),
            ],
        },
        Case {
            name: "master secret not JSON",
            value: world.user_json(&user, &password, Some(&broken_master)),
            step: "setSecret",
            error_type: "InvalidMasterSecret",
            fragments: vec![broken_master.clone(), "not valid JSON".into()],
        },
        Case {
            name: "user name too long for a clone",
            value: world.user_json(&long_user, &password, Some(&master)),
            step: "createSecret",
            error_type: "UserNameTooLong",
            fragments: vec![long_user.clone(), "63-byte".into()],
        },
    ];
    let mut values = vec![];
    for case in &cases {
        let arn = world
            .driver
            .create_secret(&unique("e2e/bad"), &case.value.to_string(), None)
            .await;
        let token = world.driver.start_rotation(&arn).await;
        let labels = world.driver.labels(&arn).await;
        let result = world
            .driver
            .run_steps(&lambda, &arn, &token, &STEPS, None, 1)
            .await;
        let fragments: Vec<&str> = case.fragments.iter().map(String::as_str).collect();
        assert_step_failed(&result, case.step, case.error_type, &fragments, case.name);
        let message = result.unwrap_err().error_message;
        assert!(
            !message.contains(&password),
            "{}: no password in the error",
            case.name
        );
        assert!(
            !message.contains(&world.stack.admin_password),
            "{}: no password in the error",
            case.name
        );
        assert_eq!(
            world.driver.labels(&arn).await,
            labels,
            "{}: labels unchanged",
            case.name
        );
        assert_eq!(
            world.current(&arn).await,
            case.value,
            "{}: AWSCURRENT unchanged",
            case.name
        );
        if let Some(pending) = world.driver.value(&arn, "AWSPENDING").await {
            values.push(serde_json::from_str::<Value>(&pending).unwrap());
        }
        values.push(case.value.clone());
    }
    assert_eq!(
        stored_verifiers(&world.stack, &users).await,
        verifiers,
        "no password changed, no clone created"
    );
    lambda.stop().await;
    let mut all = values.clone();
    all.push(world.driver.json(&master, "AWSCURRENT").await);
    let logs = lambda.logs();
    assert!(
        !logs.contains("username=postgres password=secret"),
        "the broken master secret is not logged"
    );
    assert_logs_clean(&world.stack, &logs, &all, &[], &[]);
}

/// The in-process driver (the rotation engine over the real adapters) ends a rotation in the
/// same state as the binary: same checks, both strategies.
#[tokio::test]
async fn in_process_rotations_end_like_rotations_through_the_binary() {
    let world = World::new(FUNCTION).await;
    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        let invoker = InProcess::new(&world.stack, strategy).await;
        let (arn, _) = world.user_secret(strategy, None).await;
        let mut older = None;
        for round in 1..=2 {
            let before = Before::take(&world, &arn, older.clone()).await;
            let token = world
                .driver
                .rotate(&invoker, &arn, None)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let context = format!("in-process {} rotation {round}", strategy.as_str());
            check_rotated(&world, &arn, strategy, &token, &before, &context).await;
            older = Some(before.value);
        }
    }
}

/// A bad setting fails the cold start with a message naming the variable; no invocation
/// runs.
#[tokio::test]
async fn a_bad_setting_fails_the_cold_start_naming_the_variable() {
    let stack = Stack::get();
    let mut lambda = Lambda::start(
        deployment(&stack, Strategy::SingleUser, FUNCTION).env("ROTATION_STRATEGY", "multi-user"),
    )
    .await;
    let event = Driver::event(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf",
        "t",
        "createSecret",
        None,
    );
    let outcome = lambda.invoke(&event).await;
    let (error_type, message) = outcome.expect_err("the function cannot start");
    assert_eq!(error_type, "Runtime.ExitError", "{message}");
    assert!(message.contains("exited"), "{message}");
    lambda.stop().await;
    let logs = lambda.logs();
    assert!(logs.contains("ROTATION_STRATEGY"), "{logs}");
    assert!(logs.contains("multi-user"), "{logs}");
}

// --- recordings for the IAM policy proof (issue 4) -----------------------------------------

const PROOF_FUNCTION: &str = "pgrotate-proof";

struct ProofConfig {
    strategy: Strategy,
    kms: bool,
    secret_arn: String,
    master_arn: Option<String>,
    kms_key_arn: Option<String>,
    master_kms_key_arn: Option<String>,
}

impl ProofConfig {
    fn name(&self) -> String {
        format!(
            "{}-{}",
            self.strategy.as_str(),
            if self.kms { "kms" } else { "nokms" }
        )
    }

    /// The scenario name policy/matrix.py uses for the same configuration.
    fn scenario(&self) -> String {
        format!(
            "{}{}",
            self.strategy.as_str(),
            if self.kms { "-kms" } else { "" }
        )
    }

    fn secret_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for arn in std::iter::once(&self.secret_arn).chain(self.master_arn.as_ref()) {
            ids.push(arn.clone());
            ids.push(secret_name(arn));
        }
        ids
    }
}

/// Standard base64 (moto's recorder encodes request bodies with it).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The secret a recorded request is about (its SecretId, or the Name of a CreateSecret).
fn recorded_secret_id(entry: &Value) -> Option<String> {
    let body = entry["body"].as_str()?;
    let body = if entry["body_encoded"].as_bool() == Some(true) {
        String::from_utf8(base64_decode(body)?).ok()?
    } else {
        body.to_string()
    };
    let body: Value = serde_json::from_str(&body).ok()?;
    body.get("SecretId")
        .or_else(|| body.get("Name"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// One full rotation per configuration in {single user, alternating users} x {no KMS,
/// customer managed key}, through the binary, with moto's request recorder on; writes
/// `target/recordings/<strategy>-<kms|nokms>.json` per configuration, and the same as a
/// recording set for `policy/recording.py` in `target/recordings/e2e/`. Only this test
/// toggles the recorder; other tests' traffic is filtered out by secret name and ARN.
#[tokio::test]
async fn recordings_for_the_policy_proof() {
    let world = World::new(PROOF_FUNCTION).await;
    let key = world.driver.create_kms_key("pgrotate proof secrets").await;
    let master_key = world.driver.create_kms_key("pgrotate proof master").await;

    let mut configs = Vec::new();
    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        for kms in [false, true] {
            let (kms_key, master_kms) = match (kms, strategy) {
                (false, _) => (None, None),
                (true, Strategy::SingleUser) => (Some(key.clone()), None),
                (true, Strategy::AlternatingUsers) => (Some(key.clone()), Some(master_key.clone())),
            };
            let (arn, _) = world
                .user_secret_with_master(strategy, kms_key.as_deref(), master_kms.as_deref())
                .await;
            let master_arn = world.current(&arn).await["masterarn"]
                .as_str()
                .map(str::to_string);
            configs.push(ProofConfig {
                strategy,
                kms,
                secret_arn: arn,
                master_arn,
                kms_key_arn: kms_key,
                master_kms_key_arn: master_kms,
            });
        }
    }

    world.driver.recorder_stop().await;
    world.driver.recorder_reset().await;
    world.driver.recorder_start().await;
    let mut failures = Vec::new();
    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        let mut lambda = Lambda::start(deployment(&world.stack, strategy, PROOF_FUNCTION)).await;
        for config in configs.iter().filter(|c| c.strategy == strategy) {
            let before = Before::take(&world, &config.secret_arn, None).await;
            match world.driver.rotate(&lambda, &config.secret_arn, None).await {
                Ok(token) => {
                    check_rotated(
                        &world,
                        &config.secret_arn,
                        strategy,
                        &token,
                        &before,
                        &config.name(),
                    )
                    .await;
                }
                Err(e) => failures.push(format!("{}: {e}\n{}", config.name(), lambda.logs())),
            }
        }
        lambda.stop().await;
    }
    world.driver.recorder_stop().await;
    let dump = world.driver.recorder_download().await;
    // moto keeps the recording in a file in its working directory: empty it.
    world.driver.recorder_reset().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/recordings");
    let set = out.join("e2e");
    std::fs::create_dir_all(&set).expect("create target/recordings/e2e");
    let lambda_arn = lambda::function_arn(PROOF_FUNCTION);
    for config in &configs {
        let ids = config.secret_ids();
        let kept: Vec<&str> = dump
            .lines()
            .filter(|line| {
                serde_json::from_str::<Value>(line)
                    .ok()
                    .and_then(|entry| recorded_secret_id(&entry))
                    .is_some_and(|id| ids.contains(&id))
            })
            .collect();
        let function_requests = kept.iter().filter(|l| l.contains("app/pgrotate")).count();
        let expected = match config.strategy {
            Strategy::SingleUser => 11,
            Strategy::AlternatingUsers => 12,
        };
        assert!(
            (4..=expected).contains(&function_requests),
            "{}: {function_requests} Secrets Manager calls by the function for one rotation, at most {expected} expected",
            config.name()
        );
        let mut recording = kept.join("\n");
        recording.push('\n');
        let file = json!({
            "config": config.name(),
            "strategy": config.strategy.as_str(),
            "region": "us-east-1",
            "account": "123456789012",
            "lambda_arn": lambda_arn,
            "secret_arn": config.secret_arn,
            "master_arn": config.master_arn,
            "kms_key_arn": config.kms_key_arn,
            "master_kms_key_arn": config.master_kms_key_arn,
            "recording": recording,
        });
        let path = out.join(format!("{}.json", config.name()));
        std::fs::write(&path, serde_json::to_string_pretty(&file).unwrap() + "\n")
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));

        // The same as a recording set for policy/recording.py (PGROTATE_RECORDINGS).
        let scenario = config.scenario();
        let mut secrets = serde_json::Map::new();
        secrets.insert(
            config.secret_arn.clone(),
            json!({"Name": secret_name(&config.secret_arn), "RotationLambdaARN": lambda_arn, "KmsKeyArn": config.kms_key_arn}),
        );
        if let Some(master) = &config.master_arn {
            secrets.insert(
                master.clone(),
                json!({"Name": secret_name(master), "RotationLambdaARN": null, "KmsKeyArn": config.master_kms_key_arn}),
            );
        }
        let meta = json!({
            "name": scenario,
            "strategy": config.strategy.as_str(),
            "function_name": PROOF_FUNCTION,
            "function_arn": lambda_arn,
            "region": "us-east-1",
            "account": "123456789012",
            "rotated": [config.secret_arn],
            "master": config.master_arn,
            "key": config.kms_key_arn,
            "master_key": config.master_kms_key_arn,
            "secrets": secrets,
            "recording": format!("{scenario}.moto.jsonl"),
        });
        std::fs::write(
            set.join(format!("{scenario}.moto.jsonl")),
            file["recording"].as_str().unwrap(),
        )
        .expect("write the dump");
        std::fs::write(
            set.join(format!("{scenario}.meta.json")),
            serde_json::to_string_pretty(&meta).unwrap() + "\n",
        )
        .expect("write the metadata");
    }
}

/// A secret's name from its ARN (the part after `secret:`, without the random suffix).
fn secret_name(arn: &str) -> String {
    let name = arn.splitn(7, ':').nth(6).unwrap_or_default();
    name.get(..name.len().saturating_sub(7))
        .unwrap_or_default()
        .to_string()
}
