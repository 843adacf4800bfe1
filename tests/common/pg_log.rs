//! Reads the local stack's PostgreSQL server log (`log_connections = on`,
//! `log_statement = 'all'`, prefix `'%m [%p] %q%u@%d '`, written by
//! `integration/stack-up.sh`) back into connections: every TCP connection a client opens
//! starts a backend that logs `connection received`, so counting those is exact, failed
//! password attempts included (a connection that fails SCRAM cost a connect, a TLS handshake
//! and an authentication exchange all the same). Each backend logs under its own pid, and every
//! statement a client sends in one message (a simple query, however many statements it holds,
//! or one extended-protocol execute) is one logged entry and one round trip.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// One client connection as the server logged it.
#[derive(Debug, Clone, Default)]
pub struct PgConnection {
    pub pid: u32,
    /// From the log prefix of the backend's entries after the startup packet.
    pub user: Option<String>,
    pub database: Option<String>,
    /// `connection authorized` was logged: the login succeeded.
    pub authorized: bool,
    /// The messages after `connection received`, in order (level included, e.g.
    /// `LOG:  statement: BEGIN`, `FATAL:  password authentication failed ...`).
    pub entries: Vec<String>,
}

impl PgConnection {
    /// The statements the client sent (`statement: ...` and `execute <name>: ...`), one per
    /// round trip.
    pub fn statements(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter_map(|e| e.strip_prefix("LOG:  "))
            .filter_map(|m| {
                m.strip_prefix("statement: ").or_else(|| {
                    m.strip_prefix("execute ")
                        .and_then(|s| s.split_once(": ").map(|(_, sql)| sql))
                })
            })
            .collect()
    }

    /// The round trips from the statement that is exactly `BEGIN` up to and including the
    /// first one that ends with `COMMIT` (the pair's transaction); `None` without a `BEGIN`.
    pub fn transaction_round_trips(&self) -> Option<usize> {
        let statements = self.statements();
        let begin = statements.iter().position(|s| s.trim() == "BEGIN")?;
        let end = statements[begin..].iter().position(|s| {
            s.trim_end()
                .trim_end_matches(';')
                .trim_end()
                .ends_with("COMMIT")
        })?;
        Some(end + 1)
    }
}

/// One log entry: the pid, the `user@db` prefix (absent for non-session processes) and the
/// message with its continuation lines.
struct Entry {
    pid: u32,
    user_db: Option<(String, String)>,
    message: String,
}

const LEVELS: [&str; 12] = [
    "LOG",
    "FATAL",
    "ERROR",
    "DETAIL",
    "STATEMENT",
    "HINT",
    "WARNING",
    "NOTICE",
    "CONTEXT",
    "PANIC",
    "INFO",
    "DEBUG",
];

/// `2026-01-01 10:00:00.123 UTC [123] rest`: the pid and the rest, for a line that starts an
/// entry.
fn entry_start(line: &str) -> Option<(u32, &str)> {
    let bytes = line.as_bytes();
    if bytes.len() < 24 || !bytes[..4].iter().all(u8::is_ascii_digit) || bytes[4] != b'-' {
        return None;
    }
    let open = line.find(" [")?;
    let close = open + line[open..].find("] ")?;
    let pid = line[open + 2..close].parse().ok()?;
    Some((pid, &line[close + 2..]))
}

/// Splits `user@db LEVEL:  message` (or `LEVEL:  message`) into its prefix and message.
fn split_prefix(rest: &str) -> (Option<(String, String)>, String) {
    for level in LEVELS {
        let marker = format!("{level}:  ");
        if rest.starts_with(&marker) {
            return (None, rest.to_string());
        }
        if let Some(at) = rest.find(&format!(" {marker}")) {
            let prefix = &rest[..at];
            let user_db = prefix
                .rsplit_once('@')
                .map(|(u, d)| (u.to_string(), d.to_string()));
            return (user_db, rest[at + 1..].to_string());
        }
    }
    (None, rest.to_string())
}

fn entries(text: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for line in text.lines() {
        match entry_start(line) {
            Some((pid, rest)) => {
                let (user_db, message) = split_prefix(rest);
                out.push(Entry {
                    pid,
                    user_db,
                    message,
                });
            }
            None => {
                if let Some(last) = out.last_mut() {
                    last.message.push('\n');
                    last.message.push_str(line);
                }
            }
        }
    }
    out
}

/// The connections received in `text` (a slice of the log), in the order they started.
/// Entries of backends whose `connection received` is not in `text` are ignored.
pub fn connections(text: &str) -> Vec<PgConnection> {
    let mut all: Vec<PgConnection> = Vec::new();
    let mut open: HashMap<u32, usize> = HashMap::new();
    for entry in entries(text) {
        if entry.message.starts_with("LOG:  connection received:") {
            open.insert(entry.pid, all.len());
            all.push(PgConnection {
                pid: entry.pid,
                ..PgConnection::default()
            });
            continue;
        }
        let Some(&index) = open.get(&entry.pid) else {
            continue;
        };
        let connection = &mut all[index];
        if let Some((user, db)) = entry.user_db
            && user != "[unknown]"
        {
            connection.user.get_or_insert(user);
            connection.database.get_or_insert(db);
        }
        if entry.message.starts_with("LOG:  connection authorized:") {
            connection.authorized = true;
        }
        connection.entries.push(entry.message);
    }
    all
}

/// A position in a server log: what was appended after it is read back as connections.
#[derive(Debug, Clone)]
pub struct LogCursor {
    path: PathBuf,
    offset: u64,
}

impl LogCursor {
    /// A cursor at the current end of the log.
    pub fn at_end(path: &Path) -> LogCursor {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        LogCursor {
            path: path.to_path_buf(),
            offset,
        }
    }

    /// The text appended since the cursor (or since the last `take`), and moves the cursor to
    /// the end of it (only up to the last complete line).
    pub fn take(&mut self) -> String {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return String::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return String::new();
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            return String::new();
        }
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(complete);
        self.offset += complete as u64;
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The connections received since the cursor, to `database` only.
    pub fn take_connections(&mut self, database: &str) -> Vec<PgConnection> {
        connections(&self.take())
            .into_iter()
            .filter(|c| c.database.as_deref() == Some(database))
            .collect()
    }
}
