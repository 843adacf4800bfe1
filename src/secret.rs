//! The secret's JSON: typed, validated fields over an order-preserving map, so a pending
//! version is the current one with new credentials and every other field kept as it was.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

/// How a connection uses TLS, as PostgreSQL's `sslmode` defines the same names; ordered from
/// the weakest to the strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// Parses a string setting (`DEFAULT_SSL_MODE` or a string `ssl` field).
    pub fn parse(raw: &str) -> Option<SslMode> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "verify-full" => Some(SslMode::VerifyFull),
            "verify-ca" => Some(SslMode::VerifyCa),
            "require" => Some(SslMode::Require),
            "false" | "disable" => Some(SslMode::Disable),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

pub const SSL_VALUES: &str =
    "true, false, \"verify-full\", \"verify-ca\", \"require\" or \"disable\"";
pub const ENGINES: [&str; 2] = ["postgres", "aurora-postgresql"];
/// PostgreSQL's NAMEDATALEN - 1: longer identifiers are silently truncated by the server.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// A PostgreSQL role name known to be usable in SQL: non-empty, at most 63 bytes (longer
/// names would be silently truncated by the server), no NUL. Parsed once, from the secret,
/// and carried to every place that builds SQL, where it is always quoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleName(String);

impl RoleName {
    /// Validates a role name; the error says what is wrong (the name is not a secret).
    pub fn parse(name: &str) -> Result<RoleName, String> {
        if name.is_empty() {
            return Err("a role name must not be empty".into());
        }
        if name.contains('\0') {
            return Err(
                "a role name must not contain a NUL character, which PostgreSQL does not allow"
                    .into(),
            );
        }
        if name.len() > MAX_IDENTIFIER_BYTES {
            return Err(format!(
                "it is {} bytes long; PostgreSQL role names are at most {MAX_IDENTIFIER_BYTES} bytes",
                name.len()
            ));
        }
        Ok(RoleName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier.
    pub fn quoted(&self) -> String {
        crate::db::sql::quote_ident(&self.0)
    }
}

impl std::fmt::Display for RoleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for RoleName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for RoleName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A database secret (the rotated one, or the pending copy of it).
pub struct DbSecret {
    fields: Map<String, Value>,
    pub engine: String,
    pub host: String,
    pub port: u16,
    pub username: RoleName,
    pub password: SecretString,
    pub dbname: String,
    pub ssl: Option<SslMode>,
    pub masterarn: Option<String>,
}

impl std::fmt::Debug for DbSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSecret")
            .field("engine", &self.engine)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("dbname", &self.dbname)
            .field("ssl", &self.ssl)
            .field("masterarn", &self.masterarn)
            .finish_non_exhaustive()
    }
}

/// The largest secret string Secrets Manager stores (65,536 bytes): anything longer did not
/// come from Secrets Manager as it is, and is refused before it is parsed.
pub const MAX_SECRET_BYTES: usize = 65_536;

/// The longest password Secrets Manager's own generator makes (GetRandomPassword's
/// PasswordLength): a longer stored password is refused rather than sent to the server.
pub const MAX_PASSWORD_BYTES: usize = 4_096;

fn parse_object(raw: &SecretString) -> Result<Map<String, Value>, String> {
    let len = raw.expose_secret().len();
    if len > MAX_SECRET_BYTES {
        return Err(format!(
            "the secret string is too large ({len} bytes): Secrets Manager stores at most {MAX_SECRET_BYTES}; store only the connection fields (engine, host, port, username, password, dbname, masterarn)"
        ));
    }
    match serde_json::from_str::<Value>(raw.expose_secret()) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(
            "the secret string must be a JSON object (store {\"engine\", \"host\", \"username\", \"password\", ...} as Secrets Manager's database secrets do)"
                .into(),
        ),
        // serde_json's message gives a line and column, never the text it read.
        Err(e) => Err(format!(
            "the secret string is not valid JSON ({e}): store a JSON object with engine, host, username and password, as Secrets Manager's database secrets do"
        )),
    }
}

fn required_string(map: &Map<String, Value>, name: &str) -> Result<String, String> {
    match map.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("field \"{name}\" is empty")),
        Some(_) => Err(format!("field \"{name}\" must be a string")),
        None => Err(format!("field \"{name}\" is missing")),
    }
}

fn optional_string(map: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => required_string(map, name).map(Some),
    }
}

fn parse_password(map: &Map<String, Value>) -> Result<SecretString, String> {
    match map.get("password") {
        Some(Value::String(s)) if s.len() > MAX_PASSWORD_BYTES => Err(format!(
            "field \"password\" is {} bytes long: at most {MAX_PASSWORD_BYTES} (the longest password Secrets Manager generates); store a shorter password",
            s.len()
        )),
        Some(Value::String(s)) if !s.is_empty() => Ok(SecretString::from(s.clone())),
        Some(Value::String(_)) => Err("field \"password\" is empty".into()),
        Some(_) => Err("field \"password\" must be a string".into()),
        None => Err("field \"password\" is missing".into()),
    }
}

fn parse_username(map: &Map<String, Value>) -> Result<RoleName, String> {
    let name = required_string(map, "username")?;
    RoleName::parse(&name).map_err(|problem| format!("field \"username\" is not usable: {problem}"))
}

fn parse_port(map: &Map<String, Value>) -> Result<Option<u16>, String> {
    let bad = || {
        "field \"port\" must be a port number from 1 to 65535 (a number or a numeric string)"
            .to_string()
    };
    let port = match map.get("port") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(bad)?,
        Some(Value::String(s)) => s.trim().parse::<u64>().map_err(|_| bad())?,
        Some(_) => return Err(bad()),
    };
    match u16::try_from(port) {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(bad()),
    }
}

fn parse_ssl(map: &Map<String, Value>) -> Result<Option<SslMode>, String> {
    let bad = || format!("field \"ssl\" must be one of {SSL_VALUES}");
    match map.get("ssl") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(true)) => Ok(Some(SslMode::VerifyFull)),
        Some(Value::Bool(false)) => Ok(Some(SslMode::Disable)),
        Some(Value::String(s)) => SslMode::parse(s).map(Some).ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

impl DbSecret {
    /// Parses and validates a rotated secret (SPEC section 5). The error text names the field
    /// and what was expected, never a value of the password.
    pub fn parse(raw: &SecretString) -> Result<DbSecret, String> {
        let fields = parse_object(raw)?;
        let engine = required_string(&fields, "engine")?;
        if !ENGINES.contains(&engine.as_str()) {
            return Err(format!(
                "field \"engine\" must be \"postgres\" or \"aurora-postgresql\", got {engine:?}"
            ));
        }
        let host = required_string(&fields, "host")?;
        let username = parse_username(&fields)?;
        let password = parse_password(&fields)?;
        let port = parse_port(&fields)?.unwrap_or(5432);
        let dbname = optional_string(&fields, "dbname")?.unwrap_or_else(|| "postgres".into());
        let ssl = parse_ssl(&fields)?;
        let masterarn = optional_string(&fields, "masterarn")?;
        Ok(DbSecret {
            fields,
            engine,
            host,
            port,
            username,
            password,
            dbname,
            ssl,
            masterarn,
        })
    }

    /// The same JSON, every other field kept in its place, with a new password (and, for
    /// alternating users, a new user name).
    pub fn with_credentials(&self, username: &RoleName, password: &SecretString) -> SecretString {
        let mut fields = self.fields.clone();
        fields.insert("username".into(), Value::String(username.to_string()));
        fields.insert(
            "password".into(),
            Value::String(password.expose_secret().to_string()),
        );
        SecretString::from(Value::Object(fields).to_string())
    }
}

/// The master (superuser) secret named by `masterarn`. Only `username` and `password` are
/// required, as in RDS-managed master secrets; the rest comes from the user's secret, and the
/// master always logs in to the user's database.
#[derive(Debug)]
pub struct MasterSecret {
    pub username: RoleName,
    pub password: SecretString,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub ssl: Option<SslMode>,
}

impl MasterSecret {
    pub fn parse(raw: &SecretString) -> Result<MasterSecret, String> {
        let fields = parse_object(raw)?;
        Ok(MasterSecret {
            username: parse_username(&fields)?,
            password: parse_password(&fields)?,
            host: optional_string(&fields, "host")?,
            port: parse_port(&fields)?,
            ssl: parse_ssl(&fields)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_secrets_and_passwords_are_refused_without_showing_them() {
        let long = "p".repeat(MAX_PASSWORD_BYTES + 1);
        let e = DbSecret::parse(&secret(&format!(
            r#"{{"engine":"postgres","host":"db","username":"u","password":"{long}"}}"#
        )))
        .unwrap_err();
        assert!(
            e.contains("field \"password\" is 4097 bytes long: at most 4096"),
            "{e}"
        );
        assert!(!e.contains(&long));
        let ok = "p".repeat(MAX_PASSWORD_BYTES);
        assert!(
            DbSecret::parse(&secret(&format!(
                r#"{{"engine":"postgres","host":"db","username":"u","password":"{ok}"}}"#
            )))
            .is_ok()
        );
        let padding = "x".repeat(MAX_SECRET_BYTES);
        let e = MasterSecret::parse(&secret(&format!(
            r#"{{"username":"u","password":"hunter2","note":"{padding}"}}"#
        )))
        .unwrap_err();
        assert!(e.contains("too large"), "{e}");
        assert!(!e.contains("hunter2"));
    }

    fn secret(json: &str) -> SecretString {
        SecretString::from(json.to_string())
    }

    #[test]
    fn parses_defaults_for_port_dbname_and_ssl() {
        let s = DbSecret::parse(&secret(
            r#"{"engine":"postgres","host":"db","username":"app","password":"pw"}"#,
        ))
        .unwrap();
        assert_eq!(s.port, 5432);
        assert_eq!(s.dbname, "postgres");
        assert_eq!(s.ssl, None);
        assert_eq!(s.masterarn, None);
    }

    #[test]
    fn port_may_be_a_number_or_a_numeric_string() {
        for port in [r#"6432"#, r#""6432""#] {
            let s = DbSecret::parse(&secret(&format!(
                r#"{{"engine":"aurora-postgresql","host":"db","username":"u","password":"p","port":{port}}}"#
            )))
            .unwrap();
            assert_eq!(s.port, 6432);
        }
        for port in [r#""abc""#, "0", "70000", "-1", "5432.5", "true"] {
            let err = DbSecret::parse(&secret(&format!(
                r#"{{"engine":"postgres","host":"db","username":"u","password":"p","port":{port}}}"#
            )))
            .unwrap_err();
            assert!(err.contains("\"port\""), "{err}");
        }
    }

    #[test]
    fn ssl_field_accepts_booleans_and_the_mode_names() {
        let cases = [
            ("true", SslMode::VerifyFull),
            ("false", SslMode::Disable),
            (r#""verify-full""#, SslMode::VerifyFull),
            (r#""verify-ca""#, SslMode::VerifyCa),
            (r#""require""#, SslMode::Require),
            (r#""disable""#, SslMode::Disable),
        ];
        for (raw, mode) in cases {
            let s = DbSecret::parse(&secret(&format!(
                r#"{{"engine":"postgres","host":"db","username":"u","password":"p","ssl":{raw}}}"#
            )))
            .unwrap();
            assert_eq!(s.ssl, Some(mode), "{raw}");
        }
        let err = DbSecret::parse(&secret(
            r#"{"engine":"postgres","host":"db","username":"u","password":"p","ssl":"prefer"}"#,
        ))
        .unwrap_err();
        assert!(err.contains("\"ssl\""), "{err}");
    }

    #[test]
    fn errors_name_the_field_and_never_the_password() {
        let cases = [
            (
                r#"{"host":"db","username":"u","password":"hunter2"}"#,
                "\"engine\" is missing",
            ),
            (
                r#"{"engine":"mysql","host":"db","username":"u","password":"hunter2"}"#,
                "\"engine\" must be",
            ),
            (
                r#"{"engine":"postgres","username":"u","password":"hunter2"}"#,
                "\"host\" is missing",
            ),
            (
                r#"{"engine":"postgres","host":"db","password":"hunter2"}"#,
                "\"username\" is missing",
            ),
            (
                r#"{"engine":"postgres","host":"db","username":"u"}"#,
                "\"password\" is missing",
            ),
            (
                r#"{"engine":"postgres","host":"db","username":"u","password":7}"#,
                "\"password\" must be a string",
            ),
            (
                r#"{"engine":"postgres","host":"db","username":"u","password":"hunter2","dbname":5}"#,
                "\"dbname\" must be a string",
            ),
            (r#"["hunter2"]"#, "JSON object"),
            (
                r#"{"engine":"postgres","password":"hunter2""#,
                "not valid JSON",
            ),
            ("hunter2", "not valid JSON"),
        ];
        for (raw, expected) in cases {
            let err = DbSecret::parse(&secret(raw)).unwrap_err();
            assert!(err.contains(expected), "{raw}: {err}");
            assert!(!err.contains("hunter2"), "{raw}: {err}");
        }
    }

    #[test]
    fn user_names_longer_than_63_bytes_are_refused() {
        let name = "é".repeat(32); // 64 bytes
        let err = DbSecret::parse(&secret(&format!(
            r#"{{"engine":"postgres","host":"db","username":"{name}","password":"p"}}"#
        )))
        .unwrap_err();
        assert!(err.contains("63 bytes"), "{err}");
    }

    #[test]
    fn new_credentials_keep_every_other_field_in_order() {
        let raw = r#"{"zeta":1,"engine":"postgres","host":"db","username":"u","password":"old","nested":{"b":2,"a":1},"alpha":"x"}"#;
        let s = DbSecret::parse(&secret(raw)).unwrap();
        let pending = s.with_credentials(
            &RoleName::parse("u_clone").unwrap(),
            &SecretString::from("new\"pw\\".to_string()),
        );
        assert_eq!(
            pending.expose_secret(),
            r#"{"zeta":1,"engine":"postgres","host":"db","username":"u_clone","password":"new\"pw\\","nested":{"b":2,"a":1},"alpha":"x"}"#
        );
    }

    #[test]
    fn debug_output_hides_the_password() {
        let s = DbSecret::parse(&secret(
            r#"{"engine":"postgres","host":"db","username":"u","password":"hunter2"}"#,
        ))
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn master_secret_needs_only_username_and_password() {
        let m = MasterSecret::parse(&secret(r#"{"username":"postgres","password":"pw"}"#)).unwrap();
        assert_eq!(m.username, "postgres");
        assert!(m.host.is_none() && m.port.is_none());
        let err = MasterSecret::parse(&secret(r#"{"username":"postgres"}"#)).unwrap_err();
        assert!(err.contains("\"password\" is missing"), "{err}");
    }
}
