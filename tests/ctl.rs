//! pgrotatectl's command line, without the stack: help on every command, usage errors,
//! configuration errors and an unreachable Secrets Manager, each with its exit status (and
//! its `--json` form parsed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn ctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgrotatectl"))
        .env_clear()
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("pgrotatectl runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_command_has_help() {
    for (command, words) in [
        (
            vec!["--help"],
            vec![
                "preflight",
                "status",
                "resume",
                "rotate",
                "policy",
                "--json",
            ],
        ),
        (
            vec!["policy", "--help"],
            vec![
                "--secret-arn",
                "--master-secret-arn",
                "--kms-key-arn",
                "--vpc",
                "--function-name",
                "--region",
                "--account",
            ],
        ),
        (
            vec!["preflight", "--help"],
            vec!["--secret-id", "--strategy", "ROTATION_STRATEGY"],
        ),
        (vec!["status", "--help"], vec!["--secret-id", "--json"]),
        (
            vec!["resume", "--help"],
            vec![
                "--yes",
                "--finish",
                "--drop",
                "--min-age",
                "never takes a label",
            ],
        ),
        (
            vec!["rotate", "--help"],
            vec!["--wait", "--timeout", "--log-group"],
        ),
    ] {
        let out = ctl(&command, &[]);
        assert!(out.status.success(), "{command:?}: {out:?}");
        let help = text(&out.stdout);
        for word in words {
            assert!(
                help.contains(word),
                "{command:?} help should mention {word}:\n{help}"
            );
        }
    }
}

#[test]
fn usage_errors_exit_with_status_2() {
    for args in [
        vec!["status"],
        vec!["frobnicate"],
        vec!["resume", "--secret-id", "x", "--finish", "--drop"],
        vec!["preflight", "--secret-id", "x", "--strategy", "multi-user"],
    ] {
        let out = ctl(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}

#[test]
fn a_bad_configuration_fails_naming_the_variable() {
    let out = ctl(
        &["status", "--secret-id", "app"],
        &[("PASSWORD_LENGTH", "0")],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("PASSWORD_LENGTH"), "{out:?}");

    let out = ctl(
        &["rotate", "--json", "--secret-id", "app"],
        &[("ROTATION_STRATEGY", "multi-user")],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let error: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(error["ok"], false);
    assert_eq!(error["error"]["type"], "InvalidConfiguration");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ROTATION_STRATEGY"),
        "{error}"
    );
}

#[test]
fn an_unreachable_secrets_manager_fails_fast_with_the_hint() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let started = std::time::Instant::now();
    let out = ctl(
        &["status", "--json", "--quiet", "--secret-id", "app"],
        &[
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("SECRETS_MANAGER_TIMEOUT", "2"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(started.elapsed().as_secs() < 30, "failed fast");
    let error: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(error["error"]["type"], "SecretsManagerError", "{error}");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("VPC"),
        "{error}"
    );
    assert!(
        text(&out.stderr).is_empty(),
        "--quiet: no progress: {out:?}"
    );
}
