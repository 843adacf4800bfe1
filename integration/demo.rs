//! The demo behind `integration/demo.sh`: with the local stack running (`source .stack/env`),
//! applies the migrations to a new database, creates a single-user and an alternating-users
//! secret in the Secrets Manager emulator, rotates each twice through the release Lambda
//! binary under the runtime API emulator, and prints after each rotation the labels, the
//! current user and a login check of the old and the new credentials. No password is printed.
//!
//!     cargo build --release --bin pgrotate --example demo && target/release/examples/demo

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::Instant;

use common::driver::{Driver, Labels, Login, app_read_write, deployment, login, random_password};
use common::lambda::Lambda;
use common::{Stack, unique};
use pgrotate::Strategy;
use serde_json::{Value, json};

const FUNCTION: &str = "pgrotate-demo";
const ROTATIONS: usize = 2;

fn print_labels(labels: &Labels) {
    println!("    labels (version id → stages):");
    for (version, stages) in labels {
        println!("      {version}  {}", stages.join(", "));
    }
}

fn describe_login(result: &Login) -> String {
    match result {
        Login::Ok(user) => format!("✓ logs in (session_user {user})"),
        Login::Refused => "✗ password refused".to_string(),
        Login::Error(e) => format!("✗ {e}"),
    }
}

fn user_of(secret: &Value) -> &str {
    secret["username"].as_str().unwrap_or("?")
}

/// Rotates one secret `ROTATIONS` times and prints what happened. Returns false when
/// something did not go as it should.
async fn demo(stack: &Stack, driver: &Driver, strategy: Strategy, arn: &str) -> bool {
    let mut ok = true;
    let mut lambda = Lambda::start(deployment(stack, strategy, FUNCTION)).await;
    println!();
    println!("== {} ==", strategy.as_str());
    println!("  secret {arn}");
    let initial = driver.json(arn, "AWSCURRENT").await;
    println!("  before: current user {}", user_of(&initial));
    print_labels(&driver.labels(arn).await);

    for round in 1..=ROTATIONS {
        let old = driver.json(arn, "AWSCURRENT").await;
        let started = Instant::now();
        let token = match driver.rotate(&lambda, arn, None).await {
            Ok(token) => token,
            Err(failure) => {
                println!("  rotation {round}: FAILED: {failure}");
                println!("  function log:\n{}", lambda.logs());
                return false;
            }
        };
        println!();
        println!(
            "  rotation {round} of {ROTATIONS}: createSecret, setSecret, testSecret, finishSecret through the Lambda binary ({} ms), token {token}",
            started.elapsed().as_millis()
        );
        print_labels(&driver.labels(arn).await);
        let new = driver.json(arn, "AWSCURRENT").await;
        println!("    current user: {}", user_of(&new));

        let old_login = login(stack, &old).await;
        let new_login = login(stack, &new).await;
        let new_app = app_read_write(stack, &new).await;
        println!(
            "    old credentials (now AWSPREVIOUS, user {}): {} ({})",
            user_of(&old),
            describe_login(&old_login),
            match strategy {
                Strategy::SingleUser => "expected: the password changed in place",
                Strategy::AlternatingUsers => "expected: valid until the next rotation",
            }
        );
        println!(
            "    new credentials (AWSCURRENT, user {}): {}; app tables read/write {}",
            user_of(&new),
            describe_login(&new_login),
            match &new_app {
                Ok(()) => "✓".to_string(),
                Err(e) => format!("✗ ({e})"),
            }
        );
        let old_expected = match strategy {
            // The user's password changed: the old one is dead at once.
            Strategy::SingleUser => old_login == Login::Refused,
            // The previous user keeps working until the next rotation.
            Strategy::AlternatingUsers => old_login == Login::Ok(user_of(&old).to_string()),
        };
        if !old_expected {
            println!(
                "    UNEXPECTED: the old credentials should {}",
                match strategy {
                    Strategy::SingleUser => "be refused",
                    Strategy::AlternatingUsers => "still log in",
                }
            );
            ok = false;
        }
        if new_login != Login::Ok(user_of(&new).to_string()) || new_app.is_err() {
            println!("    UNEXPECTED: the new credentials should log in and use the tables");
            ok = false;
        }
    }

    lambda.stop().await;
    let logs = lambda.logs();
    let steps = logs.matches("rotation step succeeded").count();
    let values = [
        initial,
        driver.json(arn, "AWSPREVIOUS").await,
        driver.json(arn, "AWSCURRENT").await,
    ];
    let leaked = logs.contains("\"password\":")
        || logs.contains("SCRAM-SHA-256$")
        || values
            .iter()
            .filter_map(|v| v["password"].as_str())
            .any(|password| logs.contains(password));
    println!();
    println!(
        "  function log: {} lines at TRACE level, {steps} steps logged, {}",
        logs.lines().count(),
        if leaked {
            "✗ a secret value appears in it"
        } else {
            "✓ no password, verifier or secret JSON in it"
        }
    );
    ok && !leaked
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let stack = Stack::get();
    let driver = Driver::new(&stack.sm_endpoint, FUNCTION).await;
    let db = stack.fresh_database().await;
    println!("pgrotate demo");
    println!(
        "  PostgreSQL {}:{} (TLS verify-full, SCRAM), Secrets Manager emulator {}",
        stack.host, stack.port, stack.sm_endpoint
    );
    println!("  database {db}: migrations applied (schema app, roles app_owner and app_rw)");

    let secret_json = |user: &str, password: &str, master: Option<&str>| {
        let mut v = json!({
            "engine": "postgres",
            "host": stack.host,
            "port": stack.port,
            "username": user,
            "password": password,
            "dbname": db,
        });
        if let Some(arn) = master {
            v["masterarn"] = json!(arn);
        }
        v.to_string()
    };

    // Single user: the application user changes its own password.
    let single_user = unique("demo_app");
    let password = random_password();
    stack.create_app_user(&single_user, &password).await;
    let single_arn = driver
        .create_secret(
            &unique("pgrotate-demo/single-user"),
            &secret_json(&single_user, &password, None),
            None,
        )
        .await;

    // Alternating users: the master secret (RDS style: username and password only) lets the
    // function create and update the clone.
    let alt_user = unique("demo_alt");
    let password = random_password();
    stack.create_app_user(&alt_user, &password).await;
    let master = json!({"username": stack.admin_user, "password": stack.admin_password});
    let master_arn = driver
        .create_secret(&unique("pgrotate-demo/master"), &master.to_string(), None)
        .await;
    let alt_arn = driver
        .create_secret(
            &unique("pgrotate-demo/alternating"),
            &secret_json(&alt_user, &password, Some(&master_arn)),
            None,
        )
        .await;

    let single_ok = demo(&stack, &driver, Strategy::SingleUser, &single_arn).await;
    let alt_ok = demo(&stack, &driver, Strategy::AlternatingUsers, &alt_arn).await;
    println!();
    if single_ok && alt_ok {
        println!("demo: all rotations done and checked ✓");
        ExitCode::SUCCESS
    } else {
        println!("demo: FAILED (see above)");
        ExitCode::FAILURE
    }
}
