//! The PostgreSQL adapter against a real server (the local stack): password changes as the
//! user and as master, the alternating pair kept equivalent, awkward user names and
//! passwords, no plaintext password in the server's statement log, and every TLS mode against
//! a TLS and a plaintext server with its own failure message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Stack, role, try_query, unique};
use pgrotate::db::Postgres;
use pgrotate::db::sql::quote_ident;
use pgrotate::db::{AlternateChange, Database, DbFailure, DbLogin};
use pgrotate::password::PUNCTUATION;
use pgrotate::secret::SslMode;
use pgrotate::store::MemoryStore;
use pgrotate::{Config, RotationEvent, Rotator};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::Row;

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

async fn logs_in(stack: &Stack, login: &DbLogin) -> bool {
    stack
        .postgres()
        .can_log_in(login)
        .await
        .expect("no transport error")
}

#[tokio::test]
async fn a_user_changes_its_own_password_and_the_old_one_stops_working() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    let user = unique("single");
    stack.create_app_user(&user, "old-Password-1").await;
    let pg = stack.postgres();
    let old = stack.login(&db, &user, "old-Password-1");
    pg.set_own_password(&old, &secret("new-Password-2"))
        .await
        .unwrap();
    assert!(!logs_in(&stack, &old).await);
    assert!(logs_in(&stack, &stack.login(&db, &user, "new-Password-2")).await);
}

#[tokio::test]
async fn the_master_user_sets_another_users_password() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    let user = unique("lost");
    stack.create_app_user(&user, "forgotten").await;
    stack
        .postgres()
        .set_password_as_master(
            &stack.admin_login(&db),
            &role(&user),
            &secret("reset-by-master"),
        )
        .await
        .unwrap();
    assert!(logs_in(&stack, &stack.login(&db, &user, "reset-by-master")).await);
}

#[tokio::test]
async fn the_password_reaches_the_server_only_as_a_scram_verifier() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    let user = unique("logged");
    stack.create_app_user(&user, "initial-pw").await;
    let new_password = format!("Never-In-Logs-{}", uuid::Uuid::new_v4().simple());
    let pg = stack.postgres();
    pg.set_own_password(
        &stack.login(&db, &user, "initial-pw"),
        &secret(&new_password),
    )
    .await
    .unwrap();
    let master_password = format!("Master-Set-{}", uuid::Uuid::new_v4().simple());
    pg.set_password_as_master(
        &stack.admin_login(&db),
        &role(&user),
        &secret(&master_password),
    )
    .await
    .unwrap();
    // The statement log is written asynchronously by the server's logger: wait for our
    // statements to show up before looking for what must not.
    let quoted = quote_ident(&user);
    let mut log = String::new();
    for _ in 0..50 {
        log = stack.pg_log_text();
        if log
            .matches(&format!(
                "ALTER ROLE {quoted} PASSWORD 'SCRAM-SHA-256$4096:"
            ))
            .count()
            >= 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        log.matches(&format!(
            "ALTER ROLE {quoted} PASSWORD 'SCRAM-SHA-256$4096:"
        ))
        .count()
            >= 2,
        "the statement log (log_statement=all) shows the ALTER ROLE statements with verifiers"
    );
    assert!(
        !log.contains(&new_password),
        "plaintext password in the server log"
    );
    assert!(
        !log.contains(&master_password),
        "plaintext password in the server log"
    );
    let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(&user)
        .fetch_one(&mut stack.admin(&db).await)
        .await
        .unwrap();
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "stored as SCRAM");
}

#[tokio::test]
async fn passwords_with_every_punctuation_character_work() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    let user = unique("punct");
    stack.create_app_user(&user, "start").await;
    let password = format!("Aa1 {PUNCTUATION} ünïcødé");
    let pg = stack.postgres();
    pg.set_own_password(&stack.login(&db, &user, "start"), &secret(&password))
        .await
        .unwrap();
    assert!(logs_in(&stack, &stack.login(&db, &user, &password)).await);
}

/// Runs a whole rotation in-process against the real database.
async fn rotate_in_process(
    rotator: &Rotator<MemoryStore, Postgres>,
    arn: &str,
    token: &str,
) -> Result<(), pgrotate::Error> {
    rotator.store().start_rotation(arn, token);
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let event = RotationEvent::from_json(
            &json!({"SecretId": arn, "ClientRequestToken": token, "Step": step}),
        )
        .unwrap();
        rotator.handle(&event).await?;
    }
    rotator.store().end_rotation(arn);
    Ok(())
}

fn config(strategy: &str, stack: &Stack) -> Config {
    let ca = stack.ca_path.to_string_lossy().to_string();
    Config::from_lookup(|name| match name {
        "ROTATION_STRATEGY" => Some(strategy.to_string()),
        "SSL_CA_BUNDLE" => Some(ca.clone()),
        // The master secret has no host (RDS-style): the list vouches for the host.
        "ALLOWED_DB_HOSTS" => Some(stack.host.clone()),
        _ => None,
    })
    .unwrap()
}

fn current(rotator: &Rotator<MemoryStore, Postgres>, arn: &str, stage: &str) -> Value {
    serde_json::from_str(&rotator.store().value(arn, stage).unwrap()).unwrap()
}

#[tokio::test]
async fn user_names_with_case_spaces_quotes_and_unicode_rotate_in_both_strategies() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    for strategy in ["single-user", "alternating-users"] {
        let name = format!("Äpp \"Usér\" {}", &unique("x")[2..8]);
        stack.create_app_user(&name, "first pw").await;
        let store = MemoryStore::new();
        let arn = format!(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}",
            unique("s")
        );
        let master_arn = format!("{arn}-master");
        store.create_secret(
            &arn,
            &json!({"engine": "postgres", "host": stack.host, "port": stack.port, "dbname": db,
                    "username": name, "password": "first pw", "masterarn": master_arn})
            .to_string(),
        );
        store.create_secret(
            &master_arn,
            &json!({"username": stack.admin_user, "password": stack.admin_password}).to_string(),
        );
        let rotator = Rotator::new(store, stack.postgres(), config(strategy, &stack));
        for token in ["t1", "t2"] {
            rotate_in_process(&rotator, &arn, token).await.unwrap();
            let now = current(&rotator, &arn, "AWSCURRENT");
            let login = stack.login(
                &db,
                now["username"].as_str().unwrap(),
                now["password"].as_str().unwrap(),
            );
            assert!(logs_in(&stack, &login).await, "{strategy} {token}");
        }
        let now = current(&rotator, &arn, "AWSCURRENT");
        assert_eq!(
            now["username"],
            json!(name),
            "{strategy}: back to the first user after two"
        );
    }
}

#[tokio::test]
async fn the_clone_is_created_and_kept_equivalent_to_the_primary() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    let primary = unique("pair");
    let clone = format!("{primary}_clone");
    stack.create_app_user(&primary, "primary-pw").await;
    stack
        .exec(
            "postgres",
            &format!(
                "ALTER ROLE {p} SET search_path TO app, \"$user\", public;
                 ALTER ROLE {p} SET statement_timeout TO '42s'",
                p = quote_ident(&primary)
            ),
        )
        .await;
    let pg = stack.postgres();
    let master = stack.admin_login(&db);
    let change = AlternateChange {
        primary: &role(&primary),
        clone: &role(&clone),
        target: &role(&clone),
        clone_default_role: true,
    };
    pg.set_alternate_password(&master, &change, &secret("clone-pw"))
        .await
        .unwrap();
    // Running it again (a retry) changes nothing but the password.
    pg.set_alternate_password(&master, &change, &secret("clone-pw"))
        .await
        .unwrap();

    let mut admin = stack.admin(&db).await;
    let member: bool = sqlx::query_scalar("SELECT pg_has_role($1, $2, 'MEMBER')")
        .bind(&clone)
        .bind(&primary)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(member, "the clone is a member of the primary");
    let reverse: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
                         JOIN pg_roles u ON u.oid = m.member WHERE r.rolname = $1 AND u.rolname = $2)",
    )
    .bind(&clone)
    .bind(&primary)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(!reverse, "the primary is never a member of the clone");
    let settings: Vec<String> = sqlx::query(
        "SELECT unnest(setconfig) AS s FROM pg_db_role_setting d JOIN pg_roles r ON r.oid = d.setrole
          WHERE r.rolname = $1 AND d.setdatabase = 0 ORDER BY 1",
    )
    .bind(&clone)
    .fetch_all(&mut admin)
    .await
    .unwrap()
    .iter()
    .map(|row| row.get("s"))
    .collect();
    assert_eq!(
        settings,
        vec![
            format!("role={primary}"),
            "search_path=app, \"$user\", public".to_string(),
            "statement_timeout=42s".to_string(),
        ]
    );

    // Objects either user creates are usable by both.
    let primary_login = stack.login(&db, &primary, "primary-pw");
    let clone_login = stack.login(&db, &clone, "clone-pw");
    stack
        .exec(
            &db,
            &format!("GRANT CREATE ON SCHEMA public TO {}", quote_ident(&primary)),
        )
        .await;
    try_query(
        &stack,
        &clone_login,
        "CREATE TABLE public.made_by_clone (v int); INSERT INTO public.made_by_clone VALUES (1)",
    )
    .await
    .unwrap();
    try_query(&stack, &primary_login, "CREATE TABLE public.made_by_primary (v int); INSERT INTO public.made_by_primary VALUES (1)")
        .await
        .unwrap();
    for login in [&primary_login, &clone_login] {
        try_query(
            &stack,
            login,
            "INSERT INTO public.made_by_clone VALUES (2); SELECT * FROM public.made_by_clone;
             INSERT INTO public.made_by_primary VALUES (2); SELECT * FROM public.made_by_primary;
             INSERT INTO app.customers (email, full_name) VALUES (gen_random_uuid() || '@x.example', 'C');
             SELECT count(*) FROM app.customers",
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", login.username));
    }
    // A privilege granted to the primary later reaches the clone too.
    stack
        .exec(
            &db,
            &format!(
                "CREATE TABLE public.later (v int); GRANT SELECT ON public.later TO {}",
                quote_ident(&primary)
            ),
        )
        .await;
    try_query(&stack, &clone_login, "SELECT * FROM public.later")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_circular_pair_left_by_the_reference_function_is_repaired() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    let primary = unique("circ");
    let clone = format!("{primary}_clone");
    stack.create_app_user(&primary, "p-pw").await;
    stack.create_app_user(&clone, "c-pw").await;
    // The reference grants the current user to the new one; after two rotations the primary
    // ends up a member of the clone.
    stack
        .exec(
            "postgres",
            &format!("GRANT {} TO {}", quote_ident(&clone), quote_ident(&primary)),
        )
        .await;
    let change = AlternateChange {
        primary: &role(&primary),
        clone: &role(&clone),
        target: &role(&primary),
        clone_default_role: false,
    };
    stack
        .postgres()
        .set_alternate_password(&stack.admin_login(&db), &change, &secret("p-pw-2"))
        .await
        .unwrap();
    let mut admin = stack.admin(&db).await;
    let (clone_in_primary, primary_in_clone): (bool, bool) =
        sqlx::query_as("SELECT pg_has_role($1, $2, 'MEMBER'), pg_has_role($2, $1, 'MEMBER')")
            .bind(&clone)
            .bind(&primary)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert!(clone_in_primary && !primary_in_clone);
    assert!(logs_in(&stack, &stack.login(&db, &primary, "p-pw-2")).await);
}

#[tokio::test]
async fn a_failed_alternate_change_rolls_back_completely() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    let primary = unique("atomic");
    let clone = format!("{primary}_clone");
    // No primary user exists: the GRANT fails after the CREATE ROLE of the clone.
    let change = AlternateChange {
        primary: &role(&primary),
        clone: &role(&clone),
        target: &role(&clone),
        clone_default_role: true,
    };
    let err = stack
        .postgres()
        .set_alternate_password(&stack.admin_login(&db), &change, &secret("pw"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&clone)
            .fetch_one(&mut stack.admin(&db).await)
            .await
            .unwrap();
    assert!(!exists, "the clone's creation was rolled back");
}

// ---- TLS modes and connection failures -------------------------------------------------

async fn failure(pg: &Postgres, login: &DbLogin) -> DbFailure {
    match pg.session_user(login).await {
        Ok(_) => panic!("{login:?} connected"),
        Err(e) => e.failure,
    }
}

#[tokio::test]
async fn tls_modes_against_a_tls_server() {
    let stack = Stack::get();
    let user = unique("tls");
    stack.create_app_user(&user, "tls-pw").await;
    let with_ca = stack.postgres();
    let without_ca = Postgres::new(Vec::new(), Duration::from_secs(5));
    let login = |host: &str, ssl: SslMode| DbLogin {
        host: host.to_string(),
        ssl,
        ..stack.login("postgres", &user, "tls-pw")
    };
    // Accepted.
    for (pg, host, mode) in [
        (&with_ca, "localhost", SslMode::VerifyFull),
        (&with_ca, "127.0.0.1", SslMode::VerifyCa),
        (&without_ca, "127.0.0.1", SslMode::Require),
        (&without_ca, "localhost", SslMode::Disable),
    ] {
        pg.session_user(&login(host, mode))
            .await
            .unwrap_or_else(|e| panic!("{host} {mode:?}: {e}"));
    }
    // Refused, each for its own reason and with its own message.
    let e = failure(&with_ca, &login("127.0.0.1", SslMode::VerifyFull)).await;
    assert_eq!(e, DbFailure::HostnameMismatch);
    assert!(
        e.to_string().contains("not valid for this host name"),
        "{e}"
    );
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa] {
        let e = failure(&without_ca, &login("localhost", mode)).await;
        assert!(
            matches!(e, DbFailure::CertificateNotTrusted(_)),
            "{mode:?}: {e:?}"
        );
        assert!(e.to_string().contains("SSL_CA_BUNDLE"), "{e}");
    }
    let e = failure(
        &with_ca,
        &DbLogin {
            password: secret("wrong"),
            ..login("localhost", SslMode::VerifyFull)
        },
    )
    .await;
    assert_eq!(e, DbFailure::AuthFailed);
}

#[tokio::test]
async fn a_server_requiring_tls_is_reported_as_such() {
    let stack = Stack::get();
    let user = unique("tlsonly");
    stack.create_app_user(&user, "tls-only-pw").await;
    stack
        .exec(
            "postgres",
            &format!("GRANT pgrotate_tls_required TO {}", quote_ident(&user)),
        )
        .await;
    let login = DbLogin {
        ssl: SslMode::Disable,
        ..stack.login("postgres", &user, "tls-only-pw")
    };
    let e = failure(&stack.postgres(), &login).await;
    assert_eq!(e, DbFailure::TlsRequiredByServer);
    assert!(e.to_string().contains("requires TLS"), "{e}");
    stack
        .postgres()
        .session_user(&DbLogin {
            ssl: SslMode::VerifyFull,
            ..login
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn tls_modes_against_a_plaintext_server_never_fall_back() {
    let stack = Stack::get();
    let pg = stack.postgres();
    let login = |ssl: SslMode| DbLogin {
        port: stack.plain_port,
        ssl,
        ..stack.admin_login("postgres")
    };
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa, SslMode::Require] {
        let e = failure(&pg, &login(mode)).await;
        assert_eq!(e, DbFailure::ServerWithoutTls(mode.as_str()), "{mode:?}");
        assert!(
            e.to_string().contains("never falls back to plaintext"),
            "{e}"
        );
    }
    pg.session_user(&login(SslMode::Disable)).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_host_and_a_silent_server_fail_fast_with_distinct_messages() {
    let stack = Stack::get();
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let pg = Postgres::new(Vec::new(), Duration::from_millis(800));
    let login = DbLogin {
        host: "127.0.0.1".into(),
        port: closed_port,
        ..stack.admin_login("postgres")
    };
    let err = pg.session_user(&login).await.unwrap_err();
    assert!(matches!(err.failure, DbFailure::Unreachable(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("127.0.0.1:{closed_port}")),
        "{err}"
    );
    assert!(err.is_transient());

    // A server that accepts and never answers: bounded by DB_CONNECT_TIMEOUT.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let started = std::time::Instant::now();
    let err = pg
        .session_user(&DbLogin {
            port: silent_port,
            ..login
        })
        .await
        .unwrap_err();
    assert!(matches!(err.failure, DbFailure::Timeout(_)), "{err:?}");
    assert!(err.to_string().contains("DB_CONNECT_TIMEOUT"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    holder.abort();
}
