//! setSecret for the alternating-users strategy: the pair's names, and the master user
//! setting the alternate user's password while keeping the pair equivalent.

use crate::db::{AlternateChange, Database};
use crate::error::Error;
use crate::secret::{DbSecret, MAX_IDENTIFIER_BYTES, RoleName};
use crate::store::{AWSCURRENT, SecretStore};

use super::{Rotator, StepLog};

const CLONE_SUFFIX: &str = "_clone";

/// The other user of an alternating pair: `name_clone` for `name`, `name` for `name_clone`.
pub fn alternate_name(name: &RoleName) -> Result<RoleName, Error> {
    let name = name.as_str();
    let other = match name.strip_suffix(CLONE_SUFFIX) {
        Some("") => {
            return Err(Error::Config(
                "the user name \"_clone\" has no primary user to alternate with: rename the user"
                    .into(),
            ));
        }
        Some(primary) => primary.to_string(),
        None => format!("{name}{CLONE_SUFFIX}"),
    };
    if other.len() > MAX_IDENTIFIER_BYTES {
        return Err(Error::CloneNameTooLong {
            name: name.to_string(),
            clone_len: other.len(),
        });
    }
    RoleName::parse(&other).map_err(Error::Config)
}

/// The pair a user name belongs to: (primary, clone).
fn pair_of(name: &RoleName) -> Result<(RoleName, RoleName), Error> {
    let other = alternate_name(name)?;
    if name.as_str().ends_with(CLONE_SUFFIX) {
        Ok((other, name.clone()))
    } else {
        Ok((name.clone(), other))
    }
}

impl<S, D> Rotator<S, D>
where
    S: SecretStore + Sync,
    D: Database + Sync,
{
    pub(super) async fn set_alternating(
        &self,
        current: &DbSecret,
        pending: &DbSecret,
        log: &mut StepLog,
    ) -> Result<(), Error> {
        // Only a user whose credentials work may have its partner's password changed: a
        // secret pointing at an arbitrary user name cannot steer the master user.
        let current_login = self.db.user_login(current, AWSCURRENT)?;
        if !self.db.can_log_in(&current_login).await? {
            return Err(Error::CurrentDoesNotLogIn {
                user: current.username.to_string(),
            });
        }
        let master = self.master_login(current).await?;
        let (primary, clone) = pair_of(&current.username)?;
        tracing::debug!(%primary, %clone, target = %pending.username, master = %master.username(), "setting the alternate user's password");
        let change = AlternateChange {
            primary: &primary,
            clone: &clone,
            target: &pending.username,
            clone_default_role: self.config.clone_default_role,
        };
        self.db
            .set_alternate_password(&master, &change, &pending.password)
            .await?;
        log.outcome = "alternate user's password set and pair kept equivalent";
        Ok(())
    }
}
