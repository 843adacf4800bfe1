//! Whole rotations through the binary: repeated, retried, killed between steps, with a
//! RotationToken and customer managed keys, and the in-process driver agreeing with the binary.

use pgrotate::Strategy;
use rstest::rstest;
use serde_json::Value;

use crate::common::driver::{InProcess, STEPS, deployment};
use crate::common::lambda::Lambda;
use crate::common::world::*;

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

#[rstest]
#[case::single_user(Strategy::SingleUser)]
#[case::alternating_users(Strategy::AlternatingUsers)]
#[tokio::test]
async fn three_rotations_through_the_binary(#[case] strategy: Strategy) {
    three_rotations(strategy).await;
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

#[rstest]
#[case::single_user(Strategy::SingleUser)]
#[case::alternating_users(Strategy::AlternatingUsers)]
#[tokio::test]
async fn rotation_token_and_customer_managed_key(#[case] strategy: Strategy) {
    rotation_token_and_kms(strategy).await;
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

#[rstest]
#[case::single_user(Strategy::SingleUser)]
#[case::alternating_users(Strategy::AlternatingUsers)]
#[tokio::test]
async fn every_step_invoked_twice(#[case] strategy: Strategy) {
    every_step_twice(strategy).await;
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

#[rstest]
#[case::single_user(Strategy::SingleUser)]
#[case::alternating_users(Strategy::AlternatingUsers)]
#[tokio::test]
async fn rotation_resumes_after_the_process_is_killed_between_steps(#[case] strategy: Strategy) {
    killed_between_steps(strategy).await;
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
