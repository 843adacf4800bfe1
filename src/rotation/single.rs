//! setSecret for the single-user strategy: the user changes its own password, from
//! AWSCURRENT, else AWSPREVIOUS (read only then), else the master secret.

use crate::db::Database;
use crate::error::Error;
use crate::secret::DbSecret;
use crate::store::{AWSPREVIOUS, SecretStore, VersionRef};

use super::{Rotator, StepLog};

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
        let mut login = self.login(current);
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
                    login.password = previous.password.clone();
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

        if current.masterarn.is_some() {
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
                Err(e) if e.is_auth_failure() => tried.push("the master secret (password refused)"),
                Err(e) => return Err(e.into()),
            }
        } else {
            tried.push("no masterarn in the secret for a master fallback");
        }
        Err(Error::NoWorkingCredentials {
            user: current.username.to_string(),
            tried: tried.join(", "),
        })
    }
}
