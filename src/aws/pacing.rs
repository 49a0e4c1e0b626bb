//! Client-side pacing, per AWS account and region, shaped like AWS's own
//! request limits. EC2 throttles each account per region with token
//! buckets (EC2 Developer Guide, "Request throttling for the Amazon EC2
//! API"); IAM throttles each account, lower and unpublished. Every cluster
//! of an account shares the account's buckets here, so a burst of clusters
//! waits its turn on this side instead of spending calls on
//! `RequestLimitExceeded` and the SDK's retries.
//!
//! The defaults are AWS's defaults for EC2: non-mutating actions 100
//! tokens refilled at 20 a second, mutating actions 200 at 5, RunInstances
//! 50 at 5 and its resource bucket (one token per instance) 1000 at 2. IAM:
//! reads 40 at 10, writes 10 at 2 (an estimate). `--aws-pacing` multiplies
//! the refill rates and sizes for an account whose limits AWS raised, or
//! turns pacing off (0).
//!
//! Pacing sits in the HTTP client, so the SDK's retries are paced too. The
//! per-attempt timeout is kept there as well and covers the wait. A call
//! waits at most half of it ([`max_wait`]): one that would wait longer is
//! not sent (reserving nothing), its pass ends as transient and looks
//! again, so one account's backlog never holds a worker for long while
//! other tenants' clusters wait.
//!
//! The client is also where leadership fences AWS writes ([`Fence`]): a
//! write leaves only while the lease is surely held, judged at the moment
//! it would be sent (after any wait for tokens).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

/// A token bucket's shape: how many it holds, how many come back a second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketShape {
    pub capacity: f64,
    pub refill: f64,
}

/// The buckets a call draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    Ec2Read,
    Ec2Write,
    RunInstances,
    /// RunInstances' resource bucket: one token per instance.
    LaunchedInstances,
    IamRead,
    IamWrite,
}

/// The shapes of an account's buckets: AWS's defaults times a factor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    factor: f64,
}

impl Limits {
    /// AWS's default limits, times `factor` (sizes and refill rates).
    pub fn aws(factor: f64) -> Self {
        Limits { factor }
    }

    fn shape(&self, bucket: Bucket) -> BucketShape {
        let (capacity, refill) = match bucket {
            Bucket::Ec2Read => (100.0, 20.0),
            Bucket::Ec2Write => (200.0, 5.0),
            Bucket::RunInstances => (50.0, 5.0),
            Bucket::LaunchedInstances => (1000.0, 2.0),
            Bucket::IamRead => (40.0, 10.0),
            Bucket::IamWrite => (10.0, 2.0),
        };
        BucketShape {
            capacity: capacity * self.factor,
            refill: refill * self.factor,
        }
    }
}

/// What one request of `service`'s `operation` costs, bucket by bucket.
pub fn cost(service: &str, operation: &str, instances: u32) -> Vec<(Bucket, f64)> {
    let reads = operation.starts_with("Describe")
        || operation.starts_with("Get")
        || operation.starts_with("List");
    match (service, reads) {
        ("ec2", _) if operation == "RunInstances" => vec![
            (Bucket::RunInstances, 1.0),
            (Bucket::LaunchedInstances, f64::from(instances.max(1))),
        ],
        ("ec2", true) => vec![(Bucket::Ec2Read, 1.0)],
        ("ec2", false) => vec![(Bucket::Ec2Write, 1.0)],
        ("iam", true) => vec![(Bucket::IamRead, 1.0)],
        ("iam", false) => vec![(Bucket::IamWrite, 1.0)],
        _ => vec![],
    }
}

/// Whether a call writes (creates, changes or deletes) rather than reads.
/// SQS and EventBridge are not paced (their limits are far above what one
/// queue per account and region asks), but their writes are fenced: a
/// message deleted, a queue or rule made or removed. A receive only reads.
pub fn is_write(service: &str, operation: &str) -> bool {
    if matches!(service, "sqs" | "events") {
        let reads = ["Describe", "Get", "List", "Receive"];
        return !reads.iter().any(|r| operation.starts_with(r));
    }
    cost(service, operation, 0).iter().any(|(b, _)| {
        matches!(
            b,
            Bucket::Ec2Write | Bucket::RunInstances | Bucket::IamWrite
        )
    })
}

/// When AWS writes may leave this process. Without leader election it
/// always allows them. With it, writes are allowed only until a time the
/// leadership keeper sets from the Lease (its last renewal plus its
/// duration, less a margin): a leader frozen, cut off or slow to renew
/// stops writing by itself before a successor can take the Lease.
#[derive(Debug)]
pub struct Fence {
    fenced: bool,
    until: Mutex<Option<SystemTime>>,
}

impl Fence {
    /// No leader election: every write may leave.
    pub fn open() -> Arc<Fence> {
        Arc::new(Fence {
            fenced: false,
            until: Mutex::new(None),
        })
    }

    /// Leader election: no write until the Lease is seen held.
    pub fn closed() -> Arc<Fence> {
        Arc::new(Fence {
            fenced: true,
            until: Mutex::new(None),
        })
    }

    /// Writes may leave until `until`.
    pub fn hold_until(&self, until: SystemTime) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
    }

    /// No write may leave any more.
    pub fn close(&self) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether a write may leave at `now`.
    pub fn allows_writes(&self, now: SystemTime) -> bool {
        !self.fenced
            || self
                .until
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|until| now < until)
    }
}

/// A bucket's level; may owe tokens (negative) to callers already waiting.
#[derive(Clone, Debug)]
struct Level {
    tokens: f64,
    at: Instant,
}

impl Level {
    /// Takes `n` tokens now, owing them if need be, and says how long the
    /// caller waits until they are really there.
    fn reserve(&mut self, shape: BucketShape, n: f64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * shape.refill).min(shape.capacity);
        self.at = now;
        self.tokens -= n;
        if self.tokens >= 0.0 || shape.refill <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / shape.refill)
        }
    }
}

/// One account's buckets, per region (IAM's region is `global`).
#[derive(Debug)]
pub struct Pacer {
    limits: Limits,
    levels: Mutex<HashMap<(String, Bucket), Level>>,
}

impl Pacer {
    pub fn new(limits: Limits) -> Self {
        Pacer {
            limits,
            levels: Mutex::default(),
        }
    }

    /// Reserves what a request costs in `region`; how long it waits.
    pub fn reserve(&self, region: &str, cost: &[(Bucket, f64)], now: Instant) -> Duration {
        self.reserve_within(region, cost, now, Duration::MAX)
            .unwrap_or_else(|wait| wait)
    }

    /// Reserves what a request costs in `region` when it can leave within
    /// `bound`: `Ok(wait)`. Otherwise nothing is reserved (those waiting
    /// already are not pushed back) and `Err` says how long it would have
    /// waited.
    pub fn reserve_within(
        &self,
        region: &str,
        cost: &[(Bucket, f64)],
        now: Instant,
        bound: Duration,
    ) -> Result<Duration, Duration> {
        let mut levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
        let mut taken = Vec::with_capacity(cost.len());
        for (bucket, n) in cost {
            let shape = self.limits.shape(*bucket);
            let mut level = levels
                .get(&(region.to_string(), *bucket))
                .cloned()
                .unwrap_or(Level {
                    tokens: shape.capacity,
                    at: now,
                });
            let wait = level.reserve(shape, *n, now);
            taken.push((*bucket, level, wait));
        }
        let wait = taken.iter().map(|(_, _, w)| *w).max().unwrap_or_default();
        if wait > bound {
            return Err(wait);
        }
        for (bucket, level, _) in taken {
            levels.insert((region.to_string(), bucket), level);
        }
        Ok(wait)
    }
}

/// The longest a call waits for its account's tokens: half its attempt
/// timeout, which covers the wait (so at least half is left for AWS to
/// answer). A call that would wait longer is not sent.
pub fn max_wait(attempt_timeout: Duration) -> Duration {
    attempt_timeout / 2
}

/// Told of each wait: the service and how long.
pub type OnWait = Arc<dyn Fn(&str, Duration) + Send + Sync>;

/// The operator's pacers, one per AWS account, and the HTTP client they
/// wrap.
pub struct Pacing {
    limits: Option<Limits>,
    inner: SharedHttpClient,
    attempt_timeout: Duration,
    on_wait: OnWait,
    fence: Arc<Fence>,
    accounts: Mutex<HashMap<String, Arc<Pacer>>>,
}

impl std::fmt::Debug for Pacing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacing")
            .field("limits", &self.limits)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}

impl Pacing {
    /// `limits` None: no pacing (the attempt timeout still holds). Writes
    /// leave only while `fence` allows them.
    pub fn new(
        limits: Option<Limits>,
        inner: SharedHttpClient,
        attempt_timeout: Duration,
        on_wait: OnWait,
        fence: Arc<Fence>,
    ) -> Self {
        Pacing {
            limits,
            inner,
            attempt_timeout,
            on_wait,
            fence,
            accounts: Mutex::default(),
        }
    }

    fn client(&self, pacer: Option<Arc<Pacer>>) -> SharedHttpClient {
        SharedHttpClient::new(PacedClient {
            inner: self.inner.clone(),
            pacer,
            attempt_timeout: self.attempt_timeout,
            on_wait: self.on_wait.clone(),
            fence: self.fence.clone(),
        })
    }

    /// An HTTP client for calls made as no account in particular (the
    /// first STS calls of a resolution): timed out, not paced.
    pub fn unpaced(&self) -> SharedHttpClient {
        self.client(None)
    }

    /// `config` with its calls paced by account `account_id`'s buckets.
    pub fn paced(&self, account_id: &str, config: &SdkConfig) -> SdkConfig {
        let pacer = self.limits.as_ref().map(|limits| {
            self.accounts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(account_id.to_string())
                .or_insert_with(|| Arc::new(Pacer::new(*limits)))
                .clone()
        });
        config.to_builder().http_client(self.client(pacer)).build()
    }
}

struct PacedClient {
    inner: SharedHttpClient,
    pacer: Option<Arc<Pacer>>,
    attempt_timeout: Duration,
    on_wait: OnWait,
    fence: Arc<Fence>,
}

impl std::fmt::Debug for PacedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PacedClient")
    }
}

impl HttpClient for PacedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(PacedConnector {
            inner: self.inner.http_connector(settings, components),
            pacer: self.pacer.clone(),
            attempt_timeout: self.attempt_timeout,
            on_wait: self.on_wait.clone(),
            fence: self.fence.clone(),
        })
    }
}

struct PacedConnector {
    inner: SharedHttpConnector,
    pacer: Option<Arc<Pacer>>,
    attempt_timeout: Duration,
    on_wait: OnWait,
    fence: Arc<Fence>,
}

impl std::fmt::Debug for PacedConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PacedConnector")
    }
}

/// The service and region of a signed request's credential scope
/// (`Credential=KEY/DATE/REGION/SERVICE/aws4_request`).
fn scope(request: &HttpRequest) -> Option<(String, String)> {
    let auth = request.headers().get("authorization")?;
    let scope = auth.split("Credential=").nth(1)?.split([',', ' ']).next()?;
    let mut parts = scope.split('/').skip(2);
    let region = parts.next()?.to_string();
    let service = parts.next()?.to_string();
    Some((service, region))
}

/// The operation of a query-protocol request (its `Action`) or of a JSON
/// one (its target), and the instances a RunInstances asks for.
fn operation(request: &HttpRequest) -> (String, u32) {
    if let Some(target) = request.headers().get("x-amz-target") {
        let op = target.rsplit('.').next().unwrap_or_default();
        return (op.to_string(), 0);
    }
    let body = request.body().bytes().unwrap_or_default();
    let mut op = String::new();
    let mut count = 0;
    for (k, v) in form_urlencoded::parse(body) {
        match k.as_ref() {
            "Action" => op = v.into_owned(),
            "MaxCount" => count = v.parse().unwrap_or(1),
            _ => {}
        }
    }
    (op, count)
}

impl HttpConnector for PacedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        // Read from the request only when pacing or the fence needs it.
        let looked_at = self.pacer.is_some() || self.fence.fenced;
        let scoped = looked_at.then(|| scope(&request)).flatten();
        let (op, instances) = match scoped {
            Some(_) => operation(&request),
            None => (String::new(), 0),
        };
        let write = scoped
            .as_ref()
            .is_some_and(|(service, _)| is_write(service, &op));
        let timeout = self.attempt_timeout;
        let wait = match (&self.pacer, &scoped) {
            (Some(pacer), Some((service, region))) => {
                let region = if service == "iam" { "global" } else { region };
                let cost = cost(service, &op, instances);
                match pacer.reserve_within(region, &cost, Instant::now(), max_wait(timeout)) {
                    Ok(wait) => {
                        if !wait.is_zero() {
                            (self.on_wait)(service, wait);
                        }
                        wait
                    }
                    // Not sent: the pass ends (a transient error) and its
                    // worker serves another cluster until the budget is back.
                    Err(wait) => {
                        let message = format!(
                            "{op} not sent: the account's {service} request budget in {region} is spent for {}s, longer than a call may wait ({}s); looked at again later",
                            wait.as_secs(),
                            max_wait(timeout).as_secs()
                        );
                        return HttpConnectorFuture::ready(Err(ConnectorError::other(
                            message.into(),
                            None,
                        )));
                    }
                }
            }
            _ => Duration::ZERO,
        };
        let inner = self.inner.clone();
        let fence = self.fence.clone();
        HttpConnectorFuture::new(async move {
            // The attempt's time covers its wait for tokens.
            let started = tokio::time::Instant::now();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let timeout = timeout.saturating_sub(started.elapsed());
            // Judged now, as the request would leave: not when it was queued.
            if write && !fence.allows_writes(SystemTime::now()) {
                tracing::warn!(operation = %op, "AWS write not sent: leadership is not surely held");
                return Err(ConnectorError::other(
                    format!("{op} not sent: this process does not surely hold the leader Lease")
                        .into(),
                    None,
                ));
            }
            match tokio::time::timeout(timeout, inner.call(request)).await {
                Ok(answer) => answer,
                Err(_) => {
                    // Said where it happens: the SDK retries it silently.
                    tracing::warn!(operation = %op, ?timeout, "AWS call unanswered: attempt timed out");
                    Err(ConnectorError::timeout(
                        format!("no answer within {timeout:?}").into(),
                    ))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_lets_writes_through_only_until_its_time() {
        let now = SystemTime::now();
        assert!(Fence::open().allows_writes(now));
        let fence = Fence::closed();
        assert!(
            !fence.allows_writes(now),
            "closed until the Lease is seen held"
        );
        fence.hold_until(now + Duration::from_secs(5));
        assert!(fence.allows_writes(now));
        assert!(!fence.allows_writes(now + Duration::from_secs(5)));
        fence.close();
        assert!(!fence.allows_writes(now));
        assert!(is_write("ec2", "RunInstances") && is_write("iam", "CreateRole"));
        assert!(!is_write("ec2", "DescribeVpcs") && !is_write("sts", "AssumeRole"));
    }

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn a_full_bucket_admits_its_size_then_paces_at_its_refill() {
        let pacer = Pacer::new(Limits::aws(1.0));
        let now = Instant::now();
        let write = cost("ec2", "CreateVpc", 0);
        for _ in 0..200 {
            assert_eq!(pacer.reserve("us-east-1", &write, now), Duration::ZERO);
        }
        // Then one every 200 ms (5 a second), each behind the last.
        assert_eq!(ms(pacer.reserve("us-east-1", &write, now)), 200);
        assert_eq!(ms(pacer.reserve("us-east-1", &write, now)), 400);
        // A second later five more tokens came: the debt shrank by five.
        let later = now + Duration::from_secs(1);
        assert_eq!(ms(pacer.reserve("us-east-1", &write, later)), 0);
    }

    #[test]
    fn regions_and_kinds_have_their_own_buckets() {
        let pacer = Pacer::new(Limits::aws(1.0));
        let now = Instant::now();
        let write = cost("ec2", "CreateSubnet", 0);
        for _ in 0..200 {
            pacer.reserve("us-east-1", &write, now);
        }
        assert!(pacer.reserve("us-east-1", &write, now) > Duration::ZERO);
        assert_eq!(pacer.reserve("eu-west-1", &write, now), Duration::ZERO);
        let read = cost("ec2", "DescribeVpcs", 0);
        assert_eq!(pacer.reserve("us-east-1", &read, now), Duration::ZERO);
    }

    #[test]
    fn launches_wait_for_the_slower_of_their_buckets() {
        let pacer = Pacer::new(Limits::aws(1.0));
        let now = Instant::now();
        // 1000 instances at once empty the resource bucket; the next
        // launch waits for its instance (2 a second), not its request.
        assert_eq!(
            pacer.reserve("r", &cost("ec2", "RunInstances", 1000), now),
            Duration::ZERO
        );
        assert_eq!(
            ms(pacer.reserve("r", &cost("ec2", "RunInstances", 1), now)),
            500
        );
    }

    #[test]
    fn a_wait_past_the_bound_reserves_nothing() {
        let pacer = Pacer::new(Limits::aws(1.0));
        let now = Instant::now();
        let bound = Duration::from_secs(10);
        // 1000 instances empty the resource bucket; 500 more would wait
        // 250 s: refused, and the bucket is as it was.
        let launch = |n| cost("ec2", "RunInstances", n);
        assert_eq!(
            pacer.reserve_within("r", &launch(1000), now, bound),
            Ok(Duration::ZERO)
        );
        let refused = pacer.reserve_within("r", &launch(500), now, bound);
        assert_eq!(refused.map_err(ms), Err(250_000));
        // Within the bound (10 s: 20 instances) the next one still goes.
        assert_eq!(
            pacer.reserve_within("r", &launch(20), now, bound).map(ms),
            Ok(10_000)
        );
        assert!(pacer.reserve_within("r", &launch(1), now, bound).is_err());
        // Later, the refill lets it through.
        let later = now + Duration::from_secs(20);
        assert!(pacer.reserve_within("r", &launch(20), later, bound).is_ok());
    }

    #[test]
    fn costs_follow_the_services_categories() {
        assert_eq!(
            cost("ec2", "DescribeInstances", 0),
            vec![(Bucket::Ec2Read, 1.0)]
        );
        assert_eq!(
            cost("ec2", "TerminateInstances", 0),
            vec![(Bucket::Ec2Write, 1.0)]
        );
        assert_eq!(cost("iam", "GetRole", 0), vec![(Bucket::IamRead, 1.0)]);
        assert_eq!(cost("iam", "CreateRole", 0), vec![(Bucket::IamWrite, 1.0)]);
        assert!(cost("sts", "AssumeRole", 0).is_empty());
        assert!(cost("servicequotas", "GetServiceQuota", 0).is_empty());
        assert!(cost("sqs", "DeleteMessage", 0).is_empty());
    }

    #[test]
    fn the_queue_and_rules_writes_are_writes_and_their_reads_not() {
        for (service, op, write) in [
            ("sqs", "DeleteMessage", true),
            ("sqs", "CreateQueue", true),
            ("sqs", "SetQueueAttributes", true),
            ("sqs", "ReceiveMessage", false),
            ("sqs", "GetQueueAttributes", false),
            ("sqs", "ListQueueTags", false),
            ("events", "PutRule", true),
            ("events", "PutTargets", true),
            ("events", "DeleteRule", true),
            ("events", "ListRules", false),
            ("events", "DescribeRule", false),
            ("ec2", "RunInstances", true),
            ("ec2", "DescribeInstances", false),
        ] {
            assert_eq!(is_write(service, op), write, "{service}:{op}");
        }
    }

    #[test]
    fn a_raised_limit_scales_sizes_and_rates() {
        let pacer = Pacer::new(Limits::aws(2.0));
        let now = Instant::now();
        let write = cost("iam", "CreateRole", 0);
        for _ in 0..20 {
            assert_eq!(pacer.reserve("global", &write, now), Duration::ZERO);
        }
        assert_eq!(ms(pacer.reserve("global", &write, now)), 250);
    }
}
