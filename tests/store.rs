//! The Secrets Manager adapter's failure reporting: an endpoint that cannot be reached fails
//! within the configured bound, says so, and points at the VPC endpoint or NAT gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use pgrotate::store::{AwsSecretStore, SecretStore, StoreErrorKind};

#[tokio::test]
async fn an_unreachable_secrets_manager_fails_fast_and_suggests_a_vpc_endpoint() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    // Credentials and region only need to exist: nothing reaches a real service.
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ));
    let store = AwsSecretStore::load(
        loader,
        Some(&format!("http://127.0.0.1:{port}")),
        Duration::from_secs(2),
    )
    .await;
    let started = Instant::now();
    let err = store.describe("any-secret").await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Unreachable, "{err}");
    let text = err.to_string();
    assert!(text.contains("DescribeSecret"), "{text}");
    assert!(
        text.contains("VPC endpoint") && text.contains("NAT gateway"),
        "{text}"
    );
    assert!(err.is_transient());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
