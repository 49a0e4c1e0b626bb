//! A mocked apiserver for reconcile tests that need no server: a kube
//! [`Client`] whose every request is recorded and answered at once, so a
//! status writer or an outcome is checked in milliseconds. What it answers
//! is the test's: a status write gets the object back with that status, an
//! Event is echoed, anything else is a 404.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

use crate::context::{Context, Settings};
use crate::installation::Installation;
use crate::metrics::Metrics;

/// One request the mocked apiserver saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: Value,
}

/// What the mocked apiserver saw, in order.
#[derive(Clone, Default)]
pub struct Apiserver {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Apiserver {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The status bodies written, in order.
    pub fn status_writes(&self) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "PATCH" && s.path.ends_with("/status"))
            .map(|s| s.body["status"].clone())
            .collect()
    }

    /// The Events posted, in order.
    pub fn events(&self) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "POST" && s.path.contains("/events"))
            .map(|s| s.body)
            .collect()
    }
}

/// A client of a mocked apiserver holding `object` (a JSON object of any
/// kind), and what that apiserver sees.
pub fn apiserver(object: Value) -> (Client, Apiserver) {
    serve(
        move |seen| match (seen.method.as_str(), seen.path.ends_with("/status")) {
            ("PATCH", true) => {
                let mut written = object.clone();
                written["status"] = seen.body["status"].clone();
                (200, written)
            }
            ("POST", _) => (201, seen.body.clone()),
            _ => not_found(),
        },
    )
}

/// A client of a mocked apiserver answering each request with the next of
/// `answers` (status code and body), then 404, and what it sees.
pub fn scripted(answers: Vec<(u16, Value)>) -> (Client, Apiserver) {
    let answers = Arc::new(Mutex::new(std::collections::VecDeque::from(answers)));
    serve(move |_| {
        answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
            .unwrap_or_else(not_found)
    })
}

/// A Status of `code` as the apiserver words it.
pub fn status(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": reason}),
    )
}

fn not_found() -> (u16, Value) {
    status(404, "NotFound")
}

/// A client whose every request is recorded and answered by `answer`.
fn serve<F>(answer: F) -> (Client, Apiserver)
where
    F: Fn(&Seen) -> (u16, Value) + Clone + Send + Sync + 'static,
{
    let seen = Apiserver::default();
    let record = seen.clone();
    let service = tower::service_fn(move |request: Request<Body>| {
        let (record, answer) = (record.clone(), answer.clone());
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await?;
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let seen = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                body,
            };
            record
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(seen.clone());
            let (code, answer) = answer(&seen);
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer)?))?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(response)
        }
    });
    (Client::new(service, "default"), seen)
}

/// An operator context around `client`, at the default settings.
pub fn context(client: Client) -> Context {
    let installation = Installation::from_secret(&[7u8; 32]).expect("a long enough secret");
    Context::new(
        client,
        aws_config::SdkConfig::builder().build(),
        installation,
        Settings::default(),
        Metrics::new(),
    )
}
