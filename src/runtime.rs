//! What the function tells the Lambda runtime API before it serves events: a configuration
//! that cannot work is reported on the init-error endpoint, so Lambda shows its `errorType`
//! and message (instead of a bare "Runtime exited" after a crash). `lambda_runtime` reports
//! nothing until `run()` starts, so this is a plain HTTP/1.1 POST on a blocking socket: it
//! happens once, at start-up, before anything else runs.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The runtime API path Lambda documents for initialisation errors.
pub const INIT_ERROR_PATH: &str = "/2018-06-01/runtime/init/error";

/// Why the init error could not be reported (the function exits with its error anyway).
#[derive(Debug, thiserror::Error)]
pub enum InitErrorReport {
    #[error("AWS_LAMBDA_RUNTIME_API is not set: not running under Lambda")]
    NoRuntimeApi,
    #[error("the runtime API at {api} could not be reached: {source}")]
    Io { api: String, source: std::io::Error },
    #[error("the runtime API at {api} answered {status:?}")]
    Refused { api: String, status: String },
}

/// The request body Lambda expects: `{"errorType": ..., "errorMessage": ...}`.
pub fn init_error_body(error_type: &str, message: &str) -> String {
    serde_json::json!({"errorType": error_type, "errorMessage": message}).to_string()
}

/// POSTs the error to `http://{api}/2018-06-01/runtime/init/error` with the
/// `Lambda-Runtime-Function-Error-Type` header; `Ok` when the runtime accepted it (2xx).
pub fn report_init_error(
    api: &str,
    error_type: &str,
    message: &str,
) -> Result<(), InitErrorReport> {
    let io = |source: std::io::Error| InitErrorReport::Io {
        api: api.to_string(),
        source,
    };
    let timeout = Duration::from_secs(2);
    let address = api
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| io(std::io::Error::other("the address resolves to nothing")))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let body = init_error_body(error_type, message);
    // A header value holds no line breaks: the error type is one of our fixed names, but
    // never let one through.
    let header: String = error_type.chars().filter(|c| !c.is_control()).collect();
    let request = format!(
        "POST {INIT_ERROR_PATH} HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\nLambda-Runtime-Function-Error-Type: {header}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut answer = Vec::new();
    // The runtime closes the connection after its answer (Connection: close); a timeout
    // after the status line has arrived is as good.
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or_default().to_string();
    match status.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        _ => Err(InitErrorReport::Refused {
            api: api.to_string(),
            status,
        }),
    }
}

/// Reports `error_type` and `message` when running under Lambda (`AWS_LAMBDA_RUNTIME_API`).
pub fn report_init_error_from_env(error_type: &str, message: &str) -> Result<(), InitErrorReport> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").map_err(|_| InitErrorReport::NoRuntimeApi)?;
    report_init_error(&api, error_type, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn the_init_error_is_posted_with_its_type_header_and_json_body() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let api = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                let n = socket.read(&mut buffer).unwrap();
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .unwrap()
                        .parse()
                        .unwrap();
                    if body.len() >= length {
                        break;
                    }
                }
            }
            socket
                .write_all(
                    b"HTTP/1.1 202 Accepted\r\nContent-Length: 15\r\n\r\n{\"status\":\"OK\"}",
                )
                .unwrap();
            String::from_utf8(request).unwrap()
        });
        report_init_error(&api, "InvalidConfiguration", "PASSWORD_LENGTH must be ...").unwrap();
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /2018-06-01/runtime/init/error HTTP/1.1\r\n"));
        assert!(
            request.contains("\r\nLambda-Runtime-Function-Error-Type: InvalidConfiguration\r\n")
        );
        let body = request.split_once("\r\n\r\n").unwrap().1;
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["errorType"], "InvalidConfiguration");
        assert_eq!(body["errorMessage"], "PASSWORD_LENGTH must be ...");
    }

    #[test]
    fn an_unreachable_runtime_api_is_an_error_not_a_hang() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let api = listener.local_addr().unwrap().to_string();
        drop(listener);
        assert!(matches!(
            report_init_error(&api, "InvalidConfiguration", "x"),
            Err(InitErrorReport::Io { .. })
        ));
    }
}
