//! TLS verification as libpq does it, against servers whose certificates the tests make: an
//! in-harness server that speaks PostgreSQL's SSLRequest, completes the TLS handshake with a
//! chosen certificate and then refuses the password (so a connection that gets that far has
//! passed verification); the self-signed cluster of the local stack; channel binding against
//! the TLS cluster; and the Amazon RDS authorities built into the binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Stack, unique};
use pgrotate::db::tls::{RDS_CA_BUNDLE, Roots, parse_pem};
use pgrotate::db::{Database, DbFailure, DbLogin, Postgres};
use pgrotate::secret::{RoleName, SslMode};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A certificate and its key, as the test server presents it.
struct ServerCert {
    der: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

/// Validity windows: current, and expired since 2021.
fn valid(params: &mut CertificateParams) {
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2090, 1, 1);
}

fn expired(params: &mut CertificateParams) {
    params.not_before = date_time_ymd(2019, 1, 1);
    params.not_after = date_time_ymd(2021, 1, 1);
}

/// PostgreSQL's documented recipe as rcgen makes it: a self-signed certificate, marked as a
/// CA, whose only name is its common name (no subject alternative names).
fn self_signed(common_name: &str, window: fn(&mut CertificateParams)) -> ServerCert {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    window(&mut params);
    let cert = params.self_signed(&key).unwrap();
    ServerCert {
        der: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// A throwaway CA and a server certificate it issued for `names`.
fn ca_issued(
    names: &[&str],
    window: fn(&mut CertificateParams),
) -> (CertificateDer<'static>, ServerCert) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pgrotate test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    valid(&mut ca_params);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    window(&mut params);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (
        ca.der().clone(),
        ServerCert {
            der: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        },
    )
}

/// Starts a server on 127.0.0.1 that accepts the SSLRequest, does the TLS handshake with
/// `cert`, reads the startup message and answers "password authentication failed". Returns
/// its port.
async fn tls_server(cert: ServerCert) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der], cert.key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                socket.read_exact(&mut request).await.ok()?;
                socket.write_all(b"S").await.ok()?;
                let mut tls = acceptor.accept(socket).await.ok()?;
                let mut length = [0u8; 4];
                tls.read_exact(&mut length).await.ok()?;
                let mut startup = vec![0u8; u32::from_be_bytes(length) as usize - 4];
                tls.read_exact(&mut startup).await.ok()?;
                let fields = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed\0\0";
                let mut reply = vec![b'E'];
                reply.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
                reply.extend_from_slice(fields);
                tls.write_all(&reply).await.ok()?;
                tls.shutdown().await.ok()
            });
        }
    });
    port
}

fn login(host: &str, port: u16, ssl: SslMode) -> DbLogin {
    DbLogin {
        host: host.to_string(),
        port,
        dbname: "postgres".into(),
        username: RoleName::parse("app").unwrap(),
        password: SecretString::from("not-the-password".to_string()),
        ssl,
    }
}

/// What a connection attempt ended in: `AuthFailed` means TLS verification passed.
async fn outcome(trusted: &[CertificateDer<'static>], login: &DbLogin) -> DbFailure {
    let pg = Postgres::new(trusted.to_vec(), Duration::from_secs(5));
    pg.session_user(login).await.unwrap_err().failure
}

#[tokio::test]
async fn a_self_signed_server_certificate_listed_in_the_bundle_is_trusted_by_its_common_name() {
    let cert = self_signed("localhost", valid);
    let trusted = [cert.der.clone()];
    let port = tls_server(cert).await;
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa] {
        assert_eq!(
            outcome(&trusted, &login("localhost", port, mode)).await,
            DbFailure::AuthFailed,
            "{mode:?}"
        );
    }
    // The host name is still checked under verify-full (the common name is "localhost").
    let e = outcome(&trusted, &login("127.0.0.1", port, SslMode::VerifyFull)).await;
    assert_eq!(e, DbFailure::HostnameMismatch);
    assert_eq!(
        outcome(&trusted, &login("127.0.0.1", port, SslMode::VerifyCa)).await,
        DbFailure::AuthFailed
    );
}

#[tokio::test]
async fn a_different_self_signed_certificate_is_refused_as_untrusted() {
    let served = self_signed("localhost", valid);
    let other = self_signed("localhost", valid);
    let port = tls_server(served).await;
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa] {
        let e = outcome(
            std::slice::from_ref(&other.der),
            &login("localhost", port, mode),
        )
        .await;
        assert!(
            matches!(e, DbFailure::CertificateNotTrusted(_)),
            "{mode:?}: {e:?}"
        );
        assert!(e.to_string().contains("SSL_CA_BUNDLE"), "{e}");
    }
    // require encrypts without verifying, as libpq's sslmode=require does.
    assert_eq!(
        outcome(&[], &login("localhost", port, SslMode::Require)).await,
        DbFailure::AuthFailed
    );
}

#[tokio::test]
async fn expired_server_certificates_are_refused_as_expired() {
    let cert = self_signed("localhost", expired);
    let trusted = [cert.der.clone()];
    let port = tls_server(cert).await;
    let e = outcome(&trusted, &login("localhost", port, SslMode::VerifyFull)).await;
    assert_eq!(e, DbFailure::CertificateExpired);
    assert!(e.to_string().contains("expired"), "{e}");

    let (ca, cert) = ca_issued(&["localhost"], expired);
    let port = tls_server(cert).await;
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa] {
        let e = outcome(std::slice::from_ref(&ca), &login("localhost", port, mode)).await;
        assert_eq!(e, DbFailure::CertificateExpired, "{mode:?}");
    }
}

#[tokio::test]
async fn a_certificate_for_another_host_name_fails_verify_full_and_passes_verify_ca() {
    let (ca, cert) = ca_issued(&["db.example.internal"], valid);
    let port = tls_server(cert).await;
    let e = outcome(
        std::slice::from_ref(&ca),
        &login("localhost", port, SslMode::VerifyFull),
    )
    .await;
    assert_eq!(e, DbFailure::HostnameMismatch);
    assert!(
        e.to_string().contains("not valid for this host name"),
        "{e}"
    );
    assert_eq!(
        outcome(
            std::slice::from_ref(&ca),
            &login("localhost", port, SslMode::VerifyCa)
        )
        .await,
        DbFailure::AuthFailed
    );
    // Not trusted at all without its CA.
    let e = outcome(&[], &login("localhost", port, SslMode::VerifyCa)).await;
    assert!(matches!(e, DbFailure::CertificateNotTrusted(_)), "{e:?}");
}

#[test]
fn the_built_in_amazon_rds_authorities_all_parse_and_are_trusted_without_configuration() {
    let certificates = parse_pem(RDS_CA_BUNDLE).unwrap();
    assert!(certificates.len() >= 100, "{}", certificates.len());
    // Every one becomes a trust anchor.
    let rds_only = Roots::from_certificates(certificates.clone());
    assert_eq!(rds_only.len(), certificates.len());
    // And the roots a connection uses with no SSL_CA_BUNDLE hold every one of them.
    let loaded = Roots::load(&[]);
    for certificate in &certificates {
        assert!(loaded.contains(certificate));
    }
    assert!(loaded.len() >= certificates.len());
}

#[tokio::test]
async fn tls_logins_use_scram_channel_binding_when_the_server_offers_it() {
    let stack = Stack::get();
    let user = unique("plus");
    stack.create_app_user(&user, "plus-pw").await;
    let pg = stack.postgres();
    let tls = stack.login("postgres", &user, "plus-pw");
    assert!(pg.uses_channel_binding(&tls).await.unwrap());
    let plain = DbLogin {
        port: stack.plain_port,
        ssl: SslMode::Disable,
        ..tls
    };
    assert!(!pg.uses_channel_binding(&plain).await.unwrap());
}

#[tokio::test]
async fn each_tls_mode_against_the_tls_only_self_signed_cluster() {
    let stack = Stack::get();
    let cert = parse_pem(&std::fs::read(&stack.selfsigned_cert).unwrap()).unwrap();
    let other = parse_pem(&std::fs::read(&stack.other_selfsigned_cert).unwrap()).unwrap();
    let login = |host: &str, ssl: SslMode| DbLogin {
        host: host.to_string(),
        port: stack.selfsigned_port,
        ssl,
        ..stack.admin_login("postgres")
    };
    let trusting = Postgres::new(cert, Duration::from_secs(5));
    for (host, mode) in [
        ("localhost", SslMode::VerifyFull),
        ("127.0.0.1", SslMode::VerifyCa),
        ("127.0.0.1", SslMode::Require),
    ] {
        let user = trusting.session_user(&login(host, mode)).await;
        assert_eq!(user.unwrap(), stack.admin_user, "{host} {mode:?}");
    }
    let e = trusting
        .session_user(&login("localhost", SslMode::Disable))
        .await
        .unwrap_err();
    assert_eq!(e.failure, DbFailure::TlsRequiredByServer, "{e}");
    assert!(e.to_string().contains("requires TLS"), "{e}");
    let e = trusting
        .session_user(&login("127.0.0.1", SslMode::VerifyFull))
        .await
        .unwrap_err();
    assert_eq!(e.failure, DbFailure::HostnameMismatch, "{e}");
    let distrusting = Postgres::new(other, Duration::from_secs(5));
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa] {
        let e = distrusting
            .session_user(&login("localhost", mode))
            .await
            .unwrap_err();
        assert!(
            matches!(e.failure, DbFailure::CertificateNotTrusted(_)),
            "{mode:?}: {e}"
        );
    }
}
