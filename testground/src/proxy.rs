//! A fault/fidelity proxy in front of moto, on loopback.
//!
//! It forwards each request (one per connection) and on the way:
//! - counts calls per AWS operation (the query protocol's `Action`);
//! - repairs moto's answers where they differ from AWS's wire format
//!   (STS and IAM errors wrapped in `<Errors>`, which AWS never sends);
//! - injects faults on request: throttling, 5xx, dropped connections and
//!   latency, per operation, at a rate;
//! - is faithful where moto is not: AssumeRole of a role that does not
//!   exist is denied (on request), NAT gateways and instances stay
//!   `pending` for a while after their creation, as on AWS, and a repeated
//!   `ClientToken` on RunInstances, CreateNatGateway or CreateVpcEndpoint
//!   returns the first
//!   answer instead of creating again (moto ignores the token);
//! - models AWS's behaviour as a whole on request (`Faults::realism`, see
//!   [`crate::realism`]): state durations, IAM propagation, eventual
//!   consistency, draining dependencies and rate limits;
//! - decides IAM as AWS does for every request signed by a principal whose
//!   policies it was given ([`AwsProxy::grant`], see [`crate::iam_eval`]):
//!   each resource the action touches authorized in its own context,
//!   refused as AWS refuses; and, once it decides IAM at all, every
//!   AssumeRole whose caller and role moto holds by the role's trust
//!   policy (external ID, session name and tags; `sts:TagSession` for a
//!   tagged session), which moto judges by the external ID alone;
//! - records a trace of every call (operation, start, end) for the benchmark.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::realism::{
    self, element_values, first_element, param, unit_random, DeletingNat, Realism, World,
};

/// What to do to a share of the calls.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Fraction (0..=1) of calls that fail transiently.
    pub error_rate: f64,
    /// Latency added to every call.
    pub latency: Duration,
    /// Answers held back this long after AWS made them, by operation: the
    /// change is made at once, the caller learns of it late (a slow way
    /// back).
    pub hold_answers: BTreeMap<String, Duration>,
    /// Only these operations are faulted (empty: all).
    pub operations: Vec<String>,
    /// How long NAT gateways and instances stay `pending` after creation.
    pub pending: Duration,
    /// AssumeRole of a role moto does not hold is denied, as on AWS (moto
    /// issues credentials for any role ARN).
    pub roles_must_exist: bool,
    /// AWS's dependency checks, which moto lacks: DeleteSubnet and
    /// DeleteSecurityGroup are refused (`DependencyViolation`) while a
    /// network interface is in the subnet or uses the group, and DeleteVpc
    /// while a security group other than the default one is in it; a NAT
    /// gateway's interface goes with the gateway (moto keeps it); DeleteRole
    /// is refused (`DeleteConflict`) while managed policies are attached.
    pub dependencies: bool,
    /// Images the caller's account registered (e.g. with CopyImage) are
    /// answered as Amazon's too, as if Amazon had just published them:
    /// moto registers every image as the caller's.
    pub own_images_as_amazon: bool,
    /// RunInstances refused as AWS refuses an offering: the first rule
    /// matching the request's instance type, zone and market answers its
    /// code (status 500 for the `Insufficient*` ones, as AWS sends them).
    pub refusals: Vec<Refusal>,
    /// Instances whose EC2 status checks DescribeInstanceStatus answers as
    /// `impaired`, since the proxy first answered so for each.
    pub impaired: Vec<String>,
    /// Service Quotas answers by quota code (moto knows few of EC2's).
    pub quotas: BTreeMap<String, f64>,
    /// Service Quotas refuses the caller (`AccessDeniedException`).
    pub quotas_denied: bool,
    /// AWS's behaviour as a whole: see [`Realism`].
    pub realism: Option<Realism>,
    /// moto enforces IAM: each form-encoded request is re-encoded as moto
    /// re-encodes what it parsed and signed again with the caller's secret
    /// (moto checks the signature over its own re-encoding, so a value the
    /// SDK encodes otherwise, e.g. a space as `%20`, fails as
    /// `SignatureDoesNotMatch` although the caller signed correctly).
    pub resign: bool,
}

/// A request the ground refused on IAM's behalf.
#[derive(Clone, Debug)]
pub struct Denial {
    /// The operation asked for (`CreateSubnet`).
    pub operation: String,
    /// The authorization no statement allowed (`ec2:CreateSubnet`).
    pub action: String,
    pub resource: String,
    /// The session that asked.
    pub principal: String,
    /// The context it was decided in (the reference's keys only).
    pub context: BTreeMap<String, serde_json::Value>,
    /// Statements that denied it explicitly (none: nothing allowed it).
    pub denied_by: Vec<String>,
    /// The ground could not model the request (a test-ground gap, not the
    /// policy's answer).
    pub ground_error: Option<String>,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.ground_error {
            Some(e) => write!(
                f,
                "{} refused: the ground could not evaluate it: {e}",
                self.operation
            ),
            None if !self.denied_by.is_empty() => write!(
                f,
                "{} on {} denied by statement {:?} (context {:?})",
                self.action, self.resource, self.denied_by, self.context
            ),
            None => write!(
                f,
                "{} on {}: no statement allows it (context {:?})",
                self.action, self.resource, self.context
            ),
        }
    }
}

/// An offering AWS refuses; `None` matches anything.
#[derive(Clone, Debug, Default)]
pub struct Refusal {
    pub instance_type: Option<String>,
    pub zone: Option<String>,
    pub spot: Option<bool>,
    pub code: String,
}

/// One call as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Call {
    pub operation: String,
    /// The access key the request was signed with (empty when unsigned).
    pub access_key: String,
    /// The session STS handed that key out to (its assumed-role ARN,
    /// which names the role session); empty for a key STS did not hand out.
    pub session: String,
    /// The app name in its user agent (`app/NAME`): which process made it.
    pub app: String,
    /// When its connection was accepted, since the proxy started (before
    /// the request was read whole).
    pub accepted: Duration,
    /// Since the proxy started.
    pub start: Duration,
    pub end: Duration,
}

struct Shared {
    started: Instant,
    calls: Mutex<BTreeMap<String, u64>>,
    trace: Mutex<Vec<Call>>,
    /// Creation time of NAT gateways and instances, by ID.
    created: Mutex<HashMap<String, Instant>>,
    /// When each impaired instance was first answered so.
    impaired_since: Mutex<HashMap<String, std::time::SystemTime>>,
    /// First successful answer per `ClientToken`.
    tokens: Mutex<HashMap<String, Vec<u8>>>,
    faults: Mutex<Faults>,
    /// Roles seen to exist (tests do not delete roles): each is looked up
    /// in moto's state once, not on every AssumeRole.
    roles_found: Mutex<HashSet<String>>,
    /// Secret keys by access key ID: from AssumeRole answers, or moto's
    /// state.
    secrets: Mutex<HashMap<String, String>>,
    resigned: AtomicU64,
    /// What the realism profile knows of AWS's clock.
    world: Mutex<World>,
    injected: AtomicU64,
    seq: AtomicU64,
    stop: AtomicBool,
    /// Policies by role ARN: requests signed by a session of such a role
    /// are decided by them ([`crate::iam_eval`]).
    grants: Mutex<HashMap<String, Vec<serde_json::Value>>>,
    /// Roles whose grant is on its way, each with what finds it: their
    /// sessions' requests wait for it ([`AwsProxy::hold`]).
    pending: Mutex<HashMap<String, Resolver>>,
    /// Whether a role neither granted nor held is decided by its own
    /// policies as IAM holds them ([`AwsProxy::judge_by_own_policies`]).
    own_policies: AtomicBool,
    /// The principal of each access key STS handed out.
    sessions: Mutex<HashMap<String, crate::iam_eval::Principal>>,
    /// Started on the first grant.
    evaluator: Mutex<Option<Arc<crate::iam_eval::Evaluator>>>,
    denials: Mutex<Vec<Denial>>,
    /// What the Price List API and the spot price history answer.
    prices: crate::prices::Fixture,
    /// The moto serving each AWS account that has its own (see
    /// [`AwsProxy::start_per_account`]); every other account is served by
    /// the proxy's default upstream.
    upstreams: HashMap<String, u16>,
    dir: tempfile::TempDir,
}

/// Finds a held role's policies: none yet while what they depend on is not
/// there.
pub type Resolver = Arc<dyn Fn() -> Result<Option<Vec<serde_json::Value>>> + Send + Sync>;

/// The proxy; stops when dropped.
pub struct AwsProxy {
    port: u16,
    shared: Arc<Shared>,
}

impl AwsProxy {
    /// Starts a proxy forwarding to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Result<AwsProxy> {
        Self::start_per_account(upstream, HashMap::new())
    }

    /// Starts a proxy forwarding the calls of each AWS account in
    /// `by_account` to its own moto (`127.0.0.1:PORT`), and every other
    /// call to `127.0.0.1:upstream`. AWS serves accounts apart: one
    /// account's load never slows another's calls, while one moto process
    /// serves every call it gets in turn. A call's account is its STS
    /// session's, or for AssumeRole the role's.
    pub fn start_per_account(upstream: u16, by_account: HashMap<String, u16>) -> Result<AwsProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            started: Instant::now(),
            calls: Mutex::default(),
            trace: Mutex::default(),
            created: Mutex::default(),
            impaired_since: Mutex::default(),
            tokens: Mutex::default(),
            faults: Mutex::default(),
            roles_found: Mutex::default(),
            secrets: Mutex::default(),
            resigned: AtomicU64::default(),
            world: Mutex::default(),
            injected: AtomicU64::default(),
            seq: AtomicU64::default(),
            stop: AtomicBool::default(),
            grants: Mutex::default(),
            pending: Mutex::default(),
            own_policies: AtomicBool::default(),
            sessions: Mutex::default(),
            evaluator: Mutex::default(),
            denials: Mutex::default(),
            prices: crate::prices::fixture(),
            upstreams: by_account,
            dir: crate::ground_dir("proxy")?,
        });
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
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
    }

    /// From now on, every request signed by a session of `role_arn` is
    /// decided by `policies` as AWS decides it (its only permissions), and
    /// refused as AWS refuses. Replaces what the role was granted before.
    pub fn grant(&self, role_arn: &str, policies: Vec<serde_json::Value>) -> Result<()> {
        self.start_evaluator()?;
        lock(&self.shared.grants).insert(role_arn.to_string(), policies);
        lock(&self.shared.pending).remove(role_arn);
        Ok(())
    }

    /// `role_arn` will be granted what `resolve` finds once it finds it (an
    /// installation's policy, once the operator has made the
    /// installation's Secret): until then its sessions' requests wait,
    /// asking `resolve` again (a minute at most, then refused), so none is
    /// let through unjudged. A [`AwsProxy::grant`] ends the wait.
    /// From now on, every request signed by a session of a role neither
    /// granted nor held is decided by that role's own policies, inline and
    /// attached, as moto holds them at the time of the request: what AWS
    /// does. For roles a test makes with the operator's tools (`connect
    /// aws`, its CloudFormation template).
    pub fn judge_by_own_policies(&self) -> Result<()> {
        self.start_evaluator()?;
        self.shared.own_policies.store(true, Ordering::SeqCst);
        Ok(())
    }

    pub fn hold(&self, role_arn: &str, resolve: Resolver) -> Result<()> {
        self.start_evaluator()?;
        if !lock(&self.shared.grants).contains_key(role_arn) {
            lock(&self.shared.pending).insert(role_arn.to_string(), resolve);
        }
        Ok(())
    }

    fn start_evaluator(&self) -> Result<()> {
        let mut evaluator = lock(&self.shared.evaluator);
        if evaluator.is_none() {
            let log = self.shared.dir.path().join("iam-evaluator.log");
            *evaluator = Some(Arc::new(crate::iam_eval::Evaluator::start(&log)?));
        }
        Ok(())
    }

    /// Requests refused on IAM's behalf so far.
    pub fn denials(&self) -> Vec<Denial> {
        lock(&self.shared.denials).clone()
    }

    /// Calls seen per operation (faulted ones included).
    pub fn calls(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.calls).clone()
    }

    pub fn reset_calls(&self) {
        lock(&self.shared.calls).clear();
        lock(&self.shared.trace).clear();
    }

    /// How long the proxy has run (the clock of [`Call`]'s times).
    pub fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// Every call since the start (or the last reset), in arrival order.
    pub fn trace(&self) -> Vec<Call> {
        lock(&self.shared.trace).clone()
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::SeqCst)
    }

    /// The longest of each wait the realism profile drew for what was made
    /// or ended through the proxy: `nat-pending`, `endpoint-pending`,
    /// `peering-provisioning`, `instance-pending`,
    /// `profile-propagation`, `shutting-down`, `nat-deleting` (none without
    /// the profile).
    pub fn longest_waits(&self) -> BTreeMap<&'static str, Duration> {
        let Some(r) = lock(&self.shared.faults).realism.clone() else {
            return BTreeMap::new();
        };
        let world = lock(&self.shared.world);
        let longest = |ids: Vec<&String>, range| {
            ids.into_iter()
                .map(|id| r.state_lasts(range, id))
                .max()
                .unwrap_or_default()
        };
        let born = |prefix: &str| {
            world
                .born
                .keys()
                .filter(|id| id.starts_with(prefix))
                .collect::<Vec<_>>()
        };
        let interface: Vec<&String> = world.interface_endpoints.iter().collect();
        BTreeMap::from([
            ("nat-pending", longest(born("nat-"), realism::NAT_PENDING)),
            (
                "endpoint-pending",
                longest(interface, realism::ENDPOINT_PENDING),
            ),
            (
                "peering-provisioning",
                longest(
                    world.accepted.keys().collect(),
                    realism::PEERING_PROVISIONING,
                ),
            ),
            (
                "instance-pending",
                longest(born("i-"), realism::INSTANCE_PENDING),
            ),
            (
                "profile-propagation",
                longest(
                    world.profiles.keys().collect(),
                    realism::PROFILE_PROPAGATION,
                ),
            ),
            (
                "shutting-down",
                longest(
                    world.terminated.keys().collect(),
                    realism::INSTANCE_SHUTTING_DOWN,
                ),
            ),
            (
                "nat-deleting",
                longest(world.deleting_nats.keys().collect(), realism::NAT_DELETING),
            ),
        ])
    }

    /// What the realism profile drew for each NAT gateway, instance and
    /// instance profile made through the proxy: its ID (or name), when it
    /// was made and when its wait ends (`available`, `running`, usable),
    /// on the clock of [`Call`]'s times. Empty without the profile.
    pub fn waits_drawn(&self) -> Vec<(String, Duration, Duration)> {
        let Some(r) = lock(&self.shared.faults).realism.clone() else {
            return vec![];
        };
        let started = self.shared.started;
        let world = lock(&self.shared.world);
        let at = |t: Instant| t.saturating_duration_since(started);
        let mut drawn: Vec<_> = world
            .born
            .iter()
            .filter_map(|(id, born)| {
                let range = if id.starts_with("nat-") {
                    realism::NAT_PENDING
                } else if id.starts_with("i-") {
                    realism::INSTANCE_PENDING
                } else {
                    return None;
                };
                Some((id.clone(), at(*born), at(*born) + r.state_lasts(range, id)))
            })
            .chain(world.profiles.iter().map(|(name, made)| {
                (
                    name.clone(),
                    at(*made),
                    at(*made) + r.lasts(realism::PROFILE_PROPAGATION, name),
                )
            }))
            .collect();
        drawn.sort_by_key(|(_, _, ends)| *ends);
        drawn
    }

    /// Requests re-signed for moto's IAM enforcement so far.
    pub fn resigned(&self) -> u64 {
        self.shared.resigned.load(Ordering::SeqCst)
    }

    /// Calls the realism profile's rate limits refused so far.
    pub fn throttled(&self) -> u64 {
        lock(&self.shared.world).throttled
    }

    /// The least time the calls admitted so far could have taken under the
    /// realism profile's rate limits ([`crate::realism::RateLimits::bound`]).
    pub fn rate_bound(&self) -> (Duration, Option<(String, crate::realism::BucketKind)>) {
        let Some(r) = lock(&self.shared.faults).realism.clone() else {
            return (Duration::ZERO, None);
        };
        lock(&self.shared.world).limits.bound(&r)
    }

    /// What the realism profile did so far, by what: each error code it
    /// answered, `hidden` items left out of describes, and the states it
    /// showed instead of moto's (`pending`, `shutting-down`, `deleting`).
    pub fn realism_events(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.world).events.clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[derive(Clone)]
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
/// The query protocol's `Action`, or the JSON protocol's target operation.
fn operation(head: &str, body: &[u8]) -> String {
    let target = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-amz-target:"))
        .and_then(|l| l.rsplit_once('.'))
        .map(|(_, op)| op.trim().to_string());
    target
        .or_else(|| param(body, "Action"))
        .unwrap_or_else(|| "?".into())
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
    } else if auth.contains("/servicequotas/") {
        "servicequotas"
    } else if auth.contains("/pricing/") {
        "pricing"
    } else if auth.contains("/sqs/") {
        "sqs"
    } else if auth.contains("/events/") {
        "events"
    } else if auth.contains("/logs/") {
        "logs"
    } else if auth.contains("/kms/") {
        "kms"
    } else {
        "ec2"
    }
}

fn handle(conn: TcpStream, upstream: u16, s: &Shared) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    let accepted = s.started.elapsed();
    let req = read_request(&mut reader)?;
    let start = s.started.elapsed();
    let op = operation(&req.head, &req.body);
    let svc = service(&req.head);
    *lock(&s.calls).entry(op.clone()).or_default() += 1;
    let upstream = upstream_of(s, &req, &op).unwrap_or(upstream);
    let result = answer(&mut conn, upstream, s, &req, &op, svc);
    let key = access_key(&req.head);
    let session = lock(&s.sessions)
        .get(&key)
        .map(|p| p.arn.clone())
        .unwrap_or_default();
    lock(&s.trace).push(Call {
        session,
        access_key: key,
        app: app_name(&req.head),
        accepted,
        operation: op,
        start,
        end: s.started.elapsed(),
    });
    result
}

/// The moto of the account `req` acts in, when that account has its own.
fn upstream_of(s: &Shared, req: &Request, op: &str) -> Option<u16> {
    if s.upstreams.is_empty() {
        return None;
    }
    let account = match lock(&s.sessions).get(&access_key(&req.head)) {
        Some(principal) => principal.account.clone(),
        None if op == "AssumeRole" => {
            let role = param(&req.body, "RoleArn")?;
            role.split(':').nth(4)?.to_string()
        }
        None => return None,
    };
    s.upstreams.get(&account).copied()
}

fn answer(
    conn: &mut TcpStream,
    upstream: u16,
    s: &Shared,
    req: &Request,
    op: &str,
    svc: &str,
) -> Result<()> {
    let faults = lock(&s.faults).clone();
    if !faults.latency.is_zero() {
        std::thread::sleep(faults.latency);
    }
    let now = Instant::now();
    let call = InFlight {
        upstream,
        s,
        req,
        op,
        svc,
        faults: &faults,
    };
    if refused(conn, &call, now)? || served_here(conn, &call)? {
        return Ok(());
    }
    let token = matches!(
        op,
        "RunInstances" | "CreateNatGateway" | "CreateVpcEndpoint"
    )
    .then(|| param(&req.body, "ClientToken"))
    .flatten()
    .map(|t| format!("{op}/{t}"));
    if let Some(first) = token.as_ref().and_then(|t| lock(&s.tokens).get(t).cloned()) {
        conn.write_all(&first)?;
        return Ok(());
    }

    let resigned;
    let req = if faults.resign {
        resigned = resign(upstream, s, req)?;
        &resigned
    } else {
        req
    };
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(req.head.as_bytes())?;
    up.write_all(b"Connection: close\r\n\r\n")?;
    up.write_all(&req.body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    let response = repair(response, svc);
    let was_ok = ok(&response);
    let response = after_moto(&call, req, response, now)?;
    if let Some(t) = token.filter(|_| was_ok) {
        lock(&s.tokens).entry(t).or_insert_with(|| response.clone());
    }
    if let Some(hold) = faults.hold_answers.get(op) {
        std::thread::sleep(*hold);
    }
    conn.write_all(&response)?;
    Ok(())
}

/// One request on its way through the proxy: what every step of the
/// answer reads.
struct InFlight<'a> {
    upstream: u16,
    s: &'a Shared,
    req: &'a Request,
    op: &'a str,
    svc: &'a str,
    faults: &'a Faults,
}

fn ok(response: &[u8]) -> bool {
    response.starts_with(b"HTTP/1.1 200") || response.starts_with(b"HTTP/1.0 200")
}

/// Refuses the request as AWS would (an injected fault, IAM, a trust
/// policy, a role that does not exist, the realism profile, a dependency):
/// `true` when it answered.
fn refused(conn: &mut TcpStream, call: &InFlight<'_>, now: Instant) -> Result<bool> {
    let InFlight {
        upstream,
        s,
        req,
        op,
        svc,
        faults,
    } = *call;
    let applies = faults.operations.is_empty() || faults.operations.iter().any(|o| o == op);
    if applies && faults.error_rate > 0.0 {
        let n = s.seq.fetch_add(1, Ordering::SeqCst);
        if unit_random(n) < faults.error_rate {
            s.injected.fetch_add(1, Ordering::SeqCst);
            inject(conn, svc, n)?;
            return Ok(true);
        }
    }

    if let Some((code, message)) = authorize(upstream, s, req, op, svc) {
        refuse(conn, svc, "403 Forbidden", code, &message)?;
        return Ok(true);
    }
    if op == "AssumeRole" {
        if let Some(message) = judge_trust(upstream, s, req) {
            refuse(conn, svc, "403 Forbidden", "AccessDenied", &message)?;
            return Ok(true);
        }
    }

    if svc == "iam" {
        if let Some(message) = iam_size_refusal(upstream, s, req, op)? {
            refuse(conn, svc, "409 Conflict", "LimitExceeded", &message)?;
            return Ok(true);
        }
    }

    if faults.roles_must_exist && op == "AssumeRole" {
        let role = param(&req.body, "RoleArn").unwrap_or_default();
        let known = lock(&s.roles_found).contains(&role);
        if known || role_exists(upstream, &role)? {
            lock(&s.roles_found).insert(role.clone());
        } else {
            let message =
                format!("User is not authorized to perform: sts:AssumeRole on resource: {role}");
            refuse(conn, svc, "403 Forbidden", "AccessDenied", &message)?;
            return Ok(true);
        }
    }

    let realism = faults.realism.as_ref();
    if let Some(r) = realism {
        if let Some((status, code, message)) = realism_refusal(s, r, req, op, svc, now) {
            lock(&s.world).count(code, 1);
            refuse(conn, svc, status, code, &message)?;
            return Ok(true);
        }
    }

    refused_for_what_depends(conn, call, now)
}

/// Refuses a deletion AWS would refuse while something depends on what it
/// deletes (with the realism profile, instances still shutting down too).
fn refused_for_what_depends(
    conn: &mut TcpStream,
    call: &InFlight<'_>,
    now: Instant,
) -> Result<bool> {
    let InFlight {
        upstream,
        s,
        req,
        op,
        svc,
        faults,
    } = *call;
    let realism = faults.realism.as_ref();
    let draining = realism.is_some_and(|r| r.draining);
    if faults.dependencies || draining {
        let shutting_down = match realism.filter(|r| r.draining) {
            Some(r) => lock(&s.world).shutting_down(r, now),
            None => HashSet::new(),
        };
        if let Some(message) = dependency_violation(upstream, req, op, &shutting_down)? {
            if realism.is_some() {
                lock(&s.world).count("DependencyViolation", 1);
            }
            refuse(
                conn,
                svc,
                "400 Bad Request",
                "DependencyViolation",
                &message,
            )?;
            return Ok(true);
        }
        if op == "DeleteRole" && role_has_policies(upstream, req)? {
            let message = "Cannot delete entity, must detach all policies first.";
            refuse(conn, svc, "409 Conflict", "DeleteConflict", message)?;
            return Ok(true);
        }
        if op == "DeleteNatGateway" {
            let nat = release_nat_interface(upstream, req)?;
            if let (Some(nat), true) = (nat, draining) {
                let id = param(&req.body, "NatGatewayId").unwrap_or_default();
                lock(&s.world).deleting_nats.insert(id, nat);
            }
        }
    }

    Ok(false)
}

/// What the ground serves itself, never asking moto: prices, quotas,
/// capacity refusals. `true` when it answered.
fn served_here(conn: &mut TcpStream, call: &InFlight<'_>) -> Result<bool> {
    let InFlight {
        upstream,
        s,
        req,
        op,
        svc,
        faults,
    } = *call;
    // Moto has no Price List API and quotes one spot price for all: the
    // ground's prices answer.
    if svc == "pricing" {
        let (status, body) = match op {
            "GetProducts" => s.prices.get_products(&req.body),
            _ => (
                "400 Bad Request",
                json_error("UnknownOperationException", "not served by the test ground"),
            ),
        };
        reply(conn, status, "application/x-amz-json-1.1", &body)?;
        return Ok(true);
    }
    if op == "DescribeSpotPriceHistory" {
        let body = s.prices.spot_history(&req.body);
        reply(conn, "200 OK", "text/xml;charset=UTF-8", &body)?;
        return Ok(true);
    }

    if op == "GetServiceQuota" && (faults.quotas_denied || !faults.quotas.is_empty()) {
        if let Some((status, body)) = quota_answer(&req.body, faults) {
            reply(conn, status, "application/x-amz-json-1.1", &body)?;
            return Ok(true);
        }
    }

    if op == "RunInstances" && !faults.refusals.is_empty() {
        if let Some(code) = refusal(upstream, req, &faults.refusals)? {
            let status = if code.starts_with("Insufficient") {
                "500 Internal Server Error"
            } else {
                "400 Bad Request"
            };
            let message = "refused by the test proxy for this offering";
            refuse(conn, svc, status, &code, message)?;
            return Ok(true);
        }
    }

    Ok(false)
}

/// The session tags an AssumeRole asks for (`Tags.member.N.Key`/`Value`).
fn session_tags(body: &[u8]) -> BTreeMap<String, String> {
    (1..)
        .map_while(|n| {
            let key = param(body, &format!("Tags.member.{n}.Key"))?;
            let value = param(body, &format!("Tags.member.{n}.Value")).unwrap_or_default();
            Some((key, value))
        })
        .collect()
}

/// What the credentials STS handed out are: their secret (to re-sign for
/// moto), their session (for IAM's judgement) and their account (the
/// realism profile's rate limits).
fn remember_session(s: &Shared, req: &Request, response: &[u8]) {
    let text = String::from_utf8_lossy(response);
    if let Some((key, account)) = realism::assumed_account(&text) {
        if let Some(secret) = first_element(&text, "SecretAccessKey") {
            lock(&s.secrets).insert(key.clone(), secret);
        }
        let session = first_element(&text, "Arn").unwrap_or_default();
        let role = param(&req.body, "RoleArn").unwrap_or_default();
        lock(&s.sessions).insert(
            key.clone(),
            crate::iam_eval::Principal {
                arn: session,
                role,
                account: account.clone(),
                tags: session_tags(&req.body),
            },
        );
        lock(&s.world).accounts.insert(key, account);
    }
}

/// Moto's answer as AWS would give it: the credentials STS handed out
/// remembered, the realism profile applied, creations noted, instances
/// impaired or held pending as the faults say.
fn after_moto(
    call: &InFlight<'_>,
    req: &Request,
    mut response: Vec<u8>,
    now: Instant,
) -> Result<Vec<u8>> {
    let InFlight {
        upstream,
        s,
        op,
        faults,
        ..
    } = *call;
    let realism = faults.realism.as_ref();
    if op == "AssumeRole" {
        remember_session(s, req, &response);
    }
    let answered = ok(&response);
    if let (true, Some(r)) = (answered, realism) {
        response = realistic(s, r, req, op, response, now);
    }
    if answered {
        match op {
            "RunInstances" | "CreateNatGateway" => {
                let tag = if op == "RunInstances" {
                    "instanceId"
                } else {
                    "natGatewayId"
                };
                let now = Instant::now();
                let text = String::from_utf8_lossy(&response);
                let mut created = lock(&s.created);
                for id in element_values(&text, tag) {
                    created.entry(id).or_insert(now);
                }
            }
            "DescribeInstanceStatus" if !faults.impaired.is_empty() => {
                let mut since = lock(&s.impaired_since);
                for id in &faults.impaired {
                    since
                        .entry(id.clone())
                        .or_insert_with(std::time::SystemTime::now);
                }
                response = impair(&response, &since);
            }
            "DescribeImages" if faults.own_images_as_amazon => {
                response = with_own_images(upstream, req, &response)?;
            }
            "DescribeNatGateways" | "DescribeInstances" if !faults.pending.is_zero() => {
                let still_pending: Vec<String> = lock(&s.created)
                    .iter()
                    .filter(|(_, t)| t.elapsed() < faults.pending)
                    .map(|(id, _)| id.clone())
                    .collect();
                response = hold_pending(&response, op, &still_pending);
            }
            _ => {}
        }
    }
    Ok(response)
}

/// IAM's answer to a request signed by a granted role's session: `None`
/// when every authorization is allowed (or the signer was granted
/// nothing), else the error code and message AWS would answer with. A
/// request the ground cannot model is refused too, and says so.
/// The policies of a session's role as moto holds them now (none when the
/// role is gone: everything is denied).
fn own_policies(
    upstream: u16,
    principal: &crate::iam_eval::Principal,
) -> Result<Vec<serde_json::Value>> {
    let name = principal
        .role
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let query = crate::iam_eval::FactsQuery {
        account: principal.account.clone(),
        region: "us-east-1".into(),
        roles: [name.clone()].into(),
        ..Default::default()
    };
    let mut facts = crate::iam_eval::facts(upstream, &query)?;
    Ok(facts
        .roles
        .remove(&name)
        .map(|r| r.policies)
        .unwrap_or_default())
}

fn authorize(
    upstream: u16,
    s: &Shared,
    req: &Request,
    op: &str,
    svc: &str,
) -> Option<(&'static str, String)> {
    let (key, region) = realism::credential_scope(&req.head)?;
    let principal = lock(&s.sessions).get(&key).cloned()?;
    let code = if svc == "ec2" {
        "UnauthorizedOperation"
    } else {
        "AccessDenied"
    };
    let policies = match granted_policies(upstream, s, &principal, &format!("{svc}:{op}")) {
        Ok(Some(p)) => p,
        Ok(None) => return None,
        Err(message) => return Some((code, message)),
    };
    let evaluator = lock(&s.evaluator).clone()?;
    let asked = Asked {
        upstream,
        svc,
        op,
        req,
        region: &region,
    };
    let decided = first_denial(&evaluator, &asked, &principal, &policies);
    let (denial, answer) = match decided {
        Ok(None) => return None,
        Ok(Some((check, decision))) => {
            let (code, message) = crate::iam_eval::refusal(svc, &principal, &check);
            (
                Denial {
                    operation: op.to_string(),
                    action: check.action,
                    resource: check.resource,
                    principal: principal.arn.clone(),
                    context: decision.context,
                    denied_by: decision.denied_by,
                    ground_error: None,
                },
                (code, message),
            )
        }
        Err(e) => {
            let message = format!("the test ground could not evaluate {svc}:{op}: {e:#}");
            (
                Denial {
                    operation: op.to_string(),
                    action: format!("{svc}:{op}"),
                    resource: String::new(),
                    principal: principal.arn.clone(),
                    context: BTreeMap::new(),
                    denied_by: vec![],
                    ground_error: Some(format!("{e:#}")),
                },
                (code, message),
            )
        }
    };
    lock(&s.denials).push(denial);
    Some(answer)
}

/// A request the evaluator judges.
struct Asked<'a> {
    upstream: u16,
    svc: &'a str,
    op: &'a str,
    req: &'a Request,
    region: &'a str,
}

/// The first of the request's authorizations that `policies` deny, with
/// the decision; `None` when every one is allowed.
fn first_denial(
    evaluator: &crate::iam_eval::Evaluator,
    asked: &Asked<'_>,
    principal: &crate::iam_eval::Principal,
    policies: &[serde_json::Value],
) -> Result<Option<(crate::iam_eval::Check, crate::iam_eval::Decision)>> {
    let Asked {
        upstream,
        svc,
        op,
        req,
        region,
    } = *asked;
    let params = crate::iam_eval::Params::parse(&req.body);
    let touches = crate::iam_eval::plan(svc, op, &params)?;
    if touches.is_empty() {
        return Ok(None);
    }
    let lookup = |q: &crate::iam_eval::FactsQuery| crate::iam_eval::facts(upstream, q);
    let checks = crate::iam_eval::checks(svc, op, &params, principal, region, &touches, &lookup)?;
    let decisions = evaluator.decide(principal, policies, &checks)?;
    Ok(checks
        .into_iter()
        .zip(decisions)
        .find(|(_, d)| !d.allowed()))
}

/// The policies granted to `principal`'s role, waiting up to a minute
/// for a grant still being resolved: `None` when the ground does not judge
/// this role; an error message when it cannot tell.
fn granted_policies(
    upstream: u16,
    s: &Shared,
    principal: &crate::iam_eval::Principal,
    call: &str,
) -> Result<Option<Vec<serde_json::Value>>, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(p) = lock(&s.grants).get(&principal.role).cloned() {
            return Ok(Some(p));
        }
        let Some(resolve) = lock(&s.pending).get(&principal.role).cloned() else {
            if !s.own_policies.load(Ordering::SeqCst) {
                return Ok(None);
            }
            match own_policies(upstream, principal) {
                Ok(p) => return Ok(Some(p)),
                Err(e) => {
                    let message = format!(
                        "the test ground could not read the policies of {}: {e:#}",
                        principal.role
                    );
                    return Err(message);
                }
            }
        };
        match resolve() {
            Ok(Some(p)) => {
                lock(&s.grants).insert(principal.role.clone(), p.clone());
                lock(&s.pending).remove(&principal.role);
                return Ok(Some(p));
            }
            Ok(None) => {}
            Err(e) => {
                return Err(format!(
                    "the test ground could not find the grant of {}: {e:#}",
                    principal.role
                ))
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the test ground held {call} a minute for the grant of {} that never came",
                principal.role
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An AssumeRole judged by the role's trust policy as AWS judges it (moto
/// checks the external ID alone): the refusal's message, if refused. Only
/// where the evaluator runs and moto holds the caller and the role.
fn judge_trust(upstream: u16, s: &Shared, req: &Request) -> Option<String> {
    let evaluator = lock(&s.evaluator).clone()?;
    let key = access_key(&req.head);
    let session = lock(&s.sessions).get(&key).cloned();
    let params = crate::iam_eval::Params::parse(&req.body);
    let denial = |principal: String, action: String, resource: String| Denial {
        operation: "AssumeRole".into(),
        action,
        resource,
        principal,
        context: BTreeMap::new(),
        denied_by: vec![],
        ground_error: None,
    };
    let (denial, message) =
        match crate::iam_eval::judge_assume_role(upstream, &evaluator, session, &key, &params) {
            Ok(None) | Ok(Some((_, None))) => return None,
            Ok(Some((caller, Some((check, decision))))) => {
                let message = format!(
                    "User: {} is not authorized to perform: {} on resource: {}",
                    caller.arn, check.action, check.resource
                );
                let denial = Denial {
                    context: decision.context,
                    denied_by: decision.denied_by,
                    ..denial(caller.arn, check.action, check.resource)
                };
                (denial, message)
            }
            Err(e) => {
                let role = params.get("RoleArn").unwrap_or_default();
                let denial = Denial {
                    ground_error: Some(format!("{e:#}")),
                    ..denial(key, "sts:AssumeRole".into(), role)
                };
                (
                    denial,
                    format!("the test ground could not judge sts:AssumeRole: {e:#}"),
                )
            }
        };
    lock(&s.denials).push(denial);
    Some(message)
}

/// A form value encoded as moto re-encodes the form it parsed before it
/// checks a signature (Python's `urlencode` with `quote_plus`).
fn quote_plus(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A form body as moto re-encodes it.
fn moto_form(body: &[u8]) -> Vec<u8> {
    form_urlencoded::parse(body)
        .map(|(k, v)| format!("{}={}", quote_plus(&k), quote_plus(&v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

/// The app name a request's user agent carries (`app/NAME`), if any.
fn app_name(head: &str) -> String {
    head.lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("user-agent:") || l.starts_with("x-amz-user-agent:")
        })
        .flat_map(|l| l.split_whitespace())
        .find_map(|part| part.strip_prefix("app/"))
        .unwrap_or_default()
        .to_string()
}

/// The access key a request is signed with (SigV4's `Credential=`).
fn access_key(head: &str) -> String {
    head.lines()
        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
        .and_then(|l| l.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .unwrap_or_default()
        .to_string()
}

/// The secret key of `access_key`: learned from an AssumeRole answer, or
/// found in moto's state (an IAM user's key).
fn secret_of(upstream: u16, s: &Shared, access_key: &str) -> Result<Option<String>> {
    if let Some(secret) = lock(&s.secrets).get(access_key) {
        return Ok(Some(secret.clone()));
    }
    let text = moto_state(upstream)?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let state: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let keys = state["iam"]["AccessKey"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let secret = keys
        .iter()
        .find(|k| k["access_key_id"].as_str() == Some(access_key))
        .and_then(|k| k["secret_access_key"].as_str())
        .map(str::to_string);
    if let Some(secret) = &secret {
        lock(&s.secrets).insert(access_key.to_string(), secret.clone());
    }
    Ok(secret)
}

/// `req` with its form body as moto re-encodes it and signed again for
/// that body with the caller's secret; unchanged when the encodings agree,
/// the request is not a signed form, or the secret is unknown.
fn resign(upstream: u16, s: &Shared, req: &Request) -> Result<Request> {
    let is_form = req.head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("content-type:")
            && l.contains("application/x-www-form-urlencoded")
    });
    let body = moto_form(&req.body);
    if !is_form || body == req.body {
        return Ok(req.clone());
    }
    let mut lines = req.head.lines();
    let request_line = lines.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let Some(auth) = header("authorization") else {
        return Ok(req.clone());
    };
    let scope = auth
        .split("Credential=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_default();
    let parts: Vec<&str> = scope.split('/').collect();
    let [key, _, region, service, ..] = parts[..] else {
        return Ok(req.clone());
    };
    let Some(secret) = secret_of(upstream, s, key)? else {
        return Ok(req.clone());
    };
    let length = body.len().to_string();
    let to_sign = headers_to_sign(&auth, &headers, &length);
    let time = header("x-amz-date")
        .and_then(|d| jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", d).ok())
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| std::time::SystemTime::from(z.timestamp()))
        .unwrap_or_else(std::time::SystemTime::now);
    let token = header("x-amz-security-token");
    let credentials = aws_credential_types::Credentials::new(key, secret, token, None, "proxy");
    let path = request_line.split(' ').nth(1).unwrap_or("/");
    let url = format!("http://{}{path}", header("host").unwrap_or_default());
    let signing = Signing {
        region,
        service,
        time,
        url: &url,
    };
    let replaced = sigv4_headers(credentials, &signing, &to_sign, &body)?;
    let mut head = format!("{request_line}\r\n");
    for (k, v) in &headers {
        if k == "content-length" {
            head.push_str(&format!("content-length: {length}\r\n"));
        } else if !replaced.iter().any(|(r, _)| r == k) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    for (k, v) in &replaced {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    s.resigned.fetch_add(1, Ordering::SeqCst);
    Ok(Request { head, body })
}

/// The headers the Authorization names as signed, with the content length
/// the re-signed body has.
fn headers_to_sign(
    auth: &str,
    headers: &[(String, String)],
    length: &str,
) -> Vec<(String, String)> {
    let signed: Vec<&str> = auth
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_default()
        .split(';')
        .collect();
    headers
        .iter()
        .filter(|(k, _)| signed.contains(&k.as_str()))
        .map(|(k, v)| {
            let v = if k == "content-length" { length } else { v };
            (k.clone(), v.to_string())
        })
        .collect()
}

/// Where and when a request is signed.
struct Signing<'a> {
    region: &'a str,
    service: &'a str,
    time: std::time::SystemTime,
    url: &'a str,
}

/// The headers SigV4 adds to a POST of `body` with the headers `to_sign`
/// (the Authorization among them), lower-cased.
fn sigv4_headers(
    credentials: aws_credential_types::Credentials,
    at: &Signing<'_>,
    to_sign: &[(String, String)],
    body: &[u8],
) -> Result<Vec<(String, String)>> {
    let identity = credentials.into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(at.region)
        .name(at.service)
        .time(at.time)
        .settings(aws_sigv4::http_request::SigningSettings::default())
        .build()?
        .into();
    let signable = aws_sigv4::http_request::SignableRequest::new(
        "POST",
        at.url,
        to_sign.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        aws_sigv4::http_request::SignableBody::Bytes(body),
    )?;
    let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)?.into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect())
}

/// An EC2 query sent to moto on the caller's behalf (its Authorization
/// header names the account; moto checks no signature unless enforcing).
fn query_as_caller(upstream: u16, req: &Request, query: &str) -> Result<String> {
    let auth = req
        .head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
        .unwrap_or_default();
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    write!(
        up,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{upstream}\r\n{auth}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{query}",
        query.len()
    )?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// Why AWS would refuse this deletion, if it would.
/// Instances in `shutting_down` still hold their interfaces.
fn dependency_violation(
    upstream: u16,
    req: &Request,
    op: &str,
    shutting_down: &HashSet<String>,
) -> Result<Option<String>> {
    let lookup = |action: &str, filter: &str, value: &str| {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", action)
            .append_pair("Version", "2016-11-15")
            .append_pair("Filter.1.Name", filter)
            .append_pair("Filter.1.Value.1", value)
            .finish();
        query_as_caller(upstream, req, &query)
    };
    Ok(match op {
        "DeleteSubnet" => {
            let id = param(&req.body, "SubnetId").unwrap_or_default();
            let text = lookup("DescribeNetworkInterfaces", "subnet-id", &id)?;
            (live_interfaces(upstream, req, &text, shutting_down)? > 0)
                .then(|| format!("The subnet '{id}' has dependencies and cannot be deleted."))
        }
        "DeleteSecurityGroup" => {
            let id = param(&req.body, "GroupId").unwrap_or_default();
            let text = lookup("DescribeNetworkInterfaces", "group-id", &id)?;
            (live_interfaces(upstream, req, &text, shutting_down)? > 0)
                .then(|| format!("resource {id} has a dependent object"))
        }
        "DeleteVpc" => {
            let id = param(&req.body, "VpcId").unwrap_or_default();
            let text = lookup("DescribeSecurityGroups", "vpc-id", &id)?;
            let others = element_values(&text, "groupName")
                .iter()
                .filter(|n| *n != "default")
                .count();
            (others > 0).then(|| format!("The vpc '{id}' has dependencies and cannot be deleted."))
        }
        _ => None,
    })
}

/// A GetServiceQuota answer from the configured quotas (`None`: moto answers).
fn quota_answer(body: &[u8], faults: &Faults) -> Option<(&'static str, String)> {
    if faults.quotas_denied {
        let body = serde_json::json!({
            "__type": "AccessDeniedException",
            "message": "User is not authorized to perform: servicequotas:GetServiceQuota",
        });
        return Some(("400 Bad Request", body.to_string()));
    }
    let request: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = request.get("QuotaCode")?.as_str()?;
    let value = faults.quotas.get(code)?;
    let service = request.get("ServiceCode")?.as_str()?;
    let body = serde_json::json!({"Quota": {
        "ServiceCode": service,
        "QuotaCode": code,
        "QuotaName": code,
        "Value": value,
        "Unit": "None",
        "Adjustable": true,
        "GlobalQuota": false,
    }});
    Some(("200 OK", body.to_string()))
}

/// The code of the first refusal that matches a RunInstances request.
fn refusal(upstream: u16, req: &Request, refusals: &[Refusal]) -> Result<Option<String>> {
    let instance_type = param(&req.body, "InstanceType").unwrap_or_default();
    let spot = param(&req.body, "InstanceMarketOptions.MarketType").as_deref() == Some("spot");
    let subnet = param(&req.body, "SubnetId").unwrap_or_default();
    let zone = if refusals.iter().any(|r| r.zone.is_some()) {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "DescribeSubnets")
            .append_pair("Version", "2016-11-15")
            .append_pair("SubnetId.1", &subnet)
            .finish();
        first_element(&query_as_caller(upstream, req, &query)?, "availabilityZone")
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(refusals
        .iter()
        .find(|r| {
            r.instance_type.as_ref().is_none_or(|t| *t == instance_type)
                && r.zone.as_ref().is_none_or(|z| *z == zone)
                && r.spot.is_none_or(|s| s == spot)
        })
        .map(|r| r.code.clone()))
}

/// Rewrites the instance status checks of each listed instance to
/// `impaired` in a DescribeInstanceStatus answer, with when it became so.
/// Each item's instance ID precedes its status blocks.
fn impair(response: &[u8], since: &HashMap<String, std::time::SystemTime>) -> Vec<u8> {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return response.to_vec();
    };
    let open = "<instanceId>";
    let mut parts: Vec<String> = body.split(open).map(str::to_string).collect();
    for part in parts.iter_mut().skip(1) {
        let id = part.split("</instanceId>").next().unwrap_or("").trim();
        let Some(at) = since.get(id) else { continue };
        let stamp = jiff::Timestamp::try_from(*at)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string())
            .unwrap_or_default();
        *part = part
            .replacen(
                "<instanceStatus><details><item><name>reachability</name><status>passed</status></item></details><status>ok</status></instanceStatus>",
                &format!("<instanceStatus><details><item><name>reachability</name><status>failed</status><impairedSince>{stamp}</impairedSince></item></details><status>impaired</status></instanceStatus>"),
                1,
            );
    }
    let body = parts.join(open);
    with_body(head, &body)
}

/// Amazon's account, as image owner.
const AMAZON_OWNER: &str = "137112412989";

/// A DescribeImages answer for Amazon's images with the caller's own
/// images that match the same filters added, presented as Amazon's.
fn with_own_images(upstream: u16, req: &Request, response: &[u8]) -> Result<Vec<u8>> {
    let body = String::from_utf8_lossy(&req.body);
    if !body.contains("Owner.1=amazon") {
        return Ok(response.to_vec());
    }
    let own = query_as_caller(
        upstream,
        req,
        &body.replace("Owner.1=amazon", "Owner.1=self"),
    )?;
    let items = own
        .split_once("<imagesSet>")
        .and_then(|(_, rest)| rest.split_once("</imagesSet>"))
        .map(|(items, _)| items.to_string())
        .unwrap_or_default();
    if !items.contains("<item>") {
        return Ok(response.to_vec());
    }
    let caller = first_element(&items, "imageOwnerId").unwrap_or_default();
    let items = items.replace(
        &format!("<imageOwnerId>{caller}</imageOwnerId>"),
        &format!("<imageOwnerId>{AMAZON_OWNER}</imageOwnerId>"),
    );
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Ok(response.to_vec());
    };
    let body = if body.contains("</imagesSet>") {
        body.replacen("</imagesSet>", &format!("{items}</imagesSet>"), 1)
    } else {
        body.replacen(
            "<imagesSet/>",
            &format!("<imagesSet>{items}</imagesSet>"),
            1,
        )
    };
    Ok(with_body(head, &body))
}

/// AWS's limits on policy size, which moto lacks (IAM quotas): a managed
/// policy's document at most 6,144 characters, and a role's inline
/// policies together at most 10,240, whitespace not counted. The message
/// AWS answers a request over them with, if it is.
fn iam_size_refusal(upstream: u16, s: &Shared, req: &Request, op: &str) -> Result<Option<String>> {
    const MANAGED: usize = 6_144;
    const INLINE: usize = 10_240;
    let size = |doc: &str| doc.chars().filter(|c| !c.is_whitespace()).count();
    let doc = param(&req.body, "PolicyDocument").unwrap_or_default();
    if matches!(op, "CreatePolicy" | "CreatePolicyVersion") && size(&doc) > MANAGED {
        return Ok(Some(format!(
            "Cannot exceed quota for PolicySize: {MANAGED}"
        )));
    }
    if op != "PutRolePolicy" {
        return Ok(None);
    }
    let role = param(&req.body, "RoleName").unwrap_or_default();
    let name = param(&req.body, "PolicyName").unwrap_or_default();
    let key = access_key(&req.head);
    let session = lock(&s.sessions).get(&key).map(|p| p.account.clone());
    let account = match session {
        Some(account) => account,
        // Any account moto holds finds keys of every account.
        None => match crate::iam_eval::user_of_key(upstream, "123456789012", &key)? {
            Some(user) => user.account,
            None => return Ok(None),
        },
    };
    let held = crate::iam_eval::facts(
        upstream,
        &crate::iam_eval::FactsQuery {
            account,
            region: "us-east-1".into(),
            roles: [role.clone()].into(),
            ..Default::default()
        },
    )?;
    let others = held.roles.get(&role).map(|r| r.inline.clone());
    let others = others.unwrap_or_default().into_iter();
    let total = size(&doc)
        + others
            .filter(|(n, _)| *n != name)
            .map(|(_, d)| size(&d.to_string()))
            .sum::<usize>();
    Ok((total > INLINE)
        .then(|| format!("Maximum policy size of {INLINE} bytes exceeded for role {role}")))
}

/// Whether the role a DeleteRole names has managed policies attached or
/// inline policies.
fn role_has_policies(upstream: u16, req: &Request) -> Result<bool> {
    let role = param(&req.body, "RoleName").unwrap_or_default();
    let ask = |action: &str| {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", action)
            .append_pair("Version", "2010-05-08")
            .append_pair("RoleName", &role)
            .finish();
        query_as_caller(upstream, req, &query)
    };
    let attached = ask("ListAttachedRolePolicies")?;
    if !element_values(&attached, "PolicyArn").is_empty() {
        return Ok(true);
    }
    let inline = ask("ListRolePolicies")?;
    Ok(!element_values(&inline, "member").is_empty())
}

/// How many interfaces of a DescribeNetworkInterfaces answer AWS would
/// still hold: all but those of instances already terminated (AWS deletes
/// an instance's primary interface with it; moto keeps it) and done
/// shutting down.
fn live_interfaces(
    upstream: u16,
    req: &Request,
    text: &str,
    shutting_down: &HashSet<String>,
) -> Result<usize> {
    // Each interface's elements come in name order, so its attachment
    // stands between the previous interface's ID and its own.
    let mut items: Vec<&str> = text.split("<networkInterfaceId>").collect();
    items.pop();
    let attached: Vec<String> = items
        .iter()
        .filter_map(|item| first_element(item, "instanceId"))
        .collect();
    if attached.is_empty() {
        return Ok(items.len());
    }
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("Action", "DescribeInstances")
        .append_pair("Version", "2016-11-15")
        .append_pair("Filter.1.Name", "instance-state-name")
        .append_pair("Filter.1.Value.1", "terminated");
    for (i, id) in attached.iter().enumerate() {
        query.append_pair(&format!("InstanceId.{}", i + 1), id);
    }
    let gone: Vec<String> = element_values(
        &query_as_caller(upstream, req, &query.finish())?,
        "instanceId",
    )
    .into_iter()
    .filter(|i| !shutting_down.contains(i))
    .collect();
    Ok(items
        .iter()
        .filter(|item| !first_element(item, "instanceId").is_some_and(|i| gone.contains(&i)))
        .count())
}

/// Deletes the network interface of the NAT gateway being deleted; what
/// the gateway holds while it drains (`None`: not found).
fn release_nat_interface(upstream: u16, req: &Request) -> Result<Option<DeletingNat>> {
    let id = param(&req.body, "NatGatewayId").unwrap_or_default();
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", "DescribeNatGateways")
        .append_pair("Version", "2016-11-15")
        .append_pair("NatGatewayId.1", &id)
        .finish();
    let text = query_as_caller(upstream, req, &query)?;
    let nat = first_element(&text, "subnetId").map(|subnet| DeletingNat {
        since: Instant::now(),
        subnet,
        vpc: first_element(&text, "vpcId").unwrap_or_default(),
        allocations: element_values(&text, "allocationId"),
    });
    for eni in element_values(&text, "networkInterfaceId") {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "DeleteNetworkInterface")
            .append_pair("Version", "2016-11-15")
            .append_pair("NetworkInterfaceId", &eni)
            .finish();
        query_as_caller(upstream, req, &query)?;
    }
    Ok(nat)
}

/// moto's state dump (`/moto-api/data.json`), as the HTTP answer.
fn moto_state(upstream: u16) -> Result<String> {
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    write!(
        up,
        "GET /moto-api/data.json HTTP/1.1\r\nHost: 127.0.0.1:{upstream}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// Whether moto holds the IAM role `arn` (from its state dump).
fn role_exists(upstream: u16, arn: &str) -> Result<bool> {
    Ok(moto_state(upstream)?.contains(&format!("\"arn\": \"{arn}\"")))
}

/// A state as DescribeInstances or DescribeNatGateways writes it.
const INSTANCE_RUNNING: &str = "<instanceState><code>16</code><name>running</name></instanceState>";
const INSTANCE_PENDING: &str = "<instanceState><code>0</code><name>pending</name></instanceState>";
const INSTANCE_TERMINATED: &str =
    "<instanceState><code>48</code><name>terminated</name></instanceState>";
const INSTANCE_SHUTTING_DOWN: &str =
    "<instanceState><code>32</code><name>shutting-down</name></instanceState>";
const NAT_AVAILABLE: &str = "<state>available</state>";
const NAT_PENDING: &str = "<state>pending</state>";
const NAT_DELETED: &str = "<state>deleted</state>";
const NAT_DELETING: &str = "<state>deleting</state>";
const ENDPOINT_AVAILABLE: &str = "<state>available</state>";
const ENDPOINT_PENDING: &str = "<state>pending</state>";
const ENDPOINT_DELETED: &str = "<state>deleted</state>";
const ENDPOINT_DELETING: &str = "<state>deleting</state>";
const PEERING_ACTIVE: &str = "<code>active</code>";
const PEERING_PROVISIONING: &str = "<code>provisioning</code>";

/// Rewrites the state of each listed NAT gateway or instance to `pending`
/// in a describe answer.
fn hold_pending(response: &[u8], op: &str, ids: &[String]) -> Vec<u8> {
    if op == "DescribeNatGateways" {
        restate(response, "natGatewayId", ids, NAT_AVAILABLE, NAT_PENDING)
    } else {
        restate(
            response,
            "instanceId",
            ids,
            INSTANCE_RUNNING,
            INSTANCE_PENDING,
        )
    }
}

/// Rewrites `from` to `to` in the item of each listed ID of a describe
/// answer whose state precedes its ID (a peering connection's status comes
/// before its ID): the last `from` before the ID is the item's own.
fn restate_before(response: &[u8], id_tag: &str, ids: &[String], from: &str, to: &str) -> Vec<u8> {
    let mut text = String::from_utf8_lossy(response).into_owned();
    for id in ids {
        let Some(at) = text.find(&format!("<{id_tag}>{id}</{id_tag}>")) else {
            continue;
        };
        if let Some(state) = text[..at].rfind(from) {
            text.replace_range(state..state + from.len(), to);
        }
    }
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return text.into_bytes();
    };
    with_body(head, body)
}

/// Rewrites `from` to `to` in the item of each listed ID of a describe
/// answer. Each item's state follows its ID and precedes the next item's ID.
fn restate(response: &[u8], id_tag: &str, ids: &[String], from: &str, to: &str) -> Vec<u8> {
    if ids.is_empty() {
        return response.to_vec();
    }
    let text = String::from_utf8_lossy(response);
    let Some(split) = text.find("\r\n\r\n") else {
        return response.to_vec();
    };
    let (head, body) = text.split_at(split + 4);
    let open = format!("<{id_tag}>");
    let mut parts: Vec<String> = body.split(&open).map(str::to_string).collect();
    for part in parts.iter_mut().skip(1) {
        let id = part
            .split(&format!("</{id_tag}>"))
            .next()
            .unwrap_or("")
            .trim();
        if ids.iter().any(|p| p == id) {
            *part = part.replacen(from, to, 1);
        }
    }
    let body = parts.join(&open);
    with_body(head, &body)
}

/// How the realism profile refuses a call before moto sees it, if it does:
/// (HTTP status, code, message).
fn realism_refusal(
    s: &Shared,
    r: &Realism,
    req: &Request,
    op: &str,
    svc: &str,
    now: Instant,
) -> Option<(&'static str, &'static str, String)> {
    let mut world = lock(&s.world);
    if r.rate_limits {
        let needs = realism::buckets(svc, op, &req.body);
        let (key, region) = realism::credential_scope(&req.head).unwrap_or_default();
        let account = world.accounts.get(&key).cloned().unwrap_or(key);
        let region = if svc == "iam" {
            "global".into()
        } else {
            region
        };
        if !needs.is_empty() && !world.limits.admit(r, &account, &region, &needs, now) {
            world.throttled += 1;
            return Some(if svc == "ec2" {
                (
                    "503 Service Unavailable",
                    "RequestLimitExceeded",
                    "Request limit exceeded.".into(),
                )
            } else {
                ("400 Bad Request", "Throttling", "Rate exceeded".into())
            });
        }
    }
    if r.iam_propagation {
        if let Some(refused) = too_young(&world, r, req, op, now) {
            return Some(refused);
        }
    }
    if r.consistency && svc == "ec2" {
        let fresh = realism::first_param_value(&req.body, |v| world.fresh(r, v, now));
        let n = s.seq.fetch_add(1, Ordering::SeqCst);
        if let Some(id) = fresh.filter(|_| unit_random(n) < r.not_found_rate) {
            if let Some(code) = realism::not_found_code(&id) {
                let message = format!("The ID '{id}' does not exist");
                return Some(("400 Bad Request", code, message));
            }
        }
    }
    if r.draining {
        if let Some((code, message)) = world.drain_refusal(r, op, &req.body, now) {
            return Some(("400 Bad Request", code, message));
        }
    }
    None
}

/// A refusal of an instance profile or role too new for EC2 or STS to
/// know yet (IAM propagates in seconds).
fn too_young(
    world: &World,
    r: &Realism,
    req: &Request,
    op: &str,
    now: Instant,
) -> Option<(&'static str, &'static str, String)> {
    if op == "RunInstances" {
        let profile = param(&req.body, "IamInstanceProfile.Name").or_else(|| {
            param(&req.body, "IamInstanceProfile.Arn")
                .and_then(|a| a.rsplit('/').next().map(str::to_string))
        });
        let young = profile.as_ref().is_some_and(|p| {
            world.profiles.get(p).is_some_and(|t| {
                now.saturating_duration_since(*t) < r.lasts(realism::PROFILE_PROPAGATION, p)
            })
        });
        if let (true, Some(p)) = (young, profile) {
            let message = format!("Value ({p}) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name");
            return Some(("400 Bad Request", "InvalidParameterValue", message));
        }
    }
    if op == "AssumeRole" {
        let role = param(&req.body, "RoleArn").unwrap_or_default();
        let young = world.roles.get(&role).is_some_and(|t| {
            now.saturating_duration_since(*t) < r.lasts(realism::ROLE_PROPAGATION, &role)
        });
        if young {
            let message =
                format!("User is not authorized to perform: sts:AssumeRole on resource: {role}");
            return Some(("403 Forbidden", "AccessDenied", message));
        }
    }
    None
}

/// Counts the items of a describe answer in each of `states`.
fn count_states(world: &mut World, response: &[u8], states: &[&str]) {
    let text = String::from_utf8_lossy(response);
    for state in states {
        let n = text.matches(&format!("<name>{state}</name>")).count()
            + text.matches(&format!("<state>{state}</state>")).count();
        world.count(state, n as u64);
    }
}

/// A successful answer as AWS would give it at `now`, and what it teaches
/// the profile about AWS's clock.
fn realistic(
    s: &Shared,
    r: &Realism,
    req: &Request,
    op: &str,
    response: Vec<u8>,
    now: Instant,
) -> Vec<u8> {
    let mut world = lock(&s.world);
    let text = String::from_utf8_lossy(&response).into_owned();
    for id in realism::created_ids(op, &text) {
        world.born.entry(id).or_insert(now);
    }
    note(&mut world, req, op, &text, now);
    let mut response = response;
    if r.consistency {
        if let Some((set, id_tag)) = realism::described_items(op) {
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            if body.contains(&format!("<{set}>")) {
                let body = realism::without_items(body, set, id_tag, |id| world.fresh(r, id, now));
                let hidden =
                    element_values(&text, id_tag).len() - element_values(&body, id_tag).len();
                world.count("hidden", hidden as u64);
                response = with_body(head, &body);
            }
        }
    }
    if r.states {
        response = restated(&mut world, r, op, response, now);
    }
    response
}

/// What a call that went through changes in the world the profile keeps:
/// instances terminated, endpoints made and deleted, connections accepted,
/// profiles and roles made.
fn note(world: &mut World, req: &Request, op: &str, text: &str, now: Instant) {
    match op {
        "TerminateInstances" => {
            for (k, id) in form_urlencoded::parse(&req.body) {
                if k.starts_with("InstanceId.") {
                    world.terminated.entry(id.into_owned()).or_insert(now);
                }
            }
        }
        "CreateVpcEndpoint"
            if param(&req.body, "VpcEndpointType").as_deref() == Some("Interface") =>
        {
            world
                .interface_endpoints
                .extend(element_values(text, "vpcEndpointId").into_iter().take(1));
        }
        "DeleteVpcEndpoints" => {
            for (k, id) in form_urlencoded::parse(&req.body) {
                if k.starts_with("VpcEndpointId.") {
                    world
                        .deleted_endpoints
                        .entry(id.into_owned())
                        .or_insert(now);
                }
            }
        }
        "AcceptVpcPeeringConnection" => {
            if let Some(id) = param(&req.body, "VpcPeeringConnectionId") {
                world.accepted.entry(id).or_insert(now);
            }
        }
        "CreateInstanceProfile" | "AddRoleToInstanceProfile" => {
            if let Some(name) = param(&req.body, "InstanceProfileName") {
                world.profiles.insert(name, now);
            }
        }
        "CreateRole" => {
            if let Some(arn) = first_element(text, "Arn") {
                world.roles.insert(arn, now);
            }
        }
        _ => {}
    }
}

/// `response` with the states AWS would show now: instances, NAT gateways
/// and endpoints pending or ending, connections provisioning.
fn restated(world: &mut World, r: &Realism, op: &str, response: Vec<u8>, now: Instant) -> Vec<u8> {
    match op {
        "DescribeInstances" => {
            let pending = world.young(r, "i-", realism::INSTANCE_PENDING, now);
            let ending: Vec<String> = world.shutting_down(r, now).into_iter().collect();
            let response = begun_and_ending(
                &response,
                "instanceId",
                (&pending, INSTANCE_RUNNING, INSTANCE_PENDING),
                (&ending, INSTANCE_TERMINATED, INSTANCE_SHUTTING_DOWN),
            );
            count_states(world, &response, &["pending", "shutting-down"]);
            response
        }
        "DescribeNatGateways" => {
            let pending = world.young(r, "nat-", realism::NAT_PENDING, now);
            let ending: Vec<String> = world
                .deleting(r, now)
                .into_iter()
                .map(|(id, _)| id.clone())
                .collect();
            let response = begun_and_ending(
                &response,
                "natGatewayId",
                (&pending, NAT_AVAILABLE, NAT_PENDING),
                (&ending, NAT_DELETED, NAT_DELETING),
            );
            count_states(world, &response, &["pending", "deleting"]);
            response
        }
        "DescribeVpcEndpoints" => {
            let pending = world.pending_endpoints(r, now);
            let ending = world.deleting_endpoints(r, now);
            let response = begun_and_ending(
                &response,
                "vpcEndpointId",
                (&pending, ENDPOINT_AVAILABLE, ENDPOINT_PENDING),
                (&ending, ENDPOINT_DELETED, ENDPOINT_DELETING),
            );
            count_states(world, &response, &["pending", "deleting"]);
            response
        }
        "DescribeVpcPeeringConnections" => {
            let provisioning = world.provisioning(r, now);
            let response = restate_before(
                &response,
                "vpcPeeringConnectionId",
                &provisioning,
                PEERING_ACTIVE,
                PEERING_PROVISIONING,
            );
            world.count("provisioning", provisioning.len() as u64);
            response
        }
        _ => response,
    }
}

/// Which IDs to show in which state: those, the state moto gives them, the
/// state AWS would show now.
type Restate<'a> = (&'a [String], &'a str, &'a str);

/// `response` with the IDs just made shown still starting, and those being
/// deleted still ending.
fn begun_and_ending(
    response: &[u8],
    tag: &str,
    begun: Restate<'_>,
    ending: Restate<'_>,
) -> Vec<u8> {
    let response = restate(response, tag, begun.0, begun.1, begun.2);
    restate(&response, tag, ending.0, ending.1, ending.2)
}

/// A response of `head` (its Content-Length replaced) and `body`.
fn with_body(head: &str, body: &str) -> Vec<u8> {
    let head: String = head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("content-length:") && !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect();
    format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
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
    refuse(
        conn,
        svc,
        &format!("{status} Error"),
        code,
        "injected by the test proxy",
    )
}

/// Answers AWS's error `code` in `svc`'s format with HTTP `status`.
fn refuse(conn: &mut TcpStream, svc: &str, status: &str, code: &str, message: &str) -> Result<()> {
    if matches!(svc, "pricing" | "servicequotas" | "events" | "logs" | "kms") {
        let body = json_error(code, message);
        return reply(conn, status, "application/x-amz-json-1.1", &body);
    }
    if svc == "sqs" {
        let body = json_error(code, message);
        return reply(conn, status, "application/x-amz-json-1.0", &body);
    }
    reply(conn, status, "text/xml", &error_body(svc, code, message))
}

/// An error of a JSON-protocol service (Price List, Service Quotas).
fn json_error(code: &str, message: &str) -> String {
    serde_json::json!({"__type": code, "message": message}).to_string()
}

/// Answers `body` with HTTP `status` (e.g. `400 Bad Request`) and closes.
fn reply(conn: &mut TcpStream, status: &str, content_type: &str, body: &str) -> Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
    with_body(head, &body)
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
    fn holds_listed_items_pending() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n<natGatewaySet><item><natGatewayId>nat-1</natGatewayId><state>available</state></item><item><natGatewayId>nat-2</natGatewayId><state>available</state></item></natGatewaySet>";
        let out = hold_pending(raw, "DescribeNatGateways", &["nat-2".into()]);
        let out = String::from_utf8(out).unwrap_or_default();
        assert!(out.contains("<natGatewayId>nat-1</natGatewayId><state>available</state>"));
        assert!(out.contains("<natGatewayId>nat-2</natGatewayId><state>pending</state>"));
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert!(out.contains(&format!("Content-Length: {}", body.len())));
        assert_eq!(element_values(&out, "natGatewayId"), vec!["nat-1", "nat-2"]);
    }

    #[test]
    fn a_state_before_its_id_is_the_items_own() {
        let item = |id: &str| {
            format!("<item><status><code>active</code></status><vpcPeeringConnectionId>{id}</vpcPeeringConnectionId></item>")
        };
        let raw = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n<vpcPeeringConnectionSet>{}{}</vpcPeeringConnectionSet>",
            item("pcx-1"),
            item("pcx-2")
        );
        let out = restate_before(
            raw.as_bytes(),
            "vpcPeeringConnectionId",
            &["pcx-2".into()],
            PEERING_ACTIVE,
            PEERING_PROVISIONING,
        );
        let out = String::from_utf8(out).unwrap_or_default();
        assert!(out.contains("<code>active</code></status><vpcPeeringConnectionId>pcx-1<"));
        assert!(out.contains("<code>provisioning</code></status><vpcPeeringConnectionId>pcx-2<"));
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert!(out.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn forms_are_re_encoded_as_moto_re_encodes_them() {
        let sdk = b"Action=CreateTags&Tag.1.Value=ns%2Fname&Description=a%20b%2Bc&K=%7E";
        assert_eq!(
            String::from_utf8(moto_form(sdk)).unwrap_or_default(),
            "Action=CreateTags&Tag.1.Value=ns%2Fname&Description=a+b%2Bc&K=~"
        );
        // A body already in that form is left as it is.
        assert_eq!(
            moto_form(b"Action=DescribeVpcs&Version=2016-11-15"),
            b"Action=DescribeVpcs&Version=2016-11-15"
        );
    }

    #[test]
    fn error_rate_is_close_to_asked() {
        let hits = (0..10_000).filter(|n| unit_random(*n) < 0.2).count();
        assert!((1_700..2_300).contains(&hits), "{hits}");
    }
}
