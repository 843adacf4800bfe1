//! `ALLOWED_DB_HOSTS` and the vouching of the master user's host (SPEC 7.1), as the operator
//! CLI checks them: exact host names or `*.suffix`, case-insensitive.

/// The hosts the function may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    /// Parses a comma-separated list; empty entries are ignored, a bare `*` or a `*` other
    /// than a leading `*.` is refused.
    pub fn parse(raw: &str) -> Result<AllowedHosts, String> {
        let mut hosts = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let rest = entry.strip_prefix("*.").unwrap_or(entry);
            if rest.is_empty() || rest.contains('*') {
                return Err(format!(
                    "ALLOWED_DB_HOSTS: {entry:?} is neither a host name nor \"*.suffix\""
                ));
            }
            hosts.push(entry.to_ascii_lowercase());
        }
        if hosts.is_empty() {
            return Err("ALLOWED_DB_HOSTS is set but names no host".into());
        }
        Ok(AllowedHosts(hosts))
    }

    /// The setting of the environment (`None` when unset or empty).
    pub fn from_env() -> Option<Result<AllowedHosts, String>> {
        std::env::var("ALLOWED_DB_HOSTS")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|raw| AllowedHosts::parse(&raw))
    }

    /// The first pattern that allows `host`.
    pub fn matching(&self, host: &str) -> Option<&str> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.0
            .iter()
            .find(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                None => **pattern == host,
            })
            .map(String::as_str)
    }

    pub fn patterns(&self) -> String {
        self.0.join(",")
    }
}

/// Whether `SINGLE_USER_MASTER_FALLBACK` turns the single-user master fallback on (default
/// off), with the spellings the other booleans accept.
pub fn master_fallback_from_env() -> bool {
    std::env::var("SINGLE_USER_MASTER_FALLBACK").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "true" | "1" | "yes" | "y"
        )
    })
}

/// Who vouches for the host the master password would go to, or why nobody does.
pub fn vouch(
    master_host: Option<&str>,
    user_host: &str,
    allowed: Option<&AllowedHosts>,
) -> Result<String, String> {
    match (master_host, allowed) {
        (Some(host), _) if host.eq_ignore_ascii_case(user_host) => {
            Ok(format!("the master secret's own host {host:?}"))
        }
        (Some(host), _) => Err(format!(
            "the master secret names host {host:?} but the user's secret names {user_host:?}"
        )),
        (None, Some(allowed)) => match allowed.matching(user_host) {
            Some(pattern) => Ok(format!("ALLOWED_DB_HOSTS ({pattern})")),
            None => Err(format!(
                "the master secret has no host and {user_host:?} is not in ALLOWED_DB_HOSTS ({})",
                allowed.patterns()
            )),
        },
        (None, None) => Err(
            "the master secret has no host and ALLOWED_DB_HOSTS is not set, so no host is vouched for"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_names_and_suffixes_case_insensitively() {
        let allowed = AllowedHosts::parse("db.internal, *.rds.amazonaws.com").unwrap();
        assert_eq!(allowed.matching("DB.internal"), Some("db.internal"));
        assert_eq!(
            allowed.matching("x.abc.eu-west-1.rds.amazonaws.com"),
            Some("*.rds.amazonaws.com")
        );
        assert_eq!(allowed.matching("rds.amazonaws.com"), None);
        assert_eq!(allowed.matching("evilrds.amazonaws.com"), None);
        assert_eq!(allowed.matching("db.internal.evil"), None);
    }

    #[test]
    fn bad_patterns_are_refused() {
        for raw in ["*", "a.*.b", " , ", "*."] {
            assert!(AllowedHosts::parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn the_master_host_is_vouched_by_the_master_secret_or_the_allow_list() {
        let allowed = AllowedHosts::parse("*.example.com").unwrap();
        assert!(vouch(Some("db.example.com"), "DB.example.com", None).is_ok());
        assert!(vouch(Some("other"), "db.example.com", Some(&allowed)).is_err());
        assert!(vouch(None, "db.example.com", Some(&allowed)).is_ok());
        assert!(vouch(None, "db.elsewhere", Some(&allowed)).is_err());
        let err = vouch(None, "db.example.com", None).unwrap_err();
        assert!(err.contains("ALLOWED_DB_HOSTS"), "{err}");
    }
}
