//! Pure SQL builders: quoting, the password statements (SCRAM verifiers only), the copy of a
//! role's settings, and the plan of statements that keeps the alternating pair equivalent.
//! Nothing here talks to a server, so every statement is unit-tested as text.

use postgres_protocol::escape::{escape_identifier, escape_literal};
use secrecy::{ExposeSecret, SecretString};

use crate::secret::RoleName;

/// Quotes a PostgreSQL identifier: any character but NUL, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    escape_identifier(name)
}

/// Quotes a string literal so it reads the same whatever `standard_conforming_strings` is
/// (a value with backslashes becomes ` E'...'`, with a leading space).
pub fn quote_literal(value: &str) -> String {
    escape_literal(value)
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (random salt, 4096
/// iterations). Sending this instead of the password keeps the plaintext out of server logs.
pub fn scram_verifier(password: &SecretString) -> SecretString {
    SecretString::from(postgres_protocol::password::scram_sha_256(
        password.expose_secret().as_bytes(),
    ))
}

/// `ALTER ROLE name PASSWORD 'verifier'`.
pub fn alter_password_sql(user: &RoleName, verifier: &SecretString) -> SecretString {
    SecretString::from(format!(
        "ALTER ROLE {} PASSWORD {}",
        user.quoted(),
        quote_literal(verifier.expose_secret())
    ))
}

/// `CREATE ROLE name WITH LOGIN PASSWORD 'verifier'` or, for an existing role,
/// `ALTER ROLE name WITH LOGIN PASSWORD 'verifier'`.
pub fn login_password_sql(user: &RoleName, exists: bool, verifier: &SecretString) -> SecretString {
    let verb = if exists { "ALTER" } else { "CREATE" };
    SecretString::from(format!(
        "{verb} ROLE {} WITH LOGIN PASSWORD {}",
        user.quoted(),
        quote_literal(verifier.expose_secret())
    ))
}

/// Settings whose values pg_dump splits into a list of literals (`GUC_LIST_QUOTE`); any
/// other value is restored as one literal.
const LIST_QUOTED_SETTINGS: [&str; 6] = [
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// Splits a stored list setting (`"$user", public`) into its elements, as PostgreSQL's
/// SplitGUCList does.
fn split_setting_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        item.push('"');
                    } else {
                        break;
                    }
                } else {
                    item.push(c);
                }
            }
            while chars.peek().is_some_and(|c| *c != ',') {
                chars.next();
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                item.push(c);
                chars.next();
            }
            item = item.trim_end().to_string();
        }
        items.push(item);
        if chars.next().is_none() {
            break;
        }
    }
    items
}

/// `ALTER ROLE role SET name TO value` for one `name=value` entry of `pg_db_role_setting`.
pub fn set_role_setting_sql(role: &RoleName, entry: &str) -> Option<String> {
    setting_sql(role, None, entry)
}

/// `ALTER ROLE role IN DATABASE db SET name TO value` for one `name=value` entry of a
/// per-database row of `pg_db_role_setting`.
pub fn set_role_database_setting_sql(
    role: &RoleName,
    database: &str,
    entry: &str,
) -> Option<String> {
    setting_sql(role, Some(database), entry)
}

fn setting_sql(role: &RoleName, database: Option<&str>, entry: &str) -> Option<String> {
    let (name, value) = entry.split_once('=')?;
    let quoted_name = name
        .split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".");
    let value = if LIST_QUOTED_SETTINGS.contains(&name) {
        split_setting_list(value)
            .iter()
            .map(|item| quote_literal(item))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        quote_literal(value)
    };
    let scope = database
        .map(|db| format!(" IN DATABASE {}", quote_ident(db)))
        .unwrap_or_default();
    Some(format!(
        "ALTER ROLE {}{scope} SET {quoted_name} TO {value}",
        role.quoted()
    ))
}

/// The role attributes that let a role act beyond its own objects. The master user never
/// gives a role holding one a password on a secret's say-so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    Superuser,
    CreateRole,
    Replication,
    BypassRls,
}

impl std::fmt::Display for Privilege {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Privilege::Superuser => "SUPERUSER",
            Privilege::CreateRole => "CREATEROLE",
            Privilege::Replication => "REPLICATION",
            Privilege::BypassRls => "BYPASSRLS",
        })
    }
}

/// The privileged attributes among four `pg_roles` flags, in the order the SPEC lists them.
pub fn privileges(
    superuser: bool,
    createrole: bool,
    replication: bool,
    bypassrls: bool,
) -> Vec<Privilege> {
    [
        (superuser, Privilege::Superuser),
        (createrole, Privilege::CreateRole),
        (replication, Privilege::Replication),
        (bypassrls, Privilege::BypassRls),
    ]
    .into_iter()
    .filter_map(|(has, privilege)| has.then_some(privilege))
    .collect()
}

/// Predefined roles whose members read or write the server's files or run programs on it:
/// as good as a superuser, so treated like SUPERUSER.
pub const SERVER_ACCESS_ROLES: [&str; 3] = [
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
];

/// Why the master user refuses to change a role: checked in the same transaction as the
/// change, and nothing is changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleRefusal {
    #[error(
        "the primary user {role:?} of the pair does not exist: the function creates only the clone; create {role:?} (or fix \"username\" in the secret)"
    )]
    PrimaryMissing { role: String },
    #[error(
        "role {role:?} does not exist: the master user only resets the password of an existing role (fix \"username\" in the secret)"
    )]
    Missing { role: String },
    #[error(
        "role {role:?} is the master user itself: a rotation never changes the master user's password from another secret"
    )]
    MasterUser { role: String },
    #[error(
        "role {role:?} is a member of the master user {master:?} and can act as it: the master user never sets the password of such a role"
    )]
    MemberOfMaster { role: String, master: String },
    #[error(
        "role {role:?} has {privilege}{via}: the master user never sets the password of a role with SUPERUSER, CREATEROLE, REPLICATION or BYPASSRLS; rotate it with its own credentials, or remove the attribute if it is not needed",
        via = via.as_ref().map(|v| format!(" through its membership in {v:?}")).unwrap_or_default()
    )]
    Privileged {
        role: String,
        privilege: Privilege,
        via: Option<String>,
    },
    #[error(
        "role {role:?} is a member of {via:?}, which reads or writes the server's files or runs programs on it: the master user never sets the password of such a role"
    )]
    ServerAccess { role: String, via: String },
    #[error(
        "the master user {master:?} has neither SUPERUSER nor CREATEROLE, so it cannot manage roles: use a master secret of a user that has (on RDS and Aurora, the instance's master user)"
    )]
    MasterCannotManageRoles { master: String },
    #[error(
        "the master user {master:?} has no ADMIN OPTION on role {role:?}; PostgreSQL {version} (16 or later) no longer lets CREATEROLE alone grant, alter or drop a role it has no ADMIN OPTION on. As a superuser (or the role's creator), run: {grant}; then rotate again"
    )]
    MasterNeedsAdminOption {
        master: String,
        role: String,
        version: String,
        grant: String,
    },
    #[error(
        "the master user {master:?} lacks CREATEDB, which PostgreSQL {version} (16 or later) requires to give the clone the primary's CREATEDB: ALTER ROLE {master:?} CREATEDB as a superuser, or remove CREATEDB from the primary"
    )]
    MasterNeedsCreatedb { master: String, version: String },
}

// --- the master user's own rights, by server version -------------------------------------

/// `server_version_num` of PostgreSQL 16, where CREATEROLE alone stopped sufficing.
pub const PG16: i32 = 160_000;

/// Who the master user is and what it may do, with the server's version, read before the
/// change (one round trip, outside the transaction).
pub const MASTER_RIGHTS_SQL: &str = "SELECT session_user::text,
       current_setting('server_version_num')::int, current_setting('server_version'),
       r.rolsuper, r.rolcreaterole, r.rolcreatedb
  FROM pg_roles r WHERE r.rolname = session_user";

/// One row of [`MASTER_RIGHTS_SQL`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterRights {
    pub name: String,
    pub server_version_num: i32,
    pub server_version: String,
    pub superuser: bool,
    pub createrole: bool,
    pub createdb: bool,
}

/// Whether the master user can make the change on this server version: a superuser can; else
/// it needs CREATEROLE and, since PostgreSQL 16, ADMIN OPTION on every existing role it
/// grants or alters (`admin`: each role's name and whether the master holds it), and
/// CREATEDB itself to give CREATEDB (`gives_createdb`). Refused before any change.
pub fn master_rights_refusal(
    rights: &MasterRights,
    admin: &[(&str, bool)],
    gives_createdb: bool,
) -> Option<RoleRefusal> {
    if rights.superuser {
        return None;
    }
    if !rights.createrole {
        return Some(RoleRefusal::MasterCannotManageRoles {
            master: rights.name.clone(),
        });
    }
    if rights.server_version_num < PG16 {
        return None;
    }
    if let Some((role, _)) = admin.iter().find(|(_, has)| !has) {
        return Some(RoleRefusal::MasterNeedsAdminOption {
            master: rights.name.clone(),
            role: role.to_string(),
            version: rights.server_version.clone(),
            grant: format!(
                "GRANT {} TO {} WITH ADMIN OPTION",
                quote_ident(role),
                quote_ident(&rights.name)
            ),
        });
    }
    if gives_createdb && !rights.createdb {
        return Some(RoleRefusal::MasterNeedsCreatedb {
            master: rights.name.clone(),
            version: rights.server_version.clone(),
        });
    }
    None
}

// --- single user: the master user resets a forgotten password ----------------------------

/// The facts the master user reads before resetting `$1`'s password, in the same
/// transaction: one row for the role itself and one for every role it can act as
/// (`pg_has_role(..., 'MEMBER')`: membership at any depth, with or without INHERIT), each
/// with its privileged attributes and whether it is the master user (the session user).
/// No row: the role does not exist.
pub const TARGET_FACTS_SQL: &str = "SELECT g.rolname::text AS name,
       g.oid = t.oid AS is_target,
       g.rolsuper, g.rolcreaterole, g.rolreplication, g.rolbypassrls,
       g.rolname = session_user AS is_master,
       pg_has_role(session_user, g.oid, 'MEMBER WITH ADMIN OPTION') AS master_admin
  FROM pg_roles t
  JOIN pg_roles g ON g.oid = t.oid OR pg_has_role(t.oid, g.oid, 'MEMBER')
 WHERE t.rolname = $1::text
 ORDER BY g.oid <> t.oid, g.rolname";

/// One row of [`TARGET_FACTS_SQL`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReachableRole {
    pub name: String,
    /// The role itself (else a role it can act as).
    pub is_target: bool,
    pub superuser: bool,
    pub createrole: bool,
    pub replication: bool,
    pub bypassrls: bool,
    pub is_master: bool,
    /// The master user holds ADMIN OPTION on this role (always true for a superuser).
    pub master_admin: bool,
}

/// Whether the master user may reset `target`'s password, from the rows of
/// [`TARGET_FACTS_SQL`]: never the master user, a role that can act as it, a role with a
/// privileged attribute (its own or one it can act as), nor a member of the server-access
/// roles.
pub fn master_reset_refusal(target: &RoleName, rows: &[ReachableRole]) -> Option<RoleRefusal> {
    let role = target.to_string();
    if !rows.iter().any(|r| r.is_target) {
        return Some(RoleRefusal::Missing { role });
    }
    let mut ordered: Vec<&ReachableRole> = rows.iter().filter(|r| r.is_target).collect();
    ordered.extend(rows.iter().filter(|r| !r.is_target));
    for row in ordered {
        let via = (!row.is_target).then(|| row.name.clone());
        if row.is_master {
            return Some(match via {
                None => RoleRefusal::MasterUser { role },
                Some(master) => RoleRefusal::MemberOfMaster { role, master },
            });
        }
        if let Some(privilege) = privileges(
            row.superuser,
            row.createrole,
            row.replication,
            row.bypassrls,
        )
        .first()
        {
            return Some(RoleRefusal::Privileged {
                role,
                privilege: *privilege,
                via,
            });
        }
        if let Some(via) = via.filter(|v| SERVER_ACCESS_ROLES.contains(&v.as_str())) {
            return Some(RoleRefusal::ServerAccess { role, via });
        }
    }
    None
}

// --- alternating users: the pair ----------------------------------------------------------

/// Everything the master user reads about the pair, in one query inside the transaction
/// that changes it: one row per existing role of `$1` (primary) and `$2` (clone) with its
/// attributes, whether it is the master user, whether it is a direct member of the other
/// role, its settings (`setdatabase = 0`), and its per-database settings as two parallel
/// arrays (database name, `name=value`).
pub const PAIR_FACTS_SQL: &str = "SELECT r.rolname::text AS name,
       r.rolname::text = $1::text AS is_primary,
       r.rolsuper, r.rolcreaterole, r.rolreplication, r.rolbypassrls,
       r.rolcreatedb, r.rolinherit, r.rolconnlimit,
       CASE WHEN r.rolvaliduntil IS NULL THEN NULL
            WHEN isfinite(r.rolvaliduntil)
              THEN to_char(r.rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
            ELSE r.rolvaliduntil::text END AS valid_until,
       r.rolname = session_user AS is_master,
       pg_has_role(session_user, r.oid, 'MEMBER WITH ADMIN OPTION') AS master_admin,
       EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles o ON o.oid = m.roleid
                WHERE m.member = r.oid AND o.rolname::text IN ($1::text, $2::text)
                  AND o.oid <> r.oid) AS member_of_partner,
       COALESCE((SELECT s.setconfig FROM pg_db_role_setting s
                  WHERE s.setrole = r.oid AND s.setdatabase = 0), '{}'::text[]) AS settings,
       ARRAY(SELECT d.datname::text
               FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase,
                    unnest(s.setconfig) WITH ORDINALITY AS e(entry, n)
              WHERE s.setrole = r.oid
              ORDER BY d.datname, e.n) AS database_setting_databases,
       ARRAY(SELECT e.entry
               FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase,
                    unnest(s.setconfig) WITH ORDINALITY AS e(entry, n)
              WHERE s.setrole = r.oid
              ORDER BY d.datname, e.n) AS database_setting_entries
  FROM pg_roles r
 WHERE r.rolname::text IN ($1::text, $2::text)";

/// The attributes the clone mirrors from the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroredAttributes {
    pub createdb: bool,
    pub inherit: bool,
    /// -1: no limit.
    pub connection_limit: i32,
    /// `None`: no expiry; else `infinity` or an ISO 8601 UTC time.
    pub valid_until: Option<String>,
}

impl Default for MirroredAttributes {
    /// What `CREATE ROLE name WITH LOGIN` gives.
    fn default() -> Self {
        MirroredAttributes {
            createdb: false,
            inherit: true,
            connection_limit: -1,
            valid_until: None,
        }
    }
}

/// One row of [`PAIR_FACTS_SQL`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleFacts {
    pub name: String,
    pub superuser: bool,
    pub createrole: bool,
    pub replication: bool,
    pub bypassrls: bool,
    pub attributes: MirroredAttributes,
    pub is_master: bool,
    /// The master user holds ADMIN OPTION on this role (always true for a superuser).
    pub master_admin: bool,
    /// A direct member of the other role of the pair.
    pub member_of_partner: bool,
    /// `name=value` entries of `ALTER ROLE ... SET`.
    pub settings: Vec<String>,
    /// `(database, name=value)` entries of `ALTER ROLE ... IN DATABASE ... SET`.
    pub database_settings: Vec<(String, String)>,
}

impl RoleFacts {
    pub fn privileges(&self) -> Vec<Privilege> {
        privileges(
            self.superuser,
            self.createrole,
            self.replication,
            self.bypassrls,
        )
    }
}

/// The pair as [`PAIR_FACTS_SQL`] found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairFacts {
    pub primary: Option<RoleFacts>,
    pub clone: Option<RoleFacts>,
    /// The server's `server_version_num` (16 and later grant membership WITH INHERIT, SET).
    pub server_version_num: i32,
}

/// Whether the master user may touch the pair: the primary must exist, and no existing role
/// of the pair (the alternate first) may be the master user or hold a privileged attribute.
pub fn pair_refusal(
    primary: &RoleName,
    target: &RoleName,
    facts: &PairFacts,
) -> Option<RoleRefusal> {
    let Some(primary_facts) = &facts.primary else {
        return Some(RoleRefusal::PrimaryMissing {
            role: primary.to_string(),
        });
    };
    let mut roles: Vec<&RoleFacts> = vec![primary_facts];
    roles.extend(facts.clone.as_ref());
    roles.sort_by_key(|r| target.as_str() != r.name);
    for role in roles {
        if role.is_master {
            return Some(RoleRefusal::MasterUser {
                role: role.name.clone(),
            });
        }
        if let Some(privilege) = role.privileges().first() {
            return Some(RoleRefusal::Privileged {
                role: role.name.clone(),
                privilege: *privilege,
                via: None,
            });
        }
    }
    None
}

/// What the plan needs to know about the pair, read by the master user in the transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairState {
    /// The primary is a member of the clone: the circular grant the reference function may
    /// have left, which PostgreSQL refuses to complete the other way round.
    pub primary_in_clone: bool,
    /// The clone is already a member of the primary.
    pub clone_in_primary: bool,
    /// The primary's per-role settings (`name=value`, from `pg_db_role_setting`).
    pub primary_settings: Vec<String>,
    /// The primary's CREATEDB, INHERIT, CONNECTION LIMIT and VALID UNTIL.
    pub primary_attributes: MirroredAttributes,
    /// The clone's, before this transaction (a clone created now has the defaults).
    pub clone_attributes: MirroredAttributes,
    /// The primary's per-database settings: `(database, name=value)`.
    pub primary_database_settings: Vec<(String, String)>,
    /// The databases in which the clone has per-database settings now.
    pub clone_settings_databases: Vec<String>,
    /// PostgreSQL 16 and later: grant the membership `WITH INHERIT TRUE, SET TRUE`, so the
    /// clone both inherits the primary's privileges and can `SET ROLE` to it whatever the
    /// server's defaults.
    pub grant_with_options: bool,
}

impl PairFacts {
    /// The existing roles of the pair, each with whether the master holds ADMIN OPTION on it.
    pub fn admin_needed(&self) -> Vec<(&str, bool)> {
        [&self.primary, &self.clone]
            .into_iter()
            .flatten()
            .map(|role| (role.name.as_str(), role.master_admin))
            .collect()
    }

    /// Whether the plan gives the clone CREATEDB.
    pub fn gives_createdb(&self) -> bool {
        let primary = self.primary.as_ref().is_some_and(|p| p.attributes.createdb);
        let clone = self.clone.as_ref().is_some_and(|c| c.attributes.createdb);
        primary && !clone
    }

    /// The state the plan starts from (the primary exists: see [`pair_refusal`]).
    pub fn state(&self) -> PairState {
        let primary = self.primary.clone().unwrap_or_default();
        let clone = self.clone.as_ref();
        let mut clone_settings_databases: Vec<String> = clone
            .map(|c| {
                c.database_settings
                    .iter()
                    .map(|(db, _)| db.clone())
                    .collect()
            })
            .unwrap_or_default();
        clone_settings_databases.dedup();
        PairState {
            primary_in_clone: primary.member_of_partner,
            clone_in_primary: clone.is_some_and(|c| c.member_of_partner),
            primary_settings: primary.settings.clone(),
            primary_attributes: primary.attributes.clone(),
            clone_attributes: clone.map(|c| c.attributes.clone()).unwrap_or_default(),
            primary_database_settings: primary.database_settings.clone(),
            clone_settings_databases,
            grant_with_options: self.server_version_num >= PG16,
        }
    }
}

/// The password statement and the pair's statements, in the order they run in one
/// transaction, or the refusal (then nothing runs).
pub struct PairPlan {
    pub password: SecretString,
    pub statements: Vec<String>,
}

/// Plans the alternating-users change from the facts: refused (see [`pair_refusal`]), or
/// the alternate's password set (created with LOGIN when missing) and the pair made
/// equivalent.
pub fn pair_plan(
    primary: &RoleName,
    clone: &RoleName,
    target: &RoleName,
    facts: &PairFacts,
    verifier: &SecretString,
    clone_default_role: bool,
) -> Result<PairPlan, RoleRefusal> {
    if let Some(refusal) = pair_refusal(primary, target, facts) {
        return Err(refusal);
    }
    let target_exists = if target == primary {
        facts.primary.is_some()
    } else {
        facts.clone.is_some()
    };
    Ok(PairPlan {
        password: login_password_sql(target, target_exists, verifier),
        statements: pair_statements(primary, clone, &facts.state(), clone_default_role),
    })
}

fn valid_until_literal(value: Option<&str>) -> String {
    quote_literal(value.unwrap_or("infinity"))
}

/// `ALTER ROLE clone WITH ...` for the mirrored attributes that differ, if any.
fn mirror_attributes_sql(
    clone: &RoleName,
    primary: &MirroredAttributes,
    current: &MirroredAttributes,
) -> Option<String> {
    let mut clauses = Vec::new();
    if primary.createdb != current.createdb {
        clauses.push(
            if primary.createdb {
                "CREATEDB"
            } else {
                "NOCREATEDB"
            }
            .to_string(),
        );
    }
    if primary.inherit != current.inherit {
        clauses.push(
            if primary.inherit {
                "INHERIT"
            } else {
                "NOINHERIT"
            }
            .to_string(),
        );
    }
    if primary.connection_limit != current.connection_limit {
        clauses.push(format!("CONNECTION LIMIT {}", primary.connection_limit));
    }
    // No expiry and `infinity` are the same; ALTER ROLE can only write the latter.
    let never = |v: &Option<String>| v.as_deref().is_none_or(|v| v == "infinity");
    let same_expiry = (never(&primary.valid_until) && never(&current.valid_until))
        || primary.valid_until == current.valid_until;
    if !same_expiry {
        clauses.push(format!(
            "VALID UNTIL {}",
            valid_until_literal(primary.valid_until.as_deref())
        ));
    }
    (!clauses.is_empty())
        .then(|| format!("ALTER ROLE {} WITH {}", clone.quoted(), clauses.join(" ")))
}

/// The statements that make the clone equivalent to the primary, run after the password
/// statement in the same transaction: membership (never circular), the mirrored
/// attributes, the primary's settings and per-database settings, and (when
/// `clone_default_role`) the primary as the clone's default role.
pub fn pair_statements(
    primary: &RoleName,
    clone: &RoleName,
    state: &PairState,
    clone_default_role: bool,
) -> Vec<String> {
    let (p, c) = (primary.quoted(), clone.quoted());
    let mut plan = Vec::new();
    if state.primary_in_clone {
        plan.push(format!("REVOKE {c} FROM {p}"));
    }
    if !state.clone_in_primary {
        if state.grant_with_options {
            plan.push(format!("GRANT {p} TO {c} WITH INHERIT TRUE, SET TRUE"));
        } else {
            plan.push(format!("GRANT {p} TO {c}"));
        }
    }
    plan.extend(mirror_attributes_sql(
        clone,
        &state.primary_attributes,
        &state.clone_attributes,
    ));
    plan.push(format!("ALTER ROLE {c} RESET ALL"));
    plan.extend(
        state
            .primary_settings
            .iter()
            .filter(|entry| !entry.starts_with("role="))
            .filter_map(|entry| set_role_setting_sql(clone, entry)),
    );
    for database in &state.clone_settings_databases {
        plan.push(format!(
            "ALTER ROLE {c} IN DATABASE {} RESET ALL",
            quote_ident(database)
        ));
    }
    plan.extend(
        state
            .primary_database_settings
            .iter()
            .filter_map(|(database, entry)| set_role_database_setting_sql(clone, database, entry)),
    );
    if clone_default_role {
        plan.push(format!(
            "ALTER ROLE {c} SET role TO {}",
            quote_literal(primary.as_str())
        ));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> RoleName {
        RoleName::parse(name).unwrap()
    }

    #[test]
    fn identifiers_are_quoted_with_inner_quotes_doubled() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("We \"R\" users"), "\"We \"\"R\"\" users\"");
        assert_eq!(quote_ident("ünï"), "\"ünï\"");
    }

    #[test]
    fn literals_survive_quotes_and_backslashes() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'c"), " E'a\\\\b''c'");
    }

    #[test]
    fn verifier_is_scram_and_never_contains_the_password() {
        let password = SecretString::from("correct horse battery staple".to_string());
        let verifier = scram_verifier(&password);
        let v = verifier.expose_secret();
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(!v.contains("correct horse"));
        assert_ne!(
            v,
            scram_verifier(&password).expose_secret(),
            "salt must be random"
        );
    }

    #[test]
    fn password_statements_quote_the_role_and_carry_only_the_verifier() {
        let verifier = SecretString::from("SCRAM-SHA-256$4096:abc".to_string());
        let user = role("app \"x\"");
        assert_eq!(
            alter_password_sql(&user, &verifier).expose_secret(),
            "ALTER ROLE \"app \"\"x\"\"\" PASSWORD 'SCRAM-SHA-256$4096:abc'"
        );
        assert_eq!(
            login_password_sql(&user, false, &verifier).expose_secret(),
            "CREATE ROLE \"app \"\"x\"\"\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:abc'"
        );
        assert_eq!(
            login_password_sql(&user, true, &verifier).expose_secret(),
            "ALTER ROLE \"app \"\"x\"\"\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:abc'"
        );
    }

    #[test]
    fn list_settings_are_split_into_literals_and_others_kept_whole() {
        assert_eq!(
            set_role_setting_sql(
                &role("u_clone"),
                "search_path=\"$user\", public, \"My Schema\""
            )
            .unwrap(),
            "ALTER ROLE \"u_clone\" SET \"search_path\" TO '$user', 'public', 'My Schema'"
        );
        assert_eq!(
            set_role_setting_sql(&role("u"), "statement_timeout=5s").unwrap(),
            "ALTER ROLE \"u\" SET \"statement_timeout\" TO '5s'"
        );
        assert_eq!(
            set_role_setting_sql(&role("u"), "DateStyle=ISO, MDY").unwrap(),
            "ALTER ROLE \"u\" SET \"DateStyle\" TO 'ISO, MDY'"
        );
        assert_eq!(
            set_role_setting_sql(&role("u"), "myext.flag=it's").unwrap(),
            "ALTER ROLE \"u\" SET \"myext\".\"flag\" TO 'it''s'"
        );
    }

    #[test]
    fn pair_plan_repairs_a_circular_grant_and_copies_settings_but_not_the_default_role() {
        let state = PairState {
            primary_in_clone: true,
            clone_in_primary: false,
            primary_settings: vec!["statement_timeout=5s".into(), "role=other".into()],
            ..PairState::default()
        };
        assert_eq!(
            pair_statements(&role("app"), &role("app_clone"), &state, true),
            [
                "REVOKE \"app_clone\" FROM \"app\"",
                "GRANT \"app\" TO \"app_clone\"",
                "ALTER ROLE \"app_clone\" RESET ALL",
                "ALTER ROLE \"app_clone\" SET \"statement_timeout\" TO '5s'",
                "ALTER ROLE \"app_clone\" SET role TO 'app'",
            ]
        );
    }

    #[test]
    fn pair_plan_of_an_equivalent_pair_only_resets_settings() {
        let state = PairState {
            primary_in_clone: false,
            clone_in_primary: true,
            primary_settings: vec![],
            ..PairState::default()
        };
        assert_eq!(
            pair_statements(&role("app"), &role("app_clone"), &state, false),
            ["ALTER ROLE \"app_clone\" RESET ALL"]
        );
    }

    fn facts(name: &str) -> RoleFacts {
        RoleFacts {
            name: name.into(),
            ..RoleFacts::default()
        }
    }

    #[test]
    fn per_database_settings_are_scoped_to_their_database() {
        assert_eq!(
            set_role_database_setting_sql(&role("u_clone"), "My \"DB\"", "work_mem=64MB").unwrap(),
            "ALTER ROLE \"u_clone\" IN DATABASE \"My \"\"DB\"\"\" SET \"work_mem\" TO '64MB'"
        );
    }

    #[test]
    fn pair_plan_mirrors_attributes_and_per_database_settings() {
        let state = PairState {
            clone_in_primary: true,
            primary_attributes: MirroredAttributes {
                createdb: true,
                inherit: false,
                connection_limit: 7,
                valid_until: Some("2031-02-03T04:05:06.000000Z".into()),
            },
            clone_attributes: MirroredAttributes::default(),
            primary_database_settings: vec![
                ("appdb".into(), "work_mem=64MB".into()),
                ("appdb".into(), "search_path=app, public".into()),
            ],
            clone_settings_databases: vec!["olddb".into()],
            ..PairState::default()
        };
        assert_eq!(
            pair_statements(&role("app"), &role("app_clone"), &state, false),
            [
                "ALTER ROLE \"app_clone\" WITH CREATEDB NOINHERIT CONNECTION LIMIT 7 VALID UNTIL '2031-02-03T04:05:06.000000Z'",
                "ALTER ROLE \"app_clone\" RESET ALL",
                "ALTER ROLE \"app_clone\" IN DATABASE \"olddb\" RESET ALL",
                "ALTER ROLE \"app_clone\" IN DATABASE \"appdb\" SET \"work_mem\" TO '64MB'",
                "ALTER ROLE \"app_clone\" IN DATABASE \"appdb\" SET \"search_path\" TO 'app', 'public'",
            ]
        );
    }

    #[test]
    fn an_expiry_is_cleared_with_infinity_and_no_expiry_equals_infinity() {
        let expiring = MirroredAttributes {
            valid_until: Some("2020-01-01T00:00:00.000000Z".into()),
            ..MirroredAttributes::default()
        };
        let infinite = MirroredAttributes {
            valid_until: Some("infinity".into()),
            ..MirroredAttributes::default()
        };
        let clone = role("c");
        assert_eq!(
            mirror_attributes_sql(&clone, &MirroredAttributes::default(), &expiring).unwrap(),
            "ALTER ROLE \"c\" WITH VALID UNTIL 'infinity'"
        );
        assert_eq!(
            mirror_attributes_sql(&clone, &MirroredAttributes::default(), &infinite),
            None
        );
        assert_eq!(
            mirror_attributes_sql(&clone, &infinite, &MirroredAttributes::default()),
            None
        );
        assert_eq!(mirror_attributes_sql(&clone, &expiring, &expiring), None);
    }

    #[test]
    fn a_missing_primary_is_refused_naming_it() {
        let refusal = pair_refusal(&role("app"), &role("app_clone"), &PairFacts::default());
        let refusal = refusal.unwrap();
        assert_eq!(refusal, RoleRefusal::PrimaryMissing { role: "app".into() });
        assert!(
            refusal
                .to_string()
                .contains("\"app\" of the pair does not exist")
        );
        let plan = pair_plan(
            &role("app"),
            &role("app_clone"),
            &role("app_clone"),
            &PairFacts::default(),
            &SecretString::from("v".to_string()),
            true,
        );
        assert!(plan.is_err());
    }

    #[test]
    fn a_privileged_or_master_alternate_is_refused_naming_the_attribute() {
        type Make = fn(&mut RoleFacts);
        let cases: [(&str, Make); 5] = [
            ("SUPERUSER", |r| r.superuser = true),
            ("CREATEROLE", |r| r.createrole = true),
            ("REPLICATION", |r| r.replication = true),
            ("BYPASSRLS", |r| r.bypassrls = true),
            ("master user itself", |r| r.is_master = true),
        ];
        for (expected, make) in cases {
            let mut clone = facts("app_clone");
            make(&mut clone);
            let pair = PairFacts {
                primary: Some(facts("app")),
                clone: Some(clone),
                ..PairFacts::default()
            };
            let refusal = pair_refusal(&role("app"), &role("app_clone"), &pair).unwrap();
            let text = refusal.to_string();
            assert!(text.contains(expected), "{text}");
            assert!(text.contains("\"app_clone\""), "{text}");
        }
    }

    #[test]
    fn a_privileged_primary_is_refused_too_and_the_alternate_is_named_first() {
        let mut primary = facts("app");
        primary.createrole = true;
        let mut clone = facts("app_clone");
        clone.superuser = true;
        let pair = PairFacts {
            primary: Some(primary),
            clone: Some(clone),
            ..PairFacts::default()
        };
        assert_eq!(
            pair_refusal(&role("app"), &role("app"), &pair),
            Some(RoleRefusal::Privileged {
                role: "app".into(),
                privilege: Privilege::CreateRole,
                via: None
            })
        );
        assert_eq!(
            pair_refusal(&role("app"), &role("app_clone"), &pair),
            Some(RoleRefusal::Privileged {
                role: "app_clone".into(),
                privilege: Privilege::Superuser,
                via: None
            })
        );
    }

    #[test]
    fn pair_plan_creates_a_missing_clone_and_alters_an_existing_one() {
        let verifier = SecretString::from("SCRAM-SHA-256$4096:x".to_string());
        let mut pair = PairFacts {
            primary: Some(facts("app")),
            clone: None,
            ..PairFacts::default()
        };
        let plan = pair_plan(
            &role("app"),
            &role("app_clone"),
            &role("app_clone"),
            &pair,
            &verifier,
            true,
        )
        .unwrap();
        assert!(
            plan.password
                .expose_secret()
                .starts_with("CREATE ROLE \"app_clone\" WITH LOGIN")
        );
        assert_eq!(plan.statements[0], "GRANT \"app\" TO \"app_clone\"");
        pair.clone = Some(RoleFacts {
            member_of_partner: true,
            database_settings: vec![("x".into(), "a=b".into()), ("x".into(), "c=d".into())],
            ..facts("app_clone")
        });
        let plan = pair_plan(
            &role("app"),
            &role("app_clone"),
            &role("app"),
            &pair,
            &verifier,
            false,
        )
        .unwrap();
        assert!(
            plan.password
                .expose_secret()
                .starts_with("ALTER ROLE \"app\" WITH LOGIN")
        );
        assert_eq!(
            plan.statements,
            [
                "ALTER ROLE \"app_clone\" RESET ALL",
                "ALTER ROLE \"app_clone\" IN DATABASE \"x\" RESET ALL",
            ]
        );
    }

    fn reachable(name: &str, is_target: bool) -> ReachableRole {
        ReachableRole {
            name: name.into(),
            is_target,
            ..ReachableRole::default()
        }
    }

    #[test]
    fn the_master_resets_only_an_existing_unprivileged_role() {
        let target = role("victim");
        assert_eq!(
            master_reset_refusal(&target, &[]),
            Some(RoleRefusal::Missing {
                role: "victim".into()
            })
        );
        let plain = [reachable("victim", true), reachable("app_rw", false)];
        assert_eq!(master_reset_refusal(&target, &plain), None);
    }

    #[test]
    fn the_master_refuses_a_role_privileged_itself_or_through_a_membership() {
        let target = role("victim");
        let cases: Vec<(Vec<ReachableRole>, &str)> = vec![
            (
                vec![ReachableRole {
                    bypassrls: true,
                    ..reachable("victim", true)
                }],
                "has BYPASSRLS: ",
            ),
            (
                vec![ReachableRole {
                    is_master: true,
                    ..reachable("victim", true)
                }],
                "is the master user itself",
            ),
            (
                vec![
                    reachable("victim", true),
                    ReachableRole {
                        createrole: true,
                        ..reachable("rds_superuser", false)
                    },
                ],
                "has CREATEROLE through its membership in \"rds_superuser\"",
            ),
            (
                vec![
                    reachable("victim", true),
                    ReachableRole {
                        is_master: true,
                        ..reachable("postgres", false)
                    },
                ],
                "member of the master user \"postgres\"",
            ),
            (
                vec![
                    reachable("victim", true),
                    reachable("pg_execute_server_program", false),
                ],
                "member of \"pg_execute_server_program\"",
            ),
        ];
        for (rows, expected) in cases {
            let text = master_reset_refusal(&target, &rows).unwrap().to_string();
            assert!(text.contains(expected), "{text}");
            assert!(text.contains("\"victim\""), "{text}");
        }
    }

    fn rights(version: i32, superuser: bool, createrole: bool) -> MasterRights {
        MasterRights {
            name: "master".into(),
            server_version_num: version,
            server_version: format!("{}.1", version / 10_000),
            superuser,
            createrole,
            createdb: false,
        }
    }

    #[test]
    fn before_postgresql_16_createrole_suffices_and_since_16_admin_option_is_needed() {
        let no_admin = [("app", false)];
        assert_eq!(
            master_rights_refusal(&rights(150_000, false, true), &no_admin, false),
            None
        );
        let refusal = master_rights_refusal(&rights(160_000, false, true), &no_admin, false)
            .unwrap()
            .to_string();
        assert!(
            refusal.contains("GRANT \"app\" TO \"master\" WITH ADMIN OPTION"),
            "{refusal}"
        );
        assert!(refusal.contains("PostgreSQL 16.1"), "{refusal}");
        assert!(refusal.contains("CREATEROLE alone"), "{refusal}");
        assert_eq!(
            master_rights_refusal(&rights(170_000, false, true), &[("app", true)], false),
            None
        );
        // A superuser needs nothing more on any version.
        assert_eq!(
            master_rights_refusal(&rights(180_000, true, false), &no_admin, true),
            None
        );
    }

    #[test]
    fn a_master_without_createrole_or_createdb_is_refused_naming_what_it_lacks() {
        let text = master_rights_refusal(&rights(150_000, false, false), &[], false)
            .unwrap()
            .to_string();
        assert!(text.contains("neither SUPERUSER nor CREATEROLE"), "{text}");
        let text = master_rights_refusal(&rights(160_000, false, true), &[("app", true)], true)
            .unwrap()
            .to_string();
        assert!(text.contains("lacks CREATEDB"), "{text}");
    }

    #[test]
    fn since_postgresql_16_the_clone_is_granted_the_primary_with_inherit_and_set() {
        let state = PairState {
            grant_with_options: true,
            ..PairState::default()
        };
        let plan = pair_statements(&role("app"), &role("app_clone"), &state, false);
        assert_eq!(
            plan[0],
            "GRANT \"app\" TO \"app_clone\" WITH INHERIT TRUE, SET TRUE"
        );
        let facts = PairFacts {
            primary: Some(RoleFacts {
                name: "app".into(),
                ..RoleFacts::default()
            }),
            clone: None,
            server_version_num: 160_004,
        };
        assert!(facts.state().grant_with_options);
        assert!(
            !PairFacts {
                server_version_num: 150_000,
                ..facts
            }
            .state()
            .grant_with_options
        );
    }
}
