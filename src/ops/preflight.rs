//! `pgrotatectl preflight`: a read-only checklist of everything a rotation of one secret
//! needs, each line passed or failed with the fix. It reads the secret, its master secret and
//! the database exactly as the function would (same configuration, same TLS rules, same
//! parsing), and never sends the master password to a host nobody vouched for.

use std::fmt::Write;

use secrecy::SecretString;
use serde::Serialize;

use crate::config::{Config, Strategy};
use crate::db::DbLogin;
use crate::error::Error;
use crate::rotation::alternate_name;
use crate::secret::{DbSecret, MasterSecret, RoleName};
use crate::store::{AWSCURRENT, SecretDescription, SecretStore, VersionRef};

use super::state::{Stage, inspect};
use super::{Context, OpsError, Output};
use crate::hosts::AllowedHosts;

/// One line of the checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub title: &'static str,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PreflightReport {
    pub secret_id: String,
    pub secret_arn: Option<String>,
    pub strategy: &'static str,
    pub ok: bool,
    pub checks: Vec<Check>,
    /// Checks not run because one they depend on failed.
    pub skipped: Vec<&'static str>,
}

struct Checklist {
    checks: Vec<Check>,
    skipped: Vec<&'static str>,
}

impl Checklist {
    fn pass(&mut self, id: &'static str, title: &'static str, detail: impl Into<String>) {
        self.checks.push(Check {
            id,
            title,
            ok: true,
            detail: detail.into(),
            fix: None,
        });
    }

    fn fail(
        &mut self,
        id: &'static str,
        title: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.checks.push(Check {
            id,
            title,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        });
    }

    fn skip(&mut self, ids: &[&'static str]) {
        self.skipped.extend_from_slice(ids);
    }
}

fn password_check(list: &mut Checklist) {
    const VARS: [&str; 7] = [
        "PASSWORD_LENGTH",
        "EXCLUDE_CHARACTERS",
        "EXCLUDE_NUMBERS",
        "EXCLUDE_PUNCTUATION",
        "EXCLUDE_UPPERCASE",
        "EXCLUDE_LOWERCASE",
        "REQUIRE_EACH_INCLUDED_TYPE",
    ];
    let only_password = |name: &str| {
        VARS.contains(&name)
            .then(|| std::env::var(name).ok())
            .flatten()
    };
    match Config::from_lookup(only_password) {
        Ok(config) => {
            let policy = &config.password;
            match policy.generate() {
                Ok(_) => list.pass(
                    "password-settings",
                    "password settings",
                    format!(
                        "{} characters drawn from {} allowed characters",
                        policy.length(),
                        policy.alphabet().len()
                    ),
                ),
                Err(e) => list.fail(
                    "password-settings",
                    "password settings",
                    e.to_string(),
                    "change the PASSWORD_LENGTH / EXCLUDE_* variables",
                ),
            }
        }
        Err(e) => list.fail(
            "password-settings",
            "password settings",
            e.to_string(),
            "set the variable the message names to a valid value (the function would fail its cold start the same way)",
        ),
    }
}

fn config_check(ctx: &Context, list: &mut Checklist) {
    match &ctx.config_error {
        Some(error) => list.fail(
            "configuration",
            "configuration",
            error.to_string(),
            "set the variable the message names to a valid value; the checks below use its default",
        ),
        None => {
            let c = &ctx.config;
            list.pass(
                "configuration",
                "configuration",
                format!(
                    "ROTATION_STRATEGY={}, DEFAULT_SSL_MODE={}, {} extra trusted certificate(s) from SSL_CA_BUNDLE, DB_CONNECT_TIMEOUT={}s",
                    c.strategy.as_str(),
                    c.default_ssl.as_str(),
                    c.ca_bundle.len(),
                    c.connect_timeout.as_secs_f64()
                ),
            );
        }
    }
}

fn rotation_check(d: &SecretDescription, list: &mut Checklist) {
    let arn = &d.arn;
    match (&d.rotation_lambda_arn, d.rotation_enabled) {
        (Some(function), Some(true) | None) => {
            let schedule = d
                .rotation_schedule
                .as_deref()
                .map(|s| format!(", schedule {s}"))
                .unwrap_or_default();
            list.pass(
                "rotation",
                "rotation enabled",
                format!("rotated by {function}{schedule}"),
            );
        }
        (function, _) => list.fail(
            "rotation",
            "rotation enabled",
            match function {
                Some(f) => format!("rotation is disabled (function {f})"),
                None => "rotation is not enabled: no rotation function is attached".into(),
            },
            format!(
                "aws secretsmanager rotate-secret --secret-id {arn} --rotation-lambda-arn <pgrotate's FunctionArn> --rotation-rules '{{\"ScheduleExpression\": \"rate(30 days)\"}}'"
            ),
        ),
    }
}

fn kms_detail(key: Option<&str>) -> String {
    match key {
        None | Some("alias/aws/secretsmanager") => {
            "the AWS managed key aws/secretsmanager: no key policy to change".into()
        }
        Some(key) => format!(
            "customer managed key {key}: the function's role needs kms:Decrypt and kms:GenerateDataKey through Secrets Manager (template parameter KmsKeyArn), and a key policy that allows it (output KmsKeyPolicyStatement)"
        ),
    }
}

/// `ALLOWED_DB_HOSTS` as the function reads it: unset, the list, or why it is refused.
fn allowed_hosts(ctx: &Context) -> Option<Result<AllowedHosts, String>> {
    match (&ctx.config_error, &ctx.config.allowed_db_hosts) {
        (Some(error), _) if error.to_string().contains(crate::hosts::VARIABLE) => {
            Some(Err(error.to_string()))
        }
        (_, Some(allowed)) => Some(Ok(allowed.clone())),
        (_, None) => None,
    }
}

/// Who vouches for the host the master password would go to (SPEC 7.1, as
/// `rotation::guard` enforces it), or why nobody does.
fn vouch(
    master_host: Option<&str>,
    user_host: &str,
    allowed: Option<&AllowedHosts>,
) -> Result<String, String> {
    match (master_host, allowed) {
        (Some(host), _) if host.eq_ignore_ascii_case(user_host) => {
            Ok(format!("the master secret's own host {host:?}"))
        }
        (Some(host), _) => Err(format!(
            "the master secret names host {host:?} but the user's secret names {user_host:?}"
        )),
        (None, Some(allowed)) => match allowed.matching(user_host) {
            Some(pattern) => Ok(format!("ALLOWED_DB_HOSTS ({pattern})")),
            None => Err(format!(
                "the master secret has no host and {user_host:?} is not in ALLOWED_DB_HOSTS ({allowed})"
            )),
        },
        (None, None) => Err(
            "the master secret has no host and ALLOWED_DB_HOSTS is not set, so no host is vouched for"
                .into(),
        ),
    }
}

fn host_check(
    secret: &DbSecret,
    allowed: Option<&Result<AllowedHosts, String>>,
    list: &mut Checklist,
) -> bool {
    match allowed {
        None => {
            list.pass(
                "allowed-hosts",
                "database host allowed",
                format!(
                    "ALLOWED_DB_HOSTS is not set: the function connects to any host a secret names ({} here); set it to pin the database hosts",
                    secret.host
                ),
            );
            true
        }
        Some(Err(problem)) => {
            list.fail(
                "allowed-hosts",
                "database host allowed",
                problem.clone(),
                "ALLOWED_DB_HOSTS takes comma-separated host names, each exact or *.suffix",
            );
            false
        }
        Some(Ok(allowed)) => match allowed.matching(&secret.host) {
            Some(pattern) => {
                list.pass(
                    "allowed-hosts",
                    "database host allowed",
                    format!("{} matches ALLOWED_DB_HOSTS ({pattern})", secret.host),
                );
                true
            }
            None => {
                list.fail(
                    "allowed-hosts",
                    "database host allowed",
                    format!(
                        "{} is not in ALLOWED_DB_HOSTS ({allowed}): the function refuses the secret before any change",
                        secret.host
                    ),
                    format!(
                        "add {} to ALLOWED_DB_HOSTS, or correct the secret's host",
                        secret.host
                    ),
                );
                false
            }
        },
    }
}

async fn database_check(ctx: &Context, secret: &DbSecret, list: &mut Checklist) -> bool {
    let login = match ctx.rotator.login(secret) {
        Ok(login) => login,
        Err(e) => {
            list.fail(
                "database",
                "database reachable with the current credentials",
                e.to_string(),
                "add the host to ALLOWED_DB_HOSTS, or fix \"host\" in the secret",
            );
            return false;
        }
    };
    let mode = login.ssl.as_str();
    let source = if secret.ssl.is_some() {
        "the secret's ssl"
    } else {
        "DEFAULT_SSL_MODE"
    };
    match ctx
        .progress
        .run(
            "logging in with AWSCURRENT",
            ctx.db().connection_info(&login),
        )
        .await
    {
        Ok(info) => {
            let tls = match &info.tls {
                Some(tls) => format!(
                    "{} ({}), ssl mode {mode} from {source}, SCRAM channel binding {}",
                    tls.version,
                    tls.cipher,
                    if info.channel_binding {
                        "used"
                    } else {
                        "not used"
                    }
                ),
                None => format!("no TLS (ssl mode {mode} from {source})"),
            };
            list.pass(
                "database",
                "database reachable with the current credentials",
                format!(
                    "logged in to {} as {}: {tls}; PostgreSQL {}",
                    login.endpoint(),
                    info.session_user,
                    info.server_version
                ),
            );
            true
        }
        Err(e) => {
            let fix = if e.is_auth_failure() {
                "the stored password is wrong: `pgrotatectl status` shows which version still logs in; fix AWSCURRENT before rotating".to_string()
            } else {
                "see the message: it names the cause and what to change".to_string()
            };
            list.fail(
                "database",
                "database reachable with the current credentials",
                e.to_string(),
                fix,
            );
            false
        }
    }
}

/// Reads and vouches for the master secret; returns the master login when the master
/// password may be sent to the user's host.
async fn master_checks(
    ctx: &Context,
    secret: &DbSecret,
    allowed: Option<&Result<AllowedHosts, String>>,
    list: &mut Checklist,
) -> Option<DbLogin> {
    let arn = secret.masterarn.as_deref().unwrap_or_default();
    let raw: SecretString = match ctx
        .progress
        .run(
            "reading the master secret",
            ctx.store().get_value(arn, VersionRef::Stage(AWSCURRENT)),
        )
        .await
    {
        Ok(raw) => raw,
        Err(e) => {
            list.fail(
                "master-secret",
                "master secret readable",
                e.to_string(),
                "the function's role needs secretsmanager:GetSecretValue on the master secret (template parameter MasterSecretArn) and kms:Decrypt on its key (MasterKmsKeyArn)",
            );
            return None;
        }
    };
    let master = match MasterSecret::parse(&raw) {
        Ok(master) => master,
        Err(problem) => {
            list.fail(
                "master-secret",
                "master secret readable",
                format!("master secret {arn}: {problem}"),
                "the master secret needs at least \"username\" and \"password\"",
            );
            return None;
        }
    };
    let key = ctx
        .store()
        .describe(arn)
        .await
        .ok()
        .and_then(|d| d.kms_key_id);
    list.pass(
        "master-secret",
        "master secret readable",
        format!(
            "{arn}: user {}; {}",
            master.username,
            kms_detail(key.as_deref())
        ),
    );
    let allowed_ok = match allowed {
        Some(Ok(a)) => Some(a),
        _ => None,
    };
    match vouch(master.host.as_deref(), &secret.host, allowed_ok) {
        Ok(by) => list.pass(
            "master-host",
            "master host vouched for",
            format!(
                "the master password goes only to {}, vouched for by {by}",
                secret.host
            ),
        ),
        Err(problem) => {
            list.fail(
                "master-host",
                "master host vouched for",
                format!("{problem}: the function will not send the master password"),
                format!(
                    "add \"host\": \"{}\" to the master secret, or set ALLOWED_DB_HOSTS to include it",
                    secret.host
                ),
            );
            return None;
        }
    }
    match ctx.rotator.master_db_login(secret).await {
        Ok(login) => Some(login),
        Err(e) => {
            list.fail(
                "master-host",
                "master host vouched for",
                e.to_string(),
                "the master secret must be the one of the user's server",
            );
            None
        }
    }
}

/// Whether `master` may manage the pair (or, for single user, reset `user`'s password).
async fn master_privilege_check(
    ctx: &Context,
    master: &DbLogin,
    roles: &[&RoleName],
    needs_admin_on: &[&RoleName],
    list: &mut Checklist,
) -> bool {
    let facts = match ctx
        .progress
        .run(
            "logging in as the master user",
            ctx.db().master_facts(master, roles),
        )
        .await
    {
        Ok(facts) => facts,
        Err(e) => {
            list.fail(
                "master-privileges",
                "master user can manage the users",
                e.to_string(),
                "fix the master secret's credentials (see the message)",
            );
            return false;
        }
    };
    let user = &facts.user;
    if facts.superuser {
        list.pass(
            "master-privileges",
            "master user can manage the users",
            format!("{user} is a superuser"),
        );
        return true;
    }
    if !facts.createrole {
        list.fail(
            "master-privileges",
            "master user can manage the users",
            format!("{user} has neither SUPERUSER nor CREATEROLE"),
            format!(
                "ALTER ROLE {} CREATEROLE (or use the secret of a user that has it, such as the RDS master user)",
                crate::db::sql::quote_ident(user)
            ),
        );
        return false;
    }
    if facts.server_version_num >= 160_000 {
        let missing: Vec<&str> = needs_admin_on
            .iter()
            .map(|r| r.as_str())
            .filter(|r| {
                facts
                    .admin_option
                    .iter()
                    .any(|(name, admin)| name == r && !admin)
            })
            .collect();
        if !missing.is_empty() {
            let grants: Vec<String> = missing
                .iter()
                .map(|r| {
                    format!(
                        "GRANT {} TO {} WITH ADMIN OPTION",
                        crate::db::sql::quote_ident(r),
                        crate::db::sql::quote_ident(user)
                    )
                })
                .collect();
            list.fail(
                "master-privileges",
                "master user can manage the users",
                format!(
                    "{user} has CREATEROLE but, on PostgreSQL 16 and later, also needs ADMIN OPTION on {}",
                    missing.join(", ")
                ),
                format!("as a superuser: {}", grants.join("; ")),
            );
            return false;
        }
    }
    list.pass(
        "master-privileges",
        "master user can manage the users",
        format!("{user} has CREATEROLE (and ADMIN OPTION where PostgreSQL 16+ needs it)"),
    );
    true
}

async fn alternating_checks(
    ctx: &Context,
    secret: &DbSecret,
    allowed: Option<&Result<AllowedHosts, String>>,
    list: &mut Checklist,
) {
    let user = &secret.username;
    let alternate = match alternate_name(user) {
        Ok(alternate) => {
            list.pass(
                "clone-name",
                "clone name within limits",
                format!(
                    "the pair is {user} / {alternate} ({} bytes of 63)",
                    alternate.as_str().len().max(user.as_str().len())
                ),
            );
            alternate
        }
        Err(e) => {
            list.fail(
                "clone-name",
                "clone name within limits",
                e.to_string(),
                "rename the user so that its name plus \"_clone\" fits in 63 bytes",
            );
            list.skip(&[
                "master-secret",
                "master-host",
                "master-privileges",
                "alternate",
            ]);
            return;
        }
    };
    let (primary, clone) = if user.as_str().ends_with("_clone") {
        (alternate.clone(), user.clone())
    } else {
        (user.clone(), alternate.clone())
    };
    let Some(master) = master_checks(ctx, secret, allowed, list).await else {
        list.skip(&["master-privileges", "alternate"]);
        return;
    };
    master_privilege_check(ctx, &master, &[&primary, &clone], &[&primary, &clone], list).await;
    let facts = match ctx.db().role_facts(&master, &[&primary, &alternate]).await {
        Ok(facts) => facts,
        Err(e) => {
            list.fail(
                "alternate",
                "alternate user not privileged",
                e.to_string(),
                "see the message",
            );
            return;
        }
    };
    let primary_facts = facts.iter().find(|f| f.name == primary.as_str());
    if !primary_facts.is_some_and(|f| f.exists) {
        list.fail(
            "alternate",
            "alternate user not privileged",
            format!(
                "the primary user {primary} does not exist: the function creates only the clone"
            ),
            format!(
                "create {primary} (CREATE ROLE ... LOGIN) and grant it what the application needs"
            ),
        );
        return;
    }
    let Some(alt) = facts.iter().find(|f| f.name == alternate.as_str()) else {
        return;
    };
    let privileges = alt.privileges();
    if alt.exists && alternate.as_str() == master.username.as_str() {
        list.fail(
            "alternate",
            "alternate user not privileged",
            format!("the alternate user {alternate} is the master user"),
            "use another master user, or rename the rotated user",
        );
    } else if !privileges.is_empty() {
        list.fail(
            "alternate",
            "alternate user not privileged",
            format!(
                "{alternate} holds {}: the function refuses to set its password",
                privileges.join(", ")
            ),
            format!(
                "ALTER ROLE {} NO{}",
                crate::db::sql::quote_ident(alternate.as_str()),
                privileges.join(" NO")
            ),
        );
    } else if alt.exists {
        list.pass(
            "alternate",
            "alternate user not privileged",
            format!("{alternate} exists with no SUPERUSER, CREATEROLE, REPLICATION or BYPASSRLS"),
        );
    } else {
        list.pass(
            "alternate",
            "alternate user not privileged",
            format!("{alternate} does not exist yet: the first rotation creates it as a member of {primary}"),
        );
    }
}

async fn single_user_master_checks(
    ctx: &Context,
    secret: &DbSecret,
    allowed: Option<&Result<AllowedHosts, String>>,
    list: &mut Checklist,
) {
    if secret.masterarn.is_none() {
        return;
    }
    if !ctx.config.single_user_master_fallback {
        list.pass(
            "master-fallback",
            "master fallback",
            "the secret has a masterarn, but SINGLE_USER_MASTER_FALLBACK is off: the function never uses it (set it to true to let the master user reset a lost password)",
        );
        return;
    }
    list.pass(
        "master-fallback",
        "master fallback",
        "SINGLE_USER_MASTER_FALLBACK is on: when neither AWSCURRENT nor AWSPREVIOUS logs in, the master user resets the password",
    );
    if let Some(master) = master_checks(ctx, secret, allowed, list).await {
        let user = secret.username.clone();
        master_privilege_check(ctx, &master, &[&user], &[&user], list).await;
    } else {
        list.skip(&["master-privileges"]);
    }
}

fn render(report: &PreflightReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "preflight {} (strategy {})",
        report.secret_arn.as_deref().unwrap_or(&report.secret_id),
        report.strategy
    );
    for check in &report.checks {
        let mark = if check.ok { "✓" } else { "✗" };
        let _ = writeln!(out, "  {mark} {}: {}", check.title, check.detail);
        if let Some(fix) = &check.fix {
            let _ = writeln!(out, "      fix: {fix}");
        }
    }
    let failed = report.checks.iter().filter(|c| !c.ok).count();
    let total = report.checks.len();
    if failed == 0 {
        let _ = writeln!(out, "all {total} checks passed");
    } else {
        let _ = writeln!(out, "{failed} of {total} checks failed");
    }
    if !report.skipped.is_empty() {
        let _ = writeln!(
            out,
            "not checked (they depend on a failed check): {}",
            report.skipped.join(", ")
        );
    }
    out
}

/// Runs the checklist; `ok` only when every check passed.
pub async fn run(ctx: &Context, secret_id: &str) -> Result<Output, OpsError> {
    let mut list = Checklist {
        checks: Vec::new(),
        skipped: Vec::new(),
    };
    config_check(ctx, &mut list);
    password_check(&mut list);
    let secret_arn = preflight_secret(ctx, secret_id, &mut list).await;
    let ok = list.checks.iter().all(|c| c.ok);
    let report = PreflightReport {
        secret_id: secret_id.to_string(),
        secret_arn,
        strategy: ctx.strategy().as_str(),
        ok,
        checks: list.checks,
        skipped: list.skipped,
    };
    let text = render(&report);
    Ok(Output::new(ok, &report, text))
}

async fn preflight_secret(ctx: &Context, secret_id: &str, list: &mut Checklist) -> Option<String> {
    let readable_fix = "the caller needs secretsmanager:DescribeSecret and secretsmanager:GetSecretValue on the secret, and kms:Decrypt on its key";
    let description = match ctx
        .progress
        .run(
            "reading the secret (DescribeSecret)",
            ctx.store().describe(secret_id),
        )
        .await
    {
        Ok(d) => d,
        Err(e) => {
            list.fail(
                "secret-readable",
                "secret readable",
                e.to_string(),
                readable_fix,
            );
            list.skip(&["every other check"]);
            return None;
        }
    };
    let arn = description.arn.clone();
    let raw = match ctx
        .store()
        .get_value(&arn, VersionRef::Stage(AWSCURRENT))
        .await
    {
        Ok(raw) => raw,
        Err(e) => {
            list.fail(
                "secret-readable",
                "secret readable",
                e.to_string(),
                readable_fix,
            );
            rotation_check(&description, list);
            list.skip(&["secret-well-formed", "database", "labels"]);
            return Some(arn);
        }
    };
    list.pass(
        "secret-readable",
        "secret readable",
        format!("DescribeSecret and GetSecretValue (AWSCURRENT) on {arn}"),
    );
    rotation_check(&description, list);
    list.pass(
        "kms-key",
        "KMS key",
        kms_detail(description.kms_key_id.as_deref()),
    );
    let secret = match ctx.rotator.parse_secret(&arn, AWSCURRENT, &raw) {
        Ok(secret) => {
            let ssl = secret.ssl.map_or_else(
                || format!("{} (DEFAULT_SSL_MODE)", ctx.config.default_ssl.as_str()),
                |s| s.as_str().to_string(),
            );
            list.pass(
                "secret-well-formed",
                "secret well formed",
                format!(
                    "engine {}, user {}, {}:{}/{}, ssl {ssl}{}",
                    secret.engine,
                    secret.username,
                    secret.host,
                    secret.port,
                    secret.dbname,
                    secret
                        .masterarn
                        .as_deref()
                        .map(|m| format!(", masterarn {m}"))
                        .unwrap_or_default()
                ),
            );
            Some(secret)
        }
        Err(e) => {
            let fix = match &e {
                Error::SecretFormat { .. } => {
                    "correct the field the message names in the secret's AWSCURRENT version (see the README's secret format)"
                }
                _ => "see the message",
            };
            list.fail(
                "secret-well-formed",
                "secret well formed",
                e.to_string(),
                fix,
            );
            None
        }
    };
    labels_check(ctx, &description, list).await;
    let Some(secret) = secret else {
        list.skip(&["allowed-hosts", "database"]);
        return Some(arn);
    };
    let allowed = allowed_hosts(ctx);
    if !host_check(&secret, allowed.as_ref(), list) {
        list.skip(&["database", "master checks"]);
        return Some(arn);
    }
    database_check(ctx, &secret, list).await;
    match ctx.strategy() {
        Strategy::AlternatingUsers => {
            alternating_checks(ctx, &secret, allowed.as_ref(), list).await
        }
        Strategy::SingleUser => {
            single_user_master_checks(ctx, &secret, allowed.as_ref(), list).await
        }
    }
    Some(arn)
}

async fn labels_check(ctx: &Context, description: &SecretDescription, list: &mut Checklist) {
    let arn = &description.arn;
    let current = description.version_with(AWSCURRENT);
    let pending = description
        .version_with(crate::store::AWSPENDING)
        .filter(|p| Some(*p) != current);
    let Some(pending) = pending else {
        list.pass(
            "labels",
            "labels not stuck",
            format!(
                "AWSCURRENT on version {}, no rotation pending",
                current.unwrap_or("none")
            ),
        );
        return;
    };
    // Which step it stopped at needs the logins: the same look `status` takes.
    let stage = match inspect(ctx, arn).await {
        Ok(state) => state.stage().map_or("", Stage::describe),
        Err(_) => "",
    };
    list.fail(
        "labels",
        "labels not stuck",
        format!(
            "AWSPENDING is on version {pending}, not on AWSCURRENT: a previous rotation is unfinished ({stage}); Secrets Manager refuses new rotations until it ends"
        ),
        format!("pgrotatectl status --secret-id {arn}, then pgrotatectl resume --secret-id {arn}"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_host_is_vouched_by_the_master_secret_or_the_allow_list() {
        let allowed = AllowedHosts::parse("*.example.com").unwrap();
        assert!(vouch(Some("db.example.com"), "DB.example.com", None).is_ok());
        assert!(vouch(Some("other"), "db.example.com", Some(&allowed)).is_err());
        assert_eq!(
            vouch(None, "db.example.com", Some(&allowed)).unwrap(),
            "ALLOWED_DB_HOSTS (*.example.com)"
        );
        let err = vouch(None, "db.elsewhere", Some(&allowed)).unwrap_err();
        assert!(
            err.contains("is not in ALLOWED_DB_HOSTS (*.example.com)"),
            "{err}"
        );
        let err = vouch(None, "db.example.com", None).unwrap_err();
        assert!(err.contains("ALLOWED_DB_HOSTS is not set"), "{err}");
    }
}
