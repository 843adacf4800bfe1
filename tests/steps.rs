//! Step logic against the in-memory store (real label semantics, counted calls, injected
//! failures) and an in-memory database: every step, both strategies, the checks before every
//! step, retries, and the Secrets Manager call budget.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Mutex;

use pgrotate::db::sql::{
    PairFacts, Privilege, ReachableRole, RoleFacts, master_reset_refusal, pair_refusal,
};
use pgrotate::db::{AlternateChange, Database, DbError, DbFailure, DbLogin};
use pgrotate::secret::RoleName;
use pgrotate::store::StoreErrorKind;
use pgrotate::store::{MemoryStore, Op};
use pgrotate::{Config, Error, RotationEvent, Rotator};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-AbCdEf";
const MASTER_ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:master-XyZ123";
const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];

/// PostgreSQL in a map: users, passwords, memberships, settings.
#[derive(Default)]
struct FakeDb {
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    passwords: HashMap<String, String>,
    /// (role, member)
    members: Vec<(String, String)>,
    default_role: HashMap<String, String>,
    unreachable: bool,
    password_changes: usize,
    /// Roles holding a privileged attribute.
    privileged: HashMap<String, Privilege>,
    /// Every connection attempted: (host, user).
    connections: Vec<(String, String)>,
    /// Every password offered in a login, to prove where a password never went.
    offered: Vec<String>,
}

impl FakeDb {
    fn with_users(users: &[(&str, &str)]) -> FakeDb {
        let db = FakeDb::default();
        for (user, password) in users {
            db.set(user, password);
        }
        db
    }
    fn set(&self, user: &str, password: &str) {
        let mut s = self.state.lock().unwrap();
        s.passwords.insert(user.to_string(), password.to_string());
    }
    fn password(&self, user: &str) -> Option<String> {
        self.state.lock().unwrap().passwords.get(user).cloned()
    }
    fn members(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().members.clone()
    }
    fn grant_privilege(&self, user: &str, privilege: Privilege) {
        let mut s = self.state.lock().unwrap();
        s.privileged.insert(user.to_string(), privilege);
    }
    fn connections(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().connections.clone()
    }
    fn offered(&self) -> Vec<String> {
        self.state.lock().unwrap().offered.clone()
    }
    /// What PostgreSQL's catalogs would tell the master user about `name`.
    fn facts(&self, name: &str, master: &str) -> Option<RoleFacts> {
        let s = self.state.lock().unwrap();
        s.passwords.get(name)?;
        let privilege = s.privileged.get(name).copied();
        Some(RoleFacts {
            name: name.to_string(),
            superuser: privilege == Some(Privilege::Superuser),
            createrole: privilege == Some(Privilege::CreateRole),
            replication: privilege == Some(Privilege::Replication),
            bypassrls: privilege == Some(Privilege::BypassRls),
            is_master: name == master,
            ..RoleFacts::default()
        })
    }
    fn check(&self, login: &DbLogin) -> Result<(), DbError> {
        let mut s = self.state.lock().unwrap();
        s.connections
            .push((login.host.clone(), login.username.to_string()));
        s.offered.push(login.password.expose_secret().to_string());
        if s.unreachable {
            return Err(DbError::new(
                login,
                DbFailure::Unreachable("connection refused".into()),
            ));
        }
        match s.passwords.get(login.username.as_str()) {
            Some(p) if p == login.password.expose_secret() => Ok(()),
            _ => Err(DbError::new(login, DbFailure::AuthFailed)),
        }
    }
}

impl Database for FakeDb {
    async fn can_log_in(&self, login: &DbLogin) -> Result<bool, DbError> {
        match self.check(login) {
            Ok(()) => Ok(true),
            Err(e) if e.is_auth_failure() => Ok(false),
            Err(e) => Err(e),
        }
    }
    async fn session_user(&self, login: &DbLogin) -> Result<String, DbError> {
        self.check(login)?;
        Ok(login.username.to_string())
    }
    async fn set_own_password(&self, login: &DbLogin, new: &SecretString) -> Result<(), DbError> {
        self.check(login)?;
        self.set(login.username.as_str(), new.expose_secret());
        self.state.lock().unwrap().password_changes += 1;
        Ok(())
    }
    async fn set_password_as_master(
        &self,
        master: &DbLogin,
        user: &RoleName,
        new: &SecretString,
    ) -> Result<(), DbError> {
        self.check(master)?;
        // The adapter's decision, from what the catalogs would say.
        let rows: Vec<ReachableRole> = self
            .facts(user.as_str(), master.username.as_str())
            .map(|f| ReachableRole {
                name: f.name,
                is_target: true,
                superuser: f.superuser,
                createrole: f.createrole,
                replication: f.replication,
                bypassrls: f.bypassrls,
                is_master: f.is_master,
                master_admin: true,
            })
            .into_iter()
            .collect();
        if let Some(refusal) = master_reset_refusal(user, &rows) {
            return Err(DbError::new(master, DbFailure::Refused(Box::new(refusal))));
        }
        self.set(user.as_str(), new.expose_secret());
        self.state.lock().unwrap().password_changes += 1;
        Ok(())
    }
    async fn set_alternate_password(
        &self,
        master: &DbLogin,
        change: &AlternateChange<'_>,
        new: &SecretString,
    ) -> Result<(), DbError> {
        self.check(master)?;
        let facts = PairFacts {
            primary: self.facts(change.primary.as_str(), master.username.as_str()),
            clone: self.facts(change.clone.as_str(), master.username.as_str()),
            server_version_num: 150_000,
        };
        if let Some(refusal) = pair_refusal(change.primary, change.target, &facts) {
            return Err(DbError::new(master, DbFailure::Refused(Box::new(refusal))));
        }
        let mut s = self.state.lock().unwrap();
        s.passwords
            .insert(change.target.to_string(), new.expose_secret().into());
        let pair = (change.primary.to_string(), change.clone.to_string());
        if !s.members.contains(&pair) {
            s.members.push(pair);
        }
        if change.clone_default_role {
            s.default_role
                .insert(change.clone.to_string(), change.primary.to_string());
        }
        s.password_changes += 1;
        Ok(())
    }
}

fn user_secret(user: &str, password: &str, master: bool) -> String {
    let mut v = json!({
        "engine": "postgres", "host": "db.internal", "username": user, "password": password,
        "dbname": "appdb", "port": 5432, "team": "payments"
    });
    if master {
        v["masterarn"] = json!(MASTER_ARN);
    }
    v.to_string()
}

/// The deployment these tests run as: `strategy`, the database host allowed (so the
/// RDS-style master secret without a host is vouched for), plus `vars`.
fn config_with(strategy: &str, vars: &[(&str, &str)]) -> Config {
    let mut all: HashMap<String, String> = HashMap::from([
        ("ROTATION_STRATEGY".to_string(), strategy.to_string()),
        ("ALLOWED_DB_HOSTS".to_string(), "db.internal".to_string()),
    ]);
    for (k, v) in vars {
        all.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup(|name| all.get(name).cloned()).unwrap()
}

fn config(strategy: &str) -> Config {
    config_with(strategy, &[])
}

fn event(step: &str, token: &str) -> RotationEvent {
    RotationEvent::from_json(&json!({"SecretId": ARN, "ClientRequestToken": token, "Step": step}))
        .unwrap()
}

fn single_user(users: &[(&str, &str)], master: bool) -> Rotator<MemoryStore, FakeDb> {
    single_user_with(users, master, config("single-user"))
}

fn single_user_with(
    users: &[(&str, &str)],
    master: bool,
    config: Config,
) -> Rotator<MemoryStore, FakeDb> {
    let store = MemoryStore::new();
    store.create_secret(ARN, &user_secret("app", "old-pw", master));
    store.create_secret(
        MASTER_ARN,
        r#"{"username":"postgres","password":"master-pw"}"#,
    );
    Rotator::new(store, FakeDb::with_users(users), config)
}

fn alternating() -> Rotator<MemoryStore, FakeDb> {
    alternating_with(config("alternating-users"))
}

fn alternating_with(config: Config) -> Rotator<MemoryStore, FakeDb> {
    let store = MemoryStore::new();
    store.create_secret(ARN, &user_secret("app", "old-pw", true));
    store.create_secret(
        MASTER_ARN,
        r#"{"username":"postgres","password":"master-pw"}"#,
    );
    let db = FakeDb::with_users(&[("app", "old-pw"), ("postgres", "master-pw")]);
    Rotator::new(store, db, config)
}

/// A fresh rotator for `strategy` whose user "app" logs in with "old-pw".
fn rotator_for(strategy: &str) -> Rotator<MemoryStore, FakeDb> {
    match strategy {
        "single-user" => single_user(&[("app", "old-pw")], false),
        _ => alternating(),
    }
}

fn field(rotator: &Rotator<MemoryStore, FakeDb>, stage: &str, name: &str) -> Value {
    let raw = rotator.store().value(ARN, stage).expect("stage exists");
    serde_json::from_str::<Value>(&raw).unwrap()[name].clone()
}

async fn rotate(rotator: &Rotator<MemoryStore, FakeDb>, token: &str) -> Result<(), Error> {
    rotator.store().start_rotation(ARN, token);
    for step in STEPS {
        rotator.handle(&event(step, token)).await?;
    }
    rotator.store().end_rotation(ARN);
    Ok(())
}

fn count_calls(rotator: &Rotator<MemoryStore, FakeDb>) -> usize {
    let n = rotator.store().calls().len();
    rotator.store().clear_calls();
    n
}

#[tokio::test]
async fn single_user_rotation_changes_the_password_and_moves_the_labels() {
    let r = single_user(&[("app", "old-pw")], false);
    rotate(&r, "t1").await.unwrap();
    let new = field(&r, "AWSCURRENT", "password");
    assert_ne!(new, json!("old-pw"));
    assert_eq!(r.database().password("app").unwrap(), new.as_str().unwrap());
    assert_eq!(field(&r, "AWSPREVIOUS", "password"), json!("old-pw"));
    assert_eq!(field(&r, "AWSCURRENT", "username"), json!("app"));
    assert_eq!(
        field(&r, "AWSCURRENT", "team"),
        json!("payments"),
        "unknown fields are kept"
    );
    assert_eq!(
        r.store().labels(ARN),
        vec![
            ("t1".to_string(), vec!["AWSCURRENT".to_string()]),
            ("v0".to_string(), vec!["AWSPREVIOUS".to_string()])
        ]
    );
}

/// Runs one rotation and returns the Secrets Manager calls each step made.
async fn calls_per_step(r: &Rotator<MemoryStore, FakeDb>) -> Vec<usize> {
    r.store().clear_calls();
    r.store().start_rotation(ARN, "t1");
    let mut per_step = Vec::new();
    for step in STEPS {
        r.handle(&event(step, "t1")).await.unwrap();
        per_step.push(count_calls(r));
    }
    per_step
}

#[tokio::test]
async fn single_user_rotation_makes_eleven_secrets_manager_calls() {
    let per_step = calls_per_step(&rotator_for("single-user")).await;
    assert_eq!(
        per_step,
        vec![4, 3, 2, 2],
        "createSecret, setSecret, testSecret, finishSecret"
    );
    assert_eq!(per_step.iter().sum::<usize>(), 11);
}

#[tokio::test]
async fn alternating_rotation_makes_twelve_secrets_manager_calls() {
    let per_step = calls_per_step(&rotator_for("alternating-users")).await;
    assert_eq!(
        per_step,
        vec![4, 4, 2, 2],
        "createSecret, setSecret, testSecret, finishSecret"
    );
    assert_eq!(per_step.iter().sum::<usize>(), 12);
}

#[tokio::test]
async fn alternating_rotations_switch_between_the_user_and_its_clone() {
    let r = alternating();
    rotate(&r, "t1").await.unwrap();
    assert_eq!(field(&r, "AWSCURRENT", "username"), json!("app_clone"));
    assert_eq!(field(&r, "AWSPREVIOUS", "username"), json!("app"));
    assert_eq!(
        r.database().password("app").unwrap(),
        "old-pw",
        "previous user still logs in"
    );
    assert_eq!(
        r.database().password("app_clone").unwrap(),
        field(&r, "AWSCURRENT", "password").as_str().unwrap()
    );
    assert_eq!(
        r.database().members(),
        vec![("app".to_string(), "app_clone".to_string())]
    );

    rotate(&r, "t2").await.unwrap();
    assert_eq!(field(&r, "AWSCURRENT", "username"), json!("app"));
    assert_eq!(field(&r, "AWSPREVIOUS", "username"), json!("app_clone"));
    assert_ne!(r.database().password("app").unwrap(), "old-pw");
    // The membership always runs clone -> primary, never the circular way round.
    assert_eq!(
        r.database().members(),
        vec![("app".to_string(), "app_clone".to_string())]
    );

    rotate(&r, "t3").await.unwrap();
    assert_eq!(field(&r, "AWSCURRENT", "username"), json!("app_clone"));
}

#[tokio::test]
async fn rotation_disabled_is_refused_and_an_absent_flag_counts_as_enabled() {
    let r = single_user(&[("app", "old-pw")], false);
    r.store().start_rotation(ARN, "t1");
    r.store().set_rotation_enabled(ARN, Some(false));
    let err = r.handle(&event("createSecret", "t1")).await.unwrap_err();
    assert!(matches!(err, Error::RotationDisabled { .. }), "{err}");
    assert_eq!(r.store().value(ARN, "AWSPENDING"), None);

    r.store().set_rotation_enabled(ARN, None);
    r.handle(&event("createSecret", "t1")).await.unwrap();
    assert!(r.store().value(ARN, "AWSPENDING").is_some());
}

#[tokio::test]
async fn a_token_that_is_not_a_version_is_refused() {
    let r = single_user(&[("app", "old-pw")], false);
    let err = r.handle(&event("createSecret", "nope")).await.unwrap_err();
    assert!(matches!(err, Error::UnknownVersion { .. }), "{err}");
    assert!(err.to_string().contains("nope"));
}

#[tokio::test]
async fn a_token_already_current_succeeds_at_every_step_without_further_calls() {
    let r = single_user(&[("app", "old-pw")], false);
    for step in STEPS.iter().chain(["bogusStep"].iter()) {
        r.store().clear_calls();
        r.handle(&event(step, "v0")).await.unwrap();
        assert_eq!(
            r.store().calls(),
            vec![(Op::Describe, ARN.to_string())],
            "{step}"
        );
    }
    assert_eq!(r.database().password("app").unwrap(), "old-pw");
}

#[tokio::test]
async fn a_token_not_pending_is_refused() {
    let r = single_user(&[("app", "old-pw")], false);
    r.store().put_version(
        ARN,
        "t-old",
        &user_secret("app", "x", false),
        &["AWSPREVIOUS"],
    );
    let err = r.handle(&event("setSecret", "t-old")).await.unwrap_err();
    assert!(matches!(err, Error::NotPending { .. }), "{err}");
    assert!(err.to_string().contains("AWSPREVIOUS"), "{err}");
}

#[tokio::test]
async fn an_unknown_step_is_refused_naming_the_four_valid_steps() {
    let r = single_user(&[("app", "old-pw")], false);
    r.store().start_rotation(ARN, "t1");
    let err = r.handle(&event("rotateSecret", "t1")).await.unwrap_err();
    let text = err.to_string();
    for step in STEPS {
        assert!(text.contains(step), "{text}");
    }
}

#[tokio::test]
async fn every_step_run_twice_ends_in_the_same_state_as_once() {
    for strategy in ["single-user", "alternating-users"] {
        let twice = rotator_for(strategy);
        twice.store().start_rotation(ARN, "t1");
        for step in STEPS {
            twice.handle(&event(step, "t1")).await.unwrap();
            twice.handle(&event(step, "t1")).await.unwrap();
        }
        twice.store().end_rotation(ARN);
        let user = field(&twice, "AWSCURRENT", "username");
        let password = field(&twice, "AWSCURRENT", "password");
        assert_eq!(
            twice.database().password(user.as_str().unwrap()).unwrap(),
            password.as_str().unwrap(),
            "{strategy}"
        );
        assert_eq!(
            twice.store().labels(ARN),
            vec![
                ("t1".to_string(), vec!["AWSCURRENT".to_string()]),
                ("v0".to_string(), vec!["AWSPREVIOUS".to_string()])
            ],
            "{strategy}"
        );
    }
}

#[tokio::test]
async fn create_secret_keeps_the_pending_value_on_retry() {
    let r = single_user(&[("app", "old-pw")], false);
    r.store().start_rotation(ARN, "t1");
    r.handle(&event("createSecret", "t1")).await.unwrap();
    let first = r.store().value(ARN, "AWSPENDING").unwrap();
    r.handle(&event("createSecret", "t1")).await.unwrap();
    assert_eq!(r.store().value(ARN, "AWSPENDING").unwrap(), first);
}

#[tokio::test]
async fn create_secret_keeps_every_field_in_order() {
    let r = single_user(&[("app", "old-pw")], false);
    r.store().start_rotation(ARN, "t1");
    r.handle(&event("createSecret", "t1")).await.unwrap();
    let pending: serde_json::Map<String, Value> =
        serde_json::from_str(&r.store().value(ARN, "AWSPENDING").unwrap()).unwrap();
    let keys: Vec<&str> = pending.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "engine", "host", "username", "password", "dbname", "port", "team"
        ]
    );
}

#[tokio::test]
async fn create_secret_passes_the_rotation_token_to_put_secret_value() {
    let r = single_user(&[("app", "old-pw")], false);
    r.store().start_rotation(ARN, "t1");
    let event = RotationEvent::from_json(&json!({
        "SecretId": ARN, "ClientRequestToken": "t1", "Step": "createSecret", "RotationToken": "rt-123"
    }))
    .unwrap();
    r.handle(&event).await.unwrap();
    assert_eq!(r.store().rotation_tokens(), vec!["rt-123".to_string()]);
}

#[tokio::test]
async fn set_secret_is_a_no_op_when_pending_already_logs_in() {
    let r = single_user(&[("app", "old-pw")], false);
    r.store().start_rotation(ARN, "t1");
    r.handle(&event("createSecret", "t1")).await.unwrap();
    r.handle(&event("setSecret", "t1")).await.unwrap();
    let changes = r.database().state.lock().unwrap().password_changes;
    r.handle(&event("setSecret", "t1")).await.unwrap();
    assert_eq!(r.database().state.lock().unwrap().password_changes, changes);
}

#[tokio::test]
async fn set_secret_falls_back_to_awsprevious_read_only_when_current_fails() {
    let r = single_user(&[("app", "prev-pw")], false);
    // AWSCURRENT was changed without the database following: it still has AWSPREVIOUS's
    // password.
    r.store().put_version(
        ARN,
        "v-1",
        &user_secret("app", "prev-pw", false),
        &["AWSPREVIOUS"],
    );
    r.store().start_rotation(ARN, "t1");
    r.handle(&event("createSecret", "t1")).await.unwrap();
    r.store().clear_calls();
    r.handle(&event("setSecret", "t1")).await.unwrap();
    assert_eq!(
        r.store().calls().len(),
        4,
        "AWSPREVIOUS read once, as the fourth call"
    );
    let pending = field(&r, "AWSPENDING", "password");
    assert_eq!(
        r.database().password("app").unwrap(),
        pending.as_str().unwrap()
    );

    // On the normal path AWSPREVIOUS is never read.
    let r = single_user(&[("app", "old-pw")], false);
    r.store().start_rotation(ARN, "t1");
    r.handle(&event("createSecret", "t1")).await.unwrap();
    r.store().clear_calls();
    r.handle(&event("setSecret", "t1")).await.unwrap();
    assert_eq!(r.store().calls().len(), 3);
}

#[tokio::test]
async fn set_secret_uses_the_master_secret_when_no_user_credentials_work_and_the_fallback_is_on() {
    let r = single_user_with(
        &[("app", "lost-pw"), ("postgres", "master-pw")],
        true,
        config_with("single-user", &[("SINGLE_USER_MASTER_FALLBACK", "true")]),
    );
    rotate(&r, "t1").await.unwrap();
    let new = field(&r, "AWSCURRENT", "password");
    assert_eq!(r.database().password("app").unwrap(), new.as_str().unwrap());
}

#[tokio::test]
async fn set_secret_failure_names_the_labels_tried_never_the_values() {
    let r = single_user(&[("app", "lost-pw")], false);
    r.store().put_version(
        ARN,
        "v-1",
        &user_secret("app", "older-pw", false),
        &["AWSPREVIOUS"],
    );
    r.store().start_rotation(ARN, "t1");
    r.handle(&event("createSecret", "t1")).await.unwrap();
    let err = r.handle(&event("setSecret", "t1")).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::NoWorkingCredentials { .. }), "{text}");
    assert!(
        text.contains("AWSCURRENT") && text.contains("AWSPREVIOUS"),
        "{text}"
    );
    let pending = field(&r, "AWSPENDING", "password");
    for secret in ["old-pw", "older-pw", "lost-pw", pending.as_str().unwrap()] {
        assert!(!text.contains(secret), "{text}");
    }
    assert_eq!(
        r.database().password("app").unwrap(),
        "lost-pw",
        "database untouched"
    );
    // The secret is untouched too: AWSCURRENT still holds the old value.
    assert_eq!(field(&r, "AWSCURRENT", "password"), json!("old-pw"));
}

#[tokio::test]
async fn set_secret_refuses_a_pending_secret_for_another_user_or_host() {
    for tampered in [
        user_secret("postgres", "evil", false),
        user_secret("app", "evil", false).replace("db.internal", "other.host"),
        user_secret("app", "evil", false).replace("appdb", "otherdb"),
    ] {
        let r = single_user(&[("app", "old-pw"), ("postgres", "master-pw")], false);
        r.store().start_rotation(ARN, "t1");
        r.store().put_version(ARN, "t1", &tampered, &["AWSPENDING"]);
        let err = r.handle(&event("setSecret", "t1")).await.unwrap_err();
        assert!(matches!(err, Error::PendingMismatch(_)), "{err}");
        assert_eq!(r.database().password("postgres").unwrap(), "master-pw");
        assert_eq!(r.database().password("app").unwrap(), "old-pw");
    }
}

#[tokio::test]
async fn alternating_set_secret_requires_working_current_credentials() {
    let r = alternating();
    r.database().set("app", "changed-behind-our-back");
    r.store().start_rotation(ARN, "t1");
    r.handle(&event("createSecret", "t1")).await.unwrap();
    let err = r.handle(&event("setSecret", "t1")).await.unwrap_err();
    assert!(matches!(err, Error::CurrentDoesNotLogIn { .. }), "{err}");
    assert_eq!(r.database().password("app_clone"), None, "no clone created");
}

#[tokio::test]
async fn alternating_without_masterarn_fails_before_writing_anything() {
    let store = MemoryStore::new();
    store.create_secret(ARN, &user_secret("app", "old-pw", false));
    let r = Rotator::new(
        store,
        FakeDb::with_users(&[("app", "old-pw")]),
        config("alternating-users"),
    );
    r.store().start_rotation(ARN, "t1");
    let err = r.handle(&event("createSecret", "t1")).await.unwrap_err();
    assert!(err.to_string().contains("masterarn"), "{err}");
    assert_eq!(r.store().value(ARN, "AWSPENDING"), None);
}

#[tokio::test]
async fn alternating_with_an_unreadable_master_secret_fails_and_changes_nothing() {
    let store = MemoryStore::new();
    store.create_secret(ARN, &user_secret("app", "old-pw", true));
    let r = Rotator::new(
        store,
        FakeDb::with_users(&[("app", "old-pw")]),
        config("alternating-users"),
    );
    r.store().start_rotation(ARN, "t1");
    r.handle(&event("createSecret", "t1")).await.unwrap();
    let err = r.handle(&event("setSecret", "t1")).await.unwrap_err();
    assert!(matches!(err, Error::MasterSecret { .. }), "{err}");
    assert!(err.to_string().contains(MASTER_ARN), "{err}");
    assert_eq!(r.database().password("app_clone"), None);
}

#[tokio::test]
async fn alternating_refuses_a_master_secret_for_another_host() {
    let r = alternating();
    r.store().put_version(
        MASTER_ARN,
        "m2",
        r#"{"username":"postgres","password":"master-pw","host":"elsewhere"}"#,
        &["AWSCURRENT"],
    );
    r.store().start_rotation(ARN, "t1");
    r.handle(&event("createSecret", "t1")).await.unwrap();
    let err = r.handle(&event("setSecret", "t1")).await.unwrap_err();
    assert!(err.to_string().contains("elsewhere"), "{err}");
}

#[tokio::test]
async fn alternating_refuses_a_user_name_whose_clone_is_too_long() {
    let store = MemoryStore::new();
    let name = "u".repeat(58);
    store.create_secret(ARN, &user_secret(&name, "old-pw", true));
    let r = Rotator::new(store, FakeDb::default(), config("alternating-users"));
    r.store().start_rotation(ARN, "t1");
    let err = r.handle(&event("createSecret", "t1")).await.unwrap_err();
    assert!(matches!(err, Error::CloneNameTooLong { .. }), "{err}");
    assert!(err.to_string().contains("63"), "{err}");
    assert_eq!(r.store().value(ARN, "AWSPENDING"), None);
}

#[tokio::test]
async fn test_secret_fails_when_the_pending_password_does_not_log_in() {
    let r = single_user(&[("app", "old-pw")], false);
    r.store().start_rotation(ARN, "t1");
    r.handle(&event("createSecret", "t1")).await.unwrap();
    let err = r.handle(&event("testSecret", "t1")).await.unwrap_err();
    assert!(matches!(err, Error::PendingDoesNotLogIn { .. }), "{err}");
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_not_a_wrong_password() {
    let r = single_user(&[("app", "old-pw")], true);
    r.store().start_rotation(ARN, "t1");
    r.handle(&event("createSecret", "t1")).await.unwrap();
    r.database().state.lock().unwrap().unreachable = true;
    let err = r.handle(&event("setSecret", "t1")).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("cannot reach"), "{err}");
    r.database().state.lock().unwrap().unreachable = false;
    // A retry finishes the job.
    for step in &STEPS[1..] {
        r.handle(&event(step, "t1")).await.unwrap();
    }
}

#[tokio::test]
async fn a_failure_at_any_secrets_manager_call_is_finished_by_a_retry() {
    for strategy in ["single-user", "alternating-users"] {
        let budget = if strategy == "single-user" { 11 } else { 12 };
        for failing_call in 0..budget {
            let r = rotator_for(strategy);
            // Find the operation of the n-th call of an uninterrupted rotation.
            let probe = rotator_for(strategy);
            rotate(&probe, "t1").await.unwrap();
            let calls = probe.store().calls();
            let op = calls[failing_call].0;
            let skip = calls[..failing_call]
                .iter()
                .filter(|(o, _)| *o == op)
                .count();
            r.store().fail(op, skip, StoreErrorKind::Unreachable);

            r.store().start_rotation(ARN, "t1");
            let mut failed = false;
            for step in STEPS {
                if r.handle(&event(step, "t1")).await.is_err() {
                    failed = true;
                    // Secrets Manager retries the rotation from the failed step.
                    r.handle(&event(step, "t1")).await.unwrap();
                }
            }
            r.store().end_rotation(ARN);
            assert!(
                failed,
                "{strategy}: call {failing_call} ({op:?}) did not fail"
            );
            let user = field(&r, "AWSCURRENT", "username");
            let password = field(&r, "AWSCURRENT", "password");
            assert_eq!(
                r.database().password(user.as_str().unwrap()).as_deref(),
                password.as_str(),
                "{strategy}: after a failure at call {failing_call}"
            );
            assert_eq!(field(&r, "AWSPREVIOUS", "password"), json!("old-pw"));
        }
    }
}

#[tokio::test]
async fn test_secret_alone_checks_the_configuration_when_rotation_is_not_immediate() {
    // RotateSecret with RotateImmediately=false: the pending version is a copy of the current
    // one and only testSecret runs; it must pass and leave labels and passwords alone.
    for strategy in ["single-user", "alternating-users"] {
        let r = rotator_for(strategy);
        let current = r.store().value(ARN, "AWSCURRENT").unwrap();
        r.store().start_rotation(ARN, "t1");
        r.store().put_version(ARN, "t1", &current, &["AWSPENDING"]);
        let labels = r.store().labels(ARN);
        r.handle(&event("testSecret", "t1")).await.unwrap();
        assert_eq!(r.store().labels(ARN), labels, "{strategy}");
        assert_eq!(
            r.database().password("app").unwrap(),
            "old-pw",
            "{strategy}"
        );
        assert_eq!(r.database().state.lock().unwrap().password_changes, 0);
    }
}

// ---- security: ALLOWED_DB_HOSTS, the vouched master host, the master fallback, the pair ----

/// Asserts an error message holds none of the secrets.
fn assert_no_secret(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "a secret in the message: {text}");
    }
}

/// A secret on another host than the one ALLOWED_DB_HOSTS lists.
fn elsewhere(user: &str, password: &str, master: bool) -> String {
    user_secret(user, password, master).replace("db.internal", "evil.example.net")
}

#[tokio::test]
async fn create_secret_refuses_a_host_outside_allowed_db_hosts_before_writing_anything() {
    for strategy in ["single-user", "alternating-users"] {
        let store = MemoryStore::new();
        store.create_secret(ARN, &elsewhere("app", "old-pw", true));
        let r = Rotator::new(
            store,
            FakeDb::with_users(&[("app", "old-pw")]),
            config(strategy),
        );
        r.store().start_rotation(ARN, "t1");
        let err = r.handle(&event("createSecret", "t1")).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::HostNotAllowed { .. }), "{text}");
        assert_eq!(err.kind(), "HostNotAllowed");
        for fragment in [
            "\"evil.example.net\"",
            "AWSCURRENT",
            "ALLOWED_DB_HOSTS",
            "db.internal",
        ] {
            assert!(text.contains(fragment), "{strategy}: {text}");
        }
        assert_no_secret(&text, &["old-pw", "master-pw"]);
        assert_eq!(r.store().value(ARN, "AWSPENDING"), None, "{strategy}");
        assert!(r.database().connections().is_empty(), "{strategy}");
    }
}

#[tokio::test]
async fn allowed_db_hosts_refuses_every_connection_to_another_host_at_every_step() {
    // A secret written before the list was set (or by someone racing it): setSecret and
    // testSecret refuse to connect, for either strategy and whatever the credentials.
    for strategy in ["single-user", "alternating-users"] {
        let r = rotator_for(strategy);
        r.store().start_rotation(ARN, "t1");
        r.handle(&event("createSecret", "t1")).await.unwrap();
        let pending = r.store().value(ARN, "AWSPENDING").unwrap();
        let store = MemoryStore::new();
        store.create_secret(ARN, &elsewhere("app", "old-pw", true));
        store.create_secret(
            MASTER_ARN,
            r#"{"username":"postgres","password":"master-pw"}"#,
        );
        store.start_rotation(ARN, "t1");
        store.put_version(
            ARN,
            "t1",
            &pending.replace("db.internal", "evil.example.net"),
            &["AWSPENDING"],
        );
        let r = Rotator::new(
            store,
            FakeDb::with_users(&[("app", "old-pw"), ("postgres", "master-pw")]),
            config_with(strategy, &[("SINGLE_USER_MASTER_FALLBACK", "true")]),
        );
        for step in ["setSecret", "testSecret"] {
            let err = r.handle(&event(step, "t1")).await.unwrap_err();
            assert!(
                matches!(err, Error::HostNotAllowed { .. }),
                "{strategy} {step}: {err}"
            );
            assert!(err.to_string().contains("AWSPENDING"), "{err}");
        }
        assert!(
            r.database().connections().is_empty(),
            "{strategy}: no connection at all"
        );
    }
}

#[tokio::test]
async fn a_master_secret_without_host_needs_allowed_db_hosts_and_gets_no_connection_without() {
    let r = alternating_with(
        Config::from_lookup(|name| {
            (name == "ROTATION_STRATEGY").then(|| "alternating-users".to_string())
        })
        .unwrap(),
    );
    r.store().start_rotation(ARN, "t1");
    r.handle(&event("createSecret", "t1")).await.unwrap();
    let err = r.handle(&event("setSecret", "t1")).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::MasterHostNotVouched { .. }), "{text}");
    assert_eq!(err.kind(), "MasterHostNotVouched");
    for fragment in [
        MASTER_ARN,
        "\"db.internal\"",
        "set ALLOWED_DB_HOSTS",
        "add \"host\" to the master secret",
        "not sent anywhere",
    ] {
        assert!(text.contains(fragment), "{text}");
    }
    let pending = field(&r, "AWSPENDING", "password");
    assert_no_secret(&text, &["old-pw", "master-pw", pending.as_str().unwrap()]);
    assert!(
        !r.database().offered().contains(&"master-pw".to_string()),
        "the master password was offered to no server"
    );
    assert!(
        r.database()
            .connections()
            .iter()
            .all(|(_, user)| user != "postgres"),
        "no login as the master user"
    );
    assert_eq!(r.database().password("app_clone"), None, "nothing changed");
}

#[tokio::test]
async fn a_master_secret_with_its_own_host_vouches_for_it_without_allowed_db_hosts() {
    let r = alternating_with(
        Config::from_lookup(|name| {
            (name == "ROTATION_STRATEGY").then(|| "alternating-users".to_string())
        })
        .unwrap(),
    );
    r.store().put_version(
        MASTER_ARN,
        "m2",
        r#"{"username":"postgres","password":"master-pw","host":"DB.internal"}"#,
        &["AWSCURRENT"],
    );
    rotate(&r, "t1").await.unwrap();
    assert_eq!(field(&r, "AWSCURRENT", "username"), json!("app_clone"));
}

#[tokio::test]
async fn the_master_login_is_checked_against_allowed_db_hosts_too() {
    // The master secret names the user's host, but the list does not allow it: refused
    // before any connection as master.
    let store = MemoryStore::new();
    store.create_secret(ARN, &elsewhere("app", "old-pw", true));
    store.create_secret(
        MASTER_ARN,
        r#"{"username":"postgres","password":"master-pw","host":"evil.example.net"}"#,
    );
    store.start_rotation(ARN, "t1");
    let r = Rotator::new(
        store,
        FakeDb::with_users(&[("app", "old-pw"), ("postgres", "master-pw")]),
        config("alternating-users"),
    );
    let err = r.handle(&event("createSecret", "t1")).await.unwrap_err();
    assert!(matches!(err, Error::HostNotAllowed { .. }), "{err}");
    assert!(!r.database().offered().contains(&"master-pw".to_string()));
}

#[tokio::test]
async fn with_the_fallback_off_the_master_secret_is_not_even_read_and_the_error_says_how_to_opt_in()
{
    let r = single_user(&[("app", "lost-pw"), ("postgres", "master-pw")], true);
    r.store().start_rotation(ARN, "t1");
    r.handle(&event("createSecret", "t1")).await.unwrap();
    r.store().clear_calls();
    let err = r.handle(&event("setSecret", "t1")).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::NoWorkingCredentials { .. }), "{text}");
    for fragment in [
        "AWSCURRENT (password refused)",
        "AWSPREVIOUS (no such version)",
        "the master secret (not used: SINGLE_USER_MASTER_FALLBACK is off)",
        "set SINGLE_USER_MASTER_FALLBACK=true",
        "trusts whoever can write this secret",
    ] {
        assert!(text.contains(fragment), "{text}");
    }
    let pending = field(&r, "AWSPENDING", "password");
    assert_no_secret(
        &text,
        &["old-pw", "lost-pw", "master-pw", pending.as_str().unwrap()],
    );
    assert!(
        r.store().calls().iter().all(|(_, id)| id != MASTER_ARN),
        "the master secret is not read: {:?}",
        r.store().calls()
    );
    assert!(!r.database().offered().contains(&"master-pw".to_string()));
    assert_eq!(r.database().password("app").unwrap(), "lost-pw");
}

#[tokio::test]
async fn the_confused_deputy_with_the_fallback_off_changes_no_other_role() {
    // Whoever can write the secret names another role with a wrong password.
    let r = single_user(
        &[
            ("app", "old-pw"),
            ("victim", "victim-pw"),
            ("postgres", "master-pw"),
        ],
        true,
    );
    r.store().put_version(
        ARN,
        "evil",
        &user_secret("victim", "guess", true),
        &["AWSCURRENT"],
    );
    let err = rotate(&r, "t1").await.unwrap_err();
    assert!(matches!(err, Error::NoWorkingCredentials { .. }), "{err}");
    assert_eq!(r.database().password("victim").unwrap(), "victim-pw");
    assert_eq!(r.database().state.lock().unwrap().password_changes, 0);
}

#[tokio::test]
async fn the_fallback_refuses_the_master_user_and_privileged_roles_naming_the_attribute() {
    let fallback_on = || config_with("single-user", &[("SINGLE_USER_MASTER_FALLBACK", "true")]);
    let mut cases: Vec<(&str, Option<Privilege>, &str)> =
        vec![("postgres", None, "is the master user itself")];
    for (privilege, name) in [
        (Privilege::Superuser, "SUPERUSER"),
        (Privilege::CreateRole, "CREATEROLE"),
        (Privilege::Replication, "REPLICATION"),
        (Privilege::BypassRls, "BYPASSRLS"),
    ] {
        cases.push(("victim", Some(privilege), name));
    }
    for (target, privilege, expected) in cases {
        let r = single_user_with(
            &[
                ("app", "old-pw"),
                ("victim", "victim-pw"),
                ("postgres", "master-pw"),
            ],
            true,
            fallback_on(),
        );
        if let Some(privilege) = privilege {
            r.database().grant_privilege("victim", privilege);
        }
        r.store().put_version(
            ARN,
            "evil",
            &user_secret(target, "guess", true),
            &["AWSCURRENT"],
        );
        let err = rotate(&r, "t1").await.unwrap_err();
        let text = err.to_string();
        assert_eq!(err.kind(), "RoleRefused", "{text}");
        assert!(text.contains(expected), "{text}");
        assert!(text.contains("nothing was changed"), "{text}");
        let pending = field(&r, "AWSPENDING", "password");
        assert_no_secret(
            &text,
            &["guess", "victim-pw", "master-pw", pending.as_str().unwrap()],
        );
        assert_eq!(r.database().password("victim").unwrap(), "victim-pw");
        assert_eq!(r.database().password("postgres").unwrap(), "master-pw");
        assert_eq!(field(&r, "AWSCURRENT", "username"), json!(target));
    }
}

#[tokio::test]
async fn the_fallback_on_resets_the_unprivileged_role_the_secret_names_as_documented() {
    // SPEC 4.1: the opt-in trusts whoever can write the secret with exactly this.
    let r = single_user_with(
        &[
            ("app", "old-pw"),
            ("other", "other-pw"),
            ("postgres", "master-pw"),
        ],
        true,
        config_with("single-user", &[("SINGLE_USER_MASTER_FALLBACK", "true")]),
    );
    r.store().put_version(
        ARN,
        "evil",
        &user_secret("other", "guess", true),
        &["AWSCURRENT"],
    );
    rotate(&r, "t1").await.unwrap();
    assert_eq!(
        r.database().password("other").unwrap(),
        field(&r, "AWSCURRENT", "password").as_str().unwrap()
    );
}

#[tokio::test]
async fn alternating_refuses_a_privileged_or_master_alternate_and_changes_nothing() {
    let mut cases: Vec<(&str, Option<Privilege>, &str)> = vec![];
    for (privilege, name) in [
        (Privilege::Superuser, "SUPERUSER"),
        (Privilege::CreateRole, "CREATEROLE"),
        (Privilege::Replication, "REPLICATION"),
        (Privilege::BypassRls, "BYPASSRLS"),
    ] {
        cases.push(("app_clone", Some(privilege), name));
    }
    // A master user whose name is the alternate's.
    cases.push(("app_clone", None, "is the master user itself"));
    for (alternate, privilege, expected) in cases {
        let r = alternating();
        r.database().set(alternate, "alt-pw");
        match privilege {
            Some(privilege) => r.database().grant_privilege(alternate, privilege),
            None => {
                r.store().put_version(
                    MASTER_ARN,
                    "m2",
                    r#"{"username":"app_clone","password":"alt-pw"}"#,
                    &["AWSCURRENT"],
                );
            }
        }
        let err = rotate(&r, "t1").await.unwrap_err();
        let text = err.to_string();
        assert_eq!(err.kind(), "RoleRefused", "{text}");
        assert!(
            text.contains(expected) && text.contains("\"app_clone\""),
            "{text}"
        );
        assert_no_secret(&text, &["old-pw", "alt-pw", "master-pw"]);
        assert_eq!(r.database().password("app_clone").unwrap(), "alt-pw");
        assert!(r.database().members().is_empty(), "no membership granted");
    }
}

#[tokio::test]
async fn alternating_refuses_a_missing_primary_naming_it() {
    // The current user is the clone; its primary was dropped.
    let store = MemoryStore::new();
    store.create_secret(ARN, &user_secret("app_clone", "old-pw", true));
    store.create_secret(
        MASTER_ARN,
        r#"{"username":"postgres","password":"master-pw"}"#,
    );
    let r = Rotator::new(
        store,
        FakeDb::with_users(&[("app_clone", "old-pw"), ("postgres", "master-pw")]),
        config("alternating-users"),
    );
    let err = rotate(&r, "t1").await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), "RoleRefused", "{text}");
    assert!(text.contains("primary user \"app\""), "{text}");
    assert_eq!(
        r.database().password("app"),
        None,
        "the primary is never created"
    );
}
