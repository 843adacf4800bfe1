//! `ALLOWED_DB_HOSTS`: the host names the function may connect to, parsed once at start-up
//! (exact names and `*.suffix` patterns) and matched case-insensitively against the `host`
//! of every secret before any connection.

use std::fmt;

/// The variable this list comes from, for messages.
pub const VARIABLE: &str = "ALLOWED_DB_HOSTS";

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// This host name only (stored in lower case, without a trailing dot).
    Exact(String),
    /// Any host name ending in `.suffix` with at least one more label; never the bare suffix.
    Suffix(String),
}

/// The parsed `ALLOWED_DB_HOSTS`: never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    patterns: Vec<HostPattern>,
}

/// Lower case, one trailing dot removed (`db.example.com.` names the same host).
fn normalise(host: &str) -> String {
    let host = host.trim();
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// A host name or IP address literal: labels of letters, digits, `-` and `_` separated by
/// single dots, or an IPv6 literal (hex digits, `:` and `.`).
fn is_host_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    if name.contains(':') {
        return name
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

impl AllowedHosts {
    /// Parses the comma-separated list. Blank entries are ignored; a malformed entry, or a
    /// list with no entry at all, is an error naming the variable and the entry.
    pub fn parse(raw: &str) -> Result<AllowedHosts, String> {
        let mut patterns = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |why: &str| {
                format!(
                    "{VARIABLE} entry {entry:?} {why}: each entry is a host name (db.example.com) or *. followed by a domain (*.example.com), separated by commas"
                )
            };
            let pattern = match entry.strip_prefix("*.") {
                Some(suffix) => {
                    let suffix = normalise(suffix);
                    if suffix.is_empty() {
                        return Err(bad("has no domain after *."));
                    }
                    if suffix.contains(':') || !is_host_name(&suffix) {
                        return Err(bad("is not a wildcard over a domain name"));
                    }
                    HostPattern::Suffix(suffix)
                }
                None if entry.contains('*') => {
                    return Err(bad(
                        "uses * other than as a whole first label (*.example.com)",
                    ));
                }
                None => {
                    let name = normalise(entry);
                    if !is_host_name(&name) {
                        return Err(bad("is not a host name"));
                    }
                    HostPattern::Exact(name)
                }
            };
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
        if patterns.is_empty() {
            return Err(format!(
                "{VARIABLE} lists no host name: give the database host names (comma-separated, exact or *.suffix), or leave it unset"
            ));
        }
        Ok(AllowedHosts { patterns })
    }

    /// Whether the function may connect to `host`.
    pub fn allows(&self, host: &str) -> bool {
        self.matching(host).is_some()
    }

    /// The entry that allows `host` (as written in the list, normalised), if any.
    pub fn matching(&self, host: &str) -> Option<String> {
        let host = normalise(host);
        if !is_host_name(&host) {
            return None;
        }
        self.patterns
            .iter()
            .find(|pattern| match pattern {
                HostPattern::Exact(name) => host == **name,
                HostPattern::Suffix(suffix) => host
                    .strip_suffix(suffix.as_str())
                    .and_then(|prefix| prefix.strip_suffix('.'))
                    .is_some_and(|prefix| !prefix.is_empty()),
            })
            .map(|pattern| match pattern {
                HostPattern::Exact(name) => name.clone(),
                HostPattern::Suffix(suffix) => format!("*.{suffix}"),
            })
    }
}

impl fmt::Display for AllowedHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pattern) in self.patterns.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match pattern {
                HostPattern::Exact(name) => f.write_str(name)?,
                HostPattern::Suffix(suffix) => write!(f, "*.{suffix}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(raw: &str) -> AllowedHosts {
        AllowedHosts::parse(raw).unwrap()
    }

    #[test]
    fn matching_names_the_entry_that_allows_the_host() {
        let allowed = hosts("db.internal, *.rds.amazonaws.com");
        assert_eq!(
            allowed.matching("DB.internal.").as_deref(),
            Some("db.internal")
        );
        assert_eq!(
            allowed
                .matching("x.abc.eu-west-1.rds.amazonaws.com")
                .as_deref(),
            Some("*.rds.amazonaws.com")
        );
        assert_eq!(allowed.matching("rds.amazonaws.com"), None);
        assert_eq!(allowed.matching("evilrds.amazonaws.com"), None);
    }

    #[test]
    fn exact_entries_match_only_that_host_in_any_case() {
        let list = hosts("db.example.com, LOCALHOST");
        assert!(list.allows("db.example.com"));
        assert!(list.allows("DB.Example.COM"));
        assert!(list.allows("db.example.com."));
        assert!(list.allows("localhost"));
        assert!(!list.allows("example.com"));
        assert!(!list.allows("x.db.example.com"));
        assert!(!list.allows("db.example.com.evil.net"));
        assert!(!list.allows("evildb.example.com"));
        assert!(!list.allows("127.0.0.1"));
    }

    #[test]
    fn a_wildcard_matches_subdomains_but_not_the_bare_suffix() {
        let list = hosts("*.rds.amazonaws.com");
        assert!(list.allows("mydb.abc123.eu-west-1.rds.amazonaws.com"));
        assert!(list.allows("x.rds.amazonaws.com"));
        assert!(list.allows("X.RDS.AmazonAWS.com"));
        assert!(!list.allows("rds.amazonaws.com"));
        assert!(!list.allows(".rds.amazonaws.com"));
        assert!(!list.allows("a..rds.amazonaws.com"));
        assert!(!list.allows("evilrds.amazonaws.com"));
        assert!(!list.allows("x.rds.amazonaws.com.evil.net"));
        assert!(!list.allows("x.rds.amazonaws.co"));
    }

    #[test]
    fn blank_entries_are_ignored_and_duplicates_kept_once() {
        let list = hosts(" ,db.internal,, *.example.com ,db.internal,");
        assert_eq!(list.to_string(), "db.internal,*.example.com");
    }

    #[test]
    fn ip_literals_are_exact_entries() {
        let list = hosts("10.0.0.5,::1");
        assert!(list.allows("10.0.0.5"));
        assert!(list.allows("::1"));
        assert!(!list.allows("10.0.0.50"));
    }

    #[test]
    fn malformed_entries_fail_naming_the_variable_and_the_entry() {
        for raw in [
            "*",
            "*.",
            "*.*.example.com",
            "db*.example.com",
            "*example.com",
            "db .example.com",
            "db.example.com/24",
            "https://db.example.com",
            "db..example.com",
            ".example.com",
            "*..example.com",
            "ünï.example.com",
            " , ,",
        ] {
            let err = AllowedHosts::parse(raw).unwrap_err();
            assert!(err.contains(VARIABLE), "{raw:?}: {err}");
            let first = raw.split(',').map(str::trim).find(|e| !e.is_empty());
            if let Some(entry) = first {
                assert!(err.contains(entry), "{raw:?}: {err}");
            }
        }
    }

    #[test]
    fn hosts_that_are_not_host_names_never_match() {
        let list = hosts("*.example.com,db.internal");
        for host in [
            "",
            " ",
            "a b.example.com",
            "x.example.com/evil",
            "db.internal:5432",
        ] {
            assert!(!list.allows(host), "{host:?}");
        }
    }
}
