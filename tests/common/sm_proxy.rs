//! A loopback reverse proxy in front of the Secrets Manager emulator: give the function
//! `endpoint()` instead of the emulator's address and the proxy counts every request it
//! receives per operation (the `X-Amz-Target` header, `secretsmanager.GetSecretValue` →
//! `GetSecretValue`), so call budgets are checked from the wire rather than from the
//! function's own word. It can also be told to misbehave for some requests ([`Fault`]): add
//! latency, answer HTTP 500 (`InternalServiceError`), throttle (HTTP 400
//! `ThrottlingException`), or drop the connection before or after forwarding the request.
//!
//! HTTP/1.1 only, as the AWS SDK speaks it to a plain `http://` endpoint: keep-alive
//! connections, bodies framed by `Content-Length` or chunked. Each client connection gets its
//! own upstream connection, so requests are forwarded in order and never mixed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What to do instead of (or before) forwarding a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Wait this long, then forward the request normally.
    Latency(Duration),
    /// Answer `500 InternalServiceError` without forwarding.
    InternalError,
    /// Answer `400 ThrottlingException` without forwarding.
    Throttle,
    /// Close the client's connection without forwarding or answering.
    DropRequest,
    /// Forward the request (the emulator applies it), then close the client's connection
    /// without the answer: the call happened but the caller cannot know.
    DropResponse,
}

/// A fault for the requests of one operation (or of every operation when `operation` is
/// `None`), applied to the next `times` matching requests (forever when `None`).
#[derive(Debug, Clone)]
pub struct Fault {
    pub operation: Option<String>,
    pub kind: FaultKind,
    pub times: Option<u32>,
}

impl Fault {
    /// A fault on every matching request until cleared.
    pub fn always(operation: Option<&str>, kind: FaultKind) -> Fault {
        Fault {
            operation: operation.map(str::to_string),
            kind,
            times: None,
        }
    }

    /// A fault on the next `times` matching requests.
    pub fn times(operation: Option<&str>, kind: FaultKind, times: u32) -> Fault {
        Fault {
            operation: operation.map(str::to_string),
            kind,
            times: Some(times),
        }
    }

    fn matches(&self, operation: &str) -> bool {
        self.times != Some(0) && self.operation.as_deref().is_none_or(|op| op == operation)
    }
}

#[derive(Default)]
struct State {
    counts: BTreeMap<String, u64>,
    faults: Vec<Fault>,
    injected: BTreeMap<String, u64>,
}

impl State {
    /// Counts the request and takes the fault that applies to it, if any.
    fn admit(&mut self, operation: &str) -> Option<FaultKind> {
        *self.counts.entry(operation.to_string()).or_default() += 1;
        let fault = self.faults.iter_mut().find(|f| f.matches(operation))?;
        if let Some(times) = fault.times.as_mut() {
            *times -= 1;
        }
        let kind = fault.kind.clone();
        *self
            .injected
            .entry(format!("{operation} {kind:?}"))
            .or_default() += 1;
        Some(kind)
    }
}

/// The proxy; it stops when dropped.
pub struct SmProxy {
    addr: SocketAddr,
    upstream: String,
    state: Arc<Mutex<State>>,
    server: JoinHandle<()>,
}

impl SmProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> SmProxy {
        let authority = upstream
            .trim_end_matches('/')
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("the proxy forwards to plain http only, got {upstream}"))
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the proxy");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let target = authority.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                tokio::spawn(serve(client, target.clone(), shared.clone()));
            }
        });
        SmProxy {
            addr,
            upstream: authority,
            state,
            server,
        }
    }

    /// The endpoint to give the function (`AWS_ENDPOINT_URL_SECRETS_MANAGER`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far, per operation (faulted ones included).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.state.lock().unwrap().counts.clone()
    }

    /// All requests received so far.
    pub fn total(&self) -> u64 {
        self.state.lock().unwrap().counts.values().sum()
    }

    /// The counts so far, and zero them.
    pub fn take_counts(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut self.state.lock().unwrap().counts)
    }

    /// Faults applied so far, as `"<operation> <kind>"` → how many times.
    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.state.lock().unwrap().injected.clone()
    }

    /// Adds a fault; the first fault (in the order added) that matches a request applies.
    pub fn inject(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }
}

impl Drop for SmProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A request or response head: the start line and the headers in order.
struct Head {
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    /// The operation of an AWS JSON request, else the method and path.
    fn operation(&self) -> String {
        match self.header("x-amz-target") {
            Some(target) => target
                .rsplit_once('.')
                .map_or(target, |(_, op)| op)
                .to_string(),
            None => {
                let mut parts = self.start.split_whitespace();
                let method = parts.next().unwrap_or("?");
                let path = parts.next().unwrap_or("?");
                format!("{method} {}", path.split('?').next().unwrap_or(path))
            }
        }
    }

    /// Writes the head, hop-by-hop headers replaced by a Content-Length for `body_len`.
    async fn write<W: AsyncWrite + Unpin>(
        &self,
        w: &mut W,
        body_len: Option<usize>,
        close: bool,
    ) -> io::Result<()> {
        let mut out = format!("{}\r\n", self.start);
        for (name, value) in &self.headers {
            let hop = [
                "connection",
                "keep-alive",
                "transfer-encoding",
                "content-length",
                "te",
                "trailer",
                "upgrade",
                "expect",
                "proxy-connection",
            ];
            if !hop.iter().any(|h| name.eq_ignore_ascii_case(h)) {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        if let Some(len) = body_len {
            out.push_str(&format!("content-length: {len}\r\n"));
        }
        out.push_str(if close {
            "connection: close\r\n\r\n"
        } else {
            "connection: keep-alive\r\n\r\n"
        });
        w.write_all(out.as_bytes()).await
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads a head; `None` at a clean end of stream before its first byte.
async fn read_head<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Option<Head>> {
    let mut start = String::new();
    if r.read_line(&mut start).await? == 0 {
        return Ok(None);
    }
    let start = start.trim_end().to_string();
    if start.is_empty() {
        return Err(invalid("empty start line"));
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(invalid("end of stream inside a head"));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| invalid("bad header"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(Some(Head { start, headers }))
}

/// How a body is framed.
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

fn framing(head: &Head, response_status: Option<u16>) -> io::Result<Framing> {
    if let Some(status) = response_status
        && (status < 200 || status == 204 || status == 304)
    {
        return Ok(Framing::Empty);
    }
    if head.has_token("transfer-encoding", "chunked") {
        return Ok(Framing::Chunked);
    }
    if let Some(len) = head.header("content-length") {
        return len
            .parse()
            .map(Framing::Length)
            .map_err(|_| invalid("bad content-length"));
    }
    Ok(if response_status.is_some() {
        Framing::UntilClose
    } else {
        Framing::Empty
    })
}

async fn read_body<R: AsyncBufRead + Unpin>(r: &mut R, framing: Framing) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    match framing {
        Framing::Empty => {}
        Framing::Length(len) => {
            body.resize(len, 0);
            r.read_exact(&mut body).await?;
        }
        Framing::UntilClose => {
            r.read_to_end(&mut body).await?;
        }
        Framing::Chunked => loop {
            let mut size = String::new();
            r.read_line(&mut size).await?;
            let size = size.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).await?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).await?;
        },
    }
    Ok(body)
}

fn status_of(head: &Head) -> io::Result<u16> {
    head.start
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))
}

/// An error answer in the AWS JSON protocol, as Secrets Manager sends it.
fn aws_error(status: u16, reason: &str, code: &str, message: &str) -> (Head, Vec<u8>) {
    let body = format!(r#"{{"__type":"{code}","message":"{message}"}}"#).into_bytes();
    let head = Head {
        start: format!("HTTP/1.1 {status} {reason}"),
        headers: vec![
            ("content-type".into(), "application/x-amz-json-1.1".into()),
            ("x-amzn-errortype".into(), code.into()),
            ("x-amzn-requestid".into(), uuid::Uuid::new_v4().to_string()),
        ],
    };
    (head, body)
}

type Upstream = BufReader<TcpStream>;

/// Sends one request upstream and reads the answer. `Ok(None)` when a reused connection turned
/// out to be closed before answering (the caller reconnects once).
async fn exchange(
    upstream: &mut Upstream,
    head: &Head,
    body: &[u8],
) -> io::Result<Option<(Head, Vec<u8>, bool)>> {
    let mut request = Vec::new();
    head.write(&mut request, Some(body.len()), false).await?;
    request.extend_from_slice(body);
    if upstream.get_mut().write_all(&request).await.is_err() {
        return Ok(None);
    }
    let Some(response) = read_head(upstream).await? else {
        return Ok(None);
    };
    let status = status_of(&response)?;
    let framing = framing(&response, Some(status))?;
    let reusable =
        !matches!(framing, Framing::UntilClose) && !response.has_token("connection", "close");
    let body = read_body(upstream, framing).await?;
    Ok(Some((response, body, reusable)))
}

async fn forward(
    upstream: &mut Option<Upstream>,
    authority: &str,
    head: &Head,
    body: &[u8],
) -> io::Result<(Head, Vec<u8>)> {
    for _ in 0..2 {
        let fresh = upstream.is_none();
        if fresh {
            let stream = TcpStream::connect(authority).await?;
            stream.set_nodelay(true)?;
            *upstream = Some(BufReader::new(stream));
        }
        let conn = upstream.as_mut().expect("connected above");
        match exchange(conn, head, body).await {
            Ok(Some((response, body, reusable))) => {
                if !reusable {
                    *upstream = None;
                }
                return Ok((response, body));
            }
            Ok(None) if !fresh => *upstream = None,
            Ok(None) => return Err(invalid("the upstream closed the connection")),
            Err(e) => {
                *upstream = None;
                if fresh {
                    return Err(e);
                }
            }
        }
    }
    Err(invalid("the upstream closed the connection"))
}

/// Serves one client connection: request after request, each counted, faulted or forwarded.
async fn serve(client: TcpStream, authority: String, state: Arc<Mutex<State>>) {
    let (read, mut write) = client.into_split();
    let mut read = BufReader::new(read);
    let mut upstream: Option<Upstream> = None;
    loop {
        let head = match read_head(&mut read).await {
            Ok(Some(head)) => head,
            _ => return,
        };
        if head.has_token("expect", "100-continue")
            && write
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        let body = match framing(&head, None) {
            Ok(framing) => match read_body(&mut read, framing).await {
                Ok(body) => body,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let close = head.has_token("connection", "close");
        let operation = head.operation();
        let fault = state.lock().unwrap().admit(&operation);
        let answer = match fault {
            Some(FaultKind::DropRequest) => return,
            Some(FaultKind::InternalError) => Ok(aws_error(
                500,
                "Internal Server Error",
                "InternalServiceError",
                "injected by the test proxy",
            )),
            Some(FaultKind::Throttle) => Ok(aws_error(
                400,
                "Bad Request",
                "ThrottlingException",
                "Rate exceeded",
            )),
            Some(FaultKind::Latency(delay)) => {
                tokio::time::sleep(delay).await;
                forward(&mut upstream, &authority, &head, &body).await
            }
            Some(FaultKind::DropResponse) => {
                let _ = forward(&mut upstream, &authority, &head, &body).await;
                return;
            }
            None => forward(&mut upstream, &authority, &head, &body).await,
        };
        let (response, body) = match answer {
            Ok(answer) => answer,
            Err(e) => aws_error(
                502,
                "Bad Gateway",
                "ProxyError",
                &format!("the test proxy could not reach the emulator: {e}").replace('"', "'"),
            ),
        };
        let mut out = Vec::with_capacity(body.len() + 512);
        if response
            .write(&mut out, Some(body.len()), close)
            .await
            .is_err()
        {
            return;
        }
        out.extend_from_slice(&body);
        if write.write_all(&out).await.is_err() || close {
            return;
        }
    }
}
