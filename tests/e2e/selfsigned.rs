//! Rotations through the binary against the stack's TLS-only cluster whose certificate is
//! self-signed as PostgreSQL's documentation makes it (no subject alternative name, marked as
//! a CA): trusted through SSL_CA_BUNDLE under verify-full, as libpq trusts it; a different
//! self-signed certificate is refused as untrusted and nothing changes.

use std::time::Duration;

use pgrotate::Strategy;
use pgrotate::db::sql::quote_ident;
use pgrotate::db::tls::parse_pem;
use pgrotate::db::{Database, Postgres};
use serde_json::json;

use crate::common::driver::{Driver, deployment, random_password, secret_login};
use crate::common::lambda::Lambda;
use crate::common::unique;
use crate::common::world::*;

/// Creates a login user on the self-signed cluster (as its superuser, over TLS) and returns
/// the secret's JSON for it.
async fn user_on_selfsigned(world: &World) -> serde_json::Value {
    let stack = &world.stack;
    let user = unique("selfsigned");
    let password = random_password();
    let admin = pgrotate::db::DbLogin {
        port: stack.selfsigned_port,
        ssl: pgrotate::secret::SslMode::Require,
        ..stack.admin_login("postgres")
    };
    let mut c = stack
        .connect(&admin)
        .await
        .expect("admin on the self-signed cluster");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {} LOGIN PASSWORD '{password}'",
        quote_ident(&user)
    )))
    .execute(&mut c)
    .await
    .unwrap();
    json!({
        "engine": "postgres",
        "host": "localhost",
        "port": stack.selfsigned_port,
        "username": user,
        "password": password,
        "dbname": "postgres",
    })
}

fn trusting(cert: &std::path::Path) -> Postgres {
    Postgres::new(
        parse_pem(&std::fs::read(cert).unwrap()).unwrap(),
        Duration::from_secs(5),
    )
}

#[tokio::test]
async fn a_self_signed_server_in_ssl_ca_bundle_rotates_under_verify_full() {
    let world = World::new(FUNCTION).await;
    let value = user_on_selfsigned(&world).await;
    let arn = world
        .driver
        .create_secret(&unique("e2e/selfsigned"), &value.to_string(), None)
        .await;
    let config = deployment(&world.stack, Strategy::SingleUser, FUNCTION).env(
        "SSL_CA_BUNDLE",
        &world.stack.selfsigned_cert.to_string_lossy(),
    );
    let mut lambda = Lambda::start(config).await;
    world.driver.rotate(&lambda, &arn, None).await.unwrap();
    lambda.stop().await;

    let rotated = world.current(&arn).await;
    assert_ne!(rotated["password"], value["password"]);
    let pg = trusting(&world.stack.selfsigned_cert);
    let user = pg
        .session_user(&secret_login(&rotated).unwrap())
        .await
        .unwrap();
    assert_eq!(json!(user), rotated["username"]);
    let old = pg
        .session_user(&secret_login(&value).unwrap())
        .await
        .unwrap_err();
    assert!(old.is_auth_failure(), "{old}");
}

#[tokio::test]
async fn a_different_self_signed_certificate_is_refused_as_untrusted_and_nothing_changes() {
    let world = World::new(FUNCTION).await;
    let value = user_on_selfsigned(&world).await;
    let arn = world
        .driver
        .create_secret(&unique("e2e/selfsigned"), &value.to_string(), None)
        .await;
    let config = deployment(&world.stack, Strategy::SingleUser, FUNCTION).env(
        "SSL_CA_BUNDLE",
        &world.stack.other_selfsigned_cert.to_string_lossy(),
    );
    let mut lambda = Lambda::start(config).await;
    let token = world.driver.start_rotation(&arn).await;
    let create = lambda
        .invoke(&Driver::event(&arn, &token, "createSecret", None))
        .await;
    assert!(create.is_ok(), "{create:?}");
    let (error_type, message) = lambda
        .invoke(&Driver::event(&arn, &token, "setSecret", None))
        .await
        .expect_err("an untrusted certificate is refused");
    lambda.stop().await;
    assert_eq!(error_type, "DatabaseError", "{message}");
    assert!(message.contains("certificate is not trusted"), "{message}");
    assert!(message.contains("SSL_CA_BUNDLE"), "{message}");
    assert_eq!(world.current(&arn).await, value);
    let pg = trusting(&world.stack.selfsigned_cert);
    let user = pg
        .session_user(&secret_login(&value).unwrap())
        .await
        .unwrap();
    assert_eq!(json!(user), value["username"]);
}
