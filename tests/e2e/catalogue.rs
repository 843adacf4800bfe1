//! The hostile-input catalogue, in one place: each entry is an input an attacker (or a
//! mistake) can put in front of the function (a secret's JSON, a pending version written
//! before createSecret, a master secret, a server at the other end, an event) with the
//! refusal it must meet: the error type, a fragment naming the problem and one naming the fix.
//! For every entry, through the release binary: the message holds no password (of the
//! secret, its pending version or the master), and nothing changed (the current credentials
//! still log in, the master still logs in, no role was created).

use pgrotate::Strategy;
use serde_json::{Value, json};

use crate::common::driver::{Driver, Login, STEPS, deployment, login, random_password};
use crate::common::lambda::Lambda;
use crate::common::unique;
use crate::common::world::*;

/// What the attacker controls in an entry.
enum Input {
    /// The secret's AWSCURRENT value (`{user}`, `{password}` and `{db}` in strings are the
    /// entry's real user, password and database).
    Current(Value),
    /// A good AWSCURRENT, and this value written as the AWSPENDING version of the rotation's
    /// token before createSecret runs (same placeholders).
    Pending(Value),
    /// A good secret with a rotation started, and this payload as the event (`{arn}` and
    /// `{token}` are the secret and the rotation's token).
    Event(String),
}

struct Entry {
    name: &'static str,
    strategy: Strategy,
    input: Input,
    /// The step that refuses it.
    step: &'static str,
    error_type: &'static str,
    problem: &'static str,
    fix: &'static str,
}

fn entry(
    name: &'static str,
    strategy: Strategy,
    input: Input,
    step: &'static str,
    error_type: &'static str,
    problem: &'static str,
    fix: &'static str,
) -> Entry {
    Entry {
        name,
        strategy,
        input,
        step,
        error_type,
        problem,
        fix,
    }
}

/// A good secret's fields, overridden by `fields`.
fn good(fields: Value) -> Value {
    let mut v = json!({
        "engine": "postgres", "host": "localhost", "port": "{port}", "username": "{user}",
        "password": "{password}", "dbname": "{db}",
    });
    for (k, value) in fields.as_object().unwrap() {
        if value.is_null() {
            v.as_object_mut().unwrap().remove(k);
        } else {
            v[k] = value.clone();
        }
    }
    v
}

/// An alternating-users secret: a good one with the test's master secret as `masterarn`
/// unless `fields` says otherwise (`"masterarn": null` removes it).
fn alt(fields: Value) -> Value {
    let mut v = good(fields.clone());
    if fields.get("masterarn").is_none() {
        v["masterarn"] = json!("{master}");
    }
    v
}

fn catalogue() -> Vec<Entry> {
    use Input::*;
    use Strategy::{AlternatingUsers as Alt, SingleUser as Single};
    // Secrets Manager stores at most 65,536 bytes; the emulator stores more, as a stand-in
    // for any source of an oversized value.
    let huge: &'static str = Box::leak("x".repeat(70_000).into_boxed_str());
    let long_password: &'static str = Box::leak("p".repeat(5_000).into_boxed_str());
    vec![
        // --- SQL and junk in the user, database and host fields -------------------------
        entry("SQL in username", Single, Current(good(json!({"username": "app\"; DROP ROLE postgres; --"}))),
            "setSecret", "NoWorkingCredentials", "could not log in", "fix the stored credentials"),
        entry("SQL in username (alternating)", Alt, Current(alt(json!({"username": "x'); ALTER ROLE postgres PASSWORD 'p'; --"}))),
            "setSecret", "CurrentCredentialsInvalid", "do not log in", "fix AWSCURRENT first"),
        entry("SQL in dbname", Single, Current(good(json!({"dbname": "db'; DROP DATABASE postgres; --"}))),
            "setSecret", "DatabaseError", "does not exist", "fix \"dbname\" in the secret"),
        entry("SQL in host", Single, Current(good(json!({"host": "localhost'; DROP ROLE postgres; --"}))),
            "createSecret", "HostNotAllowed", "is not in ALLOWED_DB_HOSTS", "add the host to ALLOWED_DB_HOSTS"),
        entry("host of an attacker", Single, Current(good(json!({"host": "db.attacker.example"}))),
            "createSecret", "HostNotAllowed", "is not in ALLOWED_DB_HOSTS", "else fix \"host\" in the secret"),
        entry("host of an attacker (alternating)", Alt, Current(alt(json!({"host": "db.attacker.example"}))),
            "createSecret", "HostNotAllowed", "is not in ALLOWED_DB_HOSTS", "else fix \"host\" in the secret"),
        entry("NUL in username", Single, Current(good(json!({"username": "app\u{0}x"}))),
            "createSecret", "InvalidSecret", "\"username\"", "username"),
        entry("username over 63 bytes", Single, Current(good(json!({"username": "u".repeat(64)}))),
            "createSecret", "InvalidSecret", "63", "username"),
        entry("username too long for its clone", Alt, Current(alt(json!({"username": "v".repeat(60)}))),
            "createSecret", "UserNameTooLong", "is too long", "shorten the user name"),
        entry("engine of another database", Single, Current(good(json!({"engine": "mysql"}))),
            "createSecret", "InvalidSecret", "\"engine\"", "must be \"postgres\""),
        entry("port as text", Single, Current(good(json!({"port": "5432; --"}))),
            "createSecret", "InvalidSecret", "\"port\"", "must be a port number"),
        entry("ssl mode unknown", Single, Current(good(json!({"ssl": "prefer"}))),
            "createSecret", "InvalidSecret", "\"ssl\"", "must be one of"),
        entry("secret not JSON", Single, Current(json!("engine=postgres password={password}")),
            "createSecret", "InvalidSecret", "not valid JSON", "store a JSON object"),
        // --- oversized ------------------------------------------------------------------
        entry("password of 5,000 characters", Single, Current(good(json!({"password": long_password}))),
            "createSecret", "InvalidSecret", "\"password\" is 5000 bytes long", "store a shorter password"),
        entry("extra field of 70,000 characters", Single, Current(good(json!({"note": huge}))),
            "createSecret", "InvalidSecret", "too large", "store only the connection fields"),
        // --- a pending version written before createSecret --------------------------------
        entry("pending names another user", Single, Pending(good(json!({"username": "postgres"}))),
            "setSecret", "PendingSecretMismatch", "does not match", "delete the AWSPENDING version"),
        entry("pending names another host", Single, Pending(good(json!({"host": "127.0.0.1"}))),
            "setSecret", "PendingSecretMismatch", "does not match", "delete the AWSPENDING version"),
        entry("pending names another port", Single, Pending(good(json!({"port": "{plain_port}"}))),
            "setSecret", "PendingSecretMismatch", "does not match", "delete the AWSPENDING version"),
        entry("pending names another database", Single, Pending(good(json!({"dbname": "postgres"}))),
            "setSecret", "PendingSecretMismatch", "does not match", "delete the AWSPENDING version"),
        entry("pending names the master user (alternating)", Alt, Pending(alt(json!({"username": "postgres"}))),
            "setSecret", "PendingSecretMismatch", "does not match", "delete the AWSPENDING version"),
        entry("pending keeps the current user (alternating)", Alt, Pending(alt(json!({}))),
            "setSecret", "PendingSecretMismatch", "does not match", "delete the AWSPENDING version"),
        // --- master secrets ---------------------------------------------------------------
        entry("masterarn of another server's master", Alt, Current(alt(json!({"masterarn": "{other_server_master}"}))),
            "setSecret", "InvalidMasterSecret", "names host \"db.other.example\"", "must be the one of the user's server"),
        entry("masterarn of a secret that does not exist", Alt, Current(alt(json!({"masterarn": "{missing_master}"}))),
            "setSecret", "InvalidMasterSecret", "can't find the specified secret", "check the ARN"),
        entry("masterarn of a master without the right to manage roles", Alt, Current(alt(json!({"masterarn": "{weak_master}"}))),
            "setSecret", "RoleRefused", "nothing was changed", "CREATEROLE"),
        entry("masterarn missing (alternating)", Alt, Current(alt(json!({"masterarn": null}))),
            "createSecret", "InvalidSecret", "masterarn", "masterarn"),
        // --- a server at the other end ------------------------------------------------------
        entry("untrusted certificate under verify-full", Single, Current(good(json!({"port": "{selfsigned_port}", "ssl": "verify-full"}))),
            "setSecret", "DatabaseError", "certificate is not trusted", "SSL_CA_BUNDLE"),
        entry("certificate for another host name under verify-full", Single, Current(good(json!({"host": "127.0.0.1", "ssl": "verify-full"}))),
            "setSecret", "DatabaseError", "not valid for this host name", "verify-ca"),
        entry("plaintext-only server when TLS is required", Single, Current(good(json!({"port": "{plain_port}", "ssl": "require"}))),
            "setSecret", "DatabaseError", "does not offer TLS", "enable ssl on the server"),
        // --- malformed events ---------------------------------------------------------------
        entry("event without ClientRequestToken", Single, Event(r#"{"SecretId": "{arn}", "Step": "createSecret"}"#.into()),
            "createSecret", "InvalidEvent", "ClientRequestToken is missing", "ClientRequestToken"),
        entry("event without SecretId", Single, Event(r#"{"ClientRequestToken": "{token}", "Step": "createSecret"}"#.into()),
            "createSecret", "InvalidEvent", "SecretId is missing", "SecretId"),
        entry("event with a numeric token", Single, Event(r#"{"SecretId": "{arn}", "ClientRequestToken": 7, "Step": "setSecret"}"#.into()),
            "setSecret", "InvalidEvent", "ClientRequestToken must be a string", "string"),
        entry("event with an unknown step", Single, Event(r#"{"SecretId": "{arn}", "ClientRequestToken": "{token}", "Step": "deleteSecret"}"#.into()),
            "setSecret", "UnknownStep", "deleteSecret", "expected one of createSecret"),
        entry("event whose token is no version", Single, Event(r#"{"SecretId": "{arn}", "ClientRequestToken": "00000000-0000-4000-8000-000000000000", "Step": "setSecret"}"#.into()),
            "setSecret", "UnknownVersion", "is not a version of secret", "must be the version id"),
        entry("event naming another secret with this token", Single, Event(r#"{"SecretId": "{other_arn}", "ClientRequestToken": "{token}", "Step": "setSecret"}"#.into()),
            "setSecret", "UnknownVersion", "is not a version of secret", "must be the version id"),
        entry("event as a JSON array", Single, Event(r#"["{arn}", "{token}", "setSecret"]"#.into()),
            "setSecret", "InvalidEvent", "JSON object", "JSON object"),
    ]
}

/// Fills the placeholders of an entry's strings.
fn fill(value: &Value, vars: &[(&str, String)]) -> Value {
    match value {
        Value::String(s) => {
            let mut s = s.clone();
            for (name, v) in vars {
                s = s.replace(&format!("{{{name}}}"), v);
            }
            // Ports stay numbers when the whole field is one.
            match s.parse::<u64>() {
                Ok(n) if value.as_str().is_some_and(|raw| raw.ends_with("port}")) => json!(n),
                _ => Value::String(s),
            }
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill(v, vars)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, vars)).collect()),
        other => other.clone(),
    }
}

fn fill_str(s: &str, vars: &[(&str, String)]) -> String {
    let mut s = s.to_string();
    for (name, v) in vars {
        s = s.replace(&format!("{{{name}}}"), v);
    }
    s
}

#[tokio::test]
async fn every_catalogued_hostile_input_is_refused_with_its_message_and_changes_nothing() {
    let world = World::new(FUNCTION).await;
    let stack = &world.stack;
    let lambda_for = |strategy: Strategy| {
        Lambda::start(
            deployment(stack, strategy, FUNCTION).env("ALLOWED_DB_HOSTS", "localhost,127.0.0.1"),
        )
    };
    let mut single = lambda_for(Strategy::SingleUser).await;
    let mut alternating = lambda_for(Strategy::AlternatingUsers).await;

    // The masters the entries name.
    let master = world.master_secret(None).await;
    let other_server_master = world
        .driver
        .create_secret(
            &unique("e2e/other-master"),
            &json!({"username": stack.admin_user, "password": stack.admin_password,
                    "host": "db.other.example", "port": stack.port})
            .to_string(),
            None,
        )
        .await;
    let weak_user = unique("weak");
    let weak_password = random_password();
    stack.create_app_user(&weak_user, &weak_password).await;
    let weak_master = world
        .driver
        .create_secret(
            &unique("e2e/weak-master"),
            &json!({"username": weak_user, "password": weak_password}).to_string(),
            None,
        )
        .await;
    let missing_master = master.replace("e2e/master", "e2e/no-such-master");
    let (other_arn, _) = world.user_secret(Strategy::SingleUser, None).await;
    // Roles of earlier runs against the same stack are not this run's strays.
    let mut created: Vec<String> = roles(&world).await;
    let mut mismatches: Vec<String> = Vec::new();

    let entries = catalogue();
    assert!(
        entries.len() >= 30,
        "the catalogue has {} entries",
        entries.len()
    );
    for entry in entries {
        let name = entry.name;
        let lambda = match entry.strategy {
            Strategy::SingleUser => &single,
            Strategy::AlternatingUsers => &alternating,
        };
        let user = unique("cat");
        let password = random_password();
        stack.create_app_user(&user, &password).await;
        let mut vars = vec![
            ("user", user.clone()),
            ("password", password.clone()),
            ("db", world.db.clone()),
            ("port", stack.port.to_string()),
            ("plain_port", stack.plain_port.to_string()),
            ("selfsigned_port", stack.selfsigned_port.to_string()),
            ("other_server_master", other_server_master.clone()),
            ("missing_master", missing_master.clone()),
            ("weak_master", weak_master.clone()),
            ("other_arn", other_arn.clone()),
            ("master", master.clone()),
        ];
        let honest = {
            let mut v = fill(&good(json!({})), &vars);
            if entry.strategy == Strategy::AlternatingUsers {
                v["masterarn"] = json!(master);
            }
            v
        };
        let current = match &entry.input {
            Input::Current(value) => fill(value, &vars),
            Input::Pending(_) | Input::Event(_) => honest.clone(),
        };
        let current_text = match &current {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let arn = world
            .driver
            .create_secret(&unique("e2e/cat"), &current_text, None)
            .await;
        let token = world.driver.start_rotation(&arn).await;
        vars.push(("arn", arn.clone()));
        vars.push(("token", token.clone()));
        let mut pending_password = None;
        if let Input::Pending(value) = &entry.input {
            let mut pending = fill(value, &vars);
            let p = random_password();
            pending["password"] = json!(p);
            pending_password = Some(p);
            world
                .driver
                .sm
                .put_secret_value()
                .secret_id(&arn)
                .client_request_token(&token)
                .secret_string(pending.to_string())
                .version_stages("AWSPENDING")
                .send()
                .await
                .unwrap_or_else(|e| panic!("{name}: writing the pending version: {e:?}"));
        }
        let labels = world.driver.labels(&arn).await;

        // Run the steps up to the one that must refuse (an event entry: that event alone).
        let mut refusal = None;
        match &entry.input {
            Input::Event(payload) => {
                let payload = fill_str(payload, &vars);
                refusal = lambda
                    .invoke_raw(payload.into_bytes())
                    .await
                    .err()
                    .map(|e| (entry.step.to_string(), e));
            }
            _ => {
                for step in STEPS {
                    let outcome = lambda
                        .invoke(&Driver::event(&arn, &token, step, None))
                        .await;
                    if let Err(e) = outcome {
                        refusal = Some((step.to_string(), e));
                        break;
                    }
                }
            }
        }
        let (step, (error_type, message)) =
            refusal.unwrap_or_else(|| panic!("{name}: nothing refused it"));
        // Every mismatch is collected, so one run shows the whole catalogue's state.
        if (step.as_str(), error_type.as_str()) != (entry.step, entry.error_type) {
            mismatches.push(format!(
                "{name}: refused at {step} with {error_type}, expected {} with {}: {message}",
                entry.step, entry.error_type
            ));
        } else if !message.contains(entry.problem) || !message.contains(entry.fix) {
            mismatches.push(format!(
                "{name}: {message:?} lacks the problem {:?} or the fix {:?}",
                entry.problem, entry.fix
            ));
        }
        let mut secrets = vec![
            password.clone(),
            stack.admin_password.clone(),
            weak_password.clone(),
        ];
        secrets.extend(pending_password);
        for secret in &secrets {
            assert!(
                !message.contains(secret.as_str()),
                "{name}: a password in the message"
            );
        }
        // Nothing changed: labels, the user's password, the master, the roles.
        let mut labels_after = world.driver.labels(&arn).await;
        if entry.step != "createSecret" {
            // createSecret may have written the pending value of an honest rotation.
            labels_after.retain(|_, stages| !stages.is_empty());
        }
        assert_eq!(
            labels_after.get(&token),
            labels.get(&token),
            "{name}: the pending version's labels"
        );
        let check = fill(&good(json!({})), &vars);
        assert_eq!(
            login(stack, &check).await,
            Login::Ok(user.clone()),
            "{name}: the user's password changed"
        );
        let admin = json!({"engine": "postgres", "host": stack.host, "port": stack.port,
                           "username": stack.admin_user, "password": stack.admin_password,
                           "dbname": "postgres"});
        assert_eq!(
            login(stack, &admin).await,
            Login::Ok(stack.admin_user.clone()),
            "{name}: the master's password changed"
        );
        // No role appeared but the entries' own users (other tests create roles meanwhile,
        // never with this prefix), and no clone of this entry's user.
        created.push(user.clone());
        let now = roles(&world).await;
        let stray: Vec<&String> = now
            .iter()
            .filter(|r| r.starts_with("cat_") && !created.contains(r))
            .collect();
        assert!(stray.is_empty(), "{name}: stray roles {stray:?}");
    }
    single.stop().await;
    alternating.stop().await;
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// The login roles on the server.
async fn roles(world: &World) -> Vec<String> {
    let mut c = world.stack.admin("postgres").await;
    let rows: Vec<(String,)> = sqlx::query_as("SELECT rolname::text FROM pg_roles ORDER BY 1")
        .fetch_all(&mut c)
        .await
        .unwrap();
    rows.into_iter().map(|(r,)| r).collect()
}
