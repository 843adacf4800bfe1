//! The deterministic budgets of issue 12, checked on the wire against the local stack with the
//! release binary under the Lambda runtime emulator (no timings here: `integration/bench.sh`
//! measures those):
//! - Secrets Manager calls per rotation (≤ 11 single user, ≤ 12 alternating users), counted
//!   by the proxy in front of the emulator (`common::sm_proxy`), not by the function;
//! - PostgreSQL connections per rotation (≤ 3, ≤ 4), from the server log: one
//!   `connection received` per TCP connection, refused logins included (`common::pg_log`);
//! - database round trips in the alternating pair's transaction: the same whatever the
//!   primary's memberships and settings, and ≤ 4 (each statement the server logs with
//!   `log_statement=all` is one message from the client, so one round trip).
//!
//! Also here: the proxy's own fault injection, which later reliability tests rely on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use pgrotate::Strategy;
use pgrotate::db::sql::{quote_ident, quote_literal};
use pgrotate::store::{AwsSecretStore, SecretStore, StoreErrorKind, VersionRef};
use rstest::rstest;

use common::driver::{Driver, STEPS, deployment};
use common::lambda::Lambda;
use common::pg_log::{LogCursor, connections};
use common::sm_proxy::{Fault, FaultKind, SmProxy};
use common::world::{FUNCTION, World};

/// What one step cost on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StepCost {
    step: &'static str,
    sm_calls: BTreeMap<String, u64>,
    pg_connections: usize,
    /// The round trips of the pair's transaction, when the step ran one.
    transaction_round_trips: Option<usize>,
}

/// One rotation of `arn` through `lambda`, whose Secrets Manager endpoint is `proxy`,
/// measured step by step.
async fn measured_rotation(
    world: &World,
    lambda: &Lambda,
    proxy: &SmProxy,
    arn: &str,
) -> Vec<StepCost> {
    let token = world.driver.start_rotation(arn).await;
    let mut costs = Vec::new();
    for step in STEPS {
        let mut cursor = LogCursor::at_end(&world.stack.pg_log);
        proxy.take_counts();
        let event = Driver::event(arn, &token, step, None);
        if let Err(e) = lambda.invoke(&event).await {
            panic!("{step} failed: {e:?}\n{}", lambda.logs());
        }
        let connections = cursor.take_connections(&world.db);
        costs.push(StepCost {
            step,
            sm_calls: proxy.take_counts(),
            pg_connections: connections.len(),
            transaction_round_trips: connections.iter().find_map(|c| c.transaction_round_trips()),
        });
    }
    world.driver.end_rotation(arn, &token).await;
    costs
}

async fn function_behind_proxy(world: &World, strategy: Strategy, proxy: &SmProxy) -> Lambda {
    Lambda::start(
        deployment(&world.stack, strategy, FUNCTION)
            .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &proxy.endpoint())
            .env("AWS_LAMBDA_LOG_LEVEL", "INFO"),
    )
    .await
}

#[rstest]
#[case::single_user(Strategy::SingleUser, 11, 3)]
#[case::alternating_users(Strategy::AlternatingUsers, 12, 4)]
#[tokio::test]
async fn a_rotation_stays_within_its_call_and_connection_budgets(
    #[case] strategy: Strategy,
    #[case] call_budget: u64,
    #[case] connection_budget: usize,
) {
    let world = World::new(FUNCTION).await;
    let proxy = SmProxy::start(&world.stack.sm_endpoint).await;
    let lambda = function_behind_proxy(&world, strategy, &proxy).await;
    let (arn, _) = world.user_secret(strategy, None).await;

    // Two rotations: for alternating users the first creates the clone, the second alters
    // the primary; both must cost the same.
    let first = measured_rotation(&world, &lambda, &proxy, &arn).await;
    let second = measured_rotation(&world, &lambda, &proxy, &arn).await;
    let shape = |costs: &[StepCost]| {
        costs
            .iter()
            .map(|c| (c.step, c.sm_calls.values().sum::<u64>(), c.pg_connections))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        shape(&first),
        shape(&second),
        "every rotation costs the same: {first:#?}\n{second:#?}"
    );
    for costs in [&first, &second] {
        let calls: u64 = costs.iter().flat_map(|c| c.sm_calls.values()).sum();
        let conns: usize = costs.iter().map(|c| c.pg_connections).sum();
        assert!(
            calls <= call_budget,
            "{} Secrets Manager calls per rotation, budget {call_budget}: {costs:#?}",
            calls
        );
        assert!(
            conns <= connection_budget,
            "{conns} PostgreSQL connections per rotation, budget {connection_budget}: {costs:#?}"
        );
        // Only setSecret and testSecret touch the database; create and finish never do.
        assert_eq!(costs[0].pg_connections, 0, "createSecret: {costs:#?}");
        assert_eq!(costs[3].pg_connections, 0, "finishSecret: {costs:#?}");
        for cost in costs.iter() {
            assert_eq!(
                cost.sm_calls.get("DescribeSecret"),
                Some(&1),
                "one DescribeSecret per step: {costs:#?}"
            );
        }
    }
}

/// Makes `primary` a member of `memberships` new roles and gives it `role_settings`
/// per-role and `db_settings` per-database settings.
async fn grow(world: &World, primary: &str, memberships: usize, settings: usize) {
    let mut sql = format!(
        "DO $$ BEGIN FOR i IN 1..{memberships} LOOP \
         EXECUTE format('CREATE ROLE %I NOLOGIN', {g} || i); \
         EXECUTE format('GRANT %I TO %I', {g} || i, {p}); END LOOP; END $$;",
        g = quote_literal(&format!("{primary}_g")),
        p = quote_literal(primary)
    );
    for i in 0..settings {
        sql.push_str(&format!(
            "ALTER ROLE {p} SET \"budgets.role_{i}\" TO 'v{i}';\
             ALTER ROLE {p} IN DATABASE {d} SET \"budgets.db_{i}\" TO 'v{i}';",
            p = quote_ident(primary),
            d = quote_ident(&world.db)
        ));
    }
    world.stack.exec("postgres", &sql).await;
}

#[tokio::test]
async fn the_pairs_transaction_takes_the_same_round_trips_whatever_the_memberships_and_settings() {
    let world = World::new(FUNCTION).await;
    let proxy = SmProxy::start(&world.stack.sm_endpoint).await;
    let lambda = function_behind_proxy(&world, Strategy::AlternatingUsers, &proxy).await;

    let mut trips = Vec::new();
    for (memberships, settings) in [(0, 0), (200, 50)] {
        let (arn, primary) = world.user_secret(Strategy::AlternatingUsers, None).await;
        grow(&world, &primary, memberships, settings).await;
        // The clone's creation, then the primary altered, then the clone altered.
        for round in 0..3 {
            let costs = measured_rotation(&world, &lambda, &proxy, &arn).await;
            let n = costs[1]
                .transaction_round_trips
                .unwrap_or_else(|| panic!("setSecret ran no BEGIN … COMMIT as master: {costs:#?}"));
            trips.push(((memberships, settings, round), n));
        }
    }
    let counts: Vec<usize> = trips.iter().map(|(_, n)| *n).collect();
    assert!(
        counts.windows(2).all(|w| w[0] == w[1]),
        "round trips in the pair's transaction vary with memberships/settings: {trips:?}"
    );
    assert!(
        counts[0] <= 4,
        "{} round trips in the pair's transaction, budget 4: {trips:?}",
        counts[0]
    );
}

#[test]
fn the_server_log_reader_finds_connections_statements_and_the_transaction() {
    let log = "\
2026-01-01 10:00:00.001 UTC [10] [unknown]@[unknown] LOG:  connection received: host=127.0.0.1 port=1
2026-01-01 10:00:00.002 UTC [11] [unknown]@[unknown] LOG:  connection received: host=127.0.0.1 port=2
2026-01-01 10:00:00.003 UTC [10] app@db1 FATAL:  password authentication failed for user \"app\"
2026-01-01 10:00:00.003 UTC [10] app@db1 DETAIL:  Connection matched file \"pg_hba.conf\" line 5
2026-01-01 10:00:00.004 UTC [11] postgres@db1 LOG:  connection authorized: user=postgres database=db1 SSL enabled
2026-01-01 10:00:00.005 UTC [11] postgres@db1 LOG:  execute <unnamed>: SELECT current_setting('server_version_num')::int
2026-01-01 10:00:00.006 UTC [11] postgres@db1 LOG:  statement: BEGIN
2026-01-01 10:00:00.007 UTC [11] postgres@db1 LOG:  execute <unnamed>: SELECT
\t EXISTS (SELECT 1)
2026-01-01 10:00:00.007 UTC [11] postgres@db1 DETAIL:  parameters: $1 = 'a'
2026-01-01 10:00:00.008 UTC [11] postgres@db1 LOG:  statement: ALTER ROLE x PASSWORD 'v';
\tGRANT a TO b;
\tCOMMIT
2026-01-01 10:00:00.009 UTC [99] LOG:  checkpoint starting: time
2026-01-01 10:00:00.010 UTC [12] [unknown]@[unknown] LOG:  connection received: host=127.0.0.1 port=3
2026-01-01 10:00:00.011 UTC [12] u@db2 LOG:  connection authorized: user=u database=db2
";
    let c = connections(log);
    assert_eq!(c.len(), 3);
    assert!(!c[0].authorized);
    assert_eq!(c[0].database.as_deref(), Some("db1"));
    assert!(c[1].authorized);
    assert_eq!(c[1].user.as_deref(), Some("postgres"));
    assert_eq!(c[1].statements().len(), 4);
    assert_eq!(c[1].transaction_round_trips(), Some(3));
    assert_eq!(c[2].database.as_deref(), Some("db2"));
    assert_eq!(c[2].transaction_round_trips(), None);
}

#[tokio::test]
async fn the_proxy_counts_operations_and_injects_faults() {
    let world = World::new(FUNCTION).await;
    let (arn, _) = world.user_secret(Strategy::SingleUser, None).await;
    let proxy = SmProxy::start(&world.stack.sm_endpoint).await;
    // The function's adapter, with retries that back off briefly.
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(common::lambda::REGION))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "testing", "testing", None, None, "budgets",
        ))
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(5)),
        );
    let store = AwsSecretStore::load(loader, Some(&proxy.endpoint()), Duration::from_secs(5)).await;
    let current = VersionRef::Stage("AWSCURRENT");

    store.describe(&arn).await.unwrap();
    store.get_value(&arn, current).await.unwrap();
    assert_eq!(
        proxy.take_counts(),
        BTreeMap::from([("DescribeSecret".into(), 1), ("GetSecretValue".into(), 1)])
    );

    // A 500 and a dropped connection are retried by the SDK and then succeed.
    proxy.inject(Fault::times(
        Some("DescribeSecret"),
        FaultKind::InternalError,
        1,
    ));
    proxy.inject(Fault::times(
        Some("GetSecretValue"),
        FaultKind::DropRequest,
        1,
    ));
    store.describe(&arn).await.unwrap();
    store.get_value(&arn, current).await.unwrap();
    assert_eq!(
        proxy.take_counts(),
        BTreeMap::from([("DescribeSecret".into(), 2), ("GetSecretValue".into(), 2)])
    );

    // Throttling on every attempt: the call fails as throttled after the SDK's 3 attempts.
    proxy.inject(Fault::always(Some("GetSecretValue"), FaultKind::Throttle));
    let err = store.get_value(&arn, current).await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Throttled, "{err}");
    assert!(err.to_string().contains("ThrottlingException"), "{err}");
    assert_eq!(proxy.take_counts().get("GetSecretValue"), Some(&3));
    proxy.clear_faults();

    // Latency delays the answer; a dropped response loses an answer to a call that happened.
    proxy.inject(Fault::times(
        None,
        FaultKind::Latency(Duration::from_millis(300)),
        1,
    ));
    let started = std::time::Instant::now();
    store.describe(&arn).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    proxy.inject(Fault::times(
        Some("DescribeSecret"),
        FaultKind::DropResponse,
        1,
    ));
    store.describe(&arn).await.unwrap();
    assert_eq!(proxy.take_counts().get("DescribeSecret"), Some(&3));
    assert_eq!(
        proxy.injected(),
        BTreeMap::from([
            ("DescribeSecret DropResponse".into(), 1),
            ("DescribeSecret InternalError".into(), 1),
            ("DescribeSecret Latency(300ms)".into(), 1),
            ("GetSecretValue DropRequest".into(), 1),
            ("GetSecretValue Throttle".into(), 3),
        ])
    );
}
