//! Read-only inspection for the operator CLI (`pgrotatectl preflight`): what a login
//! negotiates (TLS version and cipher, channel binding, server version) and the role facts
//! the alternating-users checks need. Nothing here changes anything on the server.

use tokio_postgres::types::Type;

use super::{Postgres, classify, server_version};
use crate::db::{DbError, DbLogin};
use crate::secret::RoleName;

/// What one login negotiated.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionInfo {
    pub session_user: String,
    pub server_version: String,
    pub server_version_num: i32,
    /// `None` for a plaintext connection.
    pub tls: Option<TlsInfo>,
    /// Whether the login used SCRAM channel binding (`SCRAM-SHA-256-PLUS`).
    pub channel_binding: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

/// A role's attributes that matter to the alternating pair.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RoleFacts {
    pub name: String,
    pub exists: bool,
    pub superuser: bool,
    pub createrole: bool,
    pub replication: bool,
    pub bypassrls: bool,
    pub login: bool,
}

impl RoleFacts {
    /// The attributes the function refuses on an alternate user (SPEC 4.2).
    pub fn privileges(&self) -> Vec<&'static str> {
        let mut held = Vec::new();
        for (flag, name) in [
            (self.superuser, "SUPERUSER"),
            (self.createrole, "CREATEROLE"),
            (self.replication, "REPLICATION"),
            (self.bypassrls, "BYPASSRLS"),
        ] {
            if flag {
                held.push(name);
            }
        }
        held
    }
}

/// What the master user may do, as seen from its own session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MasterFacts {
    pub user: String,
    pub superuser: bool,
    pub createrole: bool,
    pub server_version_num: i32,
    /// Role name → whether the master holds ADMIN OPTION on it (roles that exist only).
    pub admin_option: Vec<(String, bool)>,
}

impl Postgres {
    /// Logs in as `login` and reports what the connection negotiated. Channel binding is
    /// tested with a second login, as [`Postgres::uses_channel_binding`] does.
    pub async fn connection_info(&self, login: &DbLogin) -> Result<ConnectionInfo, DbError> {
        let encrypted = login.ssl != crate::secret::SslMode::Disable;
        let (session_user, version, number, tls) = self
            .with_session(login, async |client| {
                // A default role (the alternating clone's) would hide the session's own row
                // of pg_stat_ssl: look as the session user.
                client.batch_execute("SET ROLE NONE").await?;
                let user: String = client
                    .query_typed_one("SELECT session_user::text", &[])
                    .await?
                    .try_get(0)?;
                let row = client
                    .query_typed_opt(
                        "SELECT s.ssl, s.version, s.cipher
                           FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()",
                        &[],
                    )
                    .await?;
                let (number, version) = server_version(client).await?;
                let tls = match row {
                    Some(row) if row.try_get::<_, bool>(0)? => Some(TlsInfo {
                        version: row.try_get::<_, Option<String>>(1)?.unwrap_or_default(),
                        cipher: row.try_get::<_, Option<String>>(2)?.unwrap_or_default(),
                    }),
                    Some(_) => None,
                    // Not visible to this user: the mode says whether it is encrypted.
                    None => encrypted.then(|| TlsInfo {
                        version: "TLS (version not visible to this user)".into(),
                        cipher: "unknown cipher".into(),
                    }),
                };
                Ok((user, version, number, tls))
            })
            .await?;
        let channel_binding = self.uses_channel_binding(login).await?;
        Ok(ConnectionInfo {
            session_user,
            server_version: version,
            server_version_num: number,
            tls,
            channel_binding,
        })
    }

    /// The attributes of `roles` (read through `login`, any user may read `pg_roles`).
    pub async fn role_facts(
        &self,
        login: &DbLogin,
        roles: &[&RoleName],
    ) -> Result<Vec<RoleFacts>, DbError> {
        let names: Vec<String> = roles.iter().map(|r| r.as_str().to_string()).collect();
        let rows = self
            .with_session(login, async |client| {
                client
                    .query_typed(
                        "SELECT rolname::text, rolsuper, rolcreaterole, rolreplication,
                                rolbypassrls, rolcanlogin
                           FROM pg_roles WHERE rolname = ANY($1)",
                        &[(&names, Type::TEXT_ARRAY)],
                    )
                    .await
            })
            .await?;
        let mut facts = Vec::new();
        for name in names {
            let row = rows
                .iter()
                .find(|row| row.try_get::<_, String>(0).is_ok_and(|n| n == name));
            let fact = match row {
                None => RoleFacts {
                    name,
                    ..RoleFacts::default()
                },
                Some(row) => {
                    let get = |i: usize| row.try_get::<_, bool>(i);
                    let read = || -> Result<RoleFacts, tokio_postgres::Error> {
                        Ok(RoleFacts {
                            name: name.clone(),
                            exists: true,
                            superuser: get(1)?,
                            createrole: get(2)?,
                            replication: get(3)?,
                            bypassrls: get(4)?,
                            login: get(5)?,
                        })
                    };
                    read().map_err(|e| DbError::new(login, classify(&e, login.ssl, true)))?
                }
            };
            facts.push(fact);
        }
        Ok(facts)
    }

    /// Logs in as the master user and reads its own attributes, the server version and
    /// whether it holds ADMIN OPTION on each of `roles` that exists (what PostgreSQL 16 and
    /// later require of a CREATEROLE user to grant or alter a role).
    pub async fn master_facts(
        &self,
        master: &DbLogin,
        roles: &[&RoleName],
    ) -> Result<MasterFacts, DbError> {
        let names: Vec<String> = roles.iter().map(|r| r.as_str().to_string()).collect();
        self.with_session(master, async |client| {
            let row = client
                .query_typed_one(
                    "SELECT current_user::text, rolsuper, rolcreaterole
                       FROM pg_roles WHERE rolname = current_user",
                    &[],
                )
                .await?;
            let (number, _) = server_version(client).await?;
            let admin = client
                .query_typed(
                    "SELECT rolname::text, pg_has_role(current_user, oid, 'MEMBER WITH ADMIN OPTION')
                       FROM pg_roles WHERE rolname = ANY($1)",
                    &[(&names, Type::TEXT_ARRAY)],
                )
                .await?;
            let mut admin_option = Vec::new();
            for row in admin {
                admin_option.push((row.try_get::<_, String>(0)?, row.try_get::<_, bool>(1)?));
            }
            Ok(MasterFacts {
                user: row.try_get(0)?,
                superuser: row.try_get(1)?,
                createrole: row.try_get(2)?,
                server_version_num: number,
                admin_option,
            })
        })
        .await
    }
}
