//! The end-to-end tests' world: a fresh database per test, its users and secrets, and the
//! checks every finished or refused rotation must pass.

use std::collections::BTreeMap;

use pgrotate::Strategy;
use serde_json::{Value, json};

use super::driver::{
    Driver, Labels, Login, StepFailure, app_read_write, deployment, login, random_password,
};
use super::lambda::{Lambda, Outcome};
use super::{Stack, unique};

pub const FUNCTION: &str = "pgrotate-e2e";

/// One test's world: the stack, an admin driver, a fresh migrated database.
pub struct World {
    pub stack: Stack,
    pub driver: Driver,
    pub db: String,
}

impl World {
    pub async fn new(function_name: &str) -> World {
        let stack = Stack::get();
        let driver = Driver::new(&stack.sm_endpoint, function_name).await;
        let db = stack.fresh_database().await;
        World { stack, driver, db }
    }

    pub async fn lambda(&self, strategy: Strategy) -> Lambda {
        Lambda::start(deployment(&self.stack, strategy, FUNCTION)).await
    }

    /// The JSON of a user secret for this world's database (an extra field included, which
    /// every rotation must carry along).
    pub fn user_json(&self, user: &str, password: &str, master_arn: Option<&str>) -> Value {
        let mut v = json!({
            "engine": "postgres",
            "host": self.stack.host,
            "username": user,
            "password": password,
            "dbname": self.db,
            "port": self.stack.port,
            "team": "e2e",
        });
        if let Some(arn) = master_arn {
            v["masterarn"] = json!(arn);
        }
        v
    }

    /// An RDS-style master secret (only username and password) for the stack's superuser.
    pub async fn master_secret(&self, kms: Option<&str>) -> String {
        let value = json!({
            "username": self.stack.admin_user,
            "password": self.stack.admin_password,
        });
        self.driver
            .create_secret(&unique("e2e/master"), &value.to_string(), kms)
            .await
    }

    /// A new application user (member of app_rw) and its secret. Returns (ARN, user name).
    pub async fn user_secret(&self, strategy: Strategy, kms: Option<&str>) -> (String, String) {
        self.user_secret_with_master(strategy, kms, None).await
    }

    pub async fn user_secret_with_master(
        &self,
        strategy: Strategy,
        kms: Option<&str>,
        master_kms: Option<&str>,
    ) -> (String, String) {
        let user = unique("e2e");
        let password = random_password();
        self.stack.create_app_user(&user, &password).await;
        let master = match strategy {
            Strategy::SingleUser => None,
            Strategy::AlternatingUsers => Some(self.master_secret(master_kms).await),
        };
        let value = self.user_json(&user, &password, master.as_deref());
        let arn = self
            .driver
            .create_secret(&unique("e2e/app"), &value.to_string(), kms)
            .await;
        (arn, user)
    }

    pub async fn current(&self, arn: &str) -> Value {
        self.driver.json(arn, "AWSCURRENT").await
    }
}

/// The labelled versions of `arn` whose credentials log in now (checked with the stack
/// directly, whatever the function's endpoints).
pub async fn working_labels(world: &World, arn: &str) -> Vec<&'static str> {
    let mut working = Vec::new();
    for stage in ["AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"] {
        if let Some(raw) = world.driver.value(arn, stage).await {
            let value: Value = serde_json::from_str(&raw).expect("a JSON secret");
            if matches!(login(&world.stack, &value).await, Login::Ok(_)) {
                working.push(stage);
            }
        }
    }
    working
}

pub fn alternate(user: &str) -> String {
    match user.strip_suffix("_clone") {
        Some(primary) => primary.to_string(),
        None => format!("{user}_clone"),
    }
}

pub fn str_field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} missing in a secret"))
}

/// What a secret looked like before a rotation.
pub struct Before {
    pub value: Value,
    pub labels: Labels,
    /// The AWSCURRENT value before the previous rotation (alternating users: same user as
    /// the new current one, with the password that must now be dead).
    pub older: Option<Value>,
}

impl Before {
    pub async fn take(world: &World, arn: &str, older: Option<Value>) -> Before {
        Before {
            value: world.current(arn).await,
            labels: world.driver.labels(arn).await,
            older,
        }
    }

    pub fn current_version(&self) -> &str {
        self.labels
            .iter()
            .find(|(_, s)| s.iter().any(|s| s == "AWSCURRENT"))
            .map(|(id, _)| id.as_str())
            .expect("a version holds AWSCURRENT")
    }
}

/// Everything a finished rotation must leave behind. Returns the new AWSCURRENT value.
pub async fn check_rotated(
    world: &World,
    arn: &str,
    strategy: Strategy,
    token: &str,
    before: &Before,
    context: &str,
) -> Value {
    let labels = world.driver.labels(arn).await;
    let expected: Labels = BTreeMap::from([
        (token.to_string(), vec!["AWSCURRENT".to_string()]),
        (
            before.current_version().to_string(),
            vec!["AWSPREVIOUS".to_string()],
        ),
    ]);
    assert_eq!(labels, expected, "{context}: labels after the rotation");

    let current = world.current(arn).await;
    let previous = world.driver.json(arn, "AWSPREVIOUS").await;
    assert_eq!(
        previous, before.value,
        "{context}: AWSPREVIOUS holds the previous value"
    );

    // Every field but the credentials carried over, in order.
    let strip = |v: &Value| {
        let mut v = v.clone();
        let map = v.as_object_mut().expect("an object");
        map.insert("username".into(), Value::Null);
        map.insert("password".into(), Value::Null);
        serde_json::to_string(&v).expect("serialises")
    };
    assert_eq!(
        strip(&current),
        strip(&before.value),
        "{context}: fields other than username and password are kept, in order"
    );
    assert_ne!(
        current["password"], before.value["password"],
        "{context}: a new password"
    );
    let old_user = str_field(&before.value, "username");
    let new_user = str_field(&current, "username");
    match strategy {
        Strategy::SingleUser => assert_eq!(new_user, old_user, "{context}: same user"),
        Strategy::AlternatingUsers => {
            assert_eq!(new_user, alternate(old_user), "{context}: the other user")
        }
    }

    assert_eq!(
        login(&world.stack, &current).await,
        Login::Ok(new_user.to_string()),
        "{context}: AWSCURRENT logs in"
    );
    app_read_write(&world.stack, &current)
        .await
        .unwrap_or_else(|e| panic!("{context}: AWSCURRENT reads and writes app tables: {e}"));

    match strategy {
        Strategy::SingleUser => assert_eq!(
            login(&world.stack, &before.value).await,
            Login::Refused,
            "{context}: single user: the old password is rejected"
        ),
        Strategy::AlternatingUsers => {
            assert_eq!(
                login(&world.stack, &before.value).await,
                Login::Ok(old_user.to_string()),
                "{context}: alternating: the previous user still logs in"
            );
            app_read_write(&world.stack, &before.value)
                .await
                .unwrap_or_else(|e| {
                    panic!("{context}: the previous user still reads and writes: {e}")
                });
            if let Some(older) = &before.older {
                assert_eq!(
                    str_field(older, "username"),
                    new_user,
                    "{context}: two rotations ago the current user was the same"
                );
                assert_eq!(
                    login(&world.stack, older).await,
                    Login::Refused,
                    "{context}: alternating: the credentials from two rotations ago are dead"
                );
            }
        }
    }
    current
}

/// No secret value in the function's logs or in the PostgreSQL server log.
///
/// - function logs (TRACE): no password of any version (initial ones and the master's
///   included), no SCRAM verifier, no RotationToken, no secret JSON;
/// - server log (`log_statement=all`): no password the function set, no RotationToken, no
///   secret JSON. (The initial passwords are set by the tests' own `CREATE ROLE` in
///   plaintext; the function's password changes are sent as SCRAM verifiers.)
pub fn assert_logs_clean(
    stack: &Stack,
    function_logs: &str,
    values: &[Value],
    new_values: &[Value],
    rotation_tokens: &[&str],
) {
    assert!(
        function_logs.contains("rotation step"),
        "the function logged its steps:\n{function_logs}"
    );
    assert!(
        function_logs.contains("TRACE") || function_logs.contains("DEBUG"),
        "the function ran at its most verbose level:\n{function_logs}"
    );
    let pg_log = stack.pg_log_text();
    assert!(
        !pg_log.is_empty(),
        "the server log {} is readable",
        stack.pg_log.display()
    );
    let secret_json_markers = [
        "\"password\":",
        "\"password\" :",
        "\"engine\":\"",
        "\"masterarn\":",
    ];
    for marker in secret_json_markers {
        assert!(
            !function_logs.contains(marker),
            "function logs hold secret JSON ({marker}):\n{function_logs}"
        );
    }
    assert!(
        !function_logs.contains("SCRAM-SHA-256$"),
        "function logs hold a SCRAM verifier:\n{function_logs}"
    );
    for value in values {
        let password = str_field(value, "password");
        assert!(
            !function_logs.contains(password),
            "function logs hold a password:\n{function_logs}"
        );
        assert!(
            !function_logs.contains(&value.to_string()),
            "function logs hold a secret value"
        );
        assert!(
            !pg_log.contains(&value.to_string()),
            "the server log holds a secret value"
        );
    }
    for value in new_values {
        let password = str_field(value, "password");
        assert!(
            !pg_log.contains(password),
            "the server log {} holds a password the function set",
            stack.pg_log.display()
        );
    }
    for rt in rotation_tokens {
        assert!(
            !function_logs.contains(rt),
            "function logs hold the RotationToken"
        );
        assert!(
            !pg_log.contains(rt),
            "the server log holds the RotationToken"
        );
    }
}

/// Every password change the function made for `users` reached the server as a SCRAM-SHA-256
/// verifier (`ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$4096:...'`), never as plaintext. With
/// `log_statement=all` the server logs that statement, verifier included: PostgreSQL offers
/// a non-superuser no way to keep its own `ALTER ROLE` out of the log.
pub fn assert_changes_sent_as_verifiers(stack: &Stack, users: &[&str]) {
    let pg_log = stack.pg_log_text();
    for user in users {
        let role = pgrotate::db::sql::quote_ident(user);
        let changes: Vec<&str> = pg_log
            .lines()
            .filter(|l| {
                l.contains(&format!("ALTER ROLE {role} PASSWORD "))
                    || l.contains(&format!("ROLE {role} WITH LOGIN PASSWORD "))
            })
            .collect();
        assert!(
            !changes.is_empty(),
            "no password change of {user} in the server log"
        );
        for line in changes {
            assert!(
                line.contains("PASSWORD 'SCRAM-SHA-256$4096:"),
                "a password change of {user} not sent as a SCRAM verifier"
            );
        }
    }
}

/// Asserts that an invocation failed with `error_type` and a message holding every fragment.
pub fn assert_failed(outcome: &Outcome, error_type: &str, fragments: &[&str], case: &str) {
    match outcome {
        Ok(v) => panic!("{case}: expected {error_type}, the invocation succeeded ({v})"),
        Err((t, m)) => {
            assert_eq!(t, error_type, "{case}: errorType (message: {m})");
            for f in fragments {
                assert!(
                    m.contains(f),
                    "{case}: errorMessage {m:?} should mention {f:?}"
                );
            }
        }
    }
}

/// Same for a failed rotation: the step it stopped at, errorType and message.
pub fn assert_step_failed(
    result: &Result<(), StepFailure>,
    step: &str,
    error_type: &str,
    fragments: &[&str],
    case: &str,
) {
    match result {
        Ok(()) => {
            panic!("{case}: expected {step} to fail with {error_type}, the rotation succeeded")
        }
        Err(failure) => {
            assert_eq!(failure.step, step, "{case}: the failing step ({failure})");
            assert_failed(
                &Err((failure.error_type.clone(), failure.error_message.clone())),
                error_type,
                fragments,
                case,
            );
        }
    }
}
