//! setSecret for the single-user strategy: the user changes its own password, from
//! AWSCURRENT, else AWSPREVIOUS (read only then), else — only when the deployment opts in
//! with `SINGLE_USER_MASTER_FALLBACK` — the master secret, which refuses privileged roles.

use crate::db::Database;
use crate::error::Error;
use crate::secret::DbSecret;
use crate::store::{AWSCURRENT, AWSPREVIOUS, SecretStore, VersionRef};

use super::{Rotator, StepLog};

/// What turning the fallback on trusts, for the error that suggests it.
const FALLBACK_HINT: &str = "fix the stored credentials, or set SINGLE_USER_MASTER_FALLBACK=true to let the master user reset the password: that trusts whoever can write this secret to have the master user reset the password of the role the secret names (never the master user, nor a role with SUPERUSER, CREATEROLE, REPLICATION or BYPASSRLS)";

impl<S, D> Rotator<S, D>
where
    S: SecretStore + Sync,
    D: Database + Sync,
{
    pub(super) async fn set_single_user(
        &self,
        arn: &str,
        current: &DbSecret,
        pending: &DbSecret,
        log: &mut StepLog,
    ) -> Result<(), Error> {
        let mut tried = Vec::new();
        let login = self.db.user_login(current, AWSCURRENT)?;
        match self.db.set_own_password(&login, &pending.password).await {
            Ok(()) => {
                log.outcome = "password changed with the current credentials";
                return Ok(());
            }
            Err(e) if e.is_auth_failure() => {
                tracing::debug!(user = %current.username, "AWSCURRENT refused, trying AWSPREVIOUS");
                tried.push("AWSCURRENT (password refused)")
            }
            Err(e) => return Err(e.into()),
        }

        // An earlier rotation may have changed the password without finishing; its old
        // password is then in AWSPREVIOUS. Read it only now, so the normal path saves the call.
        match self
            .store
            .get_value(arn, VersionRef::Stage(AWSPREVIOUS))
            .await
        {
            Ok(raw) => match DbSecret::parse(&raw) {
                Ok(previous) if previous.username == current.username => {
                    let login = self.db.user_login_with_password(
                        current,
                        &previous.password,
                        AWSPREVIOUS,
                    )?;
                    match self.db.set_own_password(&login, &pending.password).await {
                        Ok(()) => {
                            log.outcome = "password changed with the AWSPREVIOUS credentials";
                            return Ok(());
                        }
                        Err(e) if e.is_auth_failure() => {
                            tried.push("AWSPREVIOUS (password refused)")
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(_) => tried.push("AWSPREVIOUS (names another user: not used)"),
                Err(_) => tried.push("AWSPREVIOUS (not a valid secret: not used)"),
            },
            Err(e) if e.is_not_found() => tried.push("AWSPREVIOUS (no such version)"),
            Err(e) => return Err(e.into()),
        }

        let hint = match (
            current.masterarn.is_some(),
            self.config.single_user_master_fallback,
        ) {
            (true, true) => {
                tracing::debug!(user = %current.username, "user credentials refused, using the master secret");
                let master = self.master_login(current).await?;
                match self
                    .db
                    .set_password_as_master(&master, &current.username, &pending.password)
                    .await
                {
                    Ok(()) => {
                        log.outcome = "password changed by the master user";
                        return Ok(());
                    }
                    Err(e) if e.is_auth_failure() => {
                        tried.push("the master secret (password refused)");
                        "fix the master secret, or put the user's working password in AWSCURRENT"
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            // Off: the master secret is not even read, so the role needs no access to it.
            (true, false) => {
                tried.push("the master secret (not used: SINGLE_USER_MASTER_FALLBACK is off)");
                FALLBACK_HINT
            }
            (false, _) => {
                tried.push("no masterarn in the secret for a master fallback");
                "fix the stored credentials (put the user's working password in AWSCURRENT)"
            }
        };
        Err(Error::NoWorkingCredentials {
            user: current.username.to_string(),
            tried: tried.join(", "),
            hint: hint.to_string(),
        })
    }
}
