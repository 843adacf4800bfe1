//! Secrets Manager faults through the binary: a fault-injecting proxy in front of the emulator
//! answers 500s, throttles, slows down or drops requests (and a closed port stands for an
//! unreachable endpoint). Each rotation ends in success through the SDK's retries or the
//! service's retry of the rotation (same token, from createSecret), or a step fails with a
//! clear error within a bounded time; never a credential lost, never a secret in a message.

use std::time::{Duration, Instant};

use pgrotate::Strategy;
use rstest::rstest;
use serde_json::Value;

use crate::common::driver::{Driver, Login, STEPS, deployment, login};
use crate::common::lambda::Lambda;
use crate::common::sm_proxy::{Fault, FaultKind, SmProxy};
use crate::common::world::*;

/// How long a failing step may take at most: the SDK's three attempts with backoff, each
/// bounded by SECRETS_MANAGER_TIMEOUT (2 s here), well within the invocation's timeout.
const STEP_BOUND: Duration = Duration::from_secs(20);

/// One fault and what it must end in.
struct Case {
    name: &'static str,
    fault: Fault,
    /// The rotation completes while the fault is in place (the SDK's retries absorb it).
    absorbed: bool,
    /// When not absorbed: the failing step's error type and a fragment of its message.
    error: Option<(&'static str, &'static str)>,
}

fn cases() -> Vec<Case> {
    use FaultKind::*;
    vec![
        Case {
            name: "two 500s on PutSecretValue",
            fault: Fault::times(Some("PutSecretValue"), InternalError, 2),
            absorbed: true,
            error: None,
        },
        Case {
            name: "two throttled UpdateSecretVersionStage",
            fault: Fault::times(Some("UpdateSecretVersionStage"), Throttle, 2),
            absorbed: true,
            error: None,
        },
        Case {
            name: "two 500s on GetSecretValue",
            fault: Fault::times(Some("GetSecretValue"), InternalError, 2),
            absorbed: true,
            error: None,
        },
        Case {
            name: "every call 300 ms slower",
            fault: Fault::always(None, Latency(Duration::from_millis(300))),
            absorbed: true,
            error: None,
        },
        Case {
            name: "one DescribeSecret dropped before it reached Secrets Manager",
            fault: Fault::times(Some("DescribeSecret"), DropRequest, 1),
            absorbed: true,
            error: None,
        },
        Case {
            name: "PutSecretValue applied but its answer lost",
            fault: Fault::times(Some("PutSecretValue"), DropResponse, 1),
            absorbed: false,
            error: None,
        },
        Case {
            name: "every GetSecretValue throttled",
            fault: Fault::always(Some("GetSecretValue"), Throttle),
            absorbed: false,
            error: Some(("SecretsManagerError", "ThrottlingException")),
        },
        Case {
            name: "every PutSecretValue answered 500",
            fault: Fault::always(Some("PutSecretValue"), InternalError),
            absorbed: false,
            error: Some(("SecretsManagerError", "PutSecretValue")),
        },
        Case {
            name: "every UpdateSecretVersionStage answered 500 (after the password changed)",
            fault: Fault::always(Some("UpdateSecretVersionStage"), InternalError),
            absorbed: false,
            error: Some(("SecretsManagerError", "UpdateSecretVersionStage")),
        },
        Case {
            name: "every request dropped (unreachable)",
            fault: Fault::always(None, DropRequest),
            absorbed: false,
            error: Some(("SecretsManagerError", "cannot be reached")),
        },
        Case {
            name: "slower than SECRETS_MANAGER_TIMEOUT",
            fault: Fault::always(None, Latency(Duration::from_secs(3))),
            absorbed: false,
            error: Some(("SecretsManagerError", "no answer before the timeout")),
        },
    ]
}

/// Every password the secret's versions hold (none may appear in an error).
async fn passwords(world: &World, arn: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stage in ["AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"] {
        if let Some(raw) = world.driver.value(arn, stage).await {
            let value: Value = serde_json::from_str(&raw).unwrap();
            if let Some(p) = value["password"].as_str() {
                out.push(p.to_string());
            }
        }
    }
    out
}

/// Runs the four steps once; the first failure with its step and how long the step took.
async fn attempt(
    lambda: &Lambda,
    arn: &str,
    token: &str,
) -> Result<(), (String, String, String, Duration)> {
    for step in STEPS {
        let started = Instant::now();
        let outcome = lambda.invoke(&Driver::event(arn, token, step, None)).await;
        if let Err((error_type, message)) = outcome {
            return Err((step.to_string(), error_type, message, started.elapsed()));
        }
    }
    Ok(())
}

#[rstest]
#[case::single_user(Strategy::SingleUser)]
#[case::alternating_users(Strategy::AlternatingUsers)]
#[tokio::test]
async fn secrets_manager_faults_end_in_success_or_a_clear_bounded_error_and_lose_nothing(
    #[case] strategy: Strategy,
) {
    let world = World::new(FUNCTION).await;
    let proxy = SmProxy::start(&world.stack.sm_endpoint).await;
    let mut lambda = Lambda::start(
        deployment(&world.stack, strategy, FUNCTION)
            .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &proxy.endpoint())
            .env("SECRETS_MANAGER_TIMEOUT", "2"),
    )
    .await;
    let (arn, _) = world.user_secret(strategy, None).await;
    let mut absorbed_or_failed = Vec::new();
    for case in cases() {
        let name = case.name;
        let before = Before::take(&world, &arn, None).await;
        let token = world.driver.start_rotation(&arn).await;
        proxy.clear_faults();
        proxy.inject(case.fault.clone());
        let first = attempt(&lambda, &arn, &token).await;
        let injected: u64 = proxy.injected().values().sum();
        assert!(injected > 0, "{name}: the fault never applied");
        match (&first, case.absorbed) {
            (Ok(()), _) => {
                assert!(
                    case.error.is_none(),
                    "{name}: expected a failure, the rotation completed"
                );
            }
            (Err((step, error_type, message, took)), absorbed) => {
                assert!(!absorbed, "{name}: {step} failed: {error_type}: {message}");
                assert!(*took < STEP_BOUND, "{name}: {step} took {took:?}");
                if let Some((want_type, fragment)) = case.error {
                    assert_eq!(error_type, want_type, "{name}: {step}: {message}");
                    assert!(
                        message.contains(fragment),
                        "{name}: {step}: {message:?} lacks {fragment:?}"
                    );
                }
                assert!(message.contains("Secrets Manager"), "{name}: {message}");
                for password in passwords(&world, &arn).await {
                    assert!(
                        !message.contains(&password),
                        "{name}: a password in the error"
                    );
                }
                // Nothing lost: right after the failure, a labelled version logs in.
                let working = working_labels(&world, &arn).await;
                assert!(
                    !working.is_empty(),
                    "{name}: after {step} failed no labelled version logs in"
                );
            }
        }
        absorbed_or_failed.push((name, first.is_ok()));
        // The fault goes away; the service retries the rotation (same token, from
        // createSecret) until it completes.
        proxy.clear_faults();
        if first.is_err() {
            let retry = attempt(&lambda, &arn, &token).await;
            assert!(retry.is_ok(), "{name}: the retry failed: {retry:?}");
        }
        world.driver.end_rotation(&arn, &token).await;
        check_rotated(&world, &arn, strategy, &token, &before, name).await;
    }
    // Both kinds ran: some faults absorbed by retries, some surfaced as errors.
    assert!(absorbed_or_failed.iter().any(|(_, ok)| *ok));
    assert!(absorbed_or_failed.iter().any(|(_, ok)| !*ok));
    lambda.stop().await;
}

/// A Secrets Manager endpoint nobody listens on: the first step fails at once with the VPC
/// hint, and nothing changes.
#[tokio::test]
async fn an_unreachable_secrets_manager_fails_fast_with_the_vpc_hint() {
    let world = World::new(FUNCTION).await;
    let (arn, user) = world.user_secret(Strategy::SingleUser, None).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut lambda = Lambda::start(
        deployment(&world.stack, Strategy::SingleUser, FUNCTION)
            .env(
                "AWS_ENDPOINT_URL_SECRETS_MANAGER",
                &format!("http://127.0.0.1:{closed}"),
            )
            .env("SECRETS_MANAGER_TIMEOUT", "2"),
    )
    .await;
    let token = world.driver.start_rotation(&arn).await;
    let labels = world.driver.labels(&arn).await;
    let started = Instant::now();
    let outcome = lambda
        .invoke(&Driver::event(&arn, &token, "createSecret", None))
        .await;
    let took = started.elapsed();
    let (error_type, message) = outcome.expect_err("no Secrets Manager to talk to");
    assert_eq!(error_type, "SecretsManagerError", "{message}");
    assert!(message.contains("cannot be reached"), "{message}");
    assert!(message.contains("VPC endpoint"), "{message}");
    assert!(took < STEP_BOUND, "{took:?}");
    let current = world.current(&arn).await;
    assert_eq!(login(&world.stack, &current).await, Login::Ok(user));
    assert_eq!(world.driver.labels(&arn).await, labels, "nothing changed");
    lambda.stop().await;
}
