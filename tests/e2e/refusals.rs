//! Refusals through the binary: bad events, bad secrets, bad master secrets and bad settings
//! each fail with their documented error and change nothing.

use pgrotate::Strategy;
use serde_json::{Value, json};

use crate::common::driver::{
    Driver, Login, STEPS, deployment, login, random_password, stored_verifiers,
};
use crate::common::lambda::{Lambda, Outcome};
use crate::common::world::*;
use crate::common::{Stack, unique};

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
