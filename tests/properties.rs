//! Property tests over hostile input: the secret and event parsers never panic on anything,
//! the password generator always meets its configuration, and any role name PostgreSQL
//! accepts round-trips through create, alter and mirror on the real server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Stack, role};
use pgrotate::RotationEvent;
use pgrotate::db::sql::quote_ident;
use pgrotate::db::{AlternateChange, Database, DbLogin};
use pgrotate::password::{PUNCTUATION, PasswordPolicy, PasswordSettings};
use pgrotate::secret::{DbSecret, MasterSecret, RoleName};
use proptest::prelude::*;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

/// Any JSON value, nested a few levels, with the secret's field names likely as keys.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        Just(Value::String("postgres".into())),
        (0u32..70_000).prop_map(|p| Value::String(p.to_string())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "engine",
            "host",
            "username",
            "password",
            "port",
            "dbname",
            "ssl",
            "masterarn",
            "SecretId",
            "ClientRequestToken",
            "Step",
            "RotationToken",
        ])
        .prop_map(str::to_string),
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn the_secret_parsers_never_panic_on_any_json(value in json()) {
        let raw = SecretString::from(value.to_string());
        let _ = DbSecret::parse(&raw);
        let _ = MasterSecret::parse(&raw);
    }

    #[test]
    fn the_secret_parsers_never_panic_on_any_text(text in any::<String>()) {
        let raw = SecretString::from(text);
        let _ = DbSecret::parse(&raw);
        let _ = MasterSecret::parse(&raw);
    }

    #[test]
    fn the_event_parser_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            let _ = RotationEvent::from_json(&value);
        }
    }

    #[test]
    fn the_event_parser_never_panics_on_any_json(value in json()) {
        let _ = RotationEvent::from_json(&value);
    }

    #[test]
    fn a_parsed_secret_error_never_contains_the_password(value in json(), password in "[a-zA-Z0-9]{12,20}") {
        let mut value = value;
        if let Value::Object(map) = &mut value {
            map.insert("password".into(), Value::String(password.clone()));
        }
        if let Err(problem) = DbSecret::parse(&SecretString::from(value.to_string())) {
            prop_assert!(!problem.contains(&password), "{problem}");
        }
    }

    #[test]
    fn generated_passwords_always_satisfy_their_configuration(
        length in 1usize..200,
        exclude in prop::collection::vec(any::<char>(), 0..12),
        exclude_numbers in any::<bool>(),
        exclude_punctuation in any::<bool>(),
        exclude_uppercase in any::<bool>(),
        exclude_lowercase in any::<bool>(),
        require_each in any::<bool>(),
    ) {
        let exclude_characters: String = exclude.into_iter().collect();
        let settings = PasswordSettings {
            length,
            exclude_characters: exclude_characters.clone(),
            exclude_numbers,
            exclude_punctuation,
            exclude_uppercase,
            exclude_lowercase,
            require_each_included_type: require_each,
        };
        let Ok(policy) = PasswordPolicy::new(&settings) else {
            return Ok(());
        };
        let password = policy.generate().unwrap();
        let chars: Vec<char> = password.expose_secret().chars().collect();
        prop_assert_eq!(chars.len(), length);
        for c in &chars {
            prop_assert!(!exclude_characters.contains(*c));
            prop_assert!(!(exclude_numbers && c.is_ascii_digit()));
            prop_assert!(!(exclude_punctuation && PUNCTUATION.contains(*c)));
            prop_assert!(!(exclude_uppercase && c.is_ascii_uppercase()));
            prop_assert!(!(exclude_lowercase && c.is_ascii_lowercase()));
            prop_assert!(policy.alphabet().contains(c));
        }
        if require_each {
            let classes: [fn(&char) -> bool; 4] = [
                |c| c.is_ascii_digit(),
                |c| PUNCTUATION.contains(*c),
                |c| c.is_ascii_uppercase(),
                |c| c.is_ascii_lowercase(),
            ];
            for class in classes {
                if policy.alphabet().iter().any(class) {
                    prop_assert!(chars.iter().any(class), "a required class is missing");
                }
            }
        }
    }
}

/// A role name PostgreSQL accepts, at most 57 bytes so its clone fits in 63: any character
/// but NUL, with quotes, spaces, backslashes and non-ASCII letters likely.
fn role_name() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        prop::sample::select(vec![
            '"', '\'', ' ', '\\', ';', '$', '-', 'é', 'Ω', '字', '🦀', 'A'
        ]),
        any::<char>().prop_filter("no NUL", |c| *c != '\0'),
    ];
    prop::collection::vec(c, 1..20)
        .prop_map(|chars| chars.into_iter().collect::<String>())
        .prop_map(|name| {
            let mut name = name;
            while name.len() > 40 {
                name.pop();
            }
            // Unique per case: roles are cluster-wide and tests run in parallel.
            format!("{name}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
        })
        .prop_filter("not a clone name", |name| !name.ends_with("_clone"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn any_role_name_round_trips_through_create_alter_and_mirror(primary in role_name()) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let stack = Stack::get();
            let clone = format!("{primary}_clone");
            stack
                .exec(
                    "postgres",
                    &format!(
                        "CREATE ROLE {} LOGIN PASSWORD 'primary-pw'; ALTER ROLE {0} SET statement_timeout = '7s'",
                        quote_ident(&primary)
                    ),
                )
                .await;
            let pg = stack.postgres();
            let (p, c) = (role(&primary), role(&clone));
            let change = AlternateChange {
                primary: &p,
                clone: &c,
                target: &c,
                clone_default_role: true,
            };
            // Created, then altered (a second rotation), each time mirrored.
            for password in ["clone-pw-1", "clone-pw-2"] {
                pg.set_alternate_password(
                    &stack.admin_login("postgres"),
                    &change,
                    &SecretString::from(password.to_string()),
                )
                .await
                .unwrap();
                let login = DbLogin {
                    username: RoleName::parse(&clone).unwrap(),
                    ..stack.login("postgres", &clone, password)
                };
                assert_eq!(pg.session_user(&login).await.unwrap(), clone);
            }
            let mut admin = stack.admin("postgres").await;
            let (member, settings): (bool, Vec<String>) = sqlx::query_as(
                "SELECT pg_has_role($2, $1, 'MEMBER'),
                        coalesce((SELECT setconfig FROM pg_db_role_setting s
                                   JOIN pg_roles r ON r.oid = s.setrole
                                  WHERE r.rolname = $2 AND s.setdatabase = 0), '{}')",
            )
            .bind(&primary)
            .bind(&clone)
            .fetch_one(&mut admin)
            .await
            .unwrap();
            assert!(member, "{clone:?} is a member of {primary:?}");
            assert!(settings.contains(&"statement_timeout=7s".to_string()), "{settings:?}");
            let role_setting = format!("role={primary}");
            assert!(settings.contains(&role_setting), "{settings:?}");
            stack
                .exec(
                    "postgres",
                    &format!("DROP ROLE {}; DROP ROLE {}", quote_ident(&clone), quote_ident(&primary)),
                )
                .await;
        });
    }
}
