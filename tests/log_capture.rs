//! Whole rotations, both strategies, at TRACE (JSON and text are the same events), with the
//! log output captured: no password, SCRAM verifier, RotationToken or secret JSON appears,
//! while every step's summary line does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Stack, unique};
use pgrotate::store::MemoryStore;
use pgrotate::{Config, RotationEvent, Rotator};
use serde_json::{Value, json};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

#[tokio::test]
async fn no_secret_value_reaches_the_logs_at_trace_level() {
    let capture = Capture::default();
    pgrotate::logging::init_with(LevelFilter::TRACE, true, capture.clone());
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    let rotation_token = format!("rt-{}", uuid::Uuid::new_v4());
    let mut secrets_seen: Vec<String> = vec![stack.admin_password.clone(), rotation_token.clone()];

    for strategy in ["single-user", "alternating-users"] {
        let user = unique("logcap");
        let first_password = format!("First-{}", uuid::Uuid::new_v4().simple());
        stack.create_app_user(&user, &first_password).await;
        secrets_seen.push(first_password.clone());
        let arn = format!(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}",
            unique("s")
        );
        let master_arn = format!("{arn}-master");
        let store = MemoryStore::new();
        store.create_secret(
            &arn,
            &json!({"engine": "postgres", "host": stack.host, "port": stack.port, "dbname": db,
                    "username": user, "password": first_password, "masterarn": master_arn})
            .to_string(),
        );
        store.create_secret(
            &master_arn,
            &json!({"username": stack.admin_user, "password": stack.admin_password}).to_string(),
        );
        let ca = stack.ca_path.to_string_lossy().to_string();
        let config = Config::from_lookup(|name| match name {
            "ROTATION_STRATEGY" => Some(strategy.to_string()),
            "SSL_CA_BUNDLE" => Some(ca.clone()),
            // The master secret has no host (RDS-style): the list vouches for the host.
            "ALLOWED_DB_HOSTS" => Some(stack.host.clone()),
            _ => None,
        })
        .unwrap();
        let rotator = Rotator::new(store, stack.postgres(), config);
        for token in ["t1", "t2"] {
            rotator.store().start_rotation(&arn, token);
            for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
                let event = RotationEvent::from_json(&json!({
                    "SecretId": arn, "ClientRequestToken": token, "Step": step,
                    "RotationToken": rotation_token
                }))
                .unwrap();
                rotator.handle(&event).await.unwrap();
            }
            rotator.store().end_rotation(&arn);
            let current: Value =
                serde_json::from_str(&rotator.store().value(&arn, "AWSCURRENT").unwrap()).unwrap();
            secrets_seen.push(current["password"].as_str().unwrap().to_string());
        }
        // A failing step logs too: testSecret with a pending password that does not work.
        rotator.store().start_rotation(&arn, "t3");
        rotator.store().put_version(
            &arn,
            "t3",
            &json!({"engine": "postgres", "host": stack.host, "port": stack.port, "dbname": db,
                    "username": if strategy == "single-user" { user.clone() } else { format!("{user}_clone") },
                    "password": "Wrong-Pending-Password", "masterarn": master_arn})
            .to_string(),
            &["AWSPENDING"],
        );
        secrets_seen.push("Wrong-Pending-Password".into());
        let event = RotationEvent::from_json(
            &json!({"SecretId": arn, "ClientRequestToken": "t3", "Step": "testSecret"}),
        )
        .unwrap();
        assert!(rotator.handle(&event).await.is_err());
    }

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.matches("rotation step succeeded").count() >= 16,
        "every step logs its summary line:\n{logs}"
    );
    assert!(logs.contains("rotation step failed"), "{logs}");
    assert!(
        logs.contains("\"level\":\"DEBUG\"") && logs.contains("\"level\":\"TRACE\""),
        "{logs}"
    );
    for line in logs.lines().filter(|l| l.contains("rotation step")) {
        let v: Value = serde_json::from_str(line).expect("JSON log line");
        for field in [
            "step",
            "secret_arn",
            "token",
            "strategy",
            "user",
            "host",
            "outcome",
            "duration_ms",
        ] {
            assert!(v.get(field).is_some(), "{field} missing in {line}");
        }
    }
    for secret in &secrets_seen {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret value reached the logs"
        );
    }
    for marker in [
        "SCRAM-SHA-256$",
        "\"password\"",
        "\\\"password\\\"",
        "postgres://",
        "postgresql://",
    ] {
        assert!(!logs.contains(marker), "{marker} reached the logs");
    }
}
