//! A fault/fidelity proxy in front of moto, on loopback.
//!
//! It forwards each request (one per connection) and on the way:
//! - counts calls per AWS operation (the query protocol's `Action`);
//! - repairs moto's answers where they differ from AWS's wire format
//!   (STS and IAM errors wrapped in `<Errors>`, which AWS never sends);
//! - injects faults on request: throttling, 5xx, dropped connections and
//!   latency, per operation, at a rate.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

/// What to do to a share of the calls.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Fraction (0..=1) of calls that fail transiently.
    pub error_rate: f64,
    /// Latency added to every call.
    pub latency: Duration,
    /// Only these operations are faulted (empty: all).
    pub operations: Vec<String>,
}

#[derive(Default)]
struct Shared {
    calls: Mutex<BTreeMap<String, u64>>,
    faults: Mutex<Faults>,
    injected: AtomicU64,
    seq: AtomicU64,
    stop: AtomicBool,
}

/// The proxy; stops when dropped.
pub struct AwsProxy {
    port: u16,
    shared: Arc<Shared>,
}

impl AwsProxy {
    /// Starts a proxy forwarding to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Result<AwsProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::Builder::new()
            .name("aws-proxy".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let s = s.clone();
                    let _ = std::thread::Builder::new()
                        .name("aws-proxy-conn".into())
                        .spawn(move || {
                            let _ = handle(conn, upstream, &s);
                        });
                }
            })?;
        Ok(AwsProxy { port, shared })
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Calls seen per operation (faulted ones included).
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.shared
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn reset_calls(&self) {
        self.shared
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::SeqCst)
    }
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

struct Request {
    head: String,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Request> {
    let mut head = String::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(anyhow!("connection closed in the request head"));
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().context("content-length")?;
            }
            if k.trim().eq_ignore_ascii_case("connection") {
                continue;
            }
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    Ok(Request { head, body })
}

/// The query protocol's `Action` (EC2, IAM, STS); `?` when absent.
fn operation(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .unwrap_or("?")
        .to_string()
}

fn service(head: &str) -> &'static str {
    let auth = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
        .unwrap_or_default();
    if auth.contains("/sts/") {
        "sts"
    } else if auth.contains("/iam/") {
        "iam"
    } else {
        "ec2"
    }
}

fn handle(conn: TcpStream, upstream: u16, s: &Shared) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    let req = read_request(&mut reader)?;
    let op = operation(&req.body);
    let svc = service(&req.head);
    *s.calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(op.clone())
        .or_default() += 1;

    let faults = s.faults.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if !faults.latency.is_zero() {
        std::thread::sleep(faults.latency);
    }
    let applies = faults.operations.is_empty() || faults.operations.contains(&op);
    if applies && faults.error_rate > 0.0 {
        let n = s.seq.fetch_add(1, Ordering::SeqCst);
        if unit_random(n) < faults.error_rate {
            s.injected.fetch_add(1, Ordering::SeqCst);
            return inject(&mut conn, svc, n);
        }
    }

    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(req.head.as_bytes())?;
    up.write_all(b"Connection: close\r\n\r\n")?;
    up.write_all(&req.body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    let response = repair(response, svc);
    conn.write_all(&response)?;
    Ok(())
}

/// A deterministic pseudo-random number in [0, 1) for the n-th call.
fn unit_random(n: u64) -> f64 {
    // splitmix64
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Answers with a transient failure: throttling, a 503, a 500, or a dropped connection.
fn inject(conn: &mut TcpStream, svc: &str, n: u64) -> Result<()> {
    let (status, code) = match n % 4 {
        0 => (
            503,
            if svc == "ec2" {
                "RequestLimitExceeded"
            } else {
                "Throttling"
            },
        ),
        1 => (503, "ServiceUnavailable"),
        2 => (500, "InternalError"),
        _ => return Ok(()), // drop the connection without an answer
    };
    let body = error_body(svc, code, "injected by the test proxy");
    write!(
        conn,
        "HTTP/1.1 {status} Error\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

fn error_body(svc: &str, code: &str, message: &str) -> String {
    if svc == "ec2" {
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>proxy</RequestID></Response>")
    } else {
        format!("<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>proxy</RequestId></ErrorResponse>")
    }
}

/// STS and IAM errors come as `<ErrorResponse><Error>`; moto sometimes wraps
/// them in `<Errors>` as EC2 does. Unwrap so the SDK reads the code.
fn repair(response: Vec<u8>, svc: &str) -> Vec<u8> {
    if svc == "ec2" {
        return response;
    }
    let text = String::from_utf8_lossy(&response);
    let Some(split) = text.find("\r\n\r\n") else {
        return response;
    };
    let (head, body) = text.split_at(split + 4);
    if !body.contains("<ErrorResponse><Errors><Error>") {
        return response;
    }
    let body = body
        .replace("<ErrorResponse><Errors><Error>", "<ErrorResponse><Error>")
        .replace(
            "</Error></Errors></ErrorResponse>",
            "</Error></ErrorResponse>",
        );
    let head: String = head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("content-length:") && !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect();
    format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_wrapped_sts_errors() {
        let raw = b"HTTP/1.1 403 FORBIDDEN\r\nContent-Length: 10\r\n\r\n<?xml version=\"1.0\"?>\n<ErrorResponse><Errors><Error><Code>X</Code></Error></Errors></ErrorResponse>".to_vec();
        let fixed = String::from_utf8(repair(raw, "sts")).unwrap_or_default();
        assert!(fixed.contains("<ErrorResponse><Error><Code>X</Code></Error></ErrorResponse>"));
        let body = fixed.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert!(fixed.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn error_rate_is_close_to_asked() {
        let hits = (0..10_000).filter(|n| unit_random(*n) < 0.2).count();
        assert!((1_700..2_300).contains(&hits), "{hits}");
    }
}
