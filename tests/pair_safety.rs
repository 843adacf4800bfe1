//! What the master user refuses to do and what it keeps equal, against a real server: an
//! alternating pair whose alternate is privileged or the master user, or whose primary is
//! missing, is refused before anything changes; the clone mirrors the primary's CREATEDB,
//! CONNECTION LIMIT, VALID UNTIL, INHERIT and per-database settings, rotation after
//! rotation; the single-user master fallback refuses privileged roles (their own attributes
//! or through a membership) and the master user. After every refusal the current
//! credentials still log in and no role changed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{Stack, unique};
use pgrotate::db::sql::quote_ident;
use pgrotate::db::{Database, Postgres};
use pgrotate::store::MemoryStore;
use pgrotate::{Config, Error, RotationEvent, Rotator};
use serde_json::{Value, json};

const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];

/// One in-process rotator over the real database, its secret and its master secret.
struct Pair {
    stack: Stack,
    db: String,
    arn: String,
    rotator: Rotator<MemoryStore, Postgres>,
}

fn arn() -> String {
    format!(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}",
        unique("s")
    )
}

impl Pair {
    /// A rotator for `strategy` whose secret names `user`/`password` in `db`, with a master
    /// secret for `master` (the stack's superuser when `None`).
    fn new(
        stack: &Stack,
        db: &str,
        strategy: &str,
        user: &str,
        password: &str,
        master: Option<(&str, &str)>,
        vars: &[(&str, &str)],
    ) -> Pair {
        let arn = arn();
        let master_arn = format!("{arn}-master");
        let store = MemoryStore::new();
        store.create_secret(
            &arn,
            &json!({"engine": "postgres", "host": stack.host, "port": stack.port, "dbname": db,
                    "username": user, "password": password, "masterarn": master_arn})
            .to_string(),
        );
        let (master_user, master_password) =
            master.unwrap_or((&stack.admin_user, &stack.admin_password));
        store.create_secret(
            &master_arn,
            &json!({"username": master_user, "password": master_password}).to_string(),
        );
        let mut all: BTreeMap<String, String> = BTreeMap::from([
            ("ROTATION_STRATEGY".into(), strategy.into()),
            (
                "SSL_CA_BUNDLE".into(),
                stack.ca_path.to_string_lossy().into(),
            ),
            ("ALLOWED_DB_HOSTS".into(), stack.host.clone()),
        ]);
        for (k, v) in vars {
            all.insert(k.to_string(), v.to_string());
        }
        let config = Config::from_lookup(|name| all.get(name).cloned()).unwrap();
        Pair {
            stack: stack.clone(),
            db: db.to_string(),
            arn,
            rotator: Rotator::new(store, stack.postgres(), config),
        }
    }

    async fn rotate(&self, token: &str) -> Result<(), Error> {
        self.rotator.store().start_rotation(&self.arn, token);
        for step in STEPS {
            let event = RotationEvent::from_json(
                &json!({"SecretId": self.arn, "ClientRequestToken": token, "Step": step}),
            )
            .unwrap();
            self.rotator.handle(&event).await?;
        }
        self.rotator.store().end_rotation(&self.arn);
        Ok(())
    }

    fn current(&self) -> Value {
        serde_json::from_str(&self.rotator.store().value(&self.arn, "AWSCURRENT").unwrap()).unwrap()
    }

    fn pending_password(&self) -> Option<String> {
        let raw = self.rotator.store().value(&self.arn, "AWSPENDING")?;
        let v: Value = serde_json::from_str(&raw).unwrap();
        v["password"].as_str().map(str::to_string)
    }

    /// Whether AWSCURRENT logs in as its own user.
    async fn current_logs_in(&self) -> bool {
        let current = self.current();
        let login = self.stack.login(
            &self.db,
            current["username"].as_str().unwrap(),
            current["password"].as_str().unwrap(),
        );
        self.stack.postgres().can_log_in(&login).await.unwrap()
    }
}

/// Everything about `roles` a rotation could change: password verifier, attributes,
/// settings (per role and per database), memberships either way.
async fn role_state(stack: &Stack, roles: &[&str]) -> BTreeMap<String, String> {
    let mut c = stack.admin("postgres").await;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT r.rolname::text,
                concat_ws(' | ', coalesce(a.rolpassword, '-'), r.rolsuper, r.rolcreaterole,
                  r.rolreplication, r.rolbypassrls, r.rolcreatedb, r.rolinherit, r.rolcanlogin,
                  r.rolconnlimit, coalesce(r.rolvaliduntil::text, '-'),
                  coalesce((SELECT string_agg(coalesce(d.datname, '*') || ':' || array_to_string(s.setconfig, ';'), ',' ORDER BY 1)
                              FROM pg_db_role_setting s LEFT JOIN pg_database d ON d.oid = s.setdatabase
                             WHERE s.setrole = r.oid), '-'),
                  coalesce((SELECT string_agg(g.rolname::text, ',' ORDER BY 1) FROM pg_auth_members m
                              JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid), '-'),
                  coalesce((SELECT string_agg(g.rolname::text, ',' ORDER BY 1) FROM pg_auth_members m
                              JOIN pg_roles g ON g.oid = m.member WHERE m.roleid = r.oid), '-'))
           FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid
          WHERE r.rolname::text = ANY($1)",
    )
    .bind(roles.iter().map(|r| r.to_string()).collect::<Vec<_>>())
    .fetch_all(&mut c)
    .await
    .unwrap();
    rows.into_iter().collect()
}

/// Asserts a rotation was refused by the master user with `fragments` in the message,
/// changed none of `roles`, left AWSCURRENT logging in and showed no secret.
async fn assert_refused_and_nothing_changed(
    pair: &Pair,
    result: Result<(), Error>,
    fragments: &[&str],
    roles: &[&str],
    before: &BTreeMap<String, String>,
    secrets: &[&str],
) {
    let err = result.expect_err("the rotation must be refused");
    let text = err.to_string();
    assert_eq!(err.kind(), "RoleRefused", "{text}");
    for fragment in fragments {
        assert!(text.contains(fragment), "{fragment:?} missing in: {text}");
    }
    let mut secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
    secrets.extend(pair.pending_password());
    secrets.push(pair.stack.admin_password.clone());
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a secret in: {text}");
    }
    assert_eq!(
        &role_state(&pair.stack, roles).await,
        before,
        "no role changed ({text})"
    );
    assert!(pair.current_logs_in().await, "AWSCURRENT still logs in");
}

async fn exec(stack: &Stack, sql: &str) {
    stack.exec("postgres", sql).await;
}

#[tokio::test]
async fn a_privileged_alternate_is_refused_for_each_attribute_before_anything_changes() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    for attribute in ["SUPERUSER", "CREATEROLE", "REPLICATION", "BYPASSRLS"] {
        let primary = unique("priv");
        let clone = format!("{primary}_clone");
        stack.create_app_user(&primary, "primary-pw").await;
        exec(
            &stack,
            &format!(
                "CREATE ROLE {} LOGIN {attribute} PASSWORD 'clone-pw'",
                quote_ident(&clone)
            ),
        )
        .await;
        let roles = [primary.as_str(), clone.as_str()];
        let before = role_state(&stack, &roles).await;
        let pair = Pair::new(
            &stack,
            &db,
            "alternating-users",
            &primary,
            "primary-pw",
            None,
            &[],
        );
        let result = pair.rotate("t1").await;
        assert_refused_and_nothing_changed(
            &pair,
            result,
            &[
                &format!("role \"{clone}\" has {attribute}"),
                "nothing was changed",
            ],
            &roles,
            &before,
            &["primary-pw", "clone-pw"],
        )
        .await;
    }
}

#[tokio::test]
async fn the_master_user_as_the_alternate_is_refused_before_anything_changes() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    // A master user named like the primary of a pair whose clone is the current user.
    let master = unique("master");
    let clone = format!("{master}_clone");
    exec(
        &stack,
        &format!(
            "CREATE ROLE {} LOGIN SUPERUSER PASSWORD 'Master-Pw-1'",
            quote_ident(&master)
        ),
    )
    .await;
    stack.create_app_user(&clone, "clone-pw").await;
    let roles = [master.as_str(), clone.as_str()];
    let before = role_state(&stack, &roles).await;
    let pair = Pair::new(
        &stack,
        &db,
        "alternating-users",
        &clone,
        "clone-pw",
        Some((&master, "Master-Pw-1")),
        &[],
    );
    let result = pair.rotate("t1").await;
    assert_refused_and_nothing_changed(
        &pair,
        result,
        &[&format!("role \"{master}\" is the master user itself")],
        &roles,
        &before,
        &["clone-pw", "Master-Pw-1"],
    )
    .await;
}

#[tokio::test]
async fn a_missing_primary_is_refused_naming_it_and_never_created() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    let primary = unique("gone");
    let clone = format!("{primary}_clone");
    stack.create_app_user(&clone, "clone-pw").await;
    let roles = [primary.as_str(), clone.as_str()];
    let before = role_state(&stack, &roles).await;
    assert!(!before.contains_key(&primary));
    let pair = Pair::new(
        &stack,
        &db,
        "alternating-users",
        &clone,
        "clone-pw",
        None,
        &[],
    );
    let result = pair.rotate("t1").await;
    assert_refused_and_nothing_changed(
        &pair,
        result,
        &[&format!(
            "the primary user \"{primary}\" of the pair does not exist"
        )],
        &roles,
        &before,
        &["clone-pw"],
    )
    .await;
}

/// The mirrored facts of a role: attributes and per-database settings (database → entries).
async fn mirrored(stack: &Stack, role: &str) -> (String, BTreeMap<String, String>) {
    let mut c = stack.admin("postgres").await;
    let (attributes,): (String,) = sqlx::query_as(
        "SELECT concat_ws(' ', rolcreatedb, rolinherit, rolconnlimit,
                          coalesce(nullif(rolvaliduntil, 'infinity')::text, 'never'))
           FROM pg_roles WHERE rolname::text = $1",
    )
    .bind(role)
    .fetch_one(&mut c)
    .await
    .unwrap();
    let per_db: Vec<(String, String)> = sqlx::query_as(
        "SELECT d.datname::text, array_to_string(s.setconfig, ';')
           FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
           JOIN pg_roles r ON r.oid = s.setrole
          WHERE r.rolname::text = $1",
    )
    .bind(role)
    .fetch_all(&mut c)
    .await
    .unwrap();
    (attributes, per_db.into_iter().collect())
}

#[tokio::test]
async fn the_clone_mirrors_attributes_and_per_database_settings_rotation_after_rotation() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    let other_db = stack.fresh_database().await;
    let primary = unique("mirror");
    let clone = format!("{primary}_clone");
    let p = quote_ident(&primary);
    stack.create_app_user(&primary, "primary-pw").await;
    exec(
        &stack,
        &format!(
            "ALTER ROLE {p} WITH CREATEDB NOINHERIT CONNECTION LIMIT 7 VALID UNTIL '2099-12-31 23:59:59+00';
             ALTER ROLE {p} IN DATABASE {d} SET work_mem TO '64MB';
             ALTER ROLE {p} IN DATABASE {d} SET search_path TO app, \"$user\", public;
             ALTER ROLE {p} IN DATABASE {o} SET statement_timeout TO '42s'",
            d = quote_ident(&db),
            o = quote_ident(&other_db),
        ),
    )
    .await;
    let pair = Pair::new(
        &stack,
        &db,
        "alternating-users",
        &primary,
        "primary-pw",
        None,
        &[],
    );

    pair.rotate("t1").await.unwrap();
    assert_eq!(pair.current()["username"], json!(clone));
    let (attributes, per_db) = mirrored(&stack, &primary).await;
    assert_eq!(attributes, "t f 7 2099-12-31 23:59:59+00");
    assert_eq!(per_db.len(), 2);
    assert_eq!(
        mirrored(&stack, &clone).await,
        (attributes, per_db),
        "after rotation 1"
    );
    assert!(pair.current_logs_in().await);

    // The primary changes; the next rotation (which sets the primary's password) brings the
    // clone along, including dropping a per-database setting the primary no longer has.
    exec(
        &stack,
        &format!(
            "ALTER ROLE {p} WITH NOCREATEDB INHERIT CONNECTION LIMIT -1 VALID UNTIL 'infinity';
             ALTER ROLE {p} IN DATABASE {o} RESET ALL;
             ALTER ROLE {p} IN DATABASE {d} SET work_mem TO '32MB'",
            d = quote_ident(&db),
            o = quote_ident(&other_db),
        ),
    )
    .await;
    pair.rotate("t2").await.unwrap();
    assert_eq!(pair.current()["username"], json!(primary));
    let (attributes, per_db) = mirrored(&stack, &primary).await;
    assert_eq!(attributes, "f t -1 never");
    assert_eq!(per_db.len(), 1);
    assert!(per_db[&db].contains("work_mem=32MB"), "{per_db:?}");
    assert_eq!(
        mirrored(&stack, &clone).await,
        (attributes, per_db),
        "after rotation 2"
    );

    // A third rotation changes nothing in the pair but the clone's password.
    let roles = [primary.as_str(), clone.as_str()];
    let before = role_state(&stack, &roles).await;
    pair.rotate("t3").await.unwrap();
    let after = role_state(&stack, &roles).await;
    assert_eq!(before[&primary], after[&primary], "the primary untouched");
    let strip = |s: &str| s.split_once(" | ").unwrap().1.to_string();
    assert_eq!(
        strip(&before[&clone]),
        strip(&after[&clone]),
        "only the clone's password"
    );
    assert_ne!(before[&clone], after[&clone]);
    assert!(pair.current_logs_in().await);
}

#[tokio::test]
async fn the_clone_of_a_noinherit_primary_still_works_through_its_default_role() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    let primary = unique("noinh");
    stack.create_app_user(&primary, "primary-pw").await;
    let p = quote_ident(&primary);
    exec(&stack, &format!("ALTER ROLE {p} NOINHERIT")).await;
    stack
        .exec(
            &db,
            &format!(
                "CREATE TABLE public.noinh (v int); GRANT INSERT, SELECT ON public.noinh TO {p}"
            ),
        )
        .await;
    let pair = Pair::new(
        &stack,
        &db,
        "alternating-users",
        &primary,
        "primary-pw",
        None,
        &[],
    );
    pair.rotate("t1").await.unwrap();
    let current = pair.current();
    let clone = current["username"].as_str().unwrap();
    assert_eq!(
        mirrored(&stack, clone).await.0,
        mirrored(&stack, &primary).await.0
    );
    // NOINHERIT like the primary, the clone still uses the primary's privileges: it logs in
    // with the primary as its role.
    common::try_query(
        &stack,
        &stack.login(&db, clone, current["password"].as_str().unwrap()),
        "INSERT INTO public.noinh VALUES (1); SELECT * FROM public.noinh",
    )
    .await
    .unwrap();
}

// ---- single user: the master fallback ------------------------------------------------------

/// A single-user secret for `target` with a password that does not work, the fallback on.
async fn fallback_pair(stack: &Stack, db: &str, target: &str) -> Pair {
    Pair::new(
        stack,
        db,
        "single-user",
        target,
        "Wrong-Password-1",
        None,
        &[("SINGLE_USER_MASTER_FALLBACK", "true")],
    )
}

#[tokio::test]
async fn the_fallback_refuses_a_privileged_role_for_each_attribute_and_through_membership() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    for attribute in ["SUPERUSER", "CREATEROLE", "REPLICATION", "BYPASSRLS"] {
        // The role itself holds the attribute.
        let victim = unique("victim");
        exec(
            &stack,
            &format!(
                "CREATE ROLE {} LOGIN {attribute} PASSWORD 'Victim-Pw-1'",
                quote_ident(&victim)
            ),
        )
        .await;
        let before = role_state(&stack, &[&victim]).await;
        let pair = fallback_pair(&stack, &db, &victim).await;
        let result = pair.rotate("t1").await;
        let err = result.expect_err("refused");
        assert_eq!(err.kind(), "RoleRefused", "{err}");
        assert!(
            err.to_string().contains(&format!("has {attribute}")),
            "{err}"
        );
        assert_eq!(role_state(&stack, &[&victim]).await, before);

        // A role that can SET ROLE to a role holding it (an admin group such as RDS's
        // rds_superuser, whose members have no attribute of their own).
        let group = unique("admins");
        let member = unique("dba");
        exec(
            &stack,
            &format!(
                "CREATE ROLE {g} NOLOGIN {attribute}; CREATE ROLE {m} LOGIN PASSWORD 'Dba-Pw-1'; GRANT {g} TO {m}",
                g = quote_ident(&group),
                m = quote_ident(&member)
            ),
        )
        .await;
        let before = role_state(&stack, &[&member, &group]).await;
        let pair = fallback_pair(&stack, &db, &member).await;
        let err = pair.rotate("t1").await.expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "has {attribute} through its membership in \"{group}\""
            )),
            "{text}"
        );
        assert!(!text.contains("Dba-Pw-1") && !text.contains("Wrong-Password-1"));
        assert_eq!(role_state(&stack, &[&member, &group]).await, before);
        let dba = stack.login(&db, &member, "Dba-Pw-1");
        assert!(
            stack.postgres().can_log_in(&dba).await.unwrap(),
            "its password unchanged"
        );
    }
}

#[tokio::test]
async fn the_fallback_refuses_the_master_user_and_a_server_file_reader() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    let admin = stack.admin_user.clone();
    let before = role_state(&stack, &[&admin]).await;
    let pair = fallback_pair(&stack, &db, &admin).await;
    let err = pair.rotate("t1").await.expect_err("refused");
    assert!(
        err.to_string().contains("is the master user itself"),
        "{err}"
    );
    assert_eq!(role_state(&stack, &[&admin]).await, before);

    let reader = unique("reader");
    stack.create_app_user(&reader, "Reader-Pw-1").await;
    exec(
        &stack,
        &format!("GRANT pg_read_server_files TO {}", quote_ident(&reader)),
    )
    .await;
    let before = role_state(&stack, &[&reader]).await;
    let pair = fallback_pair(&stack, &db, &reader).await;
    let err = pair.rotate("t1").await.expect_err("refused");
    assert!(err.to_string().contains("pg_read_server_files"), "{err}");
    assert_eq!(role_state(&stack, &[&reader]).await, before);
}

#[tokio::test]
async fn the_fallback_resets_an_unprivileged_role_when_its_stored_password_is_lost() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    let user = unique("lost");
    stack.create_app_user(&user, "Forgotten-Pw-1").await;
    let pair = fallback_pair(&stack, &db, &user).await;
    pair.rotate("t1").await.unwrap();
    assert!(pair.current_logs_in().await);
    let old = stack.login(&db, &user, "Forgotten-Pw-1");
    assert!(!stack.postgres().can_log_in(&old).await.unwrap());
}

#[tokio::test]
async fn a_refused_fallback_reports_a_missing_role_without_creating_it() {
    let stack = Stack::get();
    let db = stack.fresh_database().await;
    let user = unique("nobody");
    let pair = fallback_pair(&stack, &db, &user).await;
    let err = pair.rotate("t1").await.expect_err("refused");
    assert!(
        err.to_string()
            .contains(&format!("role \"{user}\" does not exist")),
        "{err}"
    );
    assert!(role_state(&stack, &[&user]).await.is_empty());
}

/// PostgreSQL 16 and later: a master with CREATEROLE but no ADMIN OPTION on the primary is
/// refused before any change, with the GRANT to run, the version and why; after that GRANT
/// the same master rotates. Before 16, CREATEROLE is enough and it rotates at once.
#[tokio::test]
async fn a_createrole_master_needs_admin_option_on_the_primary_since_postgresql_16() {
    let stack = Stack::get();
    let version: i32 = {
        let mut c = stack.admin("postgres").await;
        sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    let db = stack.fresh_database().await;
    let master = unique("manager");
    exec(
        &stack,
        &format!(
            "CREATE ROLE {} LOGIN CREATEROLE PASSWORD 'manager-pw'",
            quote_ident(&master)
        ),
    )
    .await;
    // The application user, created by the superuser: the master holds no ADMIN OPTION on it.
    let primary = unique("app16");
    stack.create_app_user(&primary, "app-pw").await;
    let clone = format!("{primary}_clone");
    let pair = Pair::new(
        &stack,
        &db,
        "alternating-users",
        &primary,
        "app-pw",
        Some((&master, "manager-pw")),
        &[],
    );
    if version >= 160_000 {
        let roles = [primary.as_str(), clone.as_str()];
        let before = role_state(&stack, &roles).await;
        let result = pair.rotate("t1").await;
        let grant = format!("GRANT \"{primary}\" TO \"{master}\" WITH ADMIN OPTION");
        assert_refused_and_nothing_changed(
            &pair,
            result,
            &[&grant, "16 or later", "CREATEROLE alone", "ADMIN OPTION"],
            &roles,
            &before,
            &["app-pw", "manager-pw"],
        )
        .await;
        exec(&stack, &grant).await;
    }
    pair.rotate("t2").await.unwrap();
    assert!(pair.current_logs_in().await);
    assert_eq!(pair.current()["username"], json!(clone));
    // And back: the master altered the clone it created, and the primary it administers.
    pair.rotate("t3").await.unwrap();
    assert!(pair.current_logs_in().await);
    assert_eq!(pair.current()["username"], json!(primary));
}
