//! The operator's view: `pgrotatectl` (the release binary) against the local stack: status
//! and resume of rotations stuck after each step for both strategies, preflight's passes and
//! failures, rotate --wait following a rotation through the function's log; and, through the
//! release function binary, its EMF records and its init error.
//!
//! The tests play Secrets Manager's part where moto cannot: moto's RotateSecret labels the new
//! version but invokes no function, so a test runs the steps through the runtime emulator
//! and copies the function's output into moto's CloudWatch Logs, as Lambda does.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pgrotate::Strategy;
use pgrotate::db::sql::{quote_ident, quote_literal};
use rstest::rstest;
use serde_json::{Value, json};

use crate::common::driver::{Driver, InProcess, Login, STEPS, login, random_password};
use crate::common::lambda::{self, Lambda, REGION};
use crate::common::unique;
use crate::common::world::*;

// --- running pgrotatectl ---------------------------------------------------------------

/// One run of pgrotatectl.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "--json output is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    fn assert_code(&self, code: i32, context: &str) -> &Run {
        assert_eq!(
            self.code, code,
            "{context}: exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

fn ctl_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pgrotatectl"))
}

/// The CLI's environment: the stack as the function sees it (CA bundle, verify-full,
/// endpoints of the emulator, region and test credentials) and the strategy.
fn ctl_command(
    world: &World,
    strategy: Strategy,
    extra_env: &[(&str, &str)],
    args: &[&str],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(ctl_path());
    command
        .env_clear()
        .env("ROTATION_STRATEGY", strategy.as_str())
        .env(
            "SSL_CA_BUNDLE",
            world.stack.ca_path.to_string_lossy().as_ref(),
        )
        .env("DEFAULT_SSL_MODE", "verify-full")
        .env("AWS_ENDPOINT_URL", &world.stack.sm_endpoint)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .envs(extra_env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn finish(child: tokio::process::Child, name: &str) -> Run {
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("pgrotatectl {name}: no end within 120 s"))
        .expect("pgrotatectl runs");
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    capture(name, &run);
    run
}

/// With PGROTATECTL_CAPTURE_DIR set, keeps each run's output (the README's examples).
fn capture(name: &str, run: &Run) {
    if let Ok(dir) = std::env::var("PGROTATECTL_CAPTURE_DIR") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("capture dir");
        let file = dir.join(format!("{name}.txt"));
        let text = format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            run.code, run.stdout, run.stderr
        );
        std::fs::write(file, text).expect("capture written");
    }
}

async fn ctl(world: &World, strategy: Strategy, extra_env: &[(&str, &str)], args: &[&str]) -> Run {
    let child = ctl_command(world, strategy, extra_env, args)
        .spawn()
        .expect("pgrotatectl starts");
    finish(child, &capture_name(args)).await
}

fn capture_name(args: &[&str]) -> String {
    let command = args.first().copied().unwrap_or("run");
    format!("{command}-{}", uuid::Uuid::new_v4().simple())
}

// --- Secrets Manager as the CLI sees it ------------------------------------------------

/// Secrets Manager in front of moto, where moto falls short of the service: moto's
/// RotateSecret invokes no unknown function, and without a RotationLambdaARN in the request it
/// moves AWSCURRENT to an empty version itself. The real service keeps the configured
/// function, labels the new version AWSPENDING and invokes the function asynchronously. So a
/// RotateSecret passing through here gets the configured function's ARN added (moto then
/// labels the version exactly as the service does and fails on the unknown function), and
/// that one failure becomes the service's answer; the test then plays the invocations. Every
/// other request goes to moto unchanged.
struct ServiceProxy {
    endpoint: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
struct ProxyState {
    moto: String,
    lambda_arn: String,
}

impl ServiceProxy {
    async fn start(world: &World) -> ServiceProxy {
        use axum::Router;
        let state = ProxyState {
            moto: world
                .stack
                .sm_endpoint
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
            lambda_arn: world.driver.lambda_arn.clone(),
        };
        let app = Router::new().fallback(proxy).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the proxy serves");
        });
        ServiceProxy { endpoint, server }
    }
}

async fn proxy(
    axum::extract::State(state): axum::extract::State<ProxyState>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20).await.unwrap().to_vec();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut body = body;
    let mut rotate: Option<Value> = None;
    if target == "secretsmanager.RotateSecret" {
        let mut request: Value = serde_json::from_slice(&body).unwrap();
        request["RotationLambdaARN"] = json!(state.lambda_arn);
        body = serde_json::to_vec(&request).unwrap();
        rotate = Some(request);
    }
    let (status, headers, answer) = forward(&state.moto, &parts, &body).await;
    if let Some(request) = rotate {
        let text = String::from_utf8_lossy(&answer);
        if status >= 400 && text.contains("Resource not found for ARN") {
            let reply = json!({
                "ARN": request["SecretId"],
                "Name": request["SecretId"],
                "VersionId": request["ClientRequestToken"],
            });
            return (
                axum::http::StatusCode::OK,
                [("content-type", "application/x-amz-json-1.1")],
                reply.to_string(),
            )
                .into_response();
        }
    }
    let mut response = axum::response::Response::new(axum::body::Body::from(answer));
    *response.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// One HTTP/1.0 exchange with moto: (status, headers, body).
async fn forward(
    authority: &str,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = format!("{} {path} HTTP/1.0\r\n", parts.method);
    for (name, value) in &parts.headers {
        let name = name.as_str();
        if ["host", "content-length", "connection", "transfer-encoding"].contains(&name) {
            continue;
        }
        head.push_str(&format!(
            "{name}: {}\r\n",
            value.to_str().unwrap_or_default()
        ));
    }
    head.push_str(&format!(
        "host: {authority}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let answer = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(502);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .filter(|(k, _)| {
            ![
                "content-length",
                "connection",
                "transfer-encoding",
                "server",
                "date",
            ]
            .contains(&k.as_str())
        })
        .collect();
    (status, headers, answer)
}

// --- the world's extras ----------------------------------------------------------------

/// Attaches the rotation function to the secret, as an operator does once: moto records
/// RotationEnabled and RotationLambdaARN on RotateSecret (and labels a version AWSPENDING,
/// which is removed again here).
async fn configure_rotation(world: &World, arn: &str) {
    let token = world.driver.start_rotation(arn).await;
    world.driver.end_rotation(arn, &token).await;
}

/// A secret whose rotation stopped after `steps` (none: right after RotateSecret). Returns
/// the pending version.
async fn stuck_after(world: &World, lambda: &Lambda, arn: &str, steps: &[&str]) -> String {
    let token = world.driver.start_rotation(arn).await;
    world
        .driver
        .run_steps(lambda, arn, &token, steps, None, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", lambda.logs()));
    token
}

fn cwl_client(world: &World) -> aws_sdk_cloudwatchlogs::Client {
    let config = aws_sdk_cloudwatchlogs::config::Builder::new()
        .behavior_version(aws_sdk_cloudwatchlogs::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudwatchlogs::config::Region::new(REGION))
        .endpoint_url(&world.stack.sm_endpoint)
        .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
            "testing", "testing", None, None, "e2e",
        ))
        .build();
    aws_sdk_cloudwatchlogs::Client::from_conf(config)
}

/// Copies the function's new output lines into its CloudWatch log group, as Lambda does.
struct LogShipper {
    client: aws_sdk_cloudwatchlogs::Client,
    group: String,
    stream: String,
    shipped: usize,
}

impl LogShipper {
    async fn new(world: &World, function_name: &str) -> LogShipper {
        let client = cwl_client(world);
        let group = format!("/aws/lambda/{function_name}");
        // Tests share the group; only "already exists" may fail.
        let _ = client
            .create_log_group()
            .log_group_name(&group)
            .send()
            .await;
        let stream = format!("2026/01/01/[$LATEST]{}", uuid::Uuid::new_v4().simple());
        client
            .create_log_stream()
            .log_group_name(&group)
            .log_stream_name(&stream)
            .send()
            .await
            .expect("CreateLogStream");
        LogShipper {
            client,
            group,
            stream,
            shipped: 0,
        }
    }

    async fn ship(&mut self, lambda: &Lambda) {
        let logs = lambda.logs();
        let lines: Vec<&str> = logs.lines().collect();
        if lines.len() <= self.shipped {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let events: Vec<_> = lines[self.shipped..]
            .iter()
            .map(|line| {
                aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                    .timestamp(now)
                    .message(*line)
                    .build()
                    .unwrap()
            })
            .collect();
        self.client
            .put_log_events()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .set_log_events(Some(events))
            .send()
            .await
            .expect("PutLogEvents");
        self.shipped = lines.len();
    }
}

/// Plays Secrets Manager after `pgrotatectl rotate`: waits for the new AWSPENDING version,
/// invokes `steps` through the function and ships its log after each; finishes the rotation
/// (AWSPENDING removed) when every step succeeded. Returns the token.
async fn play_secrets_manager(
    world: &World,
    lambda: &Lambda,
    shipper: &mut LogShipper,
    arn: &str,
    before: &Labels,
    steps: &[&str],
) -> String {
    let started = Instant::now();
    let token = loop {
        let labels = world.driver.labels(arn).await;
        if let Some((id, _)) = labels.iter().find(|(id, stages)| {
            !before.contains_key(*id) && stages.iter().any(|s| s == "AWSPENDING")
        }) {
            break id.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "pgrotatectl rotate started no rotation: {labels:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut all_ok = true;
    for step in steps {
        let outcome = lambda.invoke(&Driver::event(arn, &token, step, None)).await;
        shipper.ship(lambda).await;
        if outcome.is_err() {
            all_ok = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if all_ok && steps.len() == STEPS.len() {
        world.driver.end_rotation(arn, &token).await;
    }
    token
}

type Labels = crate::common::driver::Labels;

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

fn assert_check(report: &Value, id: &str, ok: bool, fragments: &[&str]) {
    let c = check(report, id);
    assert_eq!(c["ok"], ok, "check {id}: {c:#}");
    let text = format!(
        "{} {}",
        c["detail"].as_str().unwrap_or_default(),
        c["fix"].as_str().unwrap_or_default()
    );
    for f in fragments {
        assert!(text.contains(f), "check {id} should mention {f:?}: {c:#}");
    }
    if !ok {
        assert!(c["fix"].is_string(), "a failed check says the fix: {c:#}");
    }
}

// --- status and resume -----------------------------------------------------------------

/// Where a rotation stopped, the stage status reports, and what resume does about it.
const STUCK_CASES: [(&str, &[&str], &str); 4] = [
    ("before-create", &[], "awaiting-create"),
    ("after-create", &["createSecret"], "awaiting-set"),
    (
        "after-set",
        &["createSecret", "setSecret"],
        "awaiting-finish",
    ),
    (
        "after-test",
        &["createSecret", "setSecret", "testSecret"],
        "awaiting-finish",
    ),
];

async fn stuck_rotations_are_reported_and_resumed(strategy: Strategy) {
    let world = World::new(FUNCTION).await;
    let mut lambda = world.lambda(strategy).await;
    for (case, steps, stage) in STUCK_CASES {
        let context = format!("{} stuck {case}", strategy.as_str());
        let (arn, user) = world.user_secret(strategy, None).await;
        configure_rotation(&world, &arn).await;
        let before = Before::take(&world, &arn, None).await;
        let token = stuck_after(&world, &lambda, &arn, steps).await;
        let labels = world.driver.labels(&arn).await;

        // status: stuck, at which step, which credentials log in.
        let run = ctl(
            &world,
            strategy,
            &[],
            &["status", "--json", "--secret-id", &arn],
        )
        .await;
        run.assert_code(1, &context);
        let status = run.json();
        assert_eq!(status["healthy"], false, "{context}: {status:#}");
        assert_eq!(status["stuck"]["version"], token.as_str(), "{context}");
        assert_eq!(status["stuck"]["stage"], stage, "{context}: {status:#}");
        let current_works = !(strategy == Strategy::SingleUser && stage == "awaiting-finish");
        assert_eq!(
            status["current_logs_in"], current_works,
            "{context}: {status:#}"
        );
        let pending_line = status["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["id"] == token.as_str())
            .unwrap_or_else(|| panic!("{context}: the pending version is listed: {status:#}"));
        let expected_login = match stage {
            "awaiting-create" => "no-value",
            "awaiting-set" => "refused",
            _ => "ok",
        };
        assert_eq!(
            pending_line["login"]["result"], expected_login,
            "{context}: {status:#}"
        );

        // The text form says the same, and where to go next.
        let text = ctl(&world, strategy, &[], &["status", "--secret-id", &arn]).await;
        text.assert_code(1, &context);
        assert!(
            text.stdout.contains("pgrotatectl resume --secret-id"),
            "{}",
            text.stdout
        );

        // resume asks first: no terminal and no --yes changes nothing.
        let refused = ctl(
            &world,
            strategy,
            &[],
            &["resume", "--min-age", "0", "--secret-id", &arn],
        )
        .await;
        refused.assert_code(1, &context);
        assert!(
            refused.stderr.contains("--yes"),
            "{context}: {}",
            refused.stderr
        );
        // A pending version younger than --min-age (moto dates every version now) is left alone.
        let young = ctl(
            &world,
            strategy,
            &[],
            &["resume", "--yes", "--secret-id", &arn],
        )
        .await;
        young.assert_code(1, &context);
        assert!(
            young.stderr.contains("may still be running"),
            "{context}: {}",
            young.stderr
        );
        assert_eq!(
            world.driver.labels(&arn).await,
            labels,
            "{context}: nothing changed"
        );

        let run = ctl(
            &world,
            strategy,
            &[],
            &[
                "resume",
                "--json",
                "--yes",
                "--min-age",
                "0",
                "--secret-id",
                &arn,
            ],
        )
        .await;
        run.assert_code(0, &context);
        let resumed = run.json();
        assert_eq!(resumed["applied"], true, "{context}: {resumed:#}");
        assert_eq!(resumed["after"]["healthy"], true, "{context}: {resumed:#}");
        match stage {
            "awaiting-finish" => {
                assert_eq!(resumed["action"], "finish", "{context}: {resumed:#}");
                let ran: Vec<&str> = resumed["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["step"].as_str().unwrap())
                    .collect();
                assert_eq!(
                    ran,
                    ["setSecret", "testSecret", "finishSecret"],
                    "{context}"
                );
                check_rotated(&world, &arn, strategy, &token, &before, &context).await;
            }
            _ => {
                assert_eq!(resumed["action"], "drop", "{context}: {resumed:#}");
                let after = world.driver.labels(&arn).await;
                assert_eq!(
                    after.get(before.current_version()).map(Vec::as_slice),
                    Some(&["AWSCURRENT".to_string()][..]),
                    "{context}: AWSCURRENT stays"
                );
                assert!(
                    !after.values().any(|s| s.iter().any(|l| l == "AWSPENDING")),
                    "{context}: AWSPENDING dropped: {after:?}"
                );
                assert_eq!(
                    login(&world.stack, &before.value).await,
                    Login::Ok(user.clone()),
                    "{context}: AWSCURRENT still logs in"
                );
                // Unstuck: a new rotation runs to the end.
                let before = Before::take(&world, &arn, None).await;
                let token = world
                    .driver
                    .rotate(&lambda, &arn, None)
                    .await
                    .unwrap_or_else(|e| panic!("{context}: rotation after the drop: {e}"));
                check_rotated(&world, &arn, strategy, &token, &before, &context).await;
            }
        }
        // Nothing left to resume.
        let again = ctl(
            &world,
            strategy,
            &[],
            &["resume", "--json", "--secret-id", &arn],
        )
        .await;
        again.assert_code(0, &context);
        assert_eq!(again.json()["action"], "nothing", "{context}");
    }
    lambda.stop().await;
}

#[rstest]
#[case::single_user(Strategy::SingleUser)]
#[case::alternating_users(Strategy::AlternatingUsers)]
#[tokio::test]
async fn status_and_resume_handle_rotations_stuck_after_each_step(#[case] strategy: Strategy) {
    stuck_rotations_are_reported_and_resumed(strategy).await;
}

/// Single user after setSecret: only the pending credentials work, so dropping them is
/// refused; finishing is what resume does by itself.
#[tokio::test]
async fn resume_never_drops_the_only_working_credentials() {
    let world = World::new(FUNCTION).await;
    let mut lambda = world.lambda(Strategy::SingleUser).await;
    let (arn, _) = world.user_secret(Strategy::SingleUser, None).await;
    let token = stuck_after(&world, &lambda, &arn, &["createSecret", "setSecret"]).await;
    let labels = world.driver.labels(&arn).await;
    let run = ctl(
        &world,
        Strategy::SingleUser,
        &[],
        &[
            "resume",
            "--json",
            "--drop",
            "--yes",
            "--min-age",
            "0",
            "--secret-id",
            &arn,
        ],
    )
    .await;
    run.assert_code(1, "--drop");
    let error = run.json();
    assert_eq!(error["error"]["type"], "Refused", "{error:#}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only ones that log in"),
        "{error:#}"
    );
    assert_eq!(world.driver.labels(&arn).await, labels, "nothing changed");
    assert_eq!(
        login(&world.stack, &world.driver.json(&arn, "AWSPENDING").await).await,
        Login::Ok(str_field(&world.current(&arn).await, "username").to_string())
    );

    // The wrong strategy is refused before anything changes.
    let run = ctl(
        &world,
        Strategy::AlternatingUsers,
        &[],
        &["resume", "--yes", "--min-age", "0", "--secret-id", &arn],
    )
    .await;
    run.assert_code(1, "wrong strategy");
    assert!(run.stderr.contains("single-user"), "{}", run.stderr);
    assert_eq!(world.driver.labels(&arn).await, labels, "nothing changed");

    let run = ctl(
        &world,
        Strategy::SingleUser,
        &[],
        &["resume", "--yes", "--min-age", "0", "--secret-id", &arn],
    )
    .await;
    run.assert_code(0, "resume");
    assert!(run.stdout.contains("finishing"), "{}", run.stdout);
    assert_eq!(
        world
            .driver
            .version_with(&arn, "AWSCURRENT")
            .await
            .as_deref(),
        Some(token.as_str())
    );
    lambda.stop().await;
}

// --- preflight -------------------------------------------------------------------------

#[rstest]
#[case::single_user(Strategy::SingleUser)]
#[case::alternating_users(Strategy::AlternatingUsers)]
#[tokio::test]
async fn preflight_passes_for_a_secret_ready_to_rotate(#[case] strategy: Strategy) {
    let world = World::new(FUNCTION).await;
    let key = world.driver.create_kms_key("pgrotate preflight").await;
    let (arn, user) = world.user_secret(strategy, Some(&key)).await;
    configure_rotation(&world, &arn).await;
    let env = [("ALLOWED_DB_HOSTS", "localhost")];
    let run = ctl(
        &world,
        strategy,
        &env,
        &["preflight", "--json", "--secret-id", &arn],
    )
    .await;
    run.assert_code(0, strategy.as_str());
    let report = run.json();
    assert_eq!(report["ok"], true, "{report:#}");
    assert_check(&report, "secret-readable", true, &[]);
    assert_check(&report, "secret-well-formed", true, &[&user]);
    assert_check(
        &report,
        "rotation",
        true,
        &[&lambda::function_arn(FUNCTION), "rate(30 days)"],
    );
    assert_check(&report, "kms-key", true, &["customer managed key", &key]);
    assert_check(&report, "allowed-hosts", true, &["localhost"]);
    assert_check(
        &report,
        "database",
        true,
        &["TLSv1.3", "channel binding used", "verify-full"],
    );
    assert_check(&report, "password-settings", true, &["32 characters"]);
    assert_check(&report, "labels", true, &["no rotation pending"]);
    if strategy == Strategy::AlternatingUsers {
        assert_check(&report, "clone-name", true, &[&format!("{user}_clone")]);
        assert_check(&report, "master-secret", true, &["postgres"]);
        assert_check(&report, "master-host", true, &["ALLOWED_DB_HOSTS"]);
        assert_check(&report, "master-privileges", true, &["superuser"]);
        assert_check(&report, "alternate", true, &["does not exist yet"]);
    }
    if strategy == Strategy::AlternatingUsers {
        // After a rotation the clone is current, and logs in with the primary as its role.
        let invoker = InProcess::new(&world.stack, strategy).await;
        world
            .driver
            .rotate(&invoker, &arn, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let run = ctl(
            &world,
            strategy,
            &env,
            &["preflight", "--json", "--secret-id", &arn],
        )
        .await;
        run.assert_code(0, "the clone current");
        let report = run.json();
        assert_check(
            &report,
            "database",
            true,
            &[&format!("as {user}_clone"), "TLSv1.3"],
        );
        assert_check(&report, "alternate", true, &[&format!("{user} exists")]);
    }
    // The text form: one ✓ line per check.
    let text = ctl(&world, strategy, &env, &["preflight", "--secret-id", &arn]).await;
    text.assert_code(0, "text");
    let checks = report["checks"].as_array().unwrap().len();
    assert_eq!(
        text.stdout.matches("  ✓ ").count(),
        checks,
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains(&format!("all {checks} checks passed")),
        "{}",
        text.stdout
    );
}

#[tokio::test]
async fn preflight_fails_each_problem_with_its_fix() {
    let world = World::new(FUNCTION).await;
    let lambda = world.lambda(Strategy::SingleUser).await;
    let single = Strategy::SingleUser;
    let alternating = Strategy::AlternatingUsers;

    // No such secret.
    let run = ctl(
        &world,
        single,
        &[],
        &["preflight", "--json", "--secret-id", "e2e/no-such-secret"],
    )
    .await;
    run.assert_code(1, "no such secret");
    assert_check(
        &run.json(),
        "secret-readable",
        false,
        &["ResourceNotFoundException"],
    );

    // Rotation not configured, wrong password, bad password settings.
    let (arn, user) = world.user_secret(single, None).await;
    world
        .stack
        .exec(
            "postgres",
            &format!(
                "ALTER ROLE {} PASSWORD {}",
                quote_ident(&user),
                quote_literal(&random_password())
            ),
        )
        .await;
    let run = ctl(
        &world,
        single,
        &[("PASSWORD_LENGTH", "0")],
        &["preflight", "--json", "--secret-id", &arn],
    )
    .await;
    run.assert_code(1, "several problems");
    let report = run.json();
    assert_check(
        &report,
        "rotation",
        false,
        &["not enabled", "rotate-secret"],
    );
    assert_check(
        &report,
        "database",
        false,
        &["password authentication failed"],
    );
    assert_check(&report, "password-settings", false, &["PASSWORD_LENGTH"]);
    assert_check(&report, "configuration", false, &["PASSWORD_LENGTH"]);
    assert_check(&report, "secret-readable", true, &[]);

    // A malformed secret.
    let bad = world
        .driver
        .create_secret(
            &unique("e2e/bad"),
            &json!({"engine": "postgres", "username": "x", "password": "y"}).to_string(),
            None,
        )
        .await;
    let run = ctl(
        &world,
        single,
        &[],
        &["preflight", "--json", "--secret-id", &bad],
    )
    .await;
    run.assert_code(1, "malformed");
    assert_check(
        &run.json(),
        "secret-well-formed",
        false,
        &["\"host\" is missing"],
    );

    // A host outside ALLOWED_DB_HOSTS, and a stuck rotation.
    let (arn, _) = world.user_secret(single, None).await;
    configure_rotation(&world, &arn).await;
    stuck_after(&world, &lambda, &arn, &["createSecret"]).await;
    let run = ctl(
        &world,
        single,
        &[("ALLOWED_DB_HOSTS", "*.internal")],
        &["preflight", "--json", "--secret-id", &arn],
    )
    .await;
    run.assert_code(1, "host and labels");
    let report = run.json();
    assert_check(
        &report,
        "allowed-hosts",
        false,
        &["localhost", "*.internal"],
    );
    assert_check(
        &report,
        "labels",
        false,
        &[
            "AWSPENDING",
            "setSecret has not taken effect",
            "pgrotatectl resume",
        ],
    );

    // Alternating users: an RDS-style master secret (no host) without ALLOWED_DB_HOSTS.
    let (arn, _) = world.user_secret(alternating, None).await;
    let run = ctl(
        &world,
        alternating,
        &[],
        &["preflight", "--json", "--secret-id", &arn],
    )
    .await;
    run.assert_code(1, "unvouched master host");
    let report = run.json();
    assert_check(
        &report,
        "master-host",
        false,
        &["ALLOWED_DB_HOSTS is not set", "\"host\""],
    );
    assert!(
        report["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "master-privileges"),
        "the master password is not sent: {report:#}"
    );

    // A master user that is not allowed to manage roles, and a privileged alternate.
    let weak = unique("e2e_weak");
    let weak_password = random_password();
    world
        .stack
        .exec(
            "postgres",
            &format!(
                "CREATE ROLE {} LOGIN PASSWORD {}",
                quote_ident(&weak),
                quote_literal(&weak_password)
            ),
        )
        .await;
    let weak_master = world
        .driver
        .create_secret(
            &unique("e2e/weak-master"),
            &json!({"username": weak, "password": weak_password, "host": world.stack.host})
                .to_string(),
            None,
        )
        .await;
    let user = unique("e2e");
    let password = random_password();
    world.stack.create_app_user(&user, &password).await;
    world
        .stack
        .exec(
            "postgres",
            &format!(
                "CREATE ROLE {} LOGIN CREATEROLE",
                quote_ident(&format!("{user}_clone"))
            ),
        )
        .await;
    let value = world.user_json(&user, &password, Some(&weak_master));
    let arn = world
        .driver
        .create_secret(&unique("e2e/app"), &value.to_string(), None)
        .await;
    let run = ctl(
        &world,
        alternating,
        &[],
        &["preflight", "--json", "--secret-id", &arn],
    )
    .await;
    run.assert_code(1, "weak master");
    let report = run.json();
    assert_check(&report, "master-host", true, &["master secret's own host"]);
    assert_check(
        &report,
        "master-privileges",
        false,
        &["neither SUPERUSER nor CREATEROLE", "ALTER ROLE"],
    );
    assert_check(&report, "alternate", false, &["CREATEROLE", "NOCREATEROLE"]);

    // A user name whose clone would pass 63 bytes.
    // 59 bytes: its clone would have 65.
    let long = format!("{}{}", unique("e2e_long"), "l".repeat(38));
    assert_eq!(long.len(), 59);
    world.stack.create_app_user(&long, &password).await;
    let master = world.master_secret(None).await;
    let value = world.user_json(&long, &password, Some(&master));
    let arn = world
        .driver
        .create_secret(&unique("e2e/app"), &value.to_string(), None)
        .await;
    let run = ctl(
        &world,
        alternating,
        &[("ALLOWED_DB_HOSTS", "localhost")],
        &["preflight", "--json", "--secret-id", &arn],
    )
    .await;
    run.assert_code(1, "long name");
    assert_check(&run.json(), "clone-name", false, &["63"]);
    drop(lambda);
}

// --- rotate ----------------------------------------------------------------------------

#[rstest]
#[case::single_user(Strategy::SingleUser)]
#[case::alternating_users(Strategy::AlternatingUsers)]
#[tokio::test]
async fn rotate_wait_follows_a_rotation_to_the_end(#[case] strategy: Strategy) {
    let world = World::new(FUNCTION).await;
    let mut lambda = world.lambda(strategy).await;
    let mut shipper = LogShipper::new(&world, FUNCTION).await;
    let (arn, _) = world.user_secret(strategy, None).await;
    configure_rotation(&world, &arn).await;
    let before = Before::take(&world, &arn, None).await;
    let proxy = ServiceProxy::start(&world).await;
    let env = [("AWS_ENDPOINT_URL_SECRETS_MANAGER", proxy.endpoint.as_str())];
    let child = ctl_command(
        &world,
        strategy,
        &env,
        &[
            "rotate",
            "--json",
            "--wait",
            "--timeout",
            "60",
            "--secret-id",
            &arn,
        ],
    )
    .spawn()
    .expect("pgrotatectl starts");
    let token =
        play_secrets_manager(&world, &lambda, &mut shipper, &arn, &before.labels, &STEPS).await;
    let run = finish(child, "rotate-wait").await;
    run.assert_code(0, "rotate --wait");
    let report = run.json();
    assert_eq!(report["outcome"], "rotated", "{report:#}");
    assert_eq!(report["version"], token.as_str());
    assert_eq!(report["log_readable"], true, "{report:#}");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, STEPS, "{report:#}");
    assert!(
        run.stderr.contains("finishSecret succeeded"),
        "progress on stderr:\n{}",
        run.stderr
    );
    check_rotated(&world, &arn, strategy, &token, &before, "rotate --wait").await;

    // The text form of the next rotation: one line per step, then the result.
    let before = Before::take(&world, &arn, None).await;
    let child = ctl_command(
        &world,
        strategy,
        &env,
        &["rotate", "--wait", "--secret-id", &arn],
    )
    .spawn()
    .expect("pgrotatectl starts");
    let token =
        play_secrets_manager(&world, &lambda, &mut shipper, &arn, &before.labels, &STEPS).await;
    let run = finish(child, &format!("rotate-wait-text-{}", strategy.as_str())).await;
    run.assert_code(0, "rotate --wait (text)");
    for step in STEPS {
        assert!(
            run.stdout.contains(&format!("  ✓ {step} (")),
            "{}",
            run.stdout
        );
    }
    assert!(
        run.stdout
            .contains(&format!("✓ rotated: version {token} is AWSCURRENT")),
        "{}",
        run.stdout
    );
    check_rotated(
        &world,
        &arn,
        strategy,
        &token,
        &before,
        "rotate --wait (text)",
    )
    .await;
    lambda.stop().await;
}

#[tokio::test]
async fn rotate_wait_reports_the_failing_step_and_its_error_from_the_log() {
    let world = World::new(FUNCTION).await;
    let strategy = Strategy::SingleUser;
    let mut lambda = world.lambda(strategy).await;
    let mut shipper = LogShipper::new(&world, FUNCTION).await;
    let (arn, user) = world.user_secret(strategy, None).await;
    configure_rotation(&world, &arn).await;
    // Someone changed the password behind the secret's back: setSecret cannot log in.
    world
        .stack
        .exec(
            "postgres",
            &format!(
                "ALTER ROLE {} PASSWORD {}",
                quote_ident(&user),
                quote_literal(&random_password())
            ),
        )
        .await;
    let before = Before::take(&world, &arn, None).await;
    let proxy = ServiceProxy::start(&world).await;
    let env = [("AWS_ENDPOINT_URL_SECRETS_MANAGER", proxy.endpoint.as_str())];
    let child = ctl_command(
        &world,
        strategy,
        &env,
        &[
            "rotate",
            "--json",
            "--wait",
            "--timeout",
            "60",
            "--secret-id",
            &arn,
        ],
    )
    .spawn()
    .expect("pgrotatectl starts");
    play_secrets_manager(&world, &lambda, &mut shipper, &arn, &before.labels, &STEPS).await;
    let run = finish(child, "rotate-wait-failed").await;
    run.assert_code(1, "failed rotation");
    let report = run.json();
    assert_eq!(report["outcome"], "failed", "{report:#}");
    assert_eq!(report["failed_step"], "setSecret", "{report:#}");
    assert_eq!(report["error_type"], "NoWorkingCredentials", "{report:#}");
    assert!(
        report["error_message"].as_str().unwrap().contains(&user),
        "{report:#}"
    );

    // Neither AWSCURRENT nor the pending credentials log in: dropping the stale AWSPENDING
    // takes nothing that works, so it is allowed when asked for.
    let run = ctl(
        &world,
        strategy,
        &[],
        &[
            "resume",
            "--json",
            "--drop",
            "--yes",
            "--min-age",
            "0",
            "--secret-id",
            &arn,
        ],
    )
    .await;
    run.assert_code(1, "dropped, but AWSCURRENT still does not log in");
    let resumed = run.json();
    assert_eq!(resumed["action"], "drop", "{resumed:#}");
    assert_eq!(resumed["applied"], true, "{resumed:#}");
    assert_eq!(resumed["after"]["current_logs_in"], false, "{resumed:#}");
    assert!(resumed["after"]["stuck"].is_null(), "{resumed:#}");

    // The same failure in text form.
    let before = Before::take(&world, &arn, None).await;
    let child = ctl_command(
        &world,
        strategy,
        &env,
        &["rotate", "--wait", "--secret-id", &arn],
    )
    .spawn()
    .expect("pgrotatectl starts");
    play_secrets_manager(&world, &lambda, &mut shipper, &arn, &before.labels, &STEPS).await;
    let run = finish(child, "rotate-wait-failed-text").await;
    run.assert_code(1, "failed rotation (text)");
    assert!(run.stdout.contains("  ✓ createSecret ("), "{}", run.stdout);
    assert!(run.stdout.contains("  ✗ setSecret ("), "{}", run.stdout);
    assert!(
        run.stdout.contains("NoWorkingCredentials"),
        "{}",
        run.stdout
    );
    lambda.stop().await;
}

#[tokio::test]
async fn rotate_without_a_readable_log_says_where_to_look() {
    let world = World::new(FUNCTION).await;
    let strategy = Strategy::SingleUser;
    let (arn, _) = world.user_secret(strategy, None).await;
    configure_rotation(&world, &arn).await;
    let group = format!("/aws/lambda/{}", unique("absent"));
    let proxy = ServiceProxy::start(&world).await;
    let env = [("AWS_ENDPOINT_URL_SECRETS_MANAGER", proxy.endpoint.as_str())];
    let run = ctl(
        &world,
        strategy,
        &env,
        &[
            "rotate",
            "--json",
            "--wait",
            "--timeout",
            "3",
            "--log-group",
            &group,
            "--secret-id",
            &arn,
        ],
    )
    .await;
    run.assert_code(1, "timed out");
    let report = run.json();
    assert_eq!(report["outcome"], "timed-out", "{report:#}");
    assert_eq!(report["log_readable"], false, "{report:#}");
    let detail = report["detail"].as_str().unwrap();
    let version = report["version"].as_str().unwrap();
    assert!(
        detail.contains(&group) && detail.contains(version),
        "{detail}"
    );
    assert!(detail.contains("ResourceNotFoundException"), "{detail}");

    // A new rotation is refused while this one is pending, pointing at resume.
    let run = ctl(&world, strategy, &env, &["rotate", "--secret-id", &arn]).await;
    run.assert_code(1, "stuck");
    assert!(run.stderr.contains("pgrotatectl resume"), "{}", run.stderr);

    // Without --wait: started, exit 0.
    let (arn, _) = world.user_secret(strategy, None).await;
    configure_rotation(&world, &arn).await;
    let run = ctl(
        &world,
        strategy,
        &env,
        &["rotate", "--json", "--secret-id", &arn],
    )
    .await;
    run.assert_code(0, "started");
    let report = run.json();
    assert_eq!(report["outcome"], "started");
    assert_eq!(
        world
            .driver
            .version_with(&arn, "AWSPENDING")
            .await
            .as_deref(),
        report["version"].as_str()
    );
}

// --- the function's own signals --------------------------------------------------------

/// Every step writes one EMF record (valid, with the documented metrics and dimensions, and
/// no secret); a failed step counts RotationFailed.
#[tokio::test]
async fn each_step_writes_one_valid_emf_record_without_secrets() {
    let world = World::new(FUNCTION).await;
    let strategy = Strategy::AlternatingUsers;
    let mut lambda = world.lambda(strategy).await;
    let (arn, _) = world.user_secret(strategy, None).await;
    let master = world.current(&arn).await["masterarn"]
        .as_str()
        .unwrap()
        .to_string();
    let before = Before::take(&world, &arn, None).await;
    let token = world
        .driver
        .rotate(&lambda, &arn, None)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", lambda.logs()));
    let current = check_rotated(&world, &arn, strategy, &token, &before, "emf").await;
    // A failing step: an event for a version that does not exist.
    let unknown = uuid::Uuid::new_v4().to_string();
    assert!(
        lambda
            .invoke(&Driver::event(&arn, &unknown, "setSecret", None))
            .await
            .is_err()
    );
    lambda.stop().await;

    let logs = lambda.logs();
    let records: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(records.len(), 5, "one record per invocation:\n{logs}");
    for (record, step) in records.iter().zip(STEPS.iter().chain(["setSecret"].iter())) {
        let directive = &record["_aws"]["CloudWatchMetrics"][0];
        assert!(record["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
        assert_eq!(directive["Namespace"], "pgrotate");
        assert_eq!(
            directive["Dimensions"],
            json!([["Step", "Strategy"], ["FunctionName"]])
        );
        assert!(record["FunctionName"].is_string(), "{record}");
        assert_eq!(record["Step"], *step);
        assert_eq!(record["Strategy"], "alternating-users");
        assert!(record["StepDuration"].is_u64());
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(record[name].is_number(), "{name} has a value: {record}");
        }
    }
    assert_eq!(records[3]["RotationSucceeded"], 1);
    assert!(
        records[..3]
            .iter()
            .all(|r| r.get("RotationSucceeded").is_none())
    );
    assert_eq!(records[4]["RotationFailed"], 1);
    assert_eq!(records[4]["ErrorType"], "UnknownVersion");
    assert!(
        records[..4]
            .iter()
            .all(|r| r.get("RotationFailed").is_none())
    );
    let values = [
        before.value.clone(),
        current.clone(),
        world.driver.json(&master, "AWSCURRENT").await,
    ];
    let record_text: String = records.iter().map(Value::to_string).collect();
    for value in &values {
        assert!(
            !record_text.contains(str_field(value, "password")),
            "a password in a record"
        );
    }
    assert_logs_clean(&world.stack, &logs, &values, &[current], &[]);
}

/// A configuration that cannot work is reported on the runtime API's init-error endpoint
/// (errorType and message, as Lambda shows them), and the process exits non-zero.
#[tokio::test]
async fn a_bad_configuration_is_reported_through_the_init_error_endpoint() {
    let world = World::new(FUNCTION).await;
    let lambda = Lambda::start(
        crate::common::driver::deployment(&world.stack, Strategy::SingleUser, FUNCTION)
            .env("PASSWORD_LENGTH", "0"),
    )
    .await;
    let started = Instant::now();
    while lambda.exited().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the process did not exit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exited = lambda.exited().unwrap();
    assert!(
        !exited.contains("exit status: 0"),
        "non-zero exit: {exited}"
    );
    let body: Value = serde_json::from_str(&lambda.init_error().expect("init/error was called"))
        .expect("the init error is JSON");
    assert_eq!(body["errorType"], "InvalidConfiguration", "{body}");
    let message = body["errorMessage"].as_str().unwrap();
    assert!(message.contains("PASSWORD_LENGTH"), "{message}");
    assert_eq!(
        lambda.init_error_type().as_deref(),
        Some("InvalidConfiguration")
    );
    // An invocation now fails with the init error in its message.
    let outcome = lambda.invoke(&json!({})).await;
    let (error_type, message) = outcome.expect_err("no function to invoke");
    assert_eq!(error_type, "Runtime.ExitError");
    assert!(message.contains("InvalidConfiguration"), "{message}");
}
