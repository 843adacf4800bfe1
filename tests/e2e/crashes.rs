//! Crash points (issue 11): the function process killed with SIGKILL at every boundary inside
//! every step, both strategies. The points are discovered, not listed by hand: one rotation
//! runs with `PGROTATE_CRASH_LOG` (the `crash-points` feature, on in test builds only, logs
//! every point passed). Then, for each point, a fresh secret is rotated by a process deployed
//! with `PGROTATE_CRASH_AT=<point>`; it must die there. Right after the crash some labelled
//! version still logs in; the service's retry (a new process, same token, the four steps from
//! createSecret) completes the rotation, leaves no stray role and no open connection.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use pgrotate::Strategy;
use rstest::rstest;
use serde_json::Value;
use sqlx::Connection;

use crate::common::driver::{Login, STEPS, deployment, login};
use crate::common::lambda::{Deployment, Lambda};
use crate::common::world::*;

/// How long one invocation may run: a crash is reported as soon as the process dies, so a
/// case that reaches this limit means the emulator missed the exit.
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(20);

fn crash_deployment(world: &World, strategy: Strategy) -> Deployment {
    let mut d = deployment(&world.stack, strategy, FUNCTION);
    d.timeout = INVOCATION_TIMEOUT;
    d
}

/// The step of a point name, `<step>/<boundary>#<n>`.
fn step_of(point: &str) -> &str {
    point.split('/').next().unwrap_or_default()
}

/// Runs one full rotation with `PGROTATE_CRASH_LOG` and returns the points passed, in order,
/// each once.
async fn discover(world: &World, strategy: Strategy) -> Vec<String> {
    let log = std::env::temp_dir().join(format!(
        "pgrotate-crash-log-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let mut lambda = Lambda::start(
        crash_deployment(world, strategy).env("PGROTATE_CRASH_LOG", &log.to_string_lossy()),
    )
    .await;
    let (arn, _) = world.user_secret(strategy, None).await;
    world
        .driver
        .rotate(&lambda, &arn, None)
        .await
        .unwrap_or_else(|e| panic!("discovery rotation: {e}\n{}", lambda.logs()));
    lambda.stop().await;
    let text = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("the crash log {}: {e}", log.display()));
    let _ = std::fs::remove_file(&log);
    let mut seen = BTreeSet::new();
    text.lines()
        .filter(|l| !l.is_empty())
        .filter(|l| seen.insert(l.to_string()))
        .map(str::to_string)
        .collect()
}

/// The discovered points cover what the issue asks for.
fn check_discovered(points: &[String], strategy: Strategy) {
    let has = |step: &str, boundary: &str| {
        points
            .iter()
            .any(|p| p.starts_with(&format!("{step}/{boundary}#")))
    };
    for step in STEPS {
        let sm: Vec<&String> = points
            .iter()
            .filter(|p| step_of(p) == step && !p.contains("/db "))
            .collect();
        assert!(
            sm.iter().any(|p| p.contains("/before ")) && sm.iter().any(|p| p.contains("/after ")),
            "{step}: Secrets Manager points before and after a call: {points:#?}"
        );
        // Each Secrets Manager call with a "before" point has an "after" point in the step
        // (a call that answers an error, like GetSecretValue of a pending version not yet
        // written, passes only its "before").
        for p in points.iter().filter(|p| step_of(p) == step) {
            if let Some(rest) = p.strip_prefix(&format!("{step}/before ")) {
                let call = rest.split('#').next().unwrap_or_default();
                assert!(
                    has(step, &format!("after {call}")),
                    "{p} without its after point: {points:#?}"
                );
            }
        }
    }
    assert!(has("createSecret", "before GetSecretValue"), "{points:#?}");
    assert!(has("createSecret", "before PutSecretValue"), "{points:#?}");
    assert!(has("createSecret", "after PutSecretValue"), "{points:#?}");
    assert!(
        has("finishSecret", "before UpdateSecretVersionStage"),
        "{points:#?}"
    );
    assert!(
        has("finishSecret", "after UpdateSecretVersionStage"),
        "{points:#?}"
    );
    for boundary in [
        "db before connect",
        "db after connect",
        "db before ALTER ROLE",
    ] {
        assert!(
            has("setSecret", boundary),
            "setSecret/{boundary}: {points:#?}"
        );
    }
    match strategy {
        Strategy::SingleUser => {
            assert!(has("setSecret", "db after ALTER ROLE"), "{points:#?}")
        }
        Strategy::AlternatingUsers => {
            assert!(
                has("setSecret", "db after ALTER ROLE, before COMMIT"),
                "{points:#?}"
            );
            assert!(has("setSecret", "db after COMMIT"), "{points:#?}");
        }
    }
    assert!(has("testSecret", "db after connect"), "{points:#?}");
}

/// The roles whose names start with `user` (the user and, for alternating users, its clone).
async fn roles_like(world: &World, user: &str) -> Vec<String> {
    let mut c = world.stack.admin("postgres").await;
    let pattern = format!("{}%", user.replace('\\', "\\\\").replace('_', "\\_"));
    let roles: Vec<String> =
        sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1 ORDER BY 1")
            .bind(pattern)
            .fetch_all(&mut c)
            .await
            .expect("read pg_roles");
    c.close().await.ok();
    roles
}

/// The function's connections to this test's database.
async fn function_connections(world: &World) -> i64 {
    let mut c = world.stack.admin("postgres").await;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgrotate' AND datname = $1",
    )
    .bind(&world.db)
    .fetch_one(&mut c)
    .await
    .expect("read pg_stat_activity");
    c.close().await.ok();
    n
}

/// One case: the process killed at `point`, access kept, the service's retry completes.
async fn crash_at(world: &World, strategy: Strategy, point: &str) {
    let context = format!("{} crash at {point}", strategy.as_str());
    let (arn, user) = world.user_secret(strategy, None).await;
    let before = Before::take(world, &arn, None).await;

    let mut lambda =
        Lambda::start(crash_deployment(world, strategy).env("PGROTATE_CRASH_AT", point)).await;
    let token = world.driver.start_rotation(&arn).await;
    let started = Instant::now();
    let result = world
        .driver
        .run_steps(&lambda, &arn, &token, &STEPS, None, 1)
        .await;
    let elapsed = started.elapsed();
    lambda.stop().await;
    let logs = lambda.logs();
    match &result {
        Ok(()) => panic!("{context}: the rotation went through; the process never crashed\n{logs}"),
        Err(failure) => {
            assert_eq!(failure.step, step_of(point), "{context}: {failure}\n{logs}");
            assert_eq!(
                failure.error_type, "Runtime.ExitError",
                "{context}: {failure}\n{logs}"
            );
            assert!(
                failure.error_message.contains("SIGKILL"),
                "{context}: killed by SIGKILL: {failure}"
            );
        }
    }
    assert!(
        logs.contains(&format!("crash point {point} reached: SIGKILL")),
        "{context}: the process died at the point\n{logs}"
    );
    assert!(
        elapsed < INVOCATION_TIMEOUT,
        "{context}: the crash was noticed, not timed out"
    );

    // Right after the crash, before any retry: some labelled version logs in.
    let mut tried = Vec::new();
    for stage in ["AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"] {
        if let Some(raw) = world.driver.value(&arn, stage).await {
            let value: Value = serde_json::from_str(&raw)
                .unwrap_or_else(|e| panic!("{context}: {stage} is not JSON: {e}"));
            tried.push((stage, login(&world.stack, &value).await));
        }
    }
    assert!(
        tried.iter().any(|(_, l)| matches!(l, Login::Ok(_))),
        "{context}: no labelled version logs in after the crash: {tried:?}"
    );

    // The service's retry: a new process without the crash point, same token, all four steps.
    let mut retry = Lambda::start(crash_deployment(world, strategy)).await;
    world
        .driver
        .run_steps(&retry, &arn, &token, &STEPS, None, 1)
        .await
        .unwrap_or_else(|e| panic!("{context}: the retry failed: {e}\n{}", retry.logs()));
    retry.stop().await;
    world.driver.end_rotation(&arn, &token).await;
    // Labels (the token holds AWSCURRENT), AWSCURRENT logs in, the application role works.
    check_rotated(world, &arn, strategy, &token, &before, &context).await;

    let expected = match strategy {
        Strategy::SingleUser => vec![user.clone()],
        Strategy::AlternatingUsers => vec![user.clone(), alternate(&user)],
    };
    assert_eq!(
        roles_like(world, &user).await,
        expected,
        "{context}: no stray roles"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = function_connections(world).await;
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{context}: {n} pgrotate connections still open after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn every_crash_point(strategy: Strategy) {
    let world = World::new(FUNCTION).await;
    let points = discover(&world, strategy).await;
    check_discovered(&points, strategy);
    for step in STEPS {
        let n = points.iter().filter(|p| step_of(p) == step).count();
        println!("crash points: {} {step}: {n}", strategy.as_str());
    }
    println!(
        "crash points: {} total: {}\n  {}",
        strategy.as_str(),
        points.len(),
        points.join("\n  ")
    );
    for point in &points {
        crash_at(&world, strategy, point).await;
    }
}

#[rstest]
#[case::single_user(Strategy::SingleUser)]
#[case::alternating_users(Strategy::AlternatingUsers)]
#[tokio::test]
async fn killed_at_every_crash_point_the_retry_completes(#[case] strategy: Strategy) {
    every_crash_point(strategy).await;
}
