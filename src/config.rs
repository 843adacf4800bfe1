//! The deployment's settings, read from environment variables once at start-up and validated
//! there, so a bad setting fails the cold start with a message naming the variable.

use std::time::Duration;

use rustls::pki_types::CertificateDer;

use crate::db::tls::parse_pem;
use crate::error::Error;
use crate::hosts::AllowedHosts;
use crate::password::{PasswordPolicy, PasswordSettings};
use crate::secret::{SSL_VALUES, SslMode};

/// Which rotation strategy this deployment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    SingleUser,
    AlternatingUsers,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::SingleUser => "single-user",
            Strategy::AlternatingUsers => "alternating-users",
        }
    }
}

/// Everything the rotation logic is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    pub strategy: Strategy,
    pub password: PasswordPolicy,
    pub default_ssl: SslMode,
    /// Certificates trusted besides the system roots and the built-in Amazon RDS
    /// authorities (`SSL_CA_BUNDLE`, parsed at start-up).
    pub ca_bundle: Vec<CertificateDer<'static>>,
    pub connect_timeout: Duration,
    /// Whether the clone logs in with the primary as its default role.
    pub clone_default_role: bool,
    /// An explicit Secrets Manager endpoint (`SECRETS_MANAGER_ENDPOINT`); the SDK itself
    /// honours `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_SECRETS_MANAGER`.
    pub secrets_manager_endpoint: Option<String>,
    pub secrets_manager_timeout: Duration,
    /// Single user: when no stored credentials log in, let the master user (from the
    /// secret's `masterarn`) reset the password (`SINGLE_USER_MASTER_FALLBACK`).
    pub single_user_master_fallback: bool,
    /// The only hosts the function connects to (`ALLOWED_DB_HOSTS`); `None`: any host, but
    /// the master password only to a host its own secret names.
    pub allowed_db_hosts: Option<AllowedHosts>,
}

fn parse_bool(name: &str, raw: &str) -> Result<bool, Error> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" => Ok(true),
        "false" | "0" | "no" | "n" => Ok(false),
        _ => Err(Error::Config(format!(
            "{name} must be true or false (also 1/0, yes/no, y/n), got {raw:?}"
        ))),
    }
}

fn parse_seconds(name: &str, raw: &str) -> Result<Duration, Error> {
    match raw.trim().parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 900.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(Error::Config(format!(
            "{name} must be a number of seconds greater than 0 and at most 900, got {raw:?}"
        ))),
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, Error> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests). Empty values
    /// count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let flag = |name: &str, default: bool| -> Result<bool, Error> {
            get(name).map_or(Ok(default), |raw| parse_bool(name, &raw))
        };

        let strategy = match get("ROTATION_STRATEGY").as_deref().map(str::trim) {
            None | Some("single-user") => Strategy::SingleUser,
            Some("alternating-users") => Strategy::AlternatingUsers,
            Some(other) => {
                return Err(Error::Config(format!(
                    "ROTATION_STRATEGY must be \"single-user\" or \"alternating-users\", got {other:?}"
                )));
            }
        };

        let defaults = PasswordSettings::default();
        let length = match get("PASSWORD_LENGTH") {
            None => defaults.length,
            Some(raw) => raw.trim().parse::<usize>().map_err(|_| {
                Error::Config(format!(
                    "PASSWORD_LENGTH must be a whole number from 1 to 4096, got {raw:?}"
                ))
            })?,
        };
        let settings = PasswordSettings {
            length,
            // An explicitly empty EXCLUDE_CHARACTERS means "exclude nothing".
            exclude_characters: lookup("EXCLUDE_CHARACTERS").unwrap_or(defaults.exclude_characters),
            exclude_numbers: flag("EXCLUDE_NUMBERS", false)?,
            exclude_punctuation: flag("EXCLUDE_PUNCTUATION", false)?,
            exclude_uppercase: flag("EXCLUDE_UPPERCASE", false)?,
            exclude_lowercase: flag("EXCLUDE_LOWERCASE", false)?,
            require_each_included_type: flag("REQUIRE_EACH_INCLUDED_TYPE", true)?,
        };
        let password = PasswordPolicy::new(&settings)?;

        let default_ssl = match get("DEFAULT_SSL_MODE") {
            None => SslMode::VerifyFull,
            Some(raw) => SslMode::parse(&raw).ok_or_else(|| {
                Error::Config(format!(
                    "DEFAULT_SSL_MODE must be one of {SSL_VALUES}, got {raw:?}"
                ))
            })?,
        };

        let ca_bundle = match get("SSL_CA_BUNDLE") {
            None => Vec::new(),
            Some(path) => read_ca_bundle(&path)?,
        };

        let connect_timeout = match get("DB_CONNECT_TIMEOUT") {
            None => Duration::from_secs(5),
            Some(raw) => parse_seconds("DB_CONNECT_TIMEOUT", &raw)?,
        };
        let secrets_manager_timeout = match get("SECRETS_MANAGER_TIMEOUT") {
            None => Duration::from_secs(10),
            Some(raw) => parse_seconds("SECRETS_MANAGER_TIMEOUT", &raw)?,
        };

        let allowed_db_hosts = match get("ALLOWED_DB_HOSTS") {
            None => None,
            Some(raw) => Some(AllowedHosts::parse(&raw).map_err(Error::Config)?),
        };

        Ok(Config {
            strategy,
            password,
            default_ssl,
            ca_bundle,
            connect_timeout,
            clone_default_role: flag("CLONE_DEFAULT_ROLE", true)?,
            secrets_manager_endpoint: get("SECRETS_MANAGER_ENDPOINT"),
            secrets_manager_timeout,
            single_user_master_fallback: flag("SINGLE_USER_MASTER_FALLBACK", false)?,
            allowed_db_hosts,
        })
    }
}

fn read_ca_bundle(path: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = std::fs::read(path)
        .map_err(|e| Error::Config(format!("SSL_CA_BUNDLE: cannot read {path:?}: {e}")))?;
    parse_pem(&pem).map_err(|problem| Error::Config(format!("SSL_CA_BUNDLE: {path:?} {problem}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, Error> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_specification() {
        let c = config(&[]).unwrap();
        assert_eq!(c.strategy, Strategy::SingleUser);
        assert_eq!(c.default_ssl, SslMode::VerifyFull);
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.password.length(), 32);
        assert!(c.clone_default_role);
        assert!(c.ca_bundle.is_empty());
        assert!(!c.single_user_master_fallback);
        assert!(c.allowed_db_hosts.is_none());
    }

    #[test]
    fn booleans_accept_the_documented_spellings_in_any_case() {
        for yes in ["true", "TRUE", "1", "yes", "Y"] {
            assert!(
                config(&[("CLONE_DEFAULT_ROLE", yes)])
                    .unwrap()
                    .clone_default_role
            );
        }
        for no in ["false", "False", "0", "no", "N"] {
            assert!(
                !config(&[("CLONE_DEFAULT_ROLE", no)])
                    .unwrap()
                    .clone_default_role
            );
        }
        let err = config(&[("EXCLUDE_NUMBERS", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("EXCLUDE_NUMBERS"), "{err}");
    }

    #[test]
    fn bad_values_fail_naming_the_variable() {
        for (name, value) in [
            ("ROTATION_STRATEGY", "multi-user"),
            ("PASSWORD_LENGTH", "long"),
            ("PASSWORD_LENGTH", "5000"),
            ("DEFAULT_SSL_MODE", "prefer"),
            ("DB_CONNECT_TIMEOUT", "0"),
            ("SECRETS_MANAGER_TIMEOUT", "soon"),
            ("SSL_CA_BUNDLE", "/nonexistent/ca.pem"),
            ("SINGLE_USER_MASTER_FALLBACK", "sometimes"),
            ("ALLOWED_DB_HOSTS", "*"),
            ("ALLOWED_DB_HOSTS", "db.example.com,*."),
            ("ALLOWED_DB_HOSTS", "db example.com"),
            ("ALLOWED_DB_HOSTS", "db.example.com/32"),
            ("ALLOWED_DB_HOSTS", ", ,"),
        ] {
            let err = config(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
    }

    #[test]
    fn alternating_users_and_ssl_mode_are_read() {
        let c = config(&[
            ("ROTATION_STRATEGY", "alternating-users"),
            ("DEFAULT_SSL_MODE", "require"),
            ("DB_CONNECT_TIMEOUT", "2.5"),
        ])
        .unwrap();
        assert_eq!(c.strategy, Strategy::AlternatingUsers);
        assert_eq!(c.default_ssl, SslMode::Require);
        assert_eq!(c.connect_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn master_fallback_and_allowed_hosts_are_read() {
        let c = config(&[
            ("SINGLE_USER_MASTER_FALLBACK", "true"),
            ("ALLOWED_DB_HOSTS", "localhost, *.rds.amazonaws.com"),
        ])
        .unwrap();
        assert!(c.single_user_master_fallback);
        let hosts = c.allowed_db_hosts.unwrap();
        assert!(hosts.allows("localhost"));
        assert!(hosts.allows("db.x.rds.amazonaws.com"));
        assert!(!hosts.allows("127.0.0.1"));
        // An empty value counts as unset, as for every variable.
        assert!(
            config(&[("ALLOWED_DB_HOSTS", "")])
                .unwrap()
                .allowed_db_hosts
                .is_none()
        );
    }
}
