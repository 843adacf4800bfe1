//! Attacks by someone who can write one application secret, through the release binary:
//! the single-user confused deputy (the secret rewritten to name another role), a hostile
//! PostgreSQL look-alike named as the host of an alternating-users secret whose master secret
//! has no host, and secrets naming hosts outside `ALLOWED_DB_HOSTS`. Each attack is refused
//! with its documented error; no password of another role changes, the master password
//! reaches no other server, the real credentials still log in, and no message or log line
//! holds a secret.

use pgrotate::Strategy;
use serde_json::{Value, json};

use crate::common::driver::{Login, STEPS, deployment, login, random_password, stored_verifiers};
use crate::common::hostile::Hostile;
use crate::common::lambda::Lambda;
use crate::common::world::*;
use crate::common::{Stack, unique};
use pgrotate::db::sql::quote_ident;

/// A guess the attacker writes as the password of a role it does not know.
const GUESS: &str = "Attacker-Guess-1";

/// The function of these tests, with `extra` settings on top of the stack's deployment.
async fn lambda(stack: &Stack, strategy: Strategy, extra: &[(&str, &str)]) -> Lambda {
    let mut d = deployment(stack, strategy, FUNCTION);
    for (name, value) in extra {
        d = if value.is_empty() {
            d.without(name)
        } else {
            d.env(name, value)
        };
    }
    Lambda::start(d).await
}

/// A login role on the real server, set up by `sql` (`{r}` is the quoted role name).
async fn victim(world: &World, sql: &str) -> (String, String) {
    let name = unique("victim");
    let password = random_password();
    world.stack.create_app_user(&name, &password).await;
    if !sql.is_empty() {
        world
            .stack
            .exec("postgres", &sql.replace("{r}", &quote_ident(&name)))
            .await;
    }
    (name, password)
}

/// The single-user confused deputy: the application's secret (with a masterarn) is
/// rewritten to name another existing role with a wrong password, then rotated.
async fn confused_deputy(fallback: bool) {
    let world = World::new(FUNCTION).await;
    let flag = if fallback { "true" } else { "false" };
    let mut lambda = lambda(
        &world.stack,
        Strategy::SingleUser,
        &[("SINGLE_USER_MASTER_FALLBACK", flag)],
    )
    .await;
    let master = world.master_secret(None).await;
    let admin = world.stack.admin_user.clone();

    // (victim set-up SQL, errorType, fragments of the message)
    let mut cases: Vec<(String, &str, Vec<String>)> = Vec::new();
    let group = unique("admins");
    world
        .stack
        .exec(
            "postgres",
            &format!("CREATE ROLE {} NOLOGIN SUPERUSER", quote_ident(&group)),
        )
        .await;
    if fallback {
        for attribute in ["SUPERUSER", "CREATEROLE", "REPLICATION", "BYPASSRLS"] {
            cases.push((
                format!("ALTER ROLE {{r}} {attribute}"),
                "RoleRefused",
                vec![format!("has {attribute}"), "nothing was changed".into()],
            ));
        }
        cases.push((
            format!("GRANT {} TO {{r}}", quote_ident(&group)),
            "RoleRefused",
            vec![format!(
                "has SUPERUSER through its membership in \"{group}\""
            )],
        ));
        cases.push((
            "MASTER".into(),
            "RoleRefused",
            vec!["is the master user itself".into()],
        ));
    } else {
        for sql in ["", "ALTER ROLE {r} CREATEROLE"] {
            cases.push((
                sql.to_string(),
                "NoWorkingCredentials",
                vec![
                    "the master secret (not used: SINGLE_USER_MASTER_FALLBACK is off)".into(),
                    "set SINGLE_USER_MASTER_FALLBACK=true".into(),
                    "trusts whoever can write this secret".into(),
                ],
            ));
        }
    }

    let mut values = vec![world.driver.json(&master, "AWSCURRENT").await];
    for (sql, error_type, fragments) in &cases {
        let (target, target_password) = if sql == "MASTER" {
            (admin.clone(), world.stack.admin_password.clone())
        } else {
            victim(&world, sql).await
        };
        let app = unique("e2e");
        let app_password = random_password();
        world.stack.create_app_user(&app, &app_password).await;
        let honest = world.user_json(&app, &app_password, Some(&master));
        let arn = world
            .driver
            .create_secret(&unique("e2e/app"), &honest.to_string(), None)
            .await;
        // The attack: AWSCURRENT now names the target, with a password the attacker made up.
        let forged = world.user_json(&target, GUESS, Some(&master));
        world
            .driver
            .put_value(&arn, &forged.to_string(), &["AWSCURRENT"])
            .await;
        let users = [app.as_str(), target.as_str(), admin.as_str()];
        let verifiers = stored_verifiers(&world.stack, &users).await;

        let result = world.driver.rotate(&lambda, &arn, None).await.map(|_| ());
        let fragments: Vec<&str> = fragments.iter().map(String::as_str).collect();
        let case = format!("fallback {flag}, victim {sql:?}");
        assert_step_failed(&result, "setSecret", error_type, &fragments, &case);
        let message = result.unwrap_err().error_message;
        let pending = world.driver.json(&arn, "AWSPENDING").await;
        for secret in [
            GUESS,
            &target_password,
            &app_password,
            &world.stack.admin_password,
            str_field(&pending, "password"),
        ] {
            assert!(!message.contains(secret), "{case}: a secret in {message}");
        }
        assert_eq!(
            stored_verifiers(&world.stack, &users).await,
            verifiers,
            "{case}: no password changed"
        );
        let target_secret = world.user_json(&target, &target_password, None);
        assert_eq!(
            login(&world.stack, &target_secret).await,
            Login::Ok(target.clone()),
            "{case}: the target still logs in with its own password"
        );
        assert_eq!(
            login(&world.stack, &honest).await,
            Login::Ok(app.clone()),
            "{case}: the application's real credentials still log in"
        );
        values.extend([honest, forged, pending, target_secret]);
    }
    lambda.stop().await;
    assert_logs_clean(&world.stack, &lambda.logs(), &values, &[], &[]);
}

#[tokio::test]
async fn confused_deputy_with_the_fallback_off_changes_no_other_role() {
    confused_deputy(false).await;
}

#[tokio::test]
async fn confused_deputy_with_the_fallback_on_refuses_privileged_roles_and_the_master() {
    confused_deputy(true).await;
}

/// An alternating-users secret whose `host` is a hostile look-alike that accepts the
/// attacker's password for the current user and asks for cleartext passwords; its master
/// secret has no host (as RDS-managed ones).
#[tokio::test]
async fn a_hostile_server_named_by_the_secret_never_receives_the_master_password() {
    let world = World::new(FUNCTION).await;
    // Refuses the pending user (so setSecret goes on to the master), accepts anyone else.
    let hostile = Hostile::start(|user, _| !user.ends_with("_clone")).await;
    let admin = world.stack.admin_user.clone();
    let admin_password = world.stack.admin_password.clone();
    let rds_master = world.master_secret(None).await;
    let own_host_master = world
        .driver
        .create_secret(
            &unique("e2e/master"),
            &json!({"username": admin, "password": admin_password, "host": world.stack.host})
                .to_string(),
            None,
        )
        .await;
    let user = unique("e2e");
    let attacker_password = random_password();
    let hostile_secret = |master: &str| {
        let mut v = world.user_json(&user, &attacker_password, Some(master));
        v["host"] = json!("127.0.0.1");
        v["port"] = json!(hostile.port);
        v["ssl"] = json!(false);
        v
    };
    let admin_verifier = stored_verifiers(&world.stack, &[&admin]).await;

    struct Case<'a> {
        settings: &'a [(&'a str, &'a str)],
        master: &'a str,
        step: &'a str,
        error_type: &'a str,
        fragments: Vec<&'a str>,
    }
    let cases = [
        Case {
            settings: &[("ALLOWED_DB_HOSTS", "")],
            master: &rds_master,
            step: "setSecret",
            error_type: "MasterHostNotVouched",
            fragments: vec![
                rds_master.as_str(),
                "has no \"host\"",
                "\"127.0.0.1\"",
                "the master password was not sent anywhere",
                "set ALLOWED_DB_HOSTS",
                "add \"host\" to the master secret",
            ],
        },
        Case {
            settings: &[("ALLOWED_DB_HOSTS", "")],
            master: &own_host_master,
            step: "setSecret",
            error_type: "InvalidMasterSecret",
            fragments: vec![own_host_master.as_str(), "names host \"localhost\""],
        },
        Case {
            settings: &[],
            master: &rds_master,
            step: "createSecret",
            error_type: "HostNotAllowed",
            fragments: vec![
                "\"127.0.0.1\"",
                "AWSCURRENT",
                "ALLOWED_DB_HOSTS (localhost)",
            ],
        },
    ];
    let mut values = vec![
        world.driver.json(&rds_master, "AWSCURRENT").await,
        world.driver.json(&own_host_master, "AWSCURRENT").await,
    ];
    for Case {
        settings,
        master,
        step,
        error_type,
        fragments,
    } in &cases
    {
        let mut lambda = lambda(&world.stack, Strategy::AlternatingUsers, settings).await;
        let value = hostile_secret(master);
        let arn = world
            .driver
            .create_secret(&unique("e2e/hostile"), &value.to_string(), None)
            .await;
        let seen_before = hostile.received().len();
        let result = world.driver.rotate(&lambda, &arn, None).await.map(|_| ());
        let case = format!("{error_type} with {settings:?}");
        assert_step_failed(&result, step, error_type, fragments, &case);
        let message = result.unwrap_err().error_message;
        assert!(!message.contains(&admin_password), "{case}: {message}");
        assert!(!message.contains(&attacker_password), "{case}: {message}");

        let seen: Vec<(String, String)> = hostile.received()[seen_before..].to_vec();
        if *step == "setSecret" {
            // The server was reached and the attacker's current credentials "logged in" there:
            // exactly the point at which the function used to log in as master.
            assert!(
                seen.contains(&(user.clone(), attacker_password.clone())),
                "{case}: the hostile server saw the current login: {seen:?}"
            );
        } else {
            assert!(seen.is_empty(), "{case}: no connection at all: {seen:?}");
        }
        for (seen_user, seen_password) in hostile.received() {
            assert_ne!(seen_user, admin, "{case}: no login as the master user");
            assert_ne!(
                seen_password, admin_password,
                "{case}: the master password reached the hostile server"
            );
        }
        lambda.stop().await;
        if let Some(pending) = world.driver.value(&arn, "AWSPENDING").await {
            values.push(serde_json::from_str::<Value>(&pending).unwrap());
        }
        values.push(value);
        assert_logs_clean(&world.stack, &lambda.logs(), &values, &[], &[]);
    }
    assert_eq!(
        stored_verifiers(&world.stack, &[&admin]).await,
        admin_verifier,
        "the master's password unchanged"
    );
    let master_login = world.user_json(&admin, &admin_password, None);
    assert_eq!(
        login(&world.stack, &master_login).await,
        Login::Ok(admin.clone())
    );
}

/// `ALLOWED_DB_HOSTS` with an exact name and with wildcards: a secret naming another host is
/// refused at createSecret before anything is written; matching secrets rotate (the list
/// also vouches for the host to the RDS-style master secret).
#[tokio::test]
async fn allowed_db_hosts_refuses_other_hosts_at_create_secret_and_admits_exact_and_wildcard_matches()
 {
    let world = World::new(FUNCTION).await;
    let master = world.master_secret(None).await;
    let mut values = vec![world.driver.json(&master, "AWSCURRENT").await];
    let on_host = |user: &str, password: &str, host: &str, ssl: &str| {
        let mut v = world.user_json(user, password, Some(&master));
        v["host"] = json!(host);
        v["ssl"] = json!(ssl);
        v
    };

    // Host names that resolve here are few; a wildcard matches on the text of the name, so
    // `*.0.0.1` admits 127.0.0.1 (the stack's certificate names localhost: verify-ca there).
    let lists = ["localhost", "*.0.0.1,*.localhost"];
    // (list, host, ssl, expected outcome: Ok, or (step, errorType, fragments))
    type Expect<'a> = Result<(), (&'a str, &'a str, Vec<&'a str>)>;
    let cases: Vec<(&str, &str, &str, Expect)> = vec![
        (lists[0], "localhost", "verify-full", Ok(())),
        (
            lists[0],
            "127.0.0.1",
            "verify-ca",
            Err((
                "createSecret",
                "HostNotAllowed",
                vec!["host \"127.0.0.1\"", "ALLOWED_DB_HOSTS (localhost)"],
            )),
        ),
        (lists[1], "127.0.0.1", "verify-ca", Ok(())),
        (
            lists[1],
            "localhost",
            "verify-full",
            Err((
                "createSecret",
                "HostNotAllowed",
                vec!["host \"localhost\"", "(*.0.0.1,*.localhost)"],
            )),
        ),
        (
            lists[1],
            "evil.example.net",
            "verify-full",
            Err((
                "createSecret",
                "HostNotAllowed",
                vec!["host \"evil.example.net\""],
            )),
        ),
        // Allowed by the wildcard, so the function tries it: the failure is the connection's,
        // not the list's.
        (
            lists[1],
            "pg.localhost",
            "verify-full",
            Err(("setSecret", "DatabaseError", vec!["pg.localhost"])),
        ),
    ];
    for (list, host, ssl, expected) in cases {
        let mut lambda = lambda(
            &world.stack,
            Strategy::AlternatingUsers,
            // The deployment's default TLS mode is the floor of the master login's (a user
            // secret cannot lower it), so the IP case runs under a verify-ca deployment.
            &[
                ("ALLOWED_DB_HOSTS", list),
                ("DB_CONNECT_TIMEOUT", "3"),
                ("DEFAULT_SSL_MODE", ssl),
            ],
        )
        .await;
        let (user, password) = victim(&world, "").await;
        let value = on_host(&user, &password, host, ssl);
        let arn = world
            .driver
            .create_secret(&unique("e2e/allowed"), &value.to_string(), None)
            .await;
        let before = Before::take(&world, &arn, None).await;
        let clone = alternate(&user);
        let verifiers = stored_verifiers(&world.stack, &[&user, &clone]).await;
        let case = format!("ALLOWED_DB_HOSTS={list} host={host}");
        match expected {
            Ok(()) => {
                let token = world
                    .driver
                    .rotate(&lambda, &arn, None)
                    .await
                    .unwrap_or_else(|e| panic!("{case}: {e}\n{}", lambda.logs()));
                let current = check_rotated(
                    &world,
                    &arn,
                    Strategy::AlternatingUsers,
                    &token,
                    &before,
                    &case,
                )
                .await;
                values.push(current);
            }
            Err((step, error_type, fragments)) => {
                let token = world.driver.start_rotation(&arn).await;
                let labels = world.driver.labels(&arn).await;
                let result = world
                    .driver
                    .run_steps(&lambda, &arn, &token, &STEPS, None, 1)
                    .await;
                assert_step_failed(&result, step, error_type, &fragments, &case);
                let message = result.unwrap_err().error_message;
                assert!(!message.contains(&password), "{case}: {message}");
                assert!(!message.contains(&world.stack.admin_password), "{case}");
                if step == "createSecret" {
                    assert_eq!(world.driver.labels(&arn).await, labels, "{case}");
                    assert_eq!(
                        world.driver.value(&arn, "AWSPENDING").await,
                        None,
                        "{case}: nothing written"
                    );
                } else if let Some(pending) = world.driver.value(&arn, "AWSPENDING").await {
                    values.push(serde_json::from_str(&pending).unwrap());
                }
                assert_eq!(
                    stored_verifiers(&world.stack, &[&user, &clone]).await,
                    verifiers,
                    "{case}: no role changed"
                );
                assert_eq!(
                    world.current(&arn).await,
                    before.value,
                    "{case}: AWSCURRENT unchanged"
                );
                let real = on_host(&user, &password, "localhost", "verify-full");
                assert_eq!(
                    login(&world.stack, &real).await,
                    Login::Ok(user.clone()),
                    "{case}: the current credentials still log in"
                );
            }
        }
        values.push(value);
        lambda.stop().await;
        assert_logs_clean(&world.stack, &lambda.logs(), &values, &[], &[]);
    }
}
