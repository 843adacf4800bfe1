//! Faults through the binary: the Lambda deadline near while the database does not answer.
//! The function stops before the deadline with a clear error, and nothing is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgrotate::Strategy;
use serde_json::json;

use crate::common::driver::{Driver, Login, deployment, login};
use crate::common::lambda::Lambda;
use crate::common::world::*;

/// A TCP proxy on 127.0.0.1 in front of the stack's PostgreSQL that can freeze: while frozen
/// it accepts connections and never answers (a database stopped with SIGSTOP, for this test
/// alone); thawed, it forwards new connections.
struct FreezableProxy {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl FreezableProxy {
    async fn start(upstream: u16) -> FreezableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    held.push(socket);
                    continue;
                }
                tokio::spawn(async move {
                    let mut server = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
                        .await
                        .unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut socket, &mut server).await;
                });
            }
        });
        FreezableProxy { port, frozen }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_step_near_the_lambda_deadline_stops_with_a_clear_error_and_the_next_attempt_resumes() {
    let world = World::new(FUNCTION).await;
    let (arn, user) = world.user_secret(Strategy::SingleUser, None).await;
    // The secret reaches the database through the proxy (by IP: the certificate's chain is
    // verified, not its host name).
    let proxy = FreezableProxy::start(world.stack.port).await;
    let mut value = world.current(&arn).await;
    value["host"] = json!("127.0.0.1");
    value["port"] = json!(proxy.port);
    value["ssl"] = json!("verify-ca");
    world
        .driver
        .put_value(&arn, &value.to_string(), &["AWSCURRENT"])
        .await;

    let mut config = deployment(&world.stack, Strategy::SingleUser, FUNCTION)
        .env("DB_CONNECT_TIMEOUT", "30")
        .env("ALLOWED_DB_HOSTS", "localhost,127.0.0.1");
    config.timeout = Duration::from_secs(3);
    let mut lambda = Lambda::start(config).await;
    let token = world.driver.start_rotation(&arn).await;
    let event = |step: &str| Driver::event(&arn, &token, step, None);
    let create = lambda.invoke(&event("createSecret")).await;
    assert!(create.is_ok(), "{create:?}");

    proxy.freeze(true);
    let started = Instant::now();
    let set = lambda.invoke(&event("setSecret")).await;
    let elapsed = started.elapsed();
    let (error_type, message) = set.expect_err("setSecret cannot finish against a frozen database");
    assert_eq!(error_type, "OutOfTime", "{message}");
    assert!(
        message.contains("ran out of time in step setSecret"),
        "{message}"
    );
    assert!(message.contains("next attempt"), "{message}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    // The function answered by itself (Lambda did not kill it): the same process goes on.
    assert_eq!(lambda.starts(), 1);
    // Nothing was lost: the current credentials still log in (checked past the proxy).
    let direct = |secret: &serde_json::Value| {
        let mut secret = secret.clone();
        secret["host"] = json!(world.stack.host);
        secret["port"] = json!(world.stack.port);
        secret["ssl"] = json!("verify-full");
        secret
    };
    let current = world.current(&arn).await;
    assert!(matches!(login(&world.stack, &direct(&current)).await, Login::Ok(ref u) if *u == user));

    // The database answers again: the service's next attempt (same token, from createSecret)
    // completes the rotation.
    proxy.freeze(false);
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let outcome = lambda.invoke(&event(step)).await;
        assert!(outcome.is_ok(), "{step}: {outcome:?}");
    }
    let rotated = world.current(&arn).await;
    assert_ne!(rotated["password"], current["password"]);
    assert!(matches!(login(&world.stack, &direct(&rotated)).await, Login::Ok(ref u) if *u == user));
    assert_eq!(login(&world.stack, &direct(&current)).await, Login::Refused);
    lambda.stop().await;
}

/// A late invocation that still carries the token of a rotation a newer one replaced is
/// refused, changes nothing, and the newer rotation completes.
#[tokio::test]
async fn a_late_invocation_with_a_replaced_token_is_refused_and_changes_nothing() {
    let world = World::new(FUNCTION).await;
    let (arn, user) = world.user_secret(Strategy::SingleUser, None).await;
    let mut lambda = world.lambda(Strategy::SingleUser).await;
    let old = world.driver.start_rotation(&arn).await;
    let create = lambda
        .invoke(&Driver::event(&arn, &old, "createSecret", None))
        .await;
    assert!(create.is_ok(), "{create:?}");
    let new = world.driver.start_rotation(&arn).await;
    let before = world.current(&arn).await;
    for step in ["setSecret", "testSecret", "finishSecret"] {
        let (error_type, message) = lambda
            .invoke(&Driver::event(&arn, &old, step, None))
            .await
            .expect_err("a replaced token is refused");
        assert_eq!(error_type, "VersionNotPending", "{step}: {message}");
        assert!(
            message.contains("another rotation may have replaced it"),
            "{message}"
        );
    }
    assert_eq!(world.current(&arn).await, before);
    assert!(matches!(login(&world.stack, &before).await, Login::Ok(ref u) if *u == user));
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let outcome = lambda.invoke(&Driver::event(&arn, &new, step, None)).await;
        assert!(outcome.is_ok(), "{step}: {outcome:?}");
    }
    let after = world.current(&arn).await;
    assert!(matches!(login(&world.stack, &after).await, Login::Ok(ref u) if *u == user));
    lambda.stop().await;
}

/// Two function processes run the same step of the same rotation at once (a retry that
/// overlaps the first attempt): whatever each returns, retrying the rotation ends in one
/// consistent result, whose AWSCURRENT logs in.
#[rstest::rstest]
#[case::single_user(Strategy::SingleUser)]
#[case::alternating_users(Strategy::AlternatingUsers)]
#[tokio::test]
async fn the_same_step_invoked_twice_at_once_ends_in_one_consistent_result(
    #[case] strategy: Strategy,
) {
    let world = World::new(FUNCTION).await;
    let (arn, _) = world.user_secret(strategy, None).await;
    let mut first = world.lambda(strategy).await;
    let mut second = world.lambda(strategy).await;
    let token = world.driver.start_rotation(&arn).await;
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let event = Driver::event(&arn, &token, step, None);
        let (a, b) = tokio::join!(first.invoke(&event), second.invoke(&event));
        if a.is_err() || b.is_err() {
            // The service retries the rotation: the same token, from the start.
            for retry in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
                let outcome = first
                    .invoke(&Driver::event(&arn, &token, retry, None))
                    .await;
                assert!(
                    outcome.is_ok(),
                    "{step} raced ({a:?} / {b:?}); retry {retry}: {outcome:?}"
                );
                if retry == step {
                    break;
                }
            }
        }
    }
    let labels = world.driver.labels(&arn).await;
    assert!(
        labels
            .get(&token)
            .is_some_and(|s| s.iter().any(|s| s == "AWSCURRENT")),
        "{labels:?}"
    );
    let current = world.current(&arn).await;
    assert!(matches!(login(&world.stack, &current).await, Login::Ok(_)));
    first.stop().await;
    second.stop().await;
}
