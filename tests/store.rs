//! The Secrets Manager adapter's failure reporting: an endpoint that cannot be reached fails
//! within the configured bound, says so, and points at the VPC endpoint or NAT gateway.

use std::time::{Duration, Instant};

use pgrotate::store::{AwsSecretStore, SecretStore, StoreErrorKind};

#[tokio::test]
async fn an_unreachable_secrets_manager_fails_fast_and_suggests_a_vpc_endpoint() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    // Credentials and region only need to exist: nothing reaches a real service.
    // SAFETY: the only test of this binary, run before any other thread reads the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    let store = AwsSecretStore::from_env(
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
