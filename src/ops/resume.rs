//! `pgrotatectl resume`: ends an unfinished rotation, deciding from which credentials log
//! in now whether to finish it (the remaining steps run here, with the function's own
//! rotation code and the pending version's token) or to drop the stale `AWSPENDING` label.
//! It never takes a label from the only credentials that work, and changes nothing before
//! the operator agrees (or passed `--yes`).

use std::fmt::Write;

use serde::Serialize;

use crate::config::Strategy;
use crate::event::RotationEvent;
use crate::store::OperatorStore;

use super::state::{LoginCheck, SecretState, Stage, inspect};
use super::status::{StatusReport, report as status_report};
use super::time::{now_secs, span};
use super::{Context, OpsError, Output};

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Let the logins decide.
    Auto,
    Finish,
    Drop,
}

/// What resume will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Plan {
    /// No rotation is pending.
    Nothing,
    /// Run `steps` with the pending token, then remove AWSPENDING (as Secrets Manager does
    /// after finishSecret).
    Finish { steps: Vec<&'static str> },
    /// Remove AWSPENDING from the pending version.
    Drop,
}

/// The facts the decision rests on.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    pub stage: Option<Stage>,
    pub current_logs_in: bool,
    /// A login failed for another reason than the password: nothing can be concluded.
    pub login_error: bool,
}

/// Decides what to do, or refuses (with the reason). The rules:
/// - the pending credentials log in → finish (for single user they are then the only
///   working credentials: dropping them is refused);
/// - AWSCURRENT logs in and the pending credentials do not (or do not exist yet) → drop
///   (nothing changed in the database; a new rotation starts clean);
/// - neither logs in → finish, whose setSecret tries AWSCURRENT, AWSPREVIOUS and the master
///   secret, the only way back to working credentials;
/// - a login that could not be checked → refuse.
pub fn decide(facts: Facts, choice: Choice) -> Result<(Plan, String), String> {
    let Some(stage) = facts.stage else {
        return Ok((
            Plan::Nothing,
            "no rotation is pending: nothing to resume".into(),
        ));
    };
    if facts.login_error || stage == Stage::Unknown {
        return Err(
            "cannot tell which credentials work (a login could not be checked): fix the connection problem shown by `pgrotatectl status` and run resume again"
                .into(),
        );
    }
    let finish = Plan::Finish {
        steps: stage.remaining_steps().to_vec(),
    };
    let pending_logs_in = stage == Stage::AwaitingFinish;
    match choice {
        Choice::Drop if pending_logs_in && !facts.current_logs_in => Err(
            "refusing to drop AWSPENDING: the pending credentials are the only ones that log in (AWSCURRENT does not); finish the rotation instead (resume without --drop)"
                .into(),
        ),
        Choice::Drop => Ok((Plan::Drop, "dropping AWSPENDING as asked (--drop)".into())),
        Choice::Finish => Ok((finish, "finishing the rotation as asked (--finish)".into())),
        Choice::Auto if pending_logs_in => Ok((
            finish,
            if facts.current_logs_in {
                "the pending credentials already log in: finishing the rotation".into()
            } else {
                "the pending credentials log in and AWSCURRENT no longer does: finishing the rotation is the only safe way".into()
            },
        )),
        Choice::Auto if facts.current_logs_in => Ok((
            Plan::Drop,
            if stage == Stage::AwaitingCreate {
                "AWSCURRENT logs in and the pending version has no credentials yet: dropping the stale AWSPENDING changes nothing in the database".into()
            } else {
                "AWSCURRENT logs in and the pending credentials do not: dropping the stale AWSPENDING changes nothing in the database".into()
            },
        )),
        Choice::Auto => Ok((
            finish,
            "neither AWSCURRENT nor the pending credentials log in: finishing the rotation lets setSecret try AWSCURRENT, AWSPREVIOUS and the master secret".into(),
        )),
    }
}

#[derive(Debug, Serialize)]
pub struct ResumeReport {
    pub secret_arn: String,
    /// The pending version (the rotation's token).
    pub version: Option<String>,
    pub stage: Option<Stage>,
    #[serde(flatten)]
    pub plan: Plan,
    pub reason: String,
    /// Whether the plan was carried out.
    pub applied: bool,
    /// The steps that ran, in order, and how each ended.
    pub steps: Vec<StepRun>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The secret after resume (or before, when nothing was applied).
    pub after: StatusReport,
}

#[derive(Debug, Serialize)]
pub struct StepRun {
    pub step: &'static str,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Options of `resume`.
#[derive(Debug, Clone, Copy)]
pub struct ResumeOptions {
    pub choice: Choice,
    /// Apply without asking.
    pub yes: bool,
    /// A pending version younger than this (seconds) may belong to a rotation still running.
    pub min_age: u64,
}

fn refuse_strategy_mismatch(ctx: &Context, state: &SecretState) -> Result<(), OpsError> {
    let Some(made_by) = state.pending_strategy() else {
        return Ok(());
    };
    if made_by != ctx.strategy() {
        return Err(OpsError::Refused(format!(
            "the pending version names user {:?}, as a {} rotation does, but this command runs as {} (ROTATION_STRATEGY or --strategy): use the function's strategy",
            state
                .pending
                .as_ref()
                .and_then(|p| p.user.as_deref())
                .unwrap_or_default(),
            made_by.as_str(),
            ctx.strategy().as_str()
        )));
    }
    Ok(())
}

/// Asks on the terminal whether to carry out `plan`; `Err` when there is no terminal.
fn confirm(plan: &str) -> Result<bool, OpsError> {
    use std::io::{BufRead, IsTerminal, Write as _};
    if !std::io::stdin().is_terminal() {
        return Err(OpsError::Refused(format!(
            "resume would {plan}; it asks before changing anything, and standard input is not a terminal: run it in a terminal, or pass --yes"
        )));
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "resume will {plan}. Go ahead? [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| OpsError::Refused(format!("cannot read the answer: {e}")))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

fn describe_plan(plan: &Plan, arn: &str, version: &str, strategy: Strategy) -> String {
    match plan {
        Plan::Nothing => "nothing to do".into(),
        Plan::Finish { steps } => format!(
            "run {} for version {version} of {arn} here ({}), then remove AWSPENDING",
            steps.join(", "),
            strategy.as_str()
        ),
        Plan::Drop => format!("remove AWSPENDING from version {version} of {arn}"),
    }
}

fn render(report: &ResumeReport, plan_text: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "secret      {}", report.secret_arn);
    if let (Some(version), Some(stage)) = (&report.version, report.stage) {
        let _ = writeln!(out, "pending     version {version}: {}", stage.describe());
    }
    let _ = writeln!(out, "decision    {}", report.reason);
    let _ = writeln!(out, "plan        {plan_text}");
    for step in &report.steps {
        match &step.error {
            None => {
                let _ = writeln!(out, "  ✓ {}", step.step);
            }
            Some(e) => {
                let _ = writeln!(out, "  ✗ {}: {e}", step.step);
            }
        }
    }
    if let Some(error) = &report.error {
        let _ = writeln!(out, "error       {error}");
    }
    let applied = if report.applied {
        "applied"
    } else {
        "not applied"
    };
    let _ = writeln!(out, "result      {applied}");
    let verdict = if report.after.healthy { "✓" } else { "✗" };
    let _ = writeln!(out, "state       {verdict} {}", report.after.summary);
    out
}

/// Runs `resume`.
pub async fn run(
    ctx: &Context,
    secret_id: &str,
    options: ResumeOptions,
) -> Result<Output, OpsError> {
    ctx.require_config()?;
    let state = inspect(ctx, secret_id).await?;
    let arn = state.arn().to_string();
    let login_error = [&state.current, &state.pending]
        .iter()
        .filter_map(|v| v.as_ref())
        .any(|v| matches!(v.login, LoginCheck::Error { .. }));
    let facts = Facts {
        stage: state.stage(),
        current_logs_in: state.current_logs_in(),
        login_error,
    };
    let (plan, reason) = decide(facts, options.choice).map_err(OpsError::Refused)?;
    let version = state.pending.as_ref().map(|p| p.id.clone());
    let mut report = ResumeReport {
        secret_arn: arn.clone(),
        version: version.clone(),
        stage: facts.stage,
        plan: plan.clone(),
        reason,
        applied: false,
        steps: Vec::new(),
        error: None,
        after: status_report(ctx, &state),
    };
    let Some(version) = version else {
        let text = render(&report, "nothing to do");
        return Ok(Output::new(report.after.healthy, &report, text));
    };
    let plan_text = describe_plan(&plan, &arn, &version, ctx.strategy());
    if let Plan::Finish { .. } = plan {
        refuse_strategy_mismatch(ctx, &state)?;
    }
    if let Some(created) = state.pending.as_ref().and_then(|p| p.created) {
        let age = now_secs() - created;
        if age < options.min_age as i64 {
            return Err(OpsError::Refused(format!(
                "version {version} became AWSPENDING {} ago: a rotation started less than {} ago may still be running; wait, or pass --min-age 0 if you know the function is not running",
                span(age),
                span(options.min_age as i64)
            )));
        }
    }
    if !options.yes && !confirm(&plan_text)? {
        report.reason = format!("{} (declined: nothing changed)", report.reason);
        let text = render(&report, &plan_text);
        return Ok(Output::new(false, &report, text));
    }

    let outcome: Result<(), OpsError> = match &plan {
        Plan::Nothing => Ok(()),
        Plan::Drop => ctx
            .progress
            .run(
                "removing AWSPENDING",
                ctx.store().remove_pending(&arn, &version),
            )
            .await
            .map_err(OpsError::from),
        Plan::Finish { steps } => {
            let mut result = Ok(());
            for step in steps {
                let event = RotationEvent {
                    secret_id: arn.clone(),
                    token: version.clone(),
                    step: (*step).to_string(),
                    rotation_token: None,
                };
                ctx.progress.note(format_args!("running {step}"));
                match ctx.rotator.handle(&event).await {
                    Ok(()) => report.steps.push(StepRun {
                        step,
                        ok: true,
                        error: None,
                    }),
                    Err(e) => {
                        report.steps.push(StepRun {
                            step,
                            ok: false,
                            error: Some(e.to_string()),
                        });
                        result = Err(OpsError::from(e));
                        break;
                    }
                }
            }
            match result {
                Ok(()) => ctx
                    .progress
                    .run(
                        "removing AWSPENDING (as Secrets Manager does after finishSecret)",
                        ctx.store().remove_pending(&arn, &version),
                    )
                    .await
                    .map_err(OpsError::from),
                Err(e) => Err(e),
            }
        }
    };
    report.applied = outcome.is_ok();
    if let Err(e) = &outcome {
        report.error = Some(e.to_string());
    }
    let after = inspect(ctx, &arn).await?;
    report.after = status_report(ctx, &after);
    let ok = outcome.is_ok() && report.after.healthy;
    let text = render(&report, &plan_text);
    Ok(Output::new(ok, &report, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(stage: Option<Stage>, current: bool) -> Facts {
        Facts {
            stage,
            current_logs_in: current,
            login_error: false,
        }
    }

    #[test]
    fn nothing_pending_means_nothing_to_do() {
        let (plan, _) = decide(facts(None, true), Choice::Auto).unwrap();
        assert_eq!(plan, Plan::Nothing);
    }

    #[test]
    fn pending_credentials_that_log_in_are_finished() {
        for current in [true, false] {
            let (plan, _) =
                decide(facts(Some(Stage::AwaitingFinish), current), Choice::Auto).unwrap();
            assert_eq!(
                plan,
                Plan::Finish {
                    steps: vec!["setSecret", "testSecret", "finishSecret"]
                }
            );
        }
    }

    #[test]
    fn a_stale_pending_version_is_dropped_while_current_works() {
        for stage in [Stage::AwaitingCreate, Stage::AwaitingSet] {
            let (plan, _) = decide(facts(Some(stage), true), Choice::Auto).unwrap();
            assert_eq!(plan, Plan::Drop, "{stage:?}");
        }
    }

    #[test]
    fn with_nothing_working_the_rotation_is_finished_from_where_it_stopped() {
        let (plan, _) = decide(facts(Some(Stage::AwaitingCreate), false), Choice::Auto).unwrap();
        assert_eq!(
            plan,
            Plan::Finish {
                steps: vec!["createSecret", "setSecret", "testSecret", "finishSecret"]
            }
        );
    }

    #[test]
    fn the_only_working_credentials_are_never_dropped() {
        let err = decide(facts(Some(Stage::AwaitingFinish), false), Choice::Drop).unwrap_err();
        assert!(err.contains("only ones that log in"), "{err}");
        // Both work (alternating users): dropping is allowed when asked.
        let (plan, _) = decide(facts(Some(Stage::AwaitingFinish), true), Choice::Drop).unwrap();
        assert_eq!(plan, Plan::Drop);
    }

    #[test]
    fn an_unchecked_login_refuses_to_decide() {
        let mut f = facts(Some(Stage::AwaitingSet), true);
        f.login_error = true;
        assert!(decide(f, Choice::Auto).is_err());
        assert!(decide(facts(Some(Stage::Unknown), true), Choice::Finish).is_err());
    }
}
