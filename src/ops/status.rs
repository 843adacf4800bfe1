//! `pgrotatectl status`: a secret's versions and labels, its rotation schedule, and whether
//! a rotation is stuck and at which step, judged by which labelled credentials log in now.

use std::fmt::Write;

use serde::Serialize;

use super::state::{LoginCheck, SecretState, Stage, inspect};
use super::time::describe;
use super::{Context, OpsError, Output};

#[derive(Debug, Serialize)]
pub struct RotationInfo {
    pub enabled: Option<bool>,
    pub function: Option<String>,
    pub schedule: Option<String>,
    pub last_rotated: Option<String>,
    pub next_rotation: Option<String>,
    pub last_changed: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct VersionLine {
    pub id: String,
    pub stages: Vec<String>,
    pub created: Option<String>,
    /// The login with this version's credentials (AWSCURRENT, AWSPENDING, AWSPREVIOUS only).
    pub login: Option<LoginCheck>,
}

#[derive(Debug, Serialize)]
pub struct PendingInfo {
    pub version: String,
    pub created: Option<String>,
    pub stage: Stage,
    pub detail: &'static str,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub secret_arn: String,
    pub name: Option<String>,
    pub strategy: &'static str,
    pub rotation: RotationInfo,
    pub versions: Vec<VersionLine>,
    /// Set when AWSPENDING is on a version other than AWSCURRENT.
    pub stuck: Option<PendingInfo>,
    pub current_logs_in: bool,
    /// Healthy: AWSCURRENT logs in and no rotation is left unfinished.
    pub healthy: bool,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn iso(secs: Option<i64>) -> Option<String> {
    secs.map(super::time::rfc3339)
}

/// The report of a state (shared with `resume`, which shows the state after its change).
pub fn report(ctx: &Context, state: &SecretState) -> StatusReport {
    let d = &state.description;
    let labelled = [&state.current, &state.pending, &state.previous];
    let versions = state
        .versions
        .iter()
        .filter(|v| !v.stages.is_empty())
        .map(|v| VersionLine {
            id: v.id.clone(),
            stages: v.stages.clone(),
            created: iso(v.created),
            login: labelled
                .iter()
                .filter_map(|s| s.as_ref())
                .find(|s| s.id == v.id)
                .map(|s| s.login.clone()),
        })
        .collect();
    let stuck = state
        .pending
        .as_ref()
        .zip(state.stage())
        .map(|(p, stage)| PendingInfo {
            version: p.id.clone(),
            created: iso(p.created),
            stage,
            detail: stage.describe(),
        });
    let current_logs_in = state.current_logs_in();
    let healthy = current_logs_in && stuck.is_none();
    let summary = match (&stuck, current_logs_in) {
        (None, true) => "healthy: AWSCURRENT logs in and no rotation is pending".to_string(),
        (None, false) => {
            "AWSCURRENT does not log in: fix the stored credentials (or run preflight)".to_string()
        }
        (Some(p), _) => format!(
            "a rotation is unfinished (AWSPENDING on version {}): {}; AWSCURRENT {}",
            p.version,
            p.detail,
            if current_logs_in {
                "still logs in"
            } else {
                "does not log in"
            }
        ),
    };
    StatusReport {
        secret_arn: d.arn.clone(),
        name: d.name.clone(),
        strategy: ctx.strategy().as_str(),
        rotation: RotationInfo {
            enabled: d.rotation_enabled,
            function: d.rotation_lambda_arn.clone(),
            schedule: d.rotation_schedule.clone(),
            last_rotated: iso(d.last_rotated),
            next_rotation: iso(d.next_rotation),
            last_changed: iso(d.last_changed),
        },
        versions,
        stuck,
        current_logs_in,
        healthy,
        summary,
        note: state.versions_note.clone(),
    }
}

/// The report as text.
pub fn render(report: &StatusReport, state: &SecretState) -> String {
    let d = &state.description;
    let mut out = String::new();
    let _ = writeln!(out, "secret      {}", report.secret_arn);
    let enabled = match d.rotation_enabled {
        Some(false) => "disabled",
        _ if d.rotation_lambda_arn.is_none() => "not configured (no rotation function)",
        _ => "enabled",
    };
    let _ = writeln!(out, "rotation    {enabled}");
    if let Some(function) = &d.rotation_lambda_arn {
        let _ = writeln!(out, "function    {function}");
    }
    if let Some(schedule) = &d.rotation_schedule {
        let _ = writeln!(out, "schedule    {schedule}");
    }
    let when = |secs: Option<i64>| secs.map_or_else(|| "never".to_string(), describe);
    let _ = writeln!(out, "last        {}", when(d.last_rotated));
    let _ = writeln!(
        out,
        "next        {}",
        d.next_rotation
            .map_or_else(|| "not scheduled".to_string(), describe)
    );
    let _ = writeln!(out, "versions");
    for v in &report.versions {
        let created = v
            .created
            .as_deref()
            .map(|c| format!("  created {c}"))
            .unwrap_or_default();
        let login = v
            .login
            .as_ref()
            .map(|l| format!("  {}", l.describe()))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}  {:<24}{created}{login}",
            v.id,
            v.stages.join(",")
        );
    }
    if let Some(note) = &report.note {
        let _ = writeln!(out, "note        {note}");
    }
    let verdict = if report.healthy { "✓" } else { "✗" };
    let _ = writeln!(out, "state       {verdict} {}", report.summary);
    if report.stuck.is_some() {
        let _ = writeln!(
            out,
            "next step   pgrotatectl resume --secret-id {}",
            report.secret_arn
        );
    }
    out
}

/// Runs `status`: `ok` only when the secret is healthy.
pub async fn run(ctx: &Context, secret_id: &str) -> Result<Output, OpsError> {
    ctx.require_config()?;
    let state = inspect(ctx, secret_id).await?;
    let report = report(ctx, &state);
    let text = render(&report, &state);
    Ok(Output::new(report.healthy, &report, text))
}
