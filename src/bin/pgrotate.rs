//! The Lambda entry point: reads the configuration, sets up logging, builds the Secrets
//! Manager client and the database adapter once per process, then serves rotation events.

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use pgrotate::db::Postgres;
use pgrotate::store::AwsSecretStore;
use pgrotate::{Config, Error, RotationEvent, Rotator};
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime};

fn diagnostic(error: &Error) -> Diagnostic {
    Diagnostic {
        error_type: error.kind().to_string(),
        error_message: error.to_string(),
    }
}

/// Time kept back from the invocation's deadline to log the failure and answer the runtime.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// When the step must stop: the invocation's deadline less the margin, as an `Instant`.
fn stop_by(context: &lambda_runtime::Context) -> Option<Instant> {
    let left = context.deadline().duration_since(SystemTime::now()).ok()?;
    Some(Instant::now() + left.saturating_sub(DEADLINE_MARGIN))
}

async fn handle(
    rotator: &Rotator<AwsSecretStore, Postgres>,
    event: LambdaEvent<Value>,
) -> Result<Value, Diagnostic> {
    let LambdaEvent { payload, context } = event;
    let event = RotationEvent::from_json(&payload).map_err(|error| {
        tracing::error!(error = %error, "rejected the invocation");
        // Counted as a failed step too (step "unknown"; nothing of the event is recorded).
        pgrotate::metrics::StepRecord {
            step: "",
            strategy: rotator.config().strategy.as_str(),
            secret_arn: "-",
            token: "-",
            duration_ms: 0,
            result: Err(&error),
        }
        .emit();
        diagnostic(&error)
    })?;
    let stop_by = stop_by(&context);
    rotator
        .handle_until(&event, stop_by)
        .await
        .map_err(|e| diagnostic(&e))?;
    Ok(Value::Null)
}

// One thread: Lambda hands the function one event at a time, and a 128 MB function gets a
// small share of one vCPU, so worker threads would only add wake-ups between threads, stacks
// and malloc arenas (measured by integration/bench.sh: about 1 ms of CPU per rotation and
// 0.6 MiB of peak RSS).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    pgrotate::logging::init_from_env();
    let config = Config::from_env().inspect_err(|error| {
        tracing::error!(error = %error, "pgrotate cannot start");
        // Lambda shows this errorType and message for the failed initialisation.
        if let Err(report) =
            pgrotate::runtime::report_init_error_from_env(error.kind(), &error.to_string())
        {
            tracing::error!(error = %report, "the init error could not be reported");
        }
    })?;
    let store = AwsSecretStore::from_env(
        config.secrets_manager_endpoint.as_deref(),
        config.secrets_manager_timeout,
    )
    .await;
    let db = Postgres::new(config.ca_bundle.clone(), config.connect_timeout);
    tracing::info!(
        strategy = config.strategy.as_str(),
        default_ssl_mode = config.default_ssl.as_str(),
        "pgrotate started"
    );
    let rotator = Rotator::new(store, db, config);
    let rotator = &rotator;
    lambda_runtime::run(service_fn(move |event| async move {
        handle(rotator, event).await
    }))
    .await
}
