//! A minimal AWS Lambda Runtime API emulator that runs the **release binary** the way Lambda
//! does: it serves the runtime API (the endpoints and headers `lambda_runtime` 1.5 uses) on a
//! loopback port, starts the binary with the environment Lambda gives a function, hands it
//! one event per invocation, and returns the function's answer or its error
//! (`errorType`, `errorMessage`). The process's stdout and stderr are kept in a buffer (the
//! "CloudWatch log" of the function) for the tests to inspect. The process can be killed and
//! restarted between invocations, as Lambda does when an execution environment dies.
//!
//! Endpoints (all under `/2018-06-01/runtime`):
//! - `GET invocation/next`: long-polls for the next event; answers with the event as body and
//!   the headers `Lambda-Runtime-Aws-Request-Id`, `Lambda-Runtime-Deadline-Ms`,
//!   `Lambda-Runtime-Invoked-Function-Arn`, `Lambda-Runtime-Trace-Id`;
//! - `POST invocation/{id}/response` and `POST invocation/{id}/error`: complete an invocation;
//! - `POST init/error`: the function could not initialise.
//!
//! For the benchmark, the emulator also times what Lambda reports: the init duration (process
//! start to the first `invocation/next`) and each invocation's duration (event handed out to
//! answer received), both taken in the emulator's own handlers.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// What an invocation ended with: the function's result, or its `(errorType, errorMessage)`.
pub type Outcome = Result<Value, (String, String)>;

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

/// The function ARN Lambda would give a function of this name.
pub fn function_arn(function_name: &str) -> String {
    format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name}")
}

/// The release binary: Cargo names it for integration tests; an example (the demo) finds it
/// next to its own directory (`target/release/examples/demo` → `target/release/pgrotate`).
pub fn binary_path() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_pgrotate") {
        return PathBuf::from(path);
    }
    if let Ok(path) = std::env::var("PGROTATE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the path of the running executable");
    let dir = exe.parent().expect("a directory");
    let dir = if dir
        .file_name()
        .is_some_and(|n| n == "examples" || n == "deps")
    {
        dir.parent().expect("the profile directory")
    } else {
        dir
    };
    dir.join("pgrotate")
}

/// How the function is deployed: its name and its environment variables (on top of the ones
/// Lambda itself sets).
#[derive(Debug, Clone)]
pub struct Deployment {
    pub function_name: String,
    pub env: Vec<(String, String)>,
    /// How long an invocation may run before the emulator gives up on it.
    pub timeout: Duration,
}

impl Deployment {
    pub fn new(function_name: &str) -> Deployment {
        Deployment {
            function_name: function_name.to_string(),
            env: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }

    /// Sets (or replaces) one environment variable.
    pub fn env(mut self, name: &str, value: &str) -> Deployment {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Removes one environment variable.
    pub fn without(mut self, name: &str) -> Deployment {
        self.env.retain(|(k, _)| k != name);
        self
    }
}

struct Queued {
    id: String,
    body: Bytes,
}

#[derive(Default)]
struct Inner {
    /// Bumped whenever the process is killed: a `next` call still parked from the dead
    /// process must not take an event meant for its successor.
    generation: u64,
    queue: VecDeque<Queued>,
    /// Invocations queued or running, by request id.
    waiting: HashMap<String, oneshot::Sender<Outcome>>,
    init_error: Option<String>,
    /// The `Lambda-Runtime-Function-Error-Type` header of the `init/error` call.
    init_error_type: Option<String>,
    /// Set when the current process ended on its own (a crash, a failed start).
    exited: Option<String>,
    invocations: u64,
    /// When the current process was started, and when it first asked for work.
    spawned_at: Option<Instant>,
    first_next_at: Option<Instant>,
    /// When each running invocation's event was handed out, by request id.
    handed_out: HashMap<String, Instant>,
    /// The duration of every completed invocation, in order of completion.
    durations: Vec<Duration>,
}

struct Shared {
    inner: Mutex<Inner>,
    wake: Notify,
    /// Notified when a process first asks for work.
    ready: Notify,
    function_arn: String,
    timeout: Duration,
}

impl Shared {
    fn fail_all(&self, error_type: &str, message: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.queue.clear();
        for (_, tx) in inner.waiting.drain() {
            let _ = tx.send(Err((error_type.to_string(), message.to_string())));
        }
    }
}

struct Process {
    pid: Option<u32>,
    kill: Option<oneshot::Sender<()>>,
    watcher: JoinHandle<()>,
    readers: Vec<JoinHandle<()>>,
}

/// The emulator and the function process it runs.
pub struct Lambda {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: JoinHandle<()>,
    deployment: Deployment,
    logs: Arc<Mutex<String>>,
    process: Option<Process>,
    starts: u32,
}

impl Lambda {
    /// Serves the runtime API on 127.0.0.1 and starts the function process.
    pub async fn start(deployment: Deployment) -> Lambda {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            ready: Notify::new(),
            function_arn: function_arn(&deployment.function_name),
            timeout: deployment.timeout,
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the runtime API");
        let addr = listener.local_addr().expect("local address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("runtime API server");
        });
        let mut lambda = Lambda {
            shared,
            addr,
            server,
            deployment,
            logs: Arc::new(Mutex::new(String::new())),
            process: None,
            starts: 0,
        };
        lambda.spawn();
        lambda
    }

    /// The runtime API address given to the function (`AWS_LAMBDA_RUNTIME_API`).
    pub fn runtime_api(&self) -> String {
        self.addr.to_string()
    }

    pub fn function_arn(&self) -> &str {
        &self.shared.function_arn
    }

    /// How many times the process was started (cold starts).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// How many events were handed to the function so far.
    pub fn invocations(&self) -> u64 {
        self.shared.inner.lock().unwrap().invocations
    }

    /// Everything the function wrote to stdout and stderr so far, across restarts.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// The pid of the running function process.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(|p| p.pid)
    }

    /// The current process's init duration: from its start to its first request for work
    /// (`None` until it asked).
    pub fn init_duration(&self) -> Option<Duration> {
        let inner = self.shared.inner.lock().unwrap();
        Some(inner.first_next_at?.duration_since(inner.spawned_at?))
    }

    /// Waits until the current process first asks for work; returns its init duration, or
    /// `None` when it did not within `limit`.
    pub async fn wait_ready(&self, limit: Duration) -> Option<Duration> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.shared.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(duration) = self.init_duration() {
                return Some(duration);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.init_duration();
            }
        }
    }

    /// The durations of the completed invocations, in order (event handed out to answer).
    pub fn durations(&self) -> Vec<Duration> {
        self.shared.inner.lock().unwrap().durations.clone()
    }

    /// The duration of the last completed invocation.
    pub fn last_duration(&self) -> Option<Duration> {
        self.shared.inner.lock().unwrap().durations.last().copied()
    }

    /// The body of an `init/error` call, if the function reported one.
    pub fn init_error(&self) -> Option<String> {
        self.shared.inner.lock().unwrap().init_error.clone()
    }

    /// The `Lambda-Runtime-Function-Error-Type` header of that call.
    pub fn init_error_type(&self) -> Option<String> {
        self.shared.inner.lock().unwrap().init_error_type.clone()
    }

    /// Whether the function process ended on its own (and how), `None` while it runs.
    pub fn exited(&self) -> Option<String> {
        self.shared.inner.lock().unwrap().exited.clone()
    }

    fn spawn(&mut self) {
        let d = &self.deployment;
        let mut command = tokio::process::Command::new(binary_path());
        command
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", self.runtime_api())
            .env("AWS_LAMBDA_FUNCTION_NAME", &d.function_name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", d.function_name),
            )
            .env(
                "AWS_LAMBDA_LOG_STREAM_NAME",
                format!("2026/01/01/[$LATEST]{:032x}", self.starts),
            )
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .env("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023")
            .env("LAMBDA_TASK_ROOT", "/var/task")
            .env("TZ", ":UTC")
            // The most verbose level, so the log checks see everything the function can say.
            .env("AWS_LAMBDA_LOG_LEVEL", "TRACE")
            .envs(d.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        {
            let mut inner = self.shared.inner.lock().unwrap();
            inner.first_next_at = None;
            inner.spawned_at = Some(Instant::now());
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary_path().display()));
        self.starts += 1;
        let pid = child.id();
        let readers = vec![
            read_into(child.stdout.take().expect("stdout"), self.logs.clone()),
            read_into(child.stderr.take().expect("stderr"), self.logs.clone()),
        ];
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let shared = self.shared.clone();
        let generation = shared.inner.lock().unwrap().generation;
        let watcher = tokio::spawn(async move {
            let killed;
            let status: std::io::Result<ExitStatus> = tokio::select! {
                status = child.wait() => { killed = false; status }
                _ = kill_rx => {
                    killed = true;
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            let status = match status {
                Ok(s) => s.to_string(),
                Err(e) => format!("unknown status ({e})"),
            };
            let message = if killed {
                format!("the function process was killed ({status})")
            } else {
                format!("the function process exited ({status})")
            };
            {
                let mut inner = shared.inner.lock().unwrap();
                if inner.generation == generation && !killed {
                    inner.exited = Some(message.clone());
                }
            }
            shared.fail_all("Runtime.ExitError", &message);
        });
        self.process = Some(Process {
            pid,
            kill: Some(kill_tx),
            watcher,
            readers,
        });
    }

    /// Kills the function process (SIGKILL, as when an execution environment dies) and waits
    /// until it is gone and its output is read. Invocations still running fail.
    pub async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            if let Some(kill) = process.kill.take() {
                let _ = kill.send(());
            }
            let _ = (&mut process.watcher).await;
            for reader in process.readers {
                let _ = reader.await;
            }
        }
        let mut inner = self.shared.inner.lock().unwrap();
        inner.generation += 1;
        inner.exited = None;
        drop(inner);
        self.shared.wake.notify_waiters();
    }

    /// Kills the process and starts a new one (the next invocation is a cold start).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn();
    }

    /// Stops the function for good; its logs stay readable.
    pub async fn stop(&mut self) {
        self.kill().await;
    }

    /// Invokes the function with a JSON event.
    pub async fn invoke(&self, event: &Value) -> Outcome {
        self.invoke_raw(serde_json::to_vec(event).expect("event serialises"))
            .await
    }

    /// Invokes the function with any payload (for example one that is not JSON).
    pub async fn invoke_raw(&self, payload: Vec<u8>) -> Outcome {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.shared.inner.lock().unwrap();
            if let Some(exited) = &inner.exited {
                let message = format!(
                    "{exited}; init error: {}",
                    inner.init_error.as_deref().unwrap_or("none")
                );
                return Err(("Runtime.ExitError".into(), message));
            }
            if self.process.is_none() {
                return Err((
                    "Emulator".into(),
                    "the function process is not running".into(),
                ));
            }
            inner.waiting.insert(id.clone(), tx);
            inner.queue.push_back(Queued {
                id: id.clone(),
                body: Bytes::from(payload),
            });
        }
        self.shared.wake.notify_waiters();
        match tokio::time::timeout(self.shared.timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(("Emulator".into(), "the invocation was dropped".into())),
            Err(_) => {
                let mut inner = self.shared.inner.lock().unwrap();
                inner.waiting.remove(&id);
                inner.queue.retain(|q| q.id != id);
                Err((
                    "Sandbox.Timedout".into(),
                    format!(
                        "Task timed out after {:.2} seconds",
                        self.shared.timeout.as_secs_f64()
                    ),
                ))
            }
        }
    }
}

impl Drop for Lambda {
    fn drop(&mut self) {
        if let Some(process) = self.process.as_mut()
            && let Some(kill) = process.kill.take()
        {
            let _ = kill.send(());
        }
        self.server.abort();
    }
}

fn read_into<R>(stream: R, logs: Arc<Mutex<String>>) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if std::env::var_os("PGROTATE_E2E_ECHO").is_some() {
                eprintln!("[function] {line}");
            }
            let mut logs = logs.lock().unwrap();
            logs.push_str(&line);
            logs.push('\n');
        }
    })
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time after 1970")
        .as_millis()
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    let arrived = Instant::now();
    let (generation, first) = {
        let mut inner = shared.inner.lock().unwrap();
        let first = inner.first_next_at.is_none();
        if first {
            inner.first_next_at = Some(arrived);
        }
        (inner.generation, first)
    };
    if first {
        shared.ready.notify_waiters();
    }
    loop {
        let notified = shared.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut inner = shared.inner.lock().unwrap();
            if inner.generation != generation {
                // The process that asked was killed: never hand it an event.
                return StatusCode::GONE.into_response();
            }
            if let Some(queued) = inner.queue.pop_front() {
                inner.invocations += 1;
                inner.handed_out.insert(queued.id.clone(), Instant::now());
                let deadline = now_ms() + shared.timeout.as_millis();
                let mut headers = HeaderMap::new();
                let header = |v: &str| HeaderValue::from_str(v).expect("a valid header value");
                headers.insert("lambda-runtime-aws-request-id", header(&queued.id));
                headers.insert("lambda-runtime-deadline-ms", header(&deadline.to_string()));
                headers.insert(
                    "lambda-runtime-invoked-function-arn",
                    header(&shared.function_arn),
                );
                let trace = format!(
                    "Root=1-{:08x}-{};Parent={};Sampled=0",
                    now_ms() / 1000,
                    &uuid::Uuid::new_v4().simple().to_string()[..24],
                    &uuid::Uuid::new_v4().simple().to_string()[..16],
                );
                headers.insert("lambda-runtime-trace-id", header(&trace));
                headers.insert("content-type", header("application/json"));
                return (StatusCode::OK, headers, queued.body).into_response();
            }
        }
        notified.await;
    }
}

fn complete(shared: &Shared, id: &str, outcome: Outcome) -> Response {
    let now = Instant::now();
    let tx = {
        let mut inner = shared.inner.lock().unwrap();
        if let Some(handed_out) = inner.handed_out.remove(id) {
            inner.durations.push(now.duration_since(handed_out));
        }
        inner.waiting.remove(id)
    };
    match tx {
        Some(tx) => {
            let _ = tx.send(outcome);
            (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
        }
        None => (
            StatusCode::BAD_REQUEST,
            r#"{"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"}"#,
        )
            .into_response(),
    }
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
        }
    };
    complete(&shared, &id, Ok(value))
}

async fn error(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Response {
    let diagnostic: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let field = |name: &str| {
        diagnostic
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    complete(
        &shared,
        &id,
        Err((field("errorType"), field("errorMessage"))),
    )
}

async fn init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let error_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut inner = shared.inner.lock().unwrap();
    inner.init_error_type = error_type;
    inner.init_error = Some(String::from_utf8_lossy(&body).into_owned());
    drop(inner);
    (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
}
