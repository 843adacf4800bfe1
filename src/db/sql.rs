//! Pure SQL builders: quoting, the password statements (SCRAM verifiers only), the copy of a
//! role's settings, and the plan of statements that keeps the alternating pair equivalent.
//! Nothing here talks to a server, so every statement is unit-tested as text.

use postgres_protocol::escape::{escape_identifier, escape_literal};
use secrecy::{ExposeSecret, SecretString};

use crate::secret::RoleName;

/// Quotes a PostgreSQL identifier: any character but NUL, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    escape_identifier(name)
}

/// Quotes a string literal so it reads the same whatever `standard_conforming_strings` is
/// (a value with backslashes becomes ` E'...'`, with a leading space).
pub fn quote_literal(value: &str) -> String {
    escape_literal(value)
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (random salt, 4096
/// iterations). Sending this instead of the password keeps the plaintext out of server logs.
pub fn scram_verifier(password: &SecretString) -> SecretString {
    SecretString::from(postgres_protocol::password::scram_sha_256(
        password.expose_secret().as_bytes(),
    ))
}

/// `ALTER ROLE name PASSWORD 'verifier'`.
pub fn alter_password_sql(user: &RoleName, verifier: &SecretString) -> SecretString {
    SecretString::from(format!(
        "ALTER ROLE {} PASSWORD {}",
        user.quoted(),
        quote_literal(verifier.expose_secret())
    ))
}

/// `CREATE ROLE name WITH LOGIN PASSWORD 'verifier'` or, for an existing role,
/// `ALTER ROLE name WITH LOGIN PASSWORD 'verifier'`.
pub fn login_password_sql(user: &RoleName, exists: bool, verifier: &SecretString) -> SecretString {
    let verb = if exists { "ALTER" } else { "CREATE" };
    SecretString::from(format!(
        "{verb} ROLE {} WITH LOGIN PASSWORD {}",
        user.quoted(),
        quote_literal(verifier.expose_secret())
    ))
}

/// Settings whose values pg_dump splits into a list of literals (`GUC_LIST_QUOTE`); any
/// other value is restored as one literal.
const LIST_QUOTED_SETTINGS: [&str; 6] = [
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// Splits a stored list setting (`"$user", public`) into its elements, as PostgreSQL's
/// SplitGUCList does.
fn split_setting_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        item.push('"');
                    } else {
                        break;
                    }
                } else {
                    item.push(c);
                }
            }
            while chars.peek().is_some_and(|c| *c != ',') {
                chars.next();
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                item.push(c);
                chars.next();
            }
            item = item.trim_end().to_string();
        }
        items.push(item);
        if chars.next().is_none() {
            break;
        }
    }
    items
}

/// `ALTER ROLE role SET name TO value` for one `name=value` entry of `pg_db_role_setting`.
pub fn set_role_setting_sql(role: &RoleName, entry: &str) -> Option<String> {
    let (name, value) = entry.split_once('=')?;
    let quoted_name = name
        .split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".");
    let value = if LIST_QUOTED_SETTINGS.contains(&name) {
        split_setting_list(value)
            .iter()
            .map(|item| quote_literal(item))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        quote_literal(value)
    };
    Some(format!(
        "ALTER ROLE {} SET {quoted_name} TO {value}",
        role.quoted()
    ))
}

/// What the master user reads before keeping the pair equivalent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairState {
    /// The primary is a member of the clone: the circular grant the reference function may
    /// have left, which PostgreSQL refuses to complete the other way round.
    pub primary_in_clone: bool,
    /// The clone is already a member of the primary.
    pub clone_in_primary: bool,
    /// The primary's per-role settings (`name=value`, from `pg_db_role_setting`).
    pub primary_settings: Vec<String>,
}

/// The statements that make the clone equivalent to the primary, run after the password
/// statement in the same transaction: membership (never circular), the primary's settings,
/// and (when `clone_default_role`) the primary as the clone's default role.
pub fn pair_statements(
    primary: &RoleName,
    clone: &RoleName,
    state: &PairState,
    clone_default_role: bool,
) -> Vec<String> {
    let (p, c) = (primary.quoted(), clone.quoted());
    let mut plan = Vec::new();
    if state.primary_in_clone {
        plan.push(format!("REVOKE {c} FROM {p}"));
    }
    if !state.clone_in_primary {
        plan.push(format!("GRANT {p} TO {c}"));
    }
    plan.push(format!("ALTER ROLE {c} RESET ALL"));
    plan.extend(
        state
            .primary_settings
            .iter()
            .filter(|entry| !entry.starts_with("role="))
            .filter_map(|entry| set_role_setting_sql(clone, entry)),
    );
    if clone_default_role {
        plan.push(format!(
            "ALTER ROLE {c} SET role TO {}",
            quote_literal(primary.as_str())
        ));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> RoleName {
        RoleName::parse(name).unwrap()
    }

    #[test]
    fn identifiers_are_quoted_with_inner_quotes_doubled() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("We \"R\" users"), "\"We \"\"R\"\" users\"");
        assert_eq!(quote_ident("ünï"), "\"ünï\"");
    }

    #[test]
    fn literals_survive_quotes_and_backslashes() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'c"), " E'a\\\\b''c'");
    }

    #[test]
    fn verifier_is_scram_and_never_contains_the_password() {
        let password = SecretString::from("correct horse battery staple".to_string());
        let verifier = scram_verifier(&password);
        let v = verifier.expose_secret();
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(!v.contains("correct horse"));
        assert_ne!(
            v,
            scram_verifier(&password).expose_secret(),
            "salt must be random"
        );
    }

    #[test]
    fn password_statements_quote_the_role_and_carry_only_the_verifier() {
        let verifier = SecretString::from("SCRAM-SHA-256$4096:abc".to_string());
        let user = role("app \"x\"");
        assert_eq!(
            alter_password_sql(&user, &verifier).expose_secret(),
            "ALTER ROLE \"app \"\"x\"\"\" PASSWORD 'SCRAM-SHA-256$4096:abc'"
        );
        assert_eq!(
            login_password_sql(&user, false, &verifier).expose_secret(),
            "CREATE ROLE \"app \"\"x\"\"\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:abc'"
        );
        assert_eq!(
            login_password_sql(&user, true, &verifier).expose_secret(),
            "ALTER ROLE \"app \"\"x\"\"\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:abc'"
        );
    }

    #[test]
    fn list_settings_are_split_into_literals_and_others_kept_whole() {
        assert_eq!(
            set_role_setting_sql(
                &role("u_clone"),
                "search_path=\"$user\", public, \"My Schema\""
            )
            .unwrap(),
            "ALTER ROLE \"u_clone\" SET \"search_path\" TO '$user', 'public', 'My Schema'"
        );
        assert_eq!(
            set_role_setting_sql(&role("u"), "statement_timeout=5s").unwrap(),
            "ALTER ROLE \"u\" SET \"statement_timeout\" TO '5s'"
        );
        assert_eq!(
            set_role_setting_sql(&role("u"), "DateStyle=ISO, MDY").unwrap(),
            "ALTER ROLE \"u\" SET \"DateStyle\" TO 'ISO, MDY'"
        );
        assert_eq!(
            set_role_setting_sql(&role("u"), "myext.flag=it's").unwrap(),
            "ALTER ROLE \"u\" SET \"myext\".\"flag\" TO 'it''s'"
        );
    }

    #[test]
    fn pair_plan_repairs_a_circular_grant_and_copies_settings_but_not_the_default_role() {
        let state = PairState {
            primary_in_clone: true,
            clone_in_primary: false,
            primary_settings: vec!["statement_timeout=5s".into(), "role=other".into()],
        };
        assert_eq!(
            pair_statements(&role("app"), &role("app_clone"), &state, true),
            [
                "REVOKE \"app_clone\" FROM \"app\"",
                "GRANT \"app\" TO \"app_clone\"",
                "ALTER ROLE \"app_clone\" RESET ALL",
                "ALTER ROLE \"app_clone\" SET \"statement_timeout\" TO '5s'",
                "ALTER ROLE \"app_clone\" SET role TO 'app'",
            ]
        );
    }

    #[test]
    fn pair_plan_of_an_equivalent_pair_only_resets_settings() {
        let state = PairState {
            primary_in_clone: false,
            clone_in_primary: true,
            primary_settings: vec![],
        };
        assert_eq!(
            pair_statements(&role("app"), &role("app_clone"), &state, false),
            ["ALTER ROLE \"app_clone\" RESET ALL"]
        );
    }
}
