//! A hostile PostgreSQL look-alike on loopback, for the attack tests: it refuses TLS
//! (answers `SSLRequest` and `GSSENCRequest` with `N`), asks every client for a cleartext
//! password (`AuthenticationCleartextPassword`), records every user name and password it
//! receives, accepts the logins its rule allows (`AuthenticationOk`, a few
//! `ParameterStatus`, `ReadyForQuery`) and answers any query with an error, which is enough
//! for a client's "these credentials log in" check to pass.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const PROTOCOL_3: i32 = 196_608;

type Rule = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// The running server; stops when dropped.
pub struct Hostile {
    pub port: u16,
    received: Arc<Mutex<Vec<(String, String)>>>,
    task: JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    /// Listens on 127.0.0.1 (a random port); `accept(user, password)` decides each login.
    pub async fn start(accept: impl Fn(&str, &str) -> bool + Send + Sync + 'static) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let port = listener.local_addr().expect("a local address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let rule: Rule = Arc::new(accept);
        let log = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (log, rule) = (log.clone(), rule.clone());
                tokio::spawn(async move {
                    let _ = serve(socket, log, rule).await;
                });
            }
        });
        Hostile {
            port,
            received,
            task,
        }
    }

    /// Every (user, password) a client sent, in order.
    pub fn received(&self) -> Vec<(String, String)> {
        self.received.lock().expect("not poisoned").clone()
    }
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstrings(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out
}

fn error(severity: &str, code: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', text),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(b'E', &body)
}

async fn read_exact(socket: &mut TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0; n];
    socket.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn read_i32(socket: &mut TcpStream) -> std::io::Result<i32> {
    let b = read_exact(socket, 4).await?;
    Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

async fn serve(
    mut socket: TcpStream,
    log: Arc<Mutex<Vec<(String, String)>>>,
    rule: Rule,
) -> std::io::Result<()> {
    // Startup: any number of TLS/GSS requests (refused), then the startup message.
    let params = loop {
        let len = read_i32(&mut socket).await?;
        let code = read_i32(&mut socket).await?;
        let rest = read_exact(&mut socket, (len - 8).max(0) as usize).await?;
        match code {
            SSL_REQUEST | GSSENC_REQUEST => socket.write_all(b"N").await?,
            PROTOCOL_3 => break rest,
            _ => return Ok(()),
        }
    };
    let fields: Vec<String> = params
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let user = fields
        .chunks(2)
        .find(|kv| kv[0] == "user")
        .and_then(|kv| kv.get(1).cloned())
        .unwrap_or_default();

    // AuthenticationCleartextPassword, then the PasswordMessage.
    socket
        .write_all(&message(b'R', &3i32.to_be_bytes()))
        .await?;
    let kind = read_exact(&mut socket, 1).await?[0];
    let len = read_i32(&mut socket).await?;
    let body = read_exact(&mut socket, (len - 4).max(0) as usize).await?;
    if kind != b'p' {
        return Ok(());
    }
    let password =
        String::from_utf8_lossy(body.split(|b| *b == 0).next().unwrap_or_default()).into_owned();
    log.lock()
        .expect("not poisoned")
        .push((user.clone(), password.clone()));
    if !rule(&user, &password) {
        let text = format!("password authentication failed for user \"{user}\"");
        socket.write_all(&error("FATAL", "28P01", &text)).await?;
        return Ok(());
    }
    let mut hello = message(b'R', &0i32.to_be_bytes());
    for (name, value) in [
        ("server_version", "16.4"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("TimeZone", "UTC"),
    ] {
        hello.extend(message(b'S', &cstrings(&[name, value])));
    }
    let mut key = 4242i32.to_be_bytes().to_vec();
    key.extend_from_slice(&7i32.to_be_bytes());
    hello.extend(message(b'K', &key));
    hello.extend(message(b'Z', b"I"));
    socket.write_all(&hello).await?;

    // Queries: simple ones get an error and ReadyForQuery; extended ones an error at Sync.
    loop {
        let kind = read_exact(&mut socket, 1).await?[0];
        let len = read_i32(&mut socket).await?;
        read_exact(&mut socket, (len - 4).max(0) as usize).await?;
        match kind {
            b'X' => return Ok(()),
            b'Q' | b'S' => {
                let mut reply = error("ERROR", "0A000", "not supported here");
                reply.extend(message(b'Z', b"I"));
                socket.write_all(&reply).await?;
            }
            _ => {}
        }
    }
}
