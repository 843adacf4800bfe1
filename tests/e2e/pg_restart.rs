//! PostgreSQL restarted in the middle of a step: the function pauses at a database boundary of
//! setSecret (`PGROTATE_PAUSE_AT`, a crash-points build only), the server of the secret (the
//! stack's restartable cluster, `PGROTATE_PG_RESTART_PORT`, used by no other test) goes
//! through a crash restart (one backend SIGKILLed: the postmaster ends every session, rolls
//! back what was in flight and starts again), then the step goes on. It ends in success or a
//! clear error within a bounded time; a labelled version logs in right after; the service's
//! retry (same token, from createSecret) completes and AWSCURRENT logs in.

use std::time::{Duration, Instant};

use pgrotate::Strategy;
use pgrotate::db::DbLogin;
use serde_json::json;

use crate::common::driver::{Driver, Login, STEPS, deployment, login, random_password};
use crate::common::lambda::Lambda;
use crate::common::world::*;
use crate::common::{Stack, unique};
use pgrotate::db::sql::{quote_ident, quote_literal};

const STEP_BOUND: Duration = Duration::from_secs(30);

fn restart_port() -> u16 {
    std::env::var("PGROTATE_PG_RESTART_PORT")
        .unwrap_or_else(|_| {
            panic!(
                "PGROTATE_PG_RESTART_PORT is not set: this test needs the local stack's restartable cluster. Run `bash integration/test.sh`, or `bash integration/stack-up.sh && source .stack/env` first."
            )
        })
        .parse()
        .expect("PGROTATE_PG_RESTART_PORT is a port")
}

fn admin(stack: &Stack, port: u16) -> DbLogin {
    DbLogin {
        port,
        ..stack.admin_login("postgres")
    }
}

/// Crash restart: SIGKILL one backend; a second session witnesses that the server ended every
/// session; then wait until the server accepts logins again.
async fn crash_restart(stack: &Stack, port: u16) {
    let login = admin(stack, port);
    let mut victim = stack.connect(&login).await.expect("admin connects");
    let mut witness = stack.connect(&login).await.expect("admin connects");
    let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
        .fetch_one(&mut victim)
        .await
        .unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -KILL {pid}");
    let started = Instant::now();
    while sqlx::query("SELECT 1").execute(&mut witness).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server never ended its sessions"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        if let Ok(mut c) = stack.connect(&login).await
            && sqlx::query("SELECT 1").execute(&mut c).await.is_ok()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server did not come back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Both strategies in one test, one after the other: a restart ends every session of the
/// cluster, so no two cases may share it at once.
#[tokio::test]
async fn a_postgresql_restart_at_each_database_boundary_of_set_secret_loses_nothing() {
    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        restart_at_each_boundary(strategy).await;
    }
}

async fn restart_at_each_boundary(strategy: Strategy) {
    let world = World::new(FUNCTION).await;
    let stack = &world.stack;
    let port = restart_port();
    let user = unique("rst");
    let password = random_password();
    {
        let mut c = stack.connect(&admin(stack, port)).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE ROLE {} LOGIN PASSWORD {}",
            quote_ident(&user),
            quote_literal(&password)
        )))
        .execute(&mut c)
        .await
        .unwrap();
    }
    let mut value = json!({"engine": "postgres", "host": stack.host, "port": port,
                           "username": user, "password": password, "dbname": "postgres"});
    if strategy == Strategy::AlternatingUsers {
        value["masterarn"] = json!(world.master_secret(None).await);
    }
    let arn = world
        .driver
        .create_secret(&unique("e2e/restart"), &value.to_string(), None)
        .await;

    // The database boundaries of setSecret, from one rotation (for alternating users the
    // first creates the clone; the points are taken from the second, as every later one).
    let dir = std::env::temp_dir().join(unique("pgrotate-restart"));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("points");
    let mut points = Vec::new();
    for round in 0..2 {
        let _ = std::fs::remove_file(&log);
        let mut lambda = Lambda::start(
            deployment(stack, strategy, FUNCTION).env("PGROTATE_CRASH_LOG", &log.to_string_lossy()),
        )
        .await;
        world.driver.rotate(&lambda, &arn, None).await.unwrap();
        lambda.stop().await;
        if round == 1 || strategy == Strategy::SingleUser {
            points = std::fs::read_to_string(&log)
                .unwrap()
                .lines()
                .filter(|p| p.starts_with("setSecret/db "))
                .map(str::to_string)
                .collect();
            break;
        }
    }
    assert!(
        points.iter().any(|p| p.contains("before ALTER ROLE"))
            && points.iter().any(|p| p.contains("after ALTER ROLE")),
        "{points:?}"
    );

    let pause = dir.join("pause");
    let mut failed = Vec::new();
    for point in &points {
        let mut lambda = Lambda::start(
            deployment(stack, strategy, FUNCTION)
                .env("PGROTATE_PAUSE_AT", point)
                .env("PGROTATE_PAUSE_FILE", &pause.to_string_lossy()),
        )
        .await;
        let before = world.current(&arn).await;
        let token = world.driver.start_rotation(&arn).await;
        let event = |step: &str| Driver::event(&arn, &token, step, None);
        assert!(
            lambda.invoke(&event("createSecret")).await.is_ok(),
            "{point}"
        );
        let started = Instant::now();
        let restart = async {
            let waiting = Instant::now();
            while !pause.exists() {
                assert!(
                    waiting.elapsed() < STEP_BOUND,
                    "{point}: setSecret never reached it"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            crash_restart(stack, port).await;
            std::fs::remove_file(&pause).unwrap();
        };
        let set_secret = event("setSecret");
        let (outcome, ()) = tokio::join!(lambda.invoke(&set_secret), restart);
        let took = started.elapsed();
        assert!(took < STEP_BOUND, "{point}: setSecret took {took:?}");
        if let Err((error_type, message)) = &outcome {
            failed.push(point.clone());
            assert_eq!(error_type, "DatabaseError", "{point}: {message}");
            assert!(
                message.contains("PostgreSQL localhost"),
                "{point}: {message}"
            );
            for secret in [
                password.as_str(),
                str_field(&before, "password"),
                stack.admin_password.as_str(),
            ] {
                assert!(
                    !message.contains(secret),
                    "{point}: a password in {message}"
                );
            }
        }
        let working = working_labels(&world, &arn).await;
        assert!(
            !working.is_empty(),
            "{point}: after the restart no labelled version logs in ({outcome:?})"
        );
        // The service's retry: the same token, from createSecret, in a new process.
        lambda.stop().await;
        let retry = Lambda::start(deployment(stack, strategy, FUNCTION)).await;
        for step in STEPS {
            let outcome = retry.invoke(&event(step)).await;
            assert!(outcome.is_ok(), "{point}: retry {step}: {outcome:?}");
        }
        world.driver.end_rotation(&arn, &token).await;
        let current = world.current(&arn).await;
        assert_ne!(current["password"], before["password"], "{point}");
        assert!(
            matches!(login(stack, &current).await, Login::Ok(ref u) if u == str_field(&current, "username")),
            "{point}: AWSCURRENT does not log in"
        );
        let mut retry = retry;
        retry.stop().await;
    }
    // A restart while the step held a session (after connecting, around ALTER ROLE) failed
    // the step; a restart before it connected did not.
    assert!(
        failed.iter().any(|p| p.contains("before ALTER ROLE")),
        "{strategy:?}: failed at {failed:?} of {points:?}"
    );
    assert!(
        !failed.iter().any(|p| p.contains("before connect#1")),
        "{strategy:?}: failed at {failed:?}"
    );
    // No role but the pair (alternating) or the user itself.
    let mut c = stack.connect(&admin(stack, port)).await.unwrap();
    let (count,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_roles WHERE rolname LIKE $1 || '%'")
            .bind(&user)
            .fetch_one(&mut c)
            .await
            .unwrap();
    let expected = if strategy == Strategy::SingleUser {
        1
    } else {
        2
    };
    assert_eq!(count, expected, "roles named after {user}");
    let _ = std::fs::remove_dir_all(&dir);
}
