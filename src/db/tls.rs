//! TLS for PostgreSQL connections: the trusted roots (system roots, the Amazon RDS certificate
//! authorities built into the binary, `SSL_CA_BUNDLE`), a certificate verifier that accepts
//! what libpq accepts, and one rustls client configuration per `ssl` mode. aws-lc-rs is the
//! only crypto provider, chosen explicitly (never the process default).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, aws_lc_rs, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
};
use x509_cert::Certificate;
use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
use x509_cert::der::oid::db::{rfc4519::CN, rfc5280::ID_CE_SUBJECT_ALT_NAME};
use x509_cert::der::{Decode, Tag, Tagged};

use crate::secret::SslMode;

/// The public Amazon RDS certificate authorities (all regions, with the RDS Proxy roots),
/// refreshed by `integration/refresh-rds-ca.sh`: `verify-full` against RDS and Aurora needs no
/// configuration.
pub const RDS_CA_BUNDLE: &[u8] = include_bytes!("rds-ca-bundle.pem");

/// Parses every certificate of a PEM bundle; text outside the blocks is ignored.
pub fn parse_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a valid PEM certificate bundle ({e})"))?;
    if certs.is_empty() {
        return Err(
            "holds no PEM certificate (expected -----BEGIN CERTIFICATE----- blocks)".into(),
        );
    }
    Ok(certs)
}

/// The certificates a connection may trust, as trust anchors and as the certificates
/// themselves (a trusted self-signed server certificate is recognised by identity, as libpq
/// does).
#[derive(Debug)]
pub struct Roots {
    store: RootCertStore,
    certificates: Vec<CertificateDer<'static>>,
}

impl Roots {
    /// The system roots, the built-in RDS authorities, and `extra` (from `SSL_CA_BUNDLE`).
    /// Certificates that do not parse as trust anchors are skipped, as libpq skips them.
    pub fn load(extra: &[CertificateDer<'static>]) -> Roots {
        let mut certificates = rustls_native_certs::load_native_certs().certs;
        certificates.extend(parse_pem(RDS_CA_BUNDLE).unwrap_or_default());
        certificates.extend(extra.iter().cloned());
        Roots::from_certificates(certificates)
    }

    /// Only the given certificates (tests, and the RDS roots check).
    pub fn from_certificates(certificates: Vec<CertificateDer<'static>>) -> Roots {
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(certificates.iter().cloned());
        Roots {
            store,
            certificates,
        }
    }

    /// How many trust anchors parsed.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Whether `certificate` is one of the trusted certificates itself.
    pub fn contains(&self, certificate: &CertificateDer<'_>) -> bool {
        self.certificates
            .iter()
            .any(|c| c.as_ref() == certificate.as_ref())
    }
}

/// The one crypto provider of every TLS connection.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(aws_lc_rs::default_provider()))
        .clone()
}

/// Verifies a server certificate as libpq does for `verify-ca` and `verify-full`: a chain to
/// a trusted root, or a server certificate that is itself one of the trusted certificates
/// (PostgreSQL's documented self-signed recipe, which webpki alone refuses); validity dates
/// always; under `verify-full` the host name, from the subject alternative names or, when
/// the certificate has none, from the common name.
#[derive(Debug)]
struct LibpqVerifier {
    roots: Arc<Roots>,
    check_host: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for LibpqVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if self.roots.contains(end_entity) {
            check_validity(end_entity, now)?;
        } else {
            let parsed = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &self.roots.store,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        if self.check_host {
            check_host_name(end_entity, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `require`: encrypted, the certificate not verified (as libpq's `sslmode=require` without a
/// root file). The handshake signatures are still checked.
#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn parse_certificate(der: &CertificateDer<'_>) -> Result<Certificate, Error> {
    Certificate::from_der(der.as_ref())
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))
}

fn check_validity(der: &CertificateDer<'_>, now: UnixTime) -> Result<(), Error> {
    let certificate = parse_certificate(der)?;
    let validity = certificate.tbs_certificate.validity;
    let now = Duration::from_secs(now.as_secs());
    if now < validity.not_before.to_unix_duration() {
        return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
    }
    if now > validity.not_after.to_unix_duration() {
        return Err(Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
}

/// libpq's host name check: subject alternative names when the certificate has any (webpki
/// matches them), else the common name (exact, or a `*.` wildcard for one leftmost label).
fn check_host_name(der: &CertificateDer<'_>, server_name: &ServerName<'_>) -> Result<(), Error> {
    let parsed = ParsedCertificate::try_from(der)?;
    let by_alt_names = verify_server_name(&parsed, server_name);
    let certificate = parse_certificate(der)?;
    let has_alt_names = certificate
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .any(|e| e.extn_id == ID_CE_SUBJECT_ALT_NAME);
    if by_alt_names.is_ok() || has_alt_names {
        return by_alt_names;
    }
    let host = server_name.to_str();
    let matches = common_names(&certificate)
        .iter()
        .any(|cn| host_matches(cn, &host));
    if matches {
        Ok(())
    } else {
        Err(Error::InvalidCertificate(CertificateError::NotValidForName))
    }
}

fn common_names(certificate: &Certificate) -> Vec<String> {
    certificate
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|attribute| attribute.oid == CN)
        .filter_map(|attribute| {
            let value = &attribute.value;
            match value.tag() {
                Tag::Utf8String => value
                    .decode_as::<Utf8StringRef<'_>>()
                    .ok()
                    .map(|s| s.to_string()),
                Tag::PrintableString => value
                    .decode_as::<PrintableStringRef<'_>>()
                    .ok()
                    .map(|s| s.to_string()),
                Tag::Ia5String => value
                    .decode_as::<Ia5StringRef<'_>>()
                    .ok()
                    .map(|s| s.to_string()),
                _ => None,
            }
        })
        .collect()
}

/// A certificate name against the host connected to, case-insensitively; `*.example.com`
/// matches exactly one more leftmost label, as libpq does.
fn host_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

/// The rustls configurations, built on first use (the system roots are read then, not at
/// cold start) and shared by every connection of the process.
#[derive(Debug)]
pub struct TlsConfigs {
    extra: Vec<CertificateDer<'static>>,
    roots: OnceLock<Arc<Roots>>,
    require: OnceLock<Arc<ClientConfig>>,
    verify_ca: OnceLock<Arc<ClientConfig>>,
    verify_full: OnceLock<Arc<ClientConfig>>,
}

impl TlsConfigs {
    /// `extra`: the certificates of `SSL_CA_BUNDLE`, trusted besides the system and RDS roots.
    pub fn new(extra: Vec<CertificateDer<'static>>) -> TlsConfigs {
        TlsConfigs {
            extra,
            roots: OnceLock::new(),
            require: OnceLock::new(),
            verify_ca: OnceLock::new(),
            verify_full: OnceLock::new(),
        }
    }

    fn roots(&self) -> Arc<Roots> {
        self.roots
            .get_or_init(|| Arc::new(Roots::load(&self.extra)))
            .clone()
    }

    /// The configuration of a TLS mode; `None` for `disable`.
    pub fn for_mode(&self, mode: SslMode) -> Result<Option<Arc<ClientConfig>>, Error> {
        let (cell, check_host) = match mode {
            SslMode::Disable => return Ok(None),
            SslMode::Require => (&self.require, false),
            SslMode::VerifyCa => (&self.verify_ca, false),
            SslMode::VerifyFull => (&self.verify_full, true),
        };
        if let Some(config) = cell.get() {
            return Ok(Some(config.clone()));
        }
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            SslMode::Require => Arc::new(EncryptOnly {
                provider: provider(),
            }),
            _ => Arc::new(LibpqVerifier {
                roots: self.roots(),
                check_host,
                provider: provider(),
            }),
        };
        let config = Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth(),
        );
        Ok(Some(cell.get_or_init(|| config).clone()))
    }
}
