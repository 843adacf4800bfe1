//! The benchmark behind `integration/bench.sh` (issue 12): with the local stack running
//! (`source .stack/env`), measures the release binary under the Lambda runtime API emulator
//! against the TLS and the plaintext PostgreSQL clusters and the Secrets Manager emulator, and
//! writes `target/bench/report.json` and a table:
//!
//! 1. cold start: process start to the first `invocation/next`, and the first invocation;
//! 2. warm rotations: each step and the whole rotation (the sum of the four invocations, as
//!    Lambda bills them), both strategies, TLS verify-full and plaintext, interleaved round by
//!    round so that load from elsewhere hits every configuration alike;
//! 3. round trips: Secrets Manager calls per step counted by a proxy in front of the emulator
//!    (`tests/common/sm_proxy.rs`), PostgreSQL connections per step from the server log
//!    (`log_connections`, `tests/common/pg_log.rs`);
//! 4. the floor: the emulator's latency per operation and PostgreSQL's connect+auth time,
//!    measured apart, and each rotation's distance from calls × latency + connections × connect;
//! 5. peak RSS (`VmHWM`) and CPU time of each function process over the warm rotations;
//! 6. the package: the stripped binary zipped as `bootstrap`;
//! 7. growth: alternating-users setSecret against the primary's memberships and settings;
//! 8. throughput: rotations per second with 1, 4 and 8 function processes.
//!
//!     cargo build --release --bin pgrotate --example bench && target/release/examples/bench [--quick]

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/common/mod.rs"]
mod common;
mod stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::driver::{Driver, STEPS, deployment, random_password};
use common::lambda::{self, Deployment, Lambda};
use common::pg_log::LogCursor;
use common::sm_proxy::SmProxy;
use common::{Stack, unique};
use pgrotate::Strategy;
use pgrotate::db::Database;
use pgrotate::db::sql::{quote_ident, quote_literal};
use pgrotate::store::{AwsSecretStore, SecretStore, VersionRef};
use secrecy::SecretString;
use serde_json::{Value, json};
use stats::Series;

const FUNCTION: &str = "pgrotate-bench";
const MIB: f64 = 1024.0 * 1024.0;

// ---- options ----------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Options {
    starts: usize,
    rotations: usize,
    floor_samples: usize,
    growth_reps: usize,
    throughput_rotations: usize,
    throughput_trials: usize,
    count_rotations: usize,
    out: PathBuf,
    sections: Vec<String>,
    /// Extra environment variables of the function (`--function-env NAME=VALUE`).
    function_env: Vec<(String, String)>,
}

const SECTIONS: [&str; 7] = [
    "cold",
    "warm",
    "counts",
    "floor",
    "package",
    "growth",
    "throughput",
];

const USAGE: &str = "usage: bench [--quick] [--starts N] [--rotations N] [--floor-samples N]
             [--growth-reps N] [--throughput-rotations N] [--throughput-trials N]
             [--sections cold,warm,counts,floor,package,growth,throughput] [--out FILE]
             [--function-env NAME=VALUE]...

  --quick                  fewer samples (5 starts, 10 rotations, ...) for a quick look;
                           the budgets' sample sizes are the defaults
  --starts N               cold starts (default 20)
  --rotations N            warm rotations per configuration (default 50)
  --floor-samples N        samples per floor measurement (default 50)
  --growth-reps N          setSecret runs per growth case (default 5)
  --throughput-rotations N rotations per process per throughput trial (default 10)
  --throughput-trials N    trials per process count (default 3)
  --out FILE               the JSON report (default target/bench/report.json)
  --function-env NAME=VALUE  an extra environment variable of the function (repeatable)

The function under test is target/release/pgrotate next to this harness, or $PGROTATE_BIN.";

impl Options {
    fn parse() -> Result<Options, String> {
        let mut o = Options {
            starts: 20,
            rotations: 50,
            floor_samples: 50,
            growth_reps: 5,
            throughput_rotations: 10,
            throughput_trials: 3,
            count_rotations: 3,
            out: Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/report.json"),
            sections: SECTIONS.iter().map(|s| s.to_string()).collect(),
            function_env: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> Result<usize, String> {
                let v = args.next().ok_or(format!("{name} needs a value"))?;
                v.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("{name}: not a positive number: {v}"))
            };
            match arg.as_str() {
                "--quick" => {
                    o.starts = 5;
                    o.rotations = 10;
                    o.floor_samples = 15;
                    o.growth_reps = 2;
                    o.throughput_rotations = 3;
                    o.throughput_trials = 1;
                    o.count_rotations = 2;
                }
                "--starts" => o.starts = number("--starts")?,
                "--rotations" => o.rotations = number("--rotations")?,
                "--floor-samples" => o.floor_samples = number("--floor-samples")?,
                "--growth-reps" => o.growth_reps = number("--growth-reps")?,
                "--throughput-rotations" => {
                    o.throughput_rotations = number("--throughput-rotations")?
                }
                "--throughput-trials" => o.throughput_trials = number("--throughput-trials")?,
                "--out" => o.out = args.next().ok_or("--out needs a value")?.into(),
                "--function-env" => {
                    let kv = args.next().ok_or("--function-env needs NAME=VALUE")?;
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or(format!("--function-env: not NAME=VALUE: {kv}"))?;
                    o.function_env.push((k.to_string(), v.to_string()));
                }
                "--sections" => {
                    let list = args.next().ok_or("--sections needs a value")?;
                    o.sections = list.split(',').map(|s| s.trim().to_string()).collect();
                    if let Some(bad) = o.sections.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                        return Err(format!("unknown section {bad}"));
                    }
                }
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        Ok(o)
    }

    fn runs(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }
}

// ---- the machine ---------------------------------------------------------------------------

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Compiler and linker processes running now (other people's builds share the cores).
fn busy_neighbours() -> usize {
    let names = [
        "rustc",
        "cc1",
        "cc1plus",
        "ld",
        "ld.lld",
        "cargo",
        "clippy-driver",
    ];
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .filter(|e| {
                    let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                    names.contains(&comm.trim())
                })
                .count()
        })
        .unwrap_or(0)
}

/// Samples of the load on the machine at the start of each section.
#[derive(Default)]
struct LoadLog {
    samples: Vec<Value>,
}

impl LoadLog {
    fn sample(&mut self, section: &str) {
        let neighbours = busy_neighbours();
        let load = loadavg();
        eprintln!("  [{section}] load average {load}, compiler processes running: {neighbours}");
        self.samples.push(json!({
            "section": section,
            "loadavg": load,
            "compiler_processes": neighbours,
        }));
    }

    fn shared(&self) -> bool {
        self.samples
            .iter()
            .any(|s| s["compiler_processes"].as_u64().unwrap_or(0) > 0)
    }
}

fn machine() -> Value {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown")
        .to_string();
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "arch": std::env::consts::ARCH,
    })
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM`: peak resident set; `RssAnon`, `RssFile`:
/// resident heap/stacks and resident mapped file pages, now).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    read(&format!("/proc/{pid}/status"))
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// User + system CPU time of a process so far, in milliseconds.
fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = read(&format!("/proc/{pid}/stat"));
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the command.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = 100.0; // USER_HZ on Linux
    Some(ticks as f64 * 1000.0 / hz)
}

/// Time the threads of a process have spent waiting for a CPU while runnable (the run-queue
/// wait of `/proc/<pid>/task/*/schedstat`), in milliseconds: on a shared machine, the part of
/// a rotation spent queueing behind other processes.
fn runqueue_wait_ms(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total_ns = 0u64;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total_ns += stat
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total_ns as f64 / 1e6)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---- the world: clusters, secrets, functions ---------------------------------------------

/// A PostgreSQL cluster of the stack with a migrated database of its own.
struct Target {
    stack: Stack,
    db: String,
    /// The secret's `ssl` field.
    ssl: &'static str,
}

impl Target {
    async fn new(stack: Stack, ssl: &'static str) -> Target {
        let db = stack.fresh_database().await;
        Target { stack, db, ssl }
    }

    fn log(&self) -> &Path {
        &self.stack.pg_log
    }
}

struct Bench {
    function_env: Vec<(String, String)>,
    stack: Stack,
    driver: Driver,
    master_arn: String,
    tls: Target,
    plain: Target,
}

fn strategy_name(s: Strategy) -> &'static str {
    s.as_str()
}

impl Bench {
    fn target(&self, tls: bool) -> &Target {
        if tls { &self.tls } else { &self.plain }
    }

    /// A new application user on `target` and its secret; returns (ARN, user name).
    async fn user_secret(&self, target: &Target, strategy: Strategy) -> (String, String) {
        let user = unique("bench");
        let password = random_password();
        target.stack.create_app_user(&user, &password).await;
        let mut value = json!({
            "engine": "postgres",
            "host": target.stack.host,
            "port": target.stack.port,
            "username": user,
            "password": password,
            "dbname": target.db,
            "ssl": target.ssl,
        });
        if strategy == Strategy::AlternatingUsers {
            value["masterarn"] = json!(self.master_arn);
        }
        let arn = self
            .driver
            .create_secret(&unique("bench/app"), &value.to_string(), None)
            .await;
        (arn, user)
    }

    /// The function as deployed for the benchmark: production log level (INFO), Secrets
    /// Manager at `endpoint` (the emulator, or the counting proxy), and for a plaintext
    /// database `DEFAULT_SSL_MODE=disable` (the master login is never less protected than the
    /// deployment's default).
    fn deployment(&self, strategy: Strategy, tls: bool, endpoint: &str) -> Deployment {
        let mut d = deployment(&self.stack, strategy, FUNCTION)
            .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
            .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint);
        if !tls {
            d = d.env("DEFAULT_SSL_MODE", "disable");
        }
        for (k, v) in &self.function_env {
            d = d.env(k, v);
        }
        d
    }

    async fn lambda(&self, strategy: Strategy, tls: bool, endpoint: &str) -> Lambda {
        let lambda = Lambda::start(self.deployment(strategy, tls, endpoint)).await;
        lambda
            .wait_ready(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("the function did not start:\n{}", lambda.logs()));
        lambda
    }

    /// One rotation as Secrets Manager runs it; returns the four steps' durations (ms).
    async fn rotation(&self, lambda: &Lambda, arn: &str) -> [f64; 4] {
        let before = lambda.durations().len();
        if let Err(failure) = self.driver.rotate(lambda, arn, None).await {
            panic!(
                "rotation failed: {failure}\nfunction log:\n{}",
                lambda.logs()
            );
        }
        let d = lambda.durations();
        assert_eq!(d.len(), before + 4, "four invocations per rotation");
        [
            ms(d[before]),
            ms(d[before + 1]),
            ms(d[before + 2]),
            ms(d[before + 3]),
        ]
    }
}

/// Per-step series and the whole rotation.
#[derive(Default, Clone)]
struct StepSeries {
    steps: [Series; 4],
    rotation: Series,
}

impl StepSeries {
    fn push(&mut self, d: [f64; 4]) {
        for (series, v) in self.steps.iter_mut().zip(d) {
            series.push(v);
        }
        self.rotation.push(d.iter().sum());
    }

    fn json(&self) -> Value {
        let mut steps = serde_json::Map::new();
        for (name, s) in STEPS.iter().zip(&self.steps) {
            steps.insert(name.to_string(), s.json());
        }
        json!({"steps": steps, "rotation": self.rotation.json()})
    }
}

fn config_name(strategy: Strategy, tls: bool) -> String {
    format!(
        "{}/{}",
        strategy_name(strategy),
        if tls { "tls" } else { "plaintext" }
    )
}

const CONFIGS: [(Strategy, bool); 4] = [
    (Strategy::SingleUser, true),
    (Strategy::SingleUser, false),
    (Strategy::AlternatingUsers, true),
    (Strategy::AlternatingUsers, false),
];

// ---- 1. cold start -------------------------------------------------------------------------

struct Cold {
    init: Series,
    first_invocation: Series,
    first_set_secret: Series,
    first_rotation: Series,
}

async fn cold_start(bench: &Bench, o: &Options) -> Cold {
    eprintln!("== cold start: {} starts (single user, TLS)", o.starts);
    let (arn, _) = bench.user_secret(&bench.tls, Strategy::SingleUser).await;
    let mut cold = Cold {
        init: Series::new(),
        first_invocation: Series::new(),
        first_set_secret: Series::new(),
        first_rotation: Series::new(),
    };
    let deployment = bench.deployment(Strategy::SingleUser, true, &bench.stack.sm_endpoint);
    for _ in 0..o.starts {
        let mut lambda = Lambda::start(deployment.clone()).await;
        let init = lambda
            .wait_ready(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("the function did not start:\n{}", lambda.logs()));
        cold.init.push(ms(init));
        let d = bench.rotation(&lambda, &arn).await;
        cold.first_invocation.push(d[0]);
        cold.first_set_secret.push(d[1]);
        cold.first_rotation.push(d.iter().sum());
        lambda.stop().await;
    }
    cold
}

// ---- 2 and 5. warm rotations, memory -------------------------------------------------------

struct Warm {
    series: BTreeMap<String, StepSeries>,
    peak_rss_kib: BTreeMap<String, u64>,
    /// RssAnon and RssFile at the end.
    rss_split_kib: BTreeMap<String, (u64, u64)>,
    cpu_ms_per_rotation: BTreeMap<String, f64>,
    wait_ms_per_rotation: BTreeMap<String, f64>,
}

async fn warm(bench: &Bench, o: &Options) -> Warm {
    eprintln!(
        "== warm rotations: {} per configuration, 4 configurations interleaved",
        o.rotations
    );
    let mut live = Vec::new();
    for (strategy, tls) in CONFIGS {
        let (arn, _) = bench.user_secret(bench.target(tls), strategy).await;
        let lambda = bench.lambda(strategy, tls, &bench.stack.sm_endpoint).await;
        // Two warm-up rotations: the first one in a process pays for the first TLS
        // configuration and the first connections to the emulator.
        for _ in 0..2 {
            bench.rotation(&lambda, &arn).await;
        }
        let pid = lambda.pid().unwrap();
        let cpu0 = (
            cpu_ms(pid).unwrap_or(0.0),
            runqueue_wait_ms(pid).unwrap_or(0.0),
        );
        live.push((
            config_name(strategy, tls),
            arn,
            lambda,
            StepSeries::default(),
            cpu0,
        ));
    }
    for round in 0..o.rotations {
        for (_, arn, lambda, series, _) in live.iter_mut() {
            series.push(bench.rotation(lambda, arn).await);
        }
        if (round + 1) % 10 == 0 {
            eprintln!("  {} rounds done", round + 1);
        }
    }
    let mut warm = Warm {
        series: BTreeMap::new(),
        peak_rss_kib: BTreeMap::new(),
        rss_split_kib: BTreeMap::new(),
        cpu_ms_per_rotation: BTreeMap::new(),
        wait_ms_per_rotation: BTreeMap::new(),
    };
    for (name, _, mut lambda, series, (cpu0, wait0)) in live {
        let pid = lambda.pid().unwrap();
        if let Some(kib) = status_kib(pid, "VmHWM") {
            warm.peak_rss_kib.insert(name.clone(), kib);
        }
        if let (Some(anon), Some(file)) = (status_kib(pid, "RssAnon"), status_kib(pid, "RssFile")) {
            warm.rss_split_kib.insert(name.clone(), (anon, file));
        }
        if let Some(wait) = runqueue_wait_ms(pid) {
            warm.wait_ms_per_rotation
                .insert(name.clone(), (wait - wait0) / o.rotations as f64);
        }
        if let Some(cpu) = cpu_ms(pid) {
            warm.cpu_ms_per_rotation
                .insert(name.clone(), (cpu - cpu0) / o.rotations as f64);
        }
        lambda.stop().await;
        warm.series.insert(name, series);
    }
    warm
}

// ---- 3. round trips ------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq)]
struct StepCounts {
    sm_calls: u64,
    sm_operations: BTreeMap<String, u64>,
    pg_connections: usize,
    pg_logins_refused: usize,
    pg_statements: usize,
}

struct Counts {
    per_config: BTreeMap<String, Vec<StepCounts>>,
    stable: bool,
}

impl Counts {
    fn total_calls(&self, config: &str) -> u64 {
        self.per_config[config].iter().map(|s| s.sm_calls).sum()
    }
    fn total_connections(&self, config: &str) -> usize {
        self.per_config[config]
            .iter()
            .map(|s| s.pg_connections)
            .sum()
    }
    fn total_operations(&self, config: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for step in &self.per_config[config] {
            for (op, n) in &step.sm_operations {
                *out.entry(op.clone()).or_default() += n;
            }
        }
        out
    }
}

async fn counts(bench: &Bench, o: &Options) -> Counts {
    eprintln!(
        "== round trips: {} rotations per configuration through the counting proxy",
        o.count_rotations
    );
    let proxy = SmProxy::start(&bench.stack.sm_endpoint).await;
    let mut out = Counts {
        per_config: BTreeMap::new(),
        stable: true,
    };
    for (strategy, tls) in CONFIGS {
        let target = bench.target(tls);
        let (arn, _) = bench.user_secret(target, strategy).await;
        let mut lambda = bench.lambda(strategy, tls, &proxy.endpoint()).await;
        let mut seen: Option<Vec<StepCounts>> = None;
        for _ in 0..o.count_rotations {
            let token = bench.driver.start_rotation(&arn).await;
            let mut cursor = LogCursor::at_end(target.log());
            proxy.take_counts();
            let mut per_step = Vec::new();
            for step in STEPS {
                let event = Driver::event(&arn, &token, step, None);
                if let Err(e) = lambda.invoke(&event).await {
                    panic!("{step} failed: {e:?}\n{}", lambda.logs());
                }
                let ops = proxy.take_counts();
                let conns = cursor.take_connections(&target.db);
                per_step.push(StepCounts {
                    sm_calls: ops.values().sum(),
                    sm_operations: ops,
                    pg_connections: conns.len(),
                    pg_logins_refused: conns.iter().filter(|c| !c.authorized).count(),
                    pg_statements: conns.iter().map(|c| c.statements().len()).sum(),
                });
            }
            bench.driver.end_rotation(&arn, &token).await;
            match &seen {
                Some(previous) if *previous != per_step => out.stable = false,
                _ => {}
            }
            seen = Some(per_step);
        }
        lambda.stop().await;
        out.per_config
            .insert(config_name(strategy, tls), seen.unwrap_or_default());
    }
    out
}

// ---- 4. the floor --------------------------------------------------------------------------

struct Floor {
    /// Median latency per Secrets Manager operation, from this process over a warm
    /// connection, with the SDK the function uses.
    sm: BTreeMap<String, Series>,
    connect_plain: Series,
    connect_tls: Series,
    /// The same login plus one statement (`SELECT session_user`), over plaintext: the
    /// difference of the medians is one statement's round trip.
    connect_query_plain: Series,
}

async fn floor(bench: &Bench, o: &Options) -> Floor {
    eprintln!("== floor: {} samples per measurement", o.floor_samples);
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(lambda::REGION))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "testing", "testing", None, None, "bench",
        ));
    let store = AwsSecretStore::load(
        loader,
        Some(&bench.stack.sm_endpoint),
        Duration::from_secs(10),
    )
    .await;
    // A secret with the version count of a rotated one (the emulator lists every version).
    let (arn, _) = bench.user_secret(&bench.tls, Strategy::SingleUser).await;
    let value = bench.driver.value(&arn, "AWSCURRENT").await.unwrap();
    let value = SecretString::from(value);
    let mut sm: BTreeMap<String, Series> = BTreeMap::new();
    let mut time = |op: &str, d: Duration| sm.entry(op.to_string()).or_default().push(ms(d));
    // Warm the client's connection first.
    store.describe(&arn).await.unwrap();
    for _ in 0..o.floor_samples {
        let t = Instant::now();
        let description = store.describe(&arn).await.unwrap();
        time("DescribeSecret", t.elapsed());
        let t = Instant::now();
        store
            .get_value(&arn, VersionRef::Stage("AWSCURRENT"))
            .await
            .unwrap();
        time("GetSecretValue", t.elapsed());
        let token = uuid::Uuid::new_v4().to_string();
        let t = Instant::now();
        let missing = store.get_value(&arn, VersionRef::Pending(&token)).await;
        time("GetSecretValue (no such version)", t.elapsed());
        assert!(missing.is_err());
        let t = Instant::now();
        store.put_pending(&arn, &token, &value, None).await.unwrap();
        time("PutSecretValue", t.elapsed());
        let current = description.version_with("AWSCURRENT").unwrap().to_string();
        let t = Instant::now();
        store.move_current(&arn, &token, &current).await.unwrap();
        time("UpdateSecretVersionStage", t.elapsed());
    }

    // PostgreSQL: the adapter's login (TCP, TLS, SCRAM, Terminate), interleaved.
    let pg = bench.stack.postgres();
    let user = unique("bench_login");
    let password = random_password();
    for target in [&bench.tls, &bench.plain] {
        target.stack.create_app_user(&user, &password).await;
    }
    let login_tls = bench.tls.stack.login(&bench.tls.db, &user, &password);
    let login_plain = bench.plain.stack.login(&bench.plain.db, &user, &password);
    let mut connect_tls = Series::new();
    let mut connect_plain = Series::new();
    let mut connect_query_plain = Series::new();
    for _ in 0..2 {
        assert!(pg.can_log_in(&login_tls).await.unwrap());
        assert!(pg.can_log_in(&login_plain).await.unwrap());
    }
    for _ in 0..o.floor_samples {
        let t = Instant::now();
        assert!(pg.can_log_in(&login_tls).await.unwrap());
        connect_tls.push(ms(t.elapsed()));
        let t = Instant::now();
        assert!(pg.can_log_in(&login_plain).await.unwrap());
        connect_plain.push(ms(t.elapsed()));
        let t = Instant::now();
        pg.session_user(&login_plain).await.unwrap();
        connect_query_plain.push(ms(t.elapsed()));
    }
    Floor {
        sm,
        connect_plain,
        connect_tls,
        connect_query_plain,
    }
}

impl Floor {
    /// One statement's round trip on an open connection (medians' difference, at least 0).
    fn statement_ms(&self) -> f64 {
        (self.connect_query_plain.median() - self.connect_plain.median()).max(0.0)
    }

    fn op_median(&self, op: &str) -> f64 {
        self.sm.get(op).map(Series::median).unwrap_or(f64::NAN)
    }

    /// calls × the emulator's latency per call + connections × connect time.
    fn of(&self, operations: &BTreeMap<String, u64>, connections: usize, tls: bool) -> f64 {
        let sm: f64 = operations
            .iter()
            .map(|(op, n)| *n as f64 * self.op_median(op))
            .sum();
        let connect = if tls {
            self.connect_tls.median()
        } else {
            self.connect_plain.median()
        };
        sm + connections as f64 * connect
    }
}

// ---- 6. package ----------------------------------------------------------------------------

fn package(out_dir: &Path) -> Value {
    let binary = lambda::binary_path();
    let dir = out_dir.join("package");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bootstrap = dir.join("bootstrap");
    std::fs::copy(&binary, &bootstrap).unwrap();
    let zip = dir.join("pgrotate-x86_64.zip");
    let zipped = std::process::Command::new("zip")
        .args(["-q", "-9", "-X", "-j"])
        .arg(&zip)
        .arg(&bootstrap)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !zipped {
        let script = "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED, compresslevel=9) as z:\n    z.write(sys.argv[2], 'bootstrap')";
        let ok = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&zip)
            .arg(&bootstrap)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "neither zip nor python3 could make the zip");
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    // The plain `cargo build --release` binary, for comparison when another one is measured.
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/pgrotate");
    let release_zip = dir.join("release-x86_64.zip");
    let release_zipped = release != binary
        && release.exists()
        && std::process::Command::new("zip")
            .args(["-q", "-9", "-X", "-j"])
            .arg(&release_zip)
            .arg(&release)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    let elf = std::fs::read(&binary).unwrap_or_default();
    let stripped = !elf.windows(7).any(|w| w == b".symtab");
    let installed = std::process::Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let arm64 = installed.contains("aarch64-unknown-linux");
    json!({
        "binary": binary.display().to_string(),
        "binary_bytes": size(&binary),
        "stripped": stripped,
        "zip": zip.display().to_string(),
        "zip_bytes": size(&zip),
        "plain_release_binary_bytes": if release_zipped { json!(size(&release)) } else { Value::Null },
        "plain_release_zip_bytes": if release_zipped { json!(size(&release_zip)) } else { Value::Null },
        "arm64": if arm64 {
            "aarch64 target installed but not built by the benchmark"
        } else {
            "not built: this toolchain has only the x86_64 target (no aarch64 standard library offline)"
        },
    })
}

// ---- 7. growth -----------------------------------------------------------------------------

struct GrowthCase {
    memberships: usize,
    role_settings: usize,
    db_settings: usize,
    set_secret: Series,
    transaction_round_trips: Vec<usize>,
    master_round_trips: Vec<usize>,
    connections: Vec<usize>,
    clone_role_settings: i64,
    clone_db_settings: i64,
}

async fn growth(bench: &Bench, o: &Options) -> Vec<GrowthCase> {
    let cases: &[(usize, usize, usize)] = &[
        (0, 0, 0),
        (10, 0, 0),
        (100, 0, 0),
        (1000, 0, 0),
        (0, 10, 0),
        (0, 100, 0),
        (0, 0, 10),
        (0, 0, 100),
        (1000, 100, 100),
    ];
    eprintln!(
        "== growth: alternating-users setSecret, {} cases, {} runs each (TLS)",
        cases.len(),
        o.growth_reps
    );
    let target = &bench.tls;
    let lambda = bench
        .lambda(Strategy::AlternatingUsers, true, &bench.stack.sm_endpoint)
        .await;
    let mut out = Vec::new();
    let mut cleanup = Vec::new();
    for &(memberships, role_settings, db_settings) in cases {
        let (arn, primary) = bench.user_secret(target, Strategy::AlternatingUsers).await;
        let group = format!("{primary}_g");
        let mut sql = String::new();
        if memberships > 0 {
            sql.push_str(&format!(
                "DO $$ BEGIN FOR i IN 1..{memberships} LOOP \
                 EXECUTE format('CREATE ROLE %I NOLOGIN', {g} || i); \
                 EXECUTE format('GRANT %I TO %I', {g} || i, {p}); END LOOP; END $$;",
                g = quote_literal(&group),
                p = quote_literal(&primary)
            ));
        }
        for i in 0..role_settings {
            sql.push_str(&format!(
                "ALTER ROLE {} SET \"bench.role_{i}\" TO 'value {i}';",
                quote_ident(&primary)
            ));
        }
        for i in 0..db_settings {
            sql.push_str(&format!(
                "ALTER ROLE {} IN DATABASE {} SET \"bench.db_{i}\" TO 'value {i}';",
                quote_ident(&primary),
                quote_ident(&target.db)
            ));
        }
        if !sql.is_empty() {
            target.stack.exec("postgres", &sql).await;
        }
        cleanup.push((primary.clone(), memberships));
        // The first rotation creates the clone; the measured ones alter each user in turn.
        bench.rotation(&lambda, &arn).await;
        let mut case = GrowthCase {
            memberships,
            role_settings,
            db_settings,
            set_secret: Series::new(),
            transaction_round_trips: Vec::new(),
            master_round_trips: Vec::new(),
            connections: Vec::new(),
            clone_role_settings: 0,
            clone_db_settings: 0,
        };
        for _ in 0..o.growth_reps {
            let token = bench.driver.start_rotation(&arn).await;
            for step in STEPS {
                let mut cursor = LogCursor::at_end(target.log());
                let event = Driver::event(&arn, &token, step, None);
                if let Err(e) = lambda.invoke(&event).await {
                    panic!("{step} failed: {e:?}\n{}", lambda.logs());
                }
                if step == "setSecret" {
                    case.set_secret.push(ms(lambda.last_duration().unwrap()));
                    let conns = cursor.take_connections(&target.db);
                    case.connections.push(conns.len());
                    let master = conns
                        .iter()
                        .find(|c| c.transaction_round_trips().is_some())
                        .expect("the master's session with the pair's transaction");
                    case.transaction_round_trips
                        .push(master.transaction_round_trips().unwrap());
                    case.master_round_trips.push(master.statements().len());
                }
            }
            bench.driver.end_rotation(&arn, &token).await;
        }
        let clone = format!("{primary}_clone");
        let mut admin = target.stack.admin("postgres").await;
        let counts: (i64, i64) = sqlx::query_as(
            "SELECT
               coalesce(sum(cardinality(s.setconfig)) FILTER (WHERE s.setdatabase = 0), 0)::int8,
               coalesce(sum(cardinality(s.setconfig)) FILTER (WHERE s.setdatabase <> 0), 0)::int8
             FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
             WHERE r.rolname = $1",
        )
        .bind(&clone)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        // The clone's own `role` setting (CLONE_DEFAULT_ROLE) is not a copied setting.
        case.clone_role_settings = counts.0 - 1;
        case.clone_db_settings = counts.1;
        eprintln!(
            "  memberships {memberships:>4}, role settings {role_settings:>3}, db settings {db_settings:>3}: setSecret {}",
            case.set_secret.cell()
        );
        out.push(case);
    }
    drop(lambda);
    // The growth roles are many; drop them so a long-lived stack does not collect them.
    for (primary, memberships) in cleanup {
        let mut sql = format!(
            "DROP ROLE IF EXISTS {}, {};",
            quote_ident(&format!("{primary}_clone")),
            quote_ident(&primary)
        );
        if memberships > 0 {
            sql.push_str(&format!(
                "DO $$ BEGIN FOR i IN 1..{memberships} LOOP \
                 EXECUTE format('DROP ROLE IF EXISTS %I', {} || i); END LOOP; END $$;",
                quote_literal(&format!("{primary}_g"))
            ));
        }
        target.stack.exec("postgres", &sql).await;
    }
    out
}

// ---- 8. throughput -------------------------------------------------------------------------

struct Throughput {
    processes: usize,
    rotations_per_second: Series,
}

async fn throughput(bench: Arc<Bench>, o: &Options) -> Vec<Throughput> {
    eprintln!(
        "== throughput: 1, 4, 8 processes, {} rotations each per trial, {} trials (single user, TLS)",
        o.throughput_rotations, o.throughput_trials
    );
    let mut out = Vec::new();
    for processes in [1usize, 4, 8] {
        let mut fleet = Vec::new();
        for _ in 0..processes {
            let (arn, _) = bench.user_secret(&bench.tls, Strategy::SingleUser).await;
            let lambda = bench
                .lambda(Strategy::SingleUser, true, &bench.stack.sm_endpoint)
                .await;
            bench.rotation(&lambda, &arn).await;
            fleet.push((Arc::new(lambda), arn));
        }
        let mut series = Series::new();
        for _ in 0..o.throughput_trials {
            let started = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for (lambda, arn) in &fleet {
                let (lambda, arn, bench) = (lambda.clone(), arn.clone(), bench.clone());
                let n = o.throughput_rotations;
                set.spawn(async move {
                    for _ in 0..n {
                        bench.rotation(&lambda, &arn).await;
                    }
                });
            }
            while let Some(done) = set.join_next().await {
                done.expect("a rotation task");
            }
            let rotations = (processes * o.throughput_rotations) as f64;
            series.push(rotations / started.elapsed().as_secs_f64());
        }
        eprintln!("  {processes} processes: {} rotations/s", series.cell());
        out.push(Throughput {
            processes,
            rotations_per_second: series,
        });
        drop(fleet);
    }
    out
}

// ---- report --------------------------------------------------------------------------------

struct Budget {
    figure: String,
    budget: String,
    measured: String,
    met: bool,
}

fn budget(list: &mut Vec<Budget>, figure: &str, budget: &str, measured: String, met: bool) {
    list.push(Budget {
        figure: figure.into(),
        budget: budget.into(),
        measured,
        met,
    });
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Options::parse() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bench: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let o = &options;
    let stack = Stack::get();
    let driver = Driver::new(&stack.sm_endpoint, FUNCTION).await;
    let master = json!({"username": stack.admin_user, "password": stack.admin_password});
    let master_arn = driver
        .create_secret(&unique("bench/master"), &master.to_string(), None)
        .await;
    let tls = Target::new(stack.clone(), "verify-full").await;
    let plain = Target::new(stack.plaintext(), "disable").await;
    let bench = Arc::new(Bench {
        function_env: o.function_env.clone(),
        stack,
        driver,
        master_arn,
        tls,
        plain,
    });
    let machine = machine();
    eprintln!(
        "pgrotate benchmark: {} cores, {}, binary {}",
        machine["cores"],
        machine["cpu_model"].as_str().unwrap_or("?"),
        lambda::binary_path().display()
    );
    eprintln!(
        "  TLS cluster {}:{}, plaintext cluster {}:{}, Secrets Manager emulator {}",
        bench.tls.stack.host,
        bench.tls.stack.port,
        bench.plain.stack.host,
        bench.plain.stack.port,
        bench.stack.sm_endpoint
    );
    let started = Instant::now();
    let mut load = LoadLog::default();
    let mut report = serde_json::Map::new();
    let mut budgets = Vec::new();

    let cold = if o.runs("cold") {
        load.sample("cold");
        Some(cold_start(&bench, o).await)
    } else {
        None
    };
    let warm = if o.runs("warm") {
        load.sample("warm");
        Some(warm(&bench, o).await)
    } else {
        None
    };
    let counts = if o.runs("counts") {
        load.sample("counts");
        Some(counts(&bench, o).await)
    } else {
        None
    };
    let floor = if o.runs("floor") {
        load.sample("floor");
        Some(floor(&bench, o).await)
    } else {
        None
    };
    let package = if o.runs("package") {
        load.sample("package");
        Some(package(o.out.parent().unwrap_or(Path::new("."))))
    } else {
        None
    };
    let growth = if o.runs("growth") {
        load.sample("growth");
        Some(growth(&bench, o).await)
    } else {
        None
    };
    let throughput = if o.runs("throughput") {
        load.sample("throughput");
        Some(throughput(bench.clone(), o).await)
    } else {
        None
    };
    load.sample("end");

    // ---- tables and budgets ----
    println!();
    println!("pgrotate benchmark (integration/bench.sh)");
    println!(
        "machine: {} cores, {}, {} GiB, Linux {}{}",
        machine["cores"],
        machine["cpu_model"].as_str().unwrap_or("?"),
        machine["memory_gib"],
        machine["kernel"].as_str().unwrap_or("?"),
        if load.shared() {
            " — SHARED: other compilations ran during the run (see load samples)"
        } else {
            ""
        }
    );
    println!(
        "load average at each section: {}",
        load.samples
            .iter()
            .map(|s| format!(
                "{} {} ({} compiler processes)",
                s["section"].as_str().unwrap_or(""),
                s["loadavg"].as_str().unwrap_or(""),
                s["compiler_processes"]
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!("times in ms: median [p25–p75] p95 (min–max, n)");

    if let Some(cold) = &cold {
        println!();
        println!("1. cold start (single user, TLS; the process restarted for each sample)");
        println!(
            "  process start → first /invocation/next   {}",
            cold.init.cell()
        );
        println!(
            "  first invocation (createSecret)          {}",
            cold.first_invocation.cell()
        );
        println!(
            "  first setSecret (first TLS connections)  {}",
            cold.first_set_secret.cell()
        );
        println!(
            "  first rotation (4 invocations)           {}",
            cold.first_rotation.cell()
        );
        report.insert(
            "cold_start".into(),
            json!({
                "init_ms": cold.init.json(),
                "first_invocation_ms": cold.first_invocation.json(),
                "first_set_secret_ms": cold.first_set_secret.json(),
                "first_rotation_ms": cold.first_rotation.json(),
            }),
        );
        budget(
            &mut budgets,
            "cold start to first request for work",
            "≤ 8 ms median, ≤ 15 ms p95",
            format!(
                "{:.1} ms median, {:.1} ms p95",
                cold.init.median(),
                cold.init.p95()
            ),
            cold.init.median() <= 8.0 && cold.init.p95() <= 15.0,
        );
    }

    if let Some(warm) = &warm {
        println!();
        println!(
            "2. warm rotation (sum of the four invocations; {} per configuration, interleaved)",
            o.rotations
        );
        println!("  {:<28} {:>44} {:>44}", "configuration / step", "time", "");
        let mut section = serde_json::Map::new();
        for (name, series) in &warm.series {
            println!("  {name}");
            for (step, s) in STEPS.iter().zip(&series.steps) {
                println!("    {step:<24} {}", s.cell());
            }
            println!("    {:<24} {}", "rotation", series.rotation.cell());
            let mut v = series.json();
            v["peak_rss_kib"] = json!(warm.peak_rss_kib.get(name));
            v["runqueue_wait_ms_per_rotation"] = json!(
                warm.wait_ms_per_rotation
                    .get(name)
                    .map(|c| (c * 100.0).round() / 100.0)
            );
            v["cpu_ms_per_rotation"] = json!(
                warm.cpu_ms_per_rotation
                    .get(name)
                    .map(|c| (c * 100.0).round() / 100.0)
            );
            section.insert(name.clone(), v);
        }
        let median = |name: &str| warm.series[name].rotation.median();
        println!("  TLS / plaintext (medians):");
        let mut ratios = serde_json::Map::new();
        for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
            let t = median(&config_name(strategy, true));
            let p = median(&config_name(strategy, false));
            println!(
                "    {:<24} {:.2} ({t:.1} / {p:.1} ms)",
                strategy.as_str(),
                t / p
            );
            ratios.insert(
                strategy.as_str().into(),
                json!((t / p * 100.0).round() / 100.0),
            );
            budget(
                &mut budgets,
                &format!("TLS / plaintext rotation, {}", strategy.as_str()),
                "≤ 1.3",
                format!("{:.2}", t / p),
                t / p <= 1.3,
            );
        }
        section.insert("tls_over_plaintext".into(), Value::Object(ratios));
        report.insert("warm_rotation_ms".into(), Value::Object(section));

        let single = median("single-user/tls");
        let alt = median("alternating-users/tls");
        budget(
            &mut budgets,
            "warm single-user rotation, TLS verify-full",
            "≤ 60 ms median",
            format!("{single:.1} ms"),
            single <= 60.0,
        );
        budget(
            &mut budgets,
            "warm alternating-users rotation, TLS verify-full",
            "≤ 75 ms median",
            format!("{alt:.1} ms"),
            alt <= 75.0,
        );

        println!();
        println!(
            "5. memory: peak RSS (VmHWM) of each function process over {} rotations (+2 warm-up); CPU per rotation",
            o.rotations
        );
        for (name, kib) in &warm.peak_rss_kib {
            let (anon, file) = warm.rss_split_kib.get(name).copied().unwrap_or_default();
            println!(
                "  {name:<28} peak {:.2} MiB (at the end: heap/stacks {:.2} MiB + mapped binary and libraries {:.2} MiB), CPU {:.1} ms/rotation, run-queue wait {:.1} ms/rotation",
                *kib as f64 / 1024.0,
                anon as f64 / 1024.0,
                file as f64 / 1024.0,
                warm.cpu_ms_per_rotation
                    .get(name)
                    .copied()
                    .unwrap_or(f64::NAN),
                warm.wait_ms_per_rotation
                    .get(name)
                    .copied()
                    .unwrap_or(f64::NAN)
            );
        }
        let peak = warm.peak_rss_kib.values().copied().max().unwrap_or(0);
        report.insert(
            "memory".into(),
            json!({"peak_rss_kib": warm.peak_rss_kib, "rss_anon_file_kib_at_end": warm.rss_split_kib, "max_peak_rss_mib": (peak as f64 / 1024.0 * 100.0).round() / 100.0}),
        );
        budget(
            &mut budgets,
            "peak resident memory",
            "≤ 12 MiB",
            format!("{:.2} MiB", peak as f64 / 1024.0),
            (peak as f64) / 1024.0 <= 12.0,
        );
    }

    if let Some(counts) = &counts {
        println!();
        println!(
            "3. round trips per rotation (Secrets Manager: counting proxy; PostgreSQL: server log, one `connection received` per TCP connection, refused logins included){}",
            if counts.stable {
                ""
            } else {
                " — WARNING: counts varied between rotations"
            }
        );
        let mut section = serde_json::Map::new();
        for (name, steps) in &counts.per_config {
            let per_step = |f: &dyn Fn(&StepCounts) -> String| {
                steps.iter().map(f).collect::<Vec<_>>().join(" + ")
            };
            println!(
                "  {name:<28} SM calls {} = {:>2}   PG connections {} = {} ({} refused)   PG statements {}",
                per_step(&|s| s.sm_calls.to_string()),
                counts.total_calls(name),
                per_step(&|s| s.pg_connections.to_string()),
                counts.total_connections(name),
                steps.iter().map(|s| s.pg_logins_refused).sum::<usize>(),
                per_step(&|s| s.pg_statements.to_string()),
            );
            println!("  {:<28} {:?}", "", counts.total_operations(name));
            section.insert(
                name.clone(),
                json!({
                    "steps": STEPS.iter().zip(steps).map(|(step, s)| json!({
                        "step": step,
                        "sm_calls": s.sm_calls,
                        "sm_operations": s.sm_operations,
                        "pg_connections": s.pg_connections,
                        "pg_logins_refused": s.pg_logins_refused,
                        "pg_statements": s.pg_statements,
                    })).collect::<Vec<_>>(),
                    "sm_calls": counts.total_calls(name),
                    "sm_operations": counts.total_operations(name),
                    "pg_connections": counts.total_connections(name),
                }),
            );
        }
        section.insert("stable".into(), json!(counts.stable));
        section.insert(
            "method".into(),
            json!("Secrets Manager: requests per X-Amz-Target counted by tests/common/sm_proxy.rs in front of moto; PostgreSQL: `connection received` entries of the server log (log_connections) attributed by backend pid to the benchmark's database; statements: log_statement=all entries (one per round trip)"),
        );
        report.insert("round_trips".into(), Value::Object(section));
        for (strategy, calls, conns) in [
            (Strategy::SingleUser, 11, 3),
            (Strategy::AlternatingUsers, 12, 4),
        ] {
            for tls in [true, false] {
                let name = config_name(strategy, tls);
                let c = counts.total_calls(&name);
                let n = counts.total_connections(&name);
                budget(
                    &mut budgets,
                    &format!("Secrets Manager calls per rotation, {name}"),
                    &format!("≤ {calls}"),
                    c.to_string(),
                    c <= calls,
                );
                budget(
                    &mut budgets,
                    &format!("PostgreSQL connections per rotation, {name}"),
                    &format!("≤ {conns}"),
                    n.to_string(),
                    n <= conns,
                );
            }
        }
    }

    if let Some(floor) = &floor {
        println!();
        println!("4. the floor (measured apart from the function)");
        let mut sm = serde_json::Map::new();
        for (op, s) in &floor.sm {
            println!("  Secrets Manager emulator {op:<34} {}", s.cell());
            sm.insert(op.clone(), s.json());
        }
        println!(
            "  PostgreSQL connect+auth, plaintext (adapter login) {}",
            floor.connect_plain.cell()
        );
        println!(
            "  PostgreSQL connect+auth, TLS verify-full          {}",
            floor.connect_tls.cell()
        );
        println!(
            "  PostgreSQL one statement's round trip (login + SELECT session_user, less the login): {:.2} ms",
            floor.statement_ms()
        );
        let connect_ratio = floor.connect_tls.median() / floor.connect_plain.median();
        println!("  TLS / plaintext connect (medians)                 {connect_ratio:.2}");
        let mut section = json!({
            "secrets_manager_ms": sm,
            "pg_connect_plaintext_ms": floor.connect_plain.json(),
            "pg_connect_tls_ms": floor.connect_tls.json(),
            "pg_connect_and_one_statement_plaintext_ms": floor.connect_query_plain.json(),
            "pg_statement_round_trip_ms": (floor.statement_ms() * 100.0).round() / 100.0,
            "tls_over_plaintext_connect": (connect_ratio * 100.0).round() / 100.0,
        });
        if let (Some(warm), Some(counts)) = (&warm, &counts) {
            println!(
                "  each rotation against its floor (calls × median call + connections × median connect):"
            );
            let mut above = serde_json::Map::new();
            for (strategy, tls) in CONFIGS {
                let name = config_name(strategy, tls);
                let f = floor.of(
                    &counts.total_operations(&name),
                    counts.total_connections(&name),
                    tls,
                );
                let m = warm.series[&name].rotation.median();
                let cpu = warm
                    .cpu_ms_per_rotation
                    .get(&name)
                    .copied()
                    .unwrap_or(f64::NAN);
                let wait = warm
                    .wait_ms_per_rotation
                    .get(&name)
                    .copied()
                    .unwrap_or(f64::NAN);
                let statements: usize = counts.per_config[&name]
                    .iter()
                    .map(|s| s.pg_statements)
                    .sum();
                let with_statements = f + statements as f64 * floor.statement_ms();
                println!(
                    "    {name:<28} floor {f:5.1} ms ({with_statements:.1} with its {statements} statements' round trips), measured {m:5.1} ms: {:+.1} ms above ({:.2}×); of it, function CPU {cpu:.1} ms and waiting for a core {wait:.1} ms (means)",
                    m - f,
                    m / f
                );
                above.insert(
                    name,
                    json!({"floor_ms": (f * 10.0).round() / 10.0,
                           "floor_with_statements_ms": (with_statements * 10.0).round() / 10.0,
                           "median_ms": (m * 10.0).round() / 10.0,
                           "above_ms": ((m - f) * 10.0).round() / 10.0, "ratio": ((m / f) * 100.0).round() / 100.0,
                           "function_cpu_ms": (cpu * 10.0).round() / 10.0,
                           "function_runqueue_wait_ms": (wait * 10.0).round() / 10.0}),
                );
            }
            section["rotation_vs_floor"] = Value::Object(above);
        }
        report.insert("floor".into(), section);
    }

    if let Some(package) = &package {
        let zip = package["zip_bytes"].as_u64().unwrap_or(0) as f64;
        println!();
        println!(
            "6. package: {} {:.2} MiB (stripped: {}), zip (bootstrap, deflate -9) {:.2} MiB, x86_64; arm64 {}",
            package["binary"].as_str().unwrap_or("?"),
            package["binary_bytes"].as_u64().unwrap_or(0) as f64 / MIB,
            package["stripped"],
            zip / MIB,
            package["arm64"].as_str().unwrap_or("")
        );
        if let Some(plain) = package["plain_release_zip_bytes"].as_u64() {
            println!(
                "  for comparison, plain `cargo build --release` (target/release/pgrotate): {:.2} MiB, zip {:.2} MiB",
                package["plain_release_binary_bytes"].as_u64().unwrap_or(0) as f64 / MIB,
                plain as f64 / MIB
            );
        }
        report.insert("package".into(), package.clone());
        budget(
            &mut budgets,
            "zipped artifact (x86_64)",
            "≤ 5 MiB",
            format!("{:.2} MiB", zip / MIB),
            zip <= 5.0 * MIB,
        );
    }

    if let Some(growth) = &growth {
        println!();
        println!(
            "7. growth: alternating-users setSecret (TLS) against the primary's memberships and settings"
        );
        println!(
            "  {:>11} {:>13} {:>11}  {:<52} {:>9} {:>10} {:>5}  clone got (role / db settings)",
            "memberships",
            "role settings",
            "db settings",
            "setSecret ms",
            "tx trips",
            "master trips",
            "conns"
        );
        let mut rows = Vec::new();
        let mut tx_all = Vec::new();
        for c in growth {
            let uniq = |v: &[usize]| {
                let mut v = v.to_vec();
                v.sort();
                v.dedup();
                v.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            };
            println!(
                "  {:>11} {:>13} {:>11}  {:<52} {:>9} {:>10} {:>5}  {} / {}",
                c.memberships,
                c.role_settings,
                c.db_settings,
                c.set_secret.cell(),
                uniq(&c.transaction_round_trips),
                uniq(&c.master_round_trips),
                uniq(&c.connections),
                c.clone_role_settings,
                c.clone_db_settings,
            );
            tx_all.extend(c.transaction_round_trips.iter().copied());
            rows.push(json!({
                "memberships": c.memberships,
                "role_settings": c.role_settings,
                "db_settings": c.db_settings,
                "set_secret_ms": c.set_secret.json(),
                "transaction_round_trips": c.transaction_round_trips,
                "master_session_round_trips": c.master_round_trips,
                "connections": c.connections,
                "clone_role_settings": c.clone_role_settings,
                "clone_db_settings": c.clone_db_settings,
            }));
        }
        println!(
            "  (round trips: statements the server logged with log_statement=all in the master's session; tx = BEGIN … COMMIT)"
        );
        report.insert("growth".into(), json!(rows));
        let max = tx_all.iter().copied().max().unwrap_or(0);
        let min = tx_all.iter().copied().min().unwrap_or(0);
        budget(
            &mut budgets,
            "database round trips in the pair's transaction",
            "constant, ≤ 4",
            if min == max {
                format!("{max}, constant")
            } else {
                format!("{min}–{max}, varies")
            },
            min == max && max <= 4,
        );
    }

    if let Some(throughput) = &throughput {
        println!();
        println!(
            "8. throughput (single user, TLS; a rotation = RotateSecret + 4 invocations + AWSPENDING removed)"
        );
        let mut rows = Vec::new();
        for t in throughput {
            println!(
                "  {} process{:<2} {} rotations/s",
                t.processes,
                if t.processes == 1 { "" } else { "es" },
                t.rotations_per_second.cell()
            );
            rows.push(json!({"processes": t.processes, "rotations_per_second": t.rotations_per_second.json()}));
        }
        report.insert("throughput".into(), json!(rows));
    }

    // Issue 9's figures, from the same run.
    if let (Some(warm), Some(floor)) = (&warm, &floor) {
        let m = |n: &str| (warm.series[n].rotation.median() * 10.0).round() / 10.0;
        report.insert(
            "issue9".into(),
            json!({
                "connect_median_ms": {"plaintext": (floor.connect_plain.median() * 100.0).round() / 100.0,
                                      "tls_verify_full": (floor.connect_tls.median() * 100.0).round() / 100.0},
                "warm_rotation_median_ms": {
                    "single-user": {"plaintext": m("single-user/plaintext"), "tls": m("single-user/tls")},
                    "alternating-users": {"plaintext": m("alternating-users/plaintext"), "tls": m("alternating-users/tls")},
                },
            }),
        );
    }

    println!();
    println!("budgets (issue 12)");
    for b in &budgets {
        println!(
            "  {} {:<58} {:<28} measured {}",
            if b.met { "MET   " } else { "MISSED" },
            b.figure,
            b.budget,
            b.measured
        );
    }
    report.insert(
        "budgets".into(),
        json!(budgets.iter().map(|b| json!({"figure": b.figure, "budget": b.budget, "measured": b.measured, "met": b.met})).collect::<Vec<_>>()),
    );
    report.insert("machine".into(), machine);
    report.insert(
        "load".into(),
        json!({"samples": load.samples, "shared": load.shared()}),
    );
    report.insert(
        "options".into(),
        json!({
            "starts": o.starts, "rotations": o.rotations, "floor_samples": o.floor_samples,
            "growth_reps": o.growth_reps, "throughput_rotations": o.throughput_rotations,
            "throughput_trials": o.throughput_trials, "count_rotations": o.count_rotations,
            "sections": o.sections,
            "function_env": o.function_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        }),
    );
    report.insert(
        "binary".into(),
        json!(lambda::binary_path().display().to_string()),
    );
    report.insert(
        "elapsed_s".into(),
        json!(started.elapsed().as_secs_f64().round()),
    );
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(
        &o.out,
        serde_json::to_string_pretty(&Value::Object(report)).unwrap() + "\n",
    )
    .unwrap();
    println!();
    println!(
        "report: {} ({:.0} s)",
        o.out.display(),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
