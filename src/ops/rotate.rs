//! `pgrotatectl rotate`: starts a rotation (RotateSecret, with the rotation configured on the
//! secret) and, with `--wait`, follows it to the end: the labels from DescribeSecret, and each
//! step's record from the function's CloudWatch log when the caller may read it, so a failure
//! is reported with its step and error; otherwise it says where to look.

use std::fmt::Write;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::metrics::StepOutcome;
use crate::store::{AWSCURRENT, AWSPENDING, OperatorStore, SecretStore, VersionRef};

use super::logs::log_group_of;
use super::time::now_ms;
use super::{Context, OpsError, Output, POLL_INTERVAL};

/// Options of `rotate`.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    pub wait: bool,
    pub timeout: Duration,
    /// The function's log group, when not `/aws/lambda/<function name>`.
    pub log_group: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RotateOutcome {
    /// RotateSecret accepted (without `--wait`).
    Started,
    /// AWSCURRENT moved to the new version and AWSPENDING is gone.
    Rotated,
    /// A step failed (from the function's log), or the rotation was abandoned.
    Failed,
    /// No end within the timeout.
    TimedOut,
}

#[derive(Debug, Serialize)]
pub struct RotateReport {
    pub secret_arn: String,
    pub version: String,
    pub function: Option<String>,
    pub outcome: RotateOutcome,
    /// The steps the function's log recorded for this version.
    pub steps: Vec<StepOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    pub log_group: Option<String>,
    /// Whether the function's log could be read.
    pub log_readable: bool,
    pub elapsed_ms: u64,
    pub detail: String,
}

fn render(report: &RotateReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "secret      {}", report.secret_arn);
    let _ = writeln!(out, "version     {}", report.version);
    if let Some(function) = &report.function {
        let _ = writeln!(out, "function    {function}");
    }
    for step in &report.steps {
        let duration = step
            .duration_ms
            .map(|d| format!(" ({d} ms)"))
            .unwrap_or_default();
        if step.succeeded {
            let _ = writeln!(out, "  ✓ {}{duration}", step.step);
        } else {
            let _ = writeln!(
                out,
                "  ✗ {}{duration}: {}: {}",
                step.step,
                step.error_type.as_deref().unwrap_or("error"),
                step.error_message.as_deref().unwrap_or("")
            );
        }
    }
    let verdict = match report.outcome {
        RotateOutcome::Rotated | RotateOutcome::Started => "✓",
        _ => "✗",
    };
    let _ = writeln!(out, "result      {verdict} {}", report.detail);
    out
}

/// Runs `rotate`.
pub async fn run(
    ctx: &Context,
    secret_id: &str,
    options: &RotateOptions,
) -> Result<Output, OpsError> {
    ctx.require_config()?;
    let begun = Instant::now();
    let progress = ctx.progress;
    let description = progress
        .run(
            "reading the secret (DescribeSecret)",
            ctx.store().describe(secret_id),
        )
        .await?;
    let arn = description.arn.clone();
    let Some(function) = description.rotation_lambda_arn.clone() else {
        return Err(OpsError::Refused(format!(
            "rotation is not configured for {arn} (no rotation function): attach pgrotate first: aws secretsmanager rotate-secret --secret-id {arn} --rotation-lambda-arn <function ARN> --rotation-rules '{{\"ScheduleExpression\": \"rate(30 days)\"}}'"
        )));
    };
    if description.rotation_enabled == Some(false) {
        return Err(OpsError::Refused(format!(
            "rotation is disabled for {arn}: enable it with aws secretsmanager rotate-secret --secret-id {arn} --rotation-lambda-arn {function}"
        )));
    }
    let current = description.version_with(AWSCURRENT).map(str::to_string);
    if let Some(pending) = description
        .version_with(AWSPENDING)
        .filter(|p| Some(*p) != current.as_deref())
    {
        return Err(OpsError::Refused(format!(
            "a previous rotation is not complete (AWSPENDING on version {pending}), so Secrets Manager would refuse a new one: see `pgrotatectl status --secret-id {arn}`, then `pgrotatectl resume --secret-id {arn}`"
        )));
    }
    let log_group = options
        .log_group
        .clone()
        .or_else(|| log_group_of(&function));
    // Log timestamps come from another clock: look a little before the start.
    let since_ms = now_ms() - 60_000;
    let version = progress
        .run(
            "starting the rotation (RotateSecret)",
            ctx.store().rotate_secret(&arn),
        )
        .await?;
    progress.note(format_args!(
        "rotation started: version {version} is AWSPENDING"
    ));
    let mut report = RotateReport {
        secret_arn: arn.clone(),
        version: version.clone(),
        function: Some(function),
        outcome: RotateOutcome::Started,
        steps: Vec::new(),
        failed_step: None,
        error_type: None,
        error_message: None,
        log_group: log_group.clone(),
        log_readable: false,
        elapsed_ms: 0,
        detail: format!(
            "rotation started; follow it with `pgrotatectl status --secret-id {arn}` (or rotate --wait)"
        ),
    };
    if !options.wait {
        report.elapsed_ms = begun.elapsed().as_millis() as u64;
        let text = render(&report);
        return Ok(Output::new(true, &report, text));
    }

    let deadline = Instant::now() + options.timeout;
    let mut log_problem: Option<String> = log_group
        .is_none()
        .then(|| "the rotation function's ARN names no log group".to_string());
    let mut pending_value_seen = false;
    let mut became_current = false;
    loop {
        // The function's own account of its steps.
        if let (Some(group), None) = (&log_group, &log_problem) {
            match ctx.logs.step_outcomes(group, &version, since_ms).await {
                Ok(outcomes) => {
                    report.log_readable = true;
                    for outcome in outcomes.iter().skip(report.steps.len()) {
                        if outcome.succeeded {
                            progress.note(format_args!("{} succeeded", outcome.step));
                        } else {
                            progress.note(format_args!(
                                "{} failed: {}",
                                outcome.step,
                                outcome.error_message.as_deref().unwrap_or("")
                            ));
                        }
                    }
                    report.steps = outcomes;
                    if let Some(failed) = report.steps.iter().find(|o| !o.succeeded).cloned() {
                        report.outcome = RotateOutcome::Failed;
                        report.failed_step = Some(failed.step.clone());
                        report.error_type = failed.error_type.clone();
                        report.error_message = failed.error_message.clone();
                        report.detail = format!(
                            "{} failed ({}); the rotation stays pending and Secrets Manager retries it later: fix the cause, then `pgrotatectl resume --secret-id {arn}` or wait for the retry",
                            failed.step,
                            failed.error_type.as_deref().unwrap_or("error")
                        );
                        break;
                    }
                }
                Err(e) => {
                    progress.note(format_args!("{e}: following the labels only"));
                    log_problem = Some(e.to_string());
                }
            }
        }
        // The labels.
        let description = ctx.store().describe(&arn).await?;
        let stages = description.stages_of(&version).unwrap_or_default();
        let is_current = stages.iter().any(|s| s == AWSCURRENT);
        let is_pending = stages.iter().any(|s| s == AWSPENDING);
        if !pending_value_seen
            && is_pending
            && !is_current
            && ctx
                .store()
                .get_value(&arn, VersionRef::Pending(&version))
                .await
                .is_ok()
        {
            pending_value_seen = true;
            progress.note("the pending version has a value (createSecret done)");
        }
        if is_current && !became_current {
            became_current = true;
            progress.note(format_args!(
                "AWSCURRENT moved to version {version} (finishSecret done)"
            ));
        }
        if is_current && !is_pending {
            report.outcome = RotateOutcome::Rotated;
            report.detail = format!("rotated: version {version} is AWSCURRENT");
            break;
        }
        if !is_current && !is_pending {
            report.outcome = RotateOutcome::Failed;
            report.detail = format!(
                "the rotation was abandoned: version {version} lost AWSPENDING before becoming AWSCURRENT (another rotation, or someone removed the label)"
            );
            break;
        }
        if Instant::now() >= deadline {
            report.outcome = RotateOutcome::TimedOut;
            let reached = if became_current {
                "finishSecret done, AWSPENDING not yet removed"
            } else if pending_value_seen {
                "createSecret done"
            } else {
                "no step seen done"
            };
            let look = match (&log_group, &log_problem) {
                (Some(group), Some(problem)) => format!(
                    "the function's log could not be read ({problem}); look in CloudWatch Logs group {group} for the version id {version}"
                ),
                (Some(group), None) => format!(
                    "the function's log ({group}) shows no failure for this version yet; Secrets Manager may still be invoking it"
                ),
                (None, _) => format!(
                    "look in the rotation function's CloudWatch log for the version id {version}"
                ),
            };
            report.detail = format!(
                "no end within {}s ({reached}); {look}; then `pgrotatectl status --secret-id {arn}`",
                options.timeout.as_secs()
            );
            break;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    report.elapsed_ms = begun.elapsed().as_millis() as u64;
    let ok = report.outcome == RotateOutcome::Rotated;
    let text = render(&report);
    Ok(Output::new(ok, &report, text))
}
