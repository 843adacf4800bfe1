//! Where a secret's rotation stands, from its labels and from which labelled credentials log
//! in right now: the facts `status`, `resume` and `preflight` share. Read-only.

use secrecy::SecretString;
use serde::Serialize;

use crate::config::Strategy;
use crate::db::{Database, DbLogin};
use crate::rotation::alternate_name;
use crate::secret::DbSecret;
use crate::store::{
    AWSCURRENT, AWSPENDING, AWSPREVIOUS, OperatorStore, SecretDescription, SecretStore,
    VersionInfo, VersionRef,
};

use super::{Context, OpsError};

/// How a login with one version's credentials went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum LoginCheck {
    /// Logged in; `session_user` is `user`.
    Ok { user: String },
    /// The server refused the password of `user`.
    Refused { user: String },
    /// The version has no value yet (a rotation whose createSecret has not run).
    NoValue,
    /// The value is not a usable secret.
    Invalid { problem: String },
    /// The value could not be read, or the login failed for another reason than the
    /// password (network, TLS): nothing can be concluded.
    Error { message: String },
}

impl LoginCheck {
    pub fn logs_in(&self) -> bool {
        matches!(self, LoginCheck::Ok { .. })
    }

    /// A short phrase: `logs in as app`, `password refused (app)`, ...
    pub fn describe(&self) -> String {
        match self {
            LoginCheck::Ok { user } => format!("✓ logs in as {user}"),
            LoginCheck::Refused { user } => format!("✗ password of {user} refused"),
            LoginCheck::NoValue => "– no value yet".into(),
            LoginCheck::Invalid { problem } => format!("✗ not a usable secret: {problem}"),
            LoginCheck::Error { message } => format!("? cannot tell: {message}"),
        }
    }
}

/// One labelled version and its login.
#[derive(Debug, Clone, Serialize)]
pub struct VersionState {
    pub id: String,
    pub stages: Vec<String>,
    /// Seconds since the Unix epoch (ListSecretVersionIds), when known.
    pub created: Option<i64>,
    pub login: LoginCheck,
    /// The user the version names, when it has a usable value.
    pub user: Option<String>,
}

/// How far an unfinished rotation got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// AWSPENDING has no value: createSecret has not completed; nothing changed in the
    /// database.
    AwaitingCreate,
    /// The pending credentials do not log in: setSecret has not taken effect.
    AwaitingSet,
    /// The pending credentials log in: testSecret and finishSecret remain.
    AwaitingFinish,
    /// The logins could not tell (a database or read error).
    Unknown,
}

impl Stage {
    pub fn describe(self) -> &'static str {
        match self {
            Stage::AwaitingCreate => {
                "createSecret has not completed (the pending version has no value; nothing changed in the database)"
            }
            Stage::AwaitingSet => {
                "createSecret done; setSecret has not taken effect (the pending credentials do not log in)"
            }
            Stage::AwaitingFinish => {
                "createSecret and setSecret done (the pending credentials log in); testSecret and finishSecret have not completed"
            }
            Stage::Unknown => "the step cannot be told: a login could not be checked",
        }
    }

    /// The steps a resume runs to finish the rotation from here.
    pub fn remaining_steps(self) -> &'static [&'static str] {
        match self {
            Stage::AwaitingCreate => &["createSecret", "setSecret", "testSecret", "finishSecret"],
            _ => &["setSecret", "testSecret", "finishSecret"],
        }
    }
}

/// A secret's labels and logins.
#[derive(Debug, Clone)]
pub struct SecretState {
    pub description: SecretDescription,
    pub current: Option<VersionState>,
    /// The AWSPENDING version when it is not also AWSCURRENT: an unfinished rotation.
    pub pending: Option<VersionState>,
    pub previous: Option<VersionState>,
    /// Every labelled version (with creation dates when ListSecretVersionIds answered).
    pub versions: Vec<VersionInfo>,
    /// Why the creation dates are missing, when they are.
    pub versions_note: Option<String>,
}

impl SecretState {
    pub fn arn(&self) -> &str {
        &self.description.arn
    }

    /// How far the unfinished rotation got (`None`: no rotation pending).
    pub fn stage(&self) -> Option<Stage> {
        let pending = self.pending.as_ref()?;
        Some(match &pending.login {
            LoginCheck::NoValue => Stage::AwaitingCreate,
            LoginCheck::Ok { .. } => Stage::AwaitingFinish,
            LoginCheck::Refused { .. } | LoginCheck::Invalid { .. } => Stage::AwaitingSet,
            LoginCheck::Error { .. } => Stage::Unknown,
        })
    }

    pub fn current_logs_in(&self) -> bool {
        self.current.as_ref().is_some_and(|v| v.login.logs_in())
    }

    /// Which strategy the pending version was made by, judged from its user name: the
    /// current user (single user) or its alternate (alternating users).
    pub fn pending_strategy(&self) -> Option<Strategy> {
        let current = self.current.as_ref()?.user.as_deref()?;
        let pending = self.pending.as_ref()?.user.as_deref()?;
        if pending == current {
            return Some(Strategy::SingleUser);
        }
        let name = crate::secret::RoleName::parse(current).ok()?;
        let alternate = alternate_name(&name).ok()?;
        (alternate.as_str() == pending).then_some(Strategy::AlternatingUsers)
    }
}

fn created_of(versions: &[VersionInfo], id: &str) -> Option<i64> {
    versions.iter().find(|v| v.id == id).and_then(|v| v.created)
}

/// Reads a version's value and logs in with it.
async fn check_version(
    ctx: &Context,
    arn: &str,
    version: VersionRef<'_>,
) -> (LoginCheck, Option<String>) {
    let raw: SecretString = match ctx.store().get_value(arn, version).await {
        Ok(raw) => raw,
        Err(e) if e.is_not_found() => return (LoginCheck::NoValue, None),
        Err(e) => {
            return (
                LoginCheck::Error {
                    message: e.to_string(),
                },
                None,
            );
        }
    };
    let secret = match DbSecret::parse(&raw) {
        Ok(secret) => secret,
        Err(problem) => return (LoginCheck::Invalid { problem }, None),
    };
    let user = secret.username.to_string();
    let login = DbLogin::from_secret(&secret, ctx.config.default_ssl);
    let check = match ctx.db().session_user(&login).await {
        Ok(session_user) => LoginCheck::Ok { user: session_user },
        Err(e) if e.is_auth_failure() => LoginCheck::Refused { user: user.clone() },
        Err(e) => LoginCheck::Error {
            message: e.to_string(),
        },
    };
    (check, Some(user))
}

/// Describes the secret, lists its versions and logs in with AWSCURRENT, the pending version
/// (when a rotation is unfinished) and AWSPREVIOUS.
pub async fn inspect(ctx: &Context, secret_id: &str) -> Result<SecretState, OpsError> {
    let progress = ctx.progress;
    let description = progress
        .run(
            "reading the secret (DescribeSecret)",
            ctx.store().describe(secret_id),
        )
        .await?;
    let arn = description.arn.clone();
    let (versions, versions_note) = match progress
        .run(
            "listing its versions (ListSecretVersionIds)",
            ctx.store().list_versions(&arn),
        )
        .await
    {
        Ok(versions) => (versions, None),
        Err(e) => (
            description
                .versions
                .iter()
                .map(|(id, stages)| VersionInfo {
                    id: id.clone(),
                    stages: stages.clone(),
                    created: None,
                })
                .collect(),
            Some(format!("creation dates unknown: {e}")),
        ),
    };
    let current_id = description.version_with(AWSCURRENT).map(str::to_string);
    let pending_id = description
        .version_with(AWSPENDING)
        .filter(|id| Some(*id) != current_id.as_deref())
        .map(str::to_string);
    let previous_id = description.version_with(AWSPREVIOUS).map(str::to_string);

    let state_of = |id: &str, login: LoginCheck, user: Option<String>| VersionState {
        id: id.to_string(),
        stages: description
            .stages_of(id)
            .map(<[String]>::to_vec)
            .unwrap_or_default(),
        created: created_of(&versions, id),
        login,
        user,
    };
    let mut current = None;
    if let Some(id) = &current_id {
        let (login, user) = progress
            .run(
                "logging in with AWSCURRENT",
                check_version(ctx, &arn, VersionRef::Stage(AWSCURRENT)),
            )
            .await;
        current = Some(state_of(id, login, user));
    }
    let mut pending = None;
    if let Some(id) = &pending_id {
        let (login, user) = progress
            .run(
                "logging in with AWSPENDING",
                check_version(ctx, &arn, VersionRef::Pending(id)),
            )
            .await;
        pending = Some(state_of(id, login, user));
    }
    let mut previous = None;
    if let Some(id) = &previous_id {
        let (login, user) = progress
            .run(
                "logging in with AWSPREVIOUS",
                check_version(ctx, &arn, VersionRef::Stage(AWSPREVIOUS)),
            )
            .await;
        previous = Some(state_of(id, login, user));
    }
    Ok(SecretState {
        description,
        current,
        pending,
        previous,
        versions,
        versions_note,
    })
}
