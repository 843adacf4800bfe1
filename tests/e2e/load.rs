//! Load: many secrets (half per strategy, several users per database) rotated by 8 function
//! processes in flight at once, through the release binary. Every rotation completes, every
//! AWSCURRENT logs in, and the server's connections return to their baseline.
//!
//! The test command runs `PGROTATE_LOAD_SECRETS` secrets (default 24); the full load of 200 is
//! `PGROTATE_LOAD_SECRETS=200 cargo test --release --test e2e load -- --nocapture` with the
//! stack up (`integration/load.sh` does exactly that), which prints rotations per second and
//! the slowest rotation.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pgrotate::Strategy;

use crate::common::driver::{Login, login};
use crate::common::world::*;

const PROCESSES_PER_STRATEGY: usize = 4;
const DATABASES: usize = 3;

/// Connections the function holds on this test's databases (application_name = pgrotate).
async fn function_connections(worlds: &[World]) -> i64 {
    let databases: Vec<String> = worlds.iter().map(|w| w.db.clone()).collect();
    let mut admin = worlds[0].stack.admin("postgres").await;
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE application_name = 'pgrotate' AND datname = ANY($1)",
    )
    .bind(&databases)
    .fetch_one(&mut admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn many_secrets_rotate_with_eight_processes_in_flight_and_connections_return_to_baseline() {
    let count: usize = std::env::var("PGROTATE_LOAD_SECRETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    // Several databases, several users in each.
    let mut worlds = Vec::new();
    for _ in 0..DATABASES {
        worlds.push(World::new(FUNCTION).await);
    }
    let mut all = Vec::new();
    let mut queues = Vec::new();
    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        let mut queue = VecDeque::new();
        for i in 0..count / 2 {
            let world = &worlds[i % DATABASES];
            let (arn, _) = world.user_secret(strategy, None).await;
            queue.push_back((i % DATABASES, arn.clone()));
            all.push((i % DATABASES, arn));
        }
        queues.push((strategy, Mutex::new(queue)));
    }
    let baseline = function_connections(&worlds).await;

    let started = Instant::now();
    let slowest = Mutex::new(Duration::ZERO);
    let mut workers = Vec::new();
    for (strategy, queue) in &queues {
        for _ in 0..PROCESSES_PER_STRATEGY {
            workers.push(async {
                let mut lambda = worlds[0].lambda(*strategy).await;
                loop {
                    let Some((db, arn)) = queue.lock().unwrap().pop_front() else {
                        break;
                    };
                    let one = Instant::now();
                    worlds[db]
                        .driver
                        .rotate(&lambda, &arn, None)
                        .await
                        .unwrap_or_else(|e| panic!("{arn}: {e:?}"));
                    let took = one.elapsed();
                    let mut slowest = slowest.lock().unwrap();
                    *slowest = (*slowest).max(took);
                }
                lambda.stop().await;
            });
        }
    }
    futures_join_all(workers).await;
    let elapsed = started.elapsed();
    let rotated = count / 2 * 2;
    println!(
        "load: {rotated} rotations by {} processes in {:.2} s: {:.1} rotations/s, slowest {} ms",
        PROCESSES_PER_STRATEGY * 2,
        elapsed.as_secs_f64(),
        rotated as f64 / elapsed.as_secs_f64(),
        slowest.lock().unwrap().as_millis()
    );

    for (_, queue) in &queues {
        assert!(queue.lock().unwrap().is_empty());
    }
    for (db, arn) in &all {
        let current = worlds[*db].current(arn).await;
        assert!(
            matches!(login(&worlds[0].stack, &current).await, Login::Ok(_)),
            "{arn}: AWSCURRENT does not log in"
        );
    }
    // Every connection the function opened is closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = function_connections(&worlds).await;
        if now <= baseline {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{now} function connections left open (baseline {baseline})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs futures concurrently on this task (the Lambda handles are not Send).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    std::future::poll_fn(move |cx| {
        futures.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futures.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}
