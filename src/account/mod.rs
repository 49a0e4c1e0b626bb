//! The CloudAccount controller and the per-account credential cache that
//! the ComputeCluster controller draws on.

pub mod credentials;
pub mod iam_policy;
pub mod in_use;
pub mod limits;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_config::SdkConfig;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::conditions::{self, reason, Desired, DELETING};
use crate::api::{AccountPhase, CloudAccount, CloudAccountStatus, ComputeCluster};
use crate::aws::pacing::Pacing;
use crate::context::{apply_status, run_controller, Context};
use crate::installation::Installation;
use crate::leadership::Shutdown;
use crate::metrics::Metrics;
use crate::outcome::{self, Outcome};
use crate::Error;
use credentials::{
    resolve, resolve_with_principal, AccountError, Ambient, ResolvedAccount, REFRESH_BEFORE_EXPIRY,
};
use in_use::IN_USE_FINALIZER;

pub const CONTROLLER: &str = "cloudaccount";

#[derive(Clone)]
struct Cached {
    generation: Option<i64>,
    resolved: ResolvedAccount,
    /// When it was verified; `None` once something it was read from changed.
    verified_at: Option<Instant>,
    /// The status the controller wrote from this verification. A reconcile
    /// within the interval writes it again, not the status of the object
    /// it was handed: that may predate the write (the watch not caught up),
    /// and applying it would take the verification back out of the status.
    status: Option<CloudAccountStatus>,
}

impl Cached {
    fn unexpired(&self) -> bool {
        self.resolved
            .expires
            .is_none_or(|t| t > SystemTime::now() + REFRESH_BEFORE_EXPIRY)
    }
}

/// Verified identities per CloudAccount. The CloudAccount controller
/// replaces an entry on every verification (so a changed Secret or spec takes
/// effect at once); clusters read it, re-resolving when it is missing, stale
/// or near expiry.
pub struct Accounts {
    client: Client,
    aws: SdkConfig,
    metrics: Metrics,
    /// Every resolved identity's calls are paced by its AWS account.
    pacing: Arc<Pacing>,
    /// Keys the external IDs of the operator's own identity.
    installation: Installation,
    /// Namespaces whose accounts may start from the operator's identity.
    ambient_namespaces: Vec<String>,
    cache: Mutex<HashMap<(String, String), Cached>>,
}

impl Accounts {
    pub fn new(ctx: &Context, pacing: Arc<Pacing>) -> Self {
        Accounts {
            client: ctx.client.clone(),
            aws: ctx.aws.clone(),
            metrics: ctx.metrics.clone(),
            pacing,
            installation: ctx.installation.clone(),
            ambient_namespaces: ctx.settings.ambient_namespaces.clone(),
            cache: Mutex::default(),
        }
    }

    /// The rules of lending the operator's own identity.
    pub fn ambient(&self) -> Ambient<'_> {
        Ambient::Operator {
            installation: &self.installation,
            namespaces: &self.ambient_namespaces,
        }
    }

    fn key(account: &CloudAccount) -> (String, String) {
        (account.namespace().unwrap_or_default(), account.name_any())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves the account afresh, with the principal its role must trust
    /// (for its status), and caches the result. A failure drops the entry,
    /// unless `keep_on_failure` (an account being deleted keeps its last
    /// verified credentials for its clusters' cleanup).
    pub async fn verify(
        &self,
        account: &CloudAccount,
        keep_on_failure: bool,
    ) -> (Option<String>, Result<ResolvedAccount, AccountError>) {
        let (principal, result) = resolve_with_principal(
            &self.client,
            &self.aws,
            &self.metrics,
            account,
            &self.ambient(),
        )
        .await;
        (principal, self.remember(account, keep_on_failure, result))
    }

    /// The account's identity for a cluster's use.
    pub async fn get(&self, account: &CloudAccount) -> Result<ResolvedAccount, AccountError> {
        if let Some(c) = self.cache().get(&Self::key(account)) {
            if c.generation == account.meta().generation && c.unexpired() {
                return Ok(c.resolved.clone());
            }
        }
        let result = resolve(
            &self.client,
            &self.aws,
            &self.metrics,
            account,
            &self.ambient(),
        )
        .await;
        self.remember(account, false, result)
    }

    /// A resolution's identity paced by its AWS account, and cached.
    fn remember(
        &self,
        account: &CloudAccount,
        keep_on_failure: bool,
        result: Result<ResolvedAccount, AccountError>,
    ) -> Result<ResolvedAccount, AccountError> {
        let result = result.map(|mut resolved| {
            resolved.config = self.pacing.paced(&resolved.account_id, &resolved.config);
            resolved
        });
        let mut cache = self.cache();
        match &result {
            Ok(resolved) => {
                cache.insert(
                    Self::key(account),
                    Cached {
                        generation: account.meta().generation,
                        resolved: resolved.clone(),
                        verified_at: Some(Instant::now()),
                        status: None,
                    },
                );
            }
            Err(_) if keep_on_failure => {}
            Err(_) => {
                cache.remove(&Self::key(account));
            }
        }
        result
    }

    /// The last verified identity while it has not expired, whatever
    /// happened since (for the cleanup of an account's clusters).
    pub fn last_verified(&self, account: &CloudAccount) -> Option<ResolvedAccount> {
        self.cache()
            .get(&Self::key(account))
            .filter(|c| c.unexpired())
            .map(|c| c.resolved.clone())
    }

    /// How long the cached verification of `account` stays good for, at most
    /// `interval` after it was made, and the status written from it; `None`
    /// when it is due now.
    pub fn fresh_for(
        &self,
        account: &CloudAccount,
        interval: Duration,
    ) -> Option<(Duration, CloudAccountStatus)> {
        let cache = self.cache();
        let c = cache.get(&Self::key(account))?;
        if c.generation != account.meta().generation || !c.unexpired() {
            return None;
        }
        let mut left = interval.checked_sub(c.verified_at?.elapsed())?;
        if let Some(until) = c.resolved.refresh_in() {
            left = left.min(until);
        }
        let status = c.status.clone()?;
        (!left.is_zero()).then_some((left, status))
    }

    /// The status written for `account` from its cached verification.
    fn wrote(&self, account: &CloudAccount, status: &CloudAccountStatus) {
        if let Some(c) = self.cache().get_mut(&Self::key(account)) {
            c.status = Some(status.clone());
        }
    }

    /// Something the verification read changed (its Secret): the next
    /// reconcile verifies again. Clusters keep the identity until then.
    pub fn invalidate(&self, namespace: &str, name: &str) {
        if let Some(c) = self
            .cache()
            .get_mut(&(namespace.to_string(), name.to_string()))
        {
            c.verified_at = None;
        }
    }

    pub fn forget(&self, account: &CloudAccount) {
        self.cache().remove(&Self::key(account));
    }
}

/// What the CloudAccount controller's reconciles share besides [`Context`].
pub struct AccountContext {
    pub ctx: Arc<Context>,
    pub accounts: Arc<Accounts>,
    /// Every ComputeCluster in scope: who uses which account.
    clusters: Store<ComputeCluster>,
}

/// The part of a ComputeCluster that decides whether it uses an account:
/// the account it names, and the one it reached AWS through.
#[derive(Clone, PartialEq)]
struct AccountUse {
    account: ObjectRef<CloudAccount>,
    recorded: Option<ObjectRef<CloudAccount>>,
    /// Its nodes (`running/desired`): what it holds changed, so the
    /// account's `status.usage` is written again.
    nodes: Option<String>,
}

impl AccountUse {
    fn of(cc: &ComputeCluster) -> Self {
        let (ns, name) = cc.account_key();
        AccountUse {
            account: ObjectRef::new(&name).within(&ns),
            recorded: cc
                .recorded_account()
                .map(|r| ObjectRef::new(&r.name).within(&r.namespace)),
            nodes: cc.status.as_ref().and_then(|s| s.nodes.clone()),
        }
    }
}

/// Runs the CloudAccount controller until shutdown.
pub async fn run(ctx: Arc<Context>, accounts: Arc<Accounts>, shutdown: Shutdown) {
    let account_api = ctx.api::<CloudAccount>();
    let (store, changes) = crate::triggers::user_changes(account_api);
    // A cluster that starts or stops using an account (created, deleted,
    // pointed elsewhere, or its first AWS call) reconciles that account.
    let (clusters, writer) = reflector::store();
    let cluster_events = watcher(
        ctx.api::<ComputeCluster>(),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .reflect(writer);
    let usage =
        crate::triggers::key_changes(cluster_events, AccountUse::of).flat_map(|(old, new)| {
            let mut refs: Vec<ObjectRef<CloudAccount>> = old
                .into_iter()
                .chain(new)
                .flat_map(|u| std::iter::once(u.account).chain(u.recorded))
                .collect();
            refs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            refs.dedup();
            futures::stream::iter(refs)
        });
    let secret_accounts = accounts.clone();
    let controller = Controller::for_stream(changes, store.clone())
        .watches_stream(
            crate::triggers::secret_changes(
                ctx.api::<PartialObjectMeta<Secret>>(),
                ctx.secret_reads.clone(),
            ),
            move |secret: PartialObjectMeta<Secret>| {
                let ns = secret.namespace();
                let name = secret.name_any();
                let users: Vec<_> = store
                    .state()
                    .into_iter()
                    .filter(|a| {
                        a.namespace() == ns
                            && a.spec
                                .credentials_secret_ref
                                .as_ref()
                                .is_some_and(|r| r.name == name)
                    })
                    .map(|a| ObjectRef::from_obj(&*a))
                    .collect();
                for a in &users {
                    secret_accounts.invalidate(a.namespace.as_deref().unwrap_or_default(), &a.name);
                }
                users
            },
        )
        .reconcile_on(usage);
    let concurrency = ctx.settings.concurrency;
    let actx = Arc::new(AccountContext {
        ctx,
        accounts,
        clusters,
    });
    run_controller(
        controller,
        concurrency,
        shutdown,
        reconcile,
        error_policy,
        actx,
    )
    .await;
}

async fn reconcile(account: Arc<CloudAccount>, actx: Arc<AccountContext>) -> Result<Action, Error> {
    let ctx = &actx.ctx;
    let started = Instant::now();
    let namespace = account.namespace().unwrap_or_default();
    let name = account.name_any();
    let api: Api<CloudAccount> = Api::namespaced(ctx.client.clone(), &namespace);
    let deleting = account.meta().deletion_timestamp.is_some();

    let users = users_of(&actx, &account).await?;
    if users.is_empty() {
        release(ctx, &account).await?;
        if deleting {
            tracing::info!(%namespace, %name, "no ComputeCluster uses the account: deleted");
            actx.accounts.forget(&account);
            ctx.reset_backoff(&account.uid().unwrap_or_default());
            return Ok(Action::await_change());
        }
    } else {
        protect(ctx, &account).await?;
    }

    let interval = ctx.settings.account_verify_interval;
    let (mut status, action, event) = match actx.accounts.fresh_for(&account, interval) {
        // Verified recently, and nothing it was read from changed since
        // (the trigger was a cluster starting or stopping to use it).
        Some((left, written)) => (
            CloudAccountStatus {
                observed_generation: account.meta().generation,
                ..written
            },
            Action::requeue(left),
            None,
        ),
        None => verify(&actx, &account, deleting).await,
    };
    status.clusters = Some(i32::try_from(users.len()).unwrap_or(i32::MAX));
    let usage = ctx.ledger.usage(&account.uid().unwrap_or_default());
    status.usage = Some(usage.clone());
    ctx.metrics.account_usage(
        &format!("{namespace}/{name}"),
        usage,
        account.spec.limits.as_ref(),
    );
    let deletion = deletion_condition(deleting, &users);
    status.conditions = with_deletion(status.conditions, &deletion, account.meta().generation);
    let previous = account.status.clone().unwrap_or_default();
    if status != previous {
        apply_status(&api, &name, &status).await?;
    }
    actx.accounts.wrote(&account, &status);
    let event = event.or_else(|| {
        let was_waiting = conditions::is_true(&previous.conditions, DELETING);
        deletion
            .filter(|_| !was_waiting)
            .map(|d| (false, reason::IN_USE, d.message))
    });
    if let Some((warning, reason, note)) = event {
        ctx.publish(&account.object_ref(&()), warning, reason, note)
            .await;
    }
    ctx.metrics.reconciled(CONTROLLER, started.elapsed());
    Ok(action)
}

/// `conditions` with the `Deleting` condition set, or gone when the
/// account is not waiting to be deleted.
fn with_deletion(
    conditions: Vec<Condition>,
    deletion: &Option<Desired>,
    generation: Option<i64>,
) -> Vec<Condition> {
    match deletion {
        Some(d) => conditions::set(&conditions, d, generation, &conditions::now()),
        None => conditions
            .into_iter()
            .filter(|c| c.type_ != DELETING)
            .collect(),
    }
}

/// Waits until the ComputeCluster store has its first list. The store's
/// readiness wakes only the last of several waiters (a one-shot channel
/// keeps one waker), so reconciles that wait at once, as at start-up, would
/// hang but for one: each waits in short rounds and looks again.
async fn clusters_ready(clusters: &Store<ComputeCluster>) -> Result<(), Error> {
    loop {
        match tokio::time::timeout(Duration::from_millis(100), clusters.wait_until_ready()).await {
            Ok(ready) => {
                return ready.map_err(|_| Error::WatchStopped {
                    watched: "ComputeClusters",
                })
            }
            Err(_) => continue,
        }
    }
}

/// The clusters using `account`. The store may lag behind a cluster just
/// created, so an answer of none is confirmed by a fresh list before the
/// account is let go.
async fn users_of(actx: &AccountContext, account: &CloudAccount) -> Result<Vec<String>, Error> {
    clusters_ready(&actx.clusters).await?;
    let users = in_use::users(account, actx.clusters.state().iter().map(|c| &**c));
    let may_let_go = account.meta().deletion_timestamp.is_some() || in_use::held(account);
    if !users.is_empty() || !may_let_go {
        return Ok(users);
    }
    let listed = actx
        .ctx
        .api::<ComputeCluster>()
        .list(&ListParams::default())
        .await?;
    Ok(in_use::users(account, &listed.items))
}

/// Keeps a used account and its credentials Secret from being deleted.
async fn protect(ctx: &Context, account: &CloudAccount) -> Result<(), Error> {
    let namespace = account.namespace().unwrap_or_default();
    let accounts: Api<CloudAccount> = Api::namespaced(ctx.client.clone(), &namespace);
    in_use::add_finalizer(&accounts, account, IN_USE_FINALIZER).await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Some(r) = &account.spec.credentials_secret_ref {
        in_use::protect_secret(&secrets, &r.name).await?;
    }
    // A Secret the spec no longer names is let go.
    let spec_changed =
        account.status.as_ref().and_then(|s| s.observed_generation) != account.meta().generation;
    if spec_changed {
        release_secrets(ctx, &namespace, None).await?;
    }
    Ok(())
}

/// Lets go of an account no cluster uses: its Secret (unless another used
/// account of the namespace names it), then the account itself.
async fn release(ctx: &Context, account: &CloudAccount) -> Result<(), Error> {
    if !in_use::held(account) {
        return Ok(());
    }
    let namespace = account.namespace().unwrap_or_default();
    release_secrets(ctx, &namespace, Some(&account.name_any())).await?;
    let accounts: Api<CloudAccount> = Api::namespaced(ctx.client.clone(), &namespace);
    in_use::remove_finalizer(&accounts, account, IN_USE_FINALIZER).await?;
    Ok(())
}

/// Removes the in-use finalizer from the Secrets of `namespace` that no
/// used account (other than `leaving`) names.
async fn release_secrets(
    ctx: &Context,
    namespace: &str,
    leaving: Option<&str>,
) -> Result<(), Error> {
    let accounts: Api<CloudAccount> = Api::namespaced(ctx.client.clone(), namespace);
    let listed = accounts.list(&ListParams::default()).await?;
    let in_use: Vec<&CloudAccount> = listed
        .items
        .iter()
        .filter(|a| Some(a.name_any().as_str()) != leaving)
        .filter(|a| in_use::held(*a))
        .collect();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    in_use::release_secrets(&secrets, &in_use).await?;
    Ok(())
}

/// `Deleting=True` while a deleted account waits for its clusters.
fn deletion_condition(deleting: bool, users: &[String]) -> Option<Desired> {
    (deleting && !users.is_empty()).then(|| {
        Desired::new(
            DELETING,
            true,
            reason::IN_USE,
            format!(
                "{}; the account and its Secret stay until they are deleted",
                in_use::waiting_message(users)
            ),
        )
    })
}

type Verified = (
    CloudAccountStatus,
    Action,
    Option<(bool, &'static str, String)>,
);

/// Verifies the account: its status, when to look again, and the Event of a
/// phase change.
async fn verify(actx: &AccountContext, account: &CloudAccount, deleting: bool) -> Verified {
    let ctx = &actx.ctx;
    let uid = account.uid().unwrap_or_default();
    let previous = account.status.clone().unwrap_or_default();
    let generation = account.meta().generation;
    let (principal, result) = actx.accounts.verify(account, deleting).await;
    let mut status = CloudAccountStatus {
        observed_generation: generation,
        // What the role's trust policy must require, published whatever
        // the verification says: it is what a new account's admin needs.
        external_id: published_external_id(&actx.accounts, account),
        principal,
        installation: Some(ctx.installation.id().to_string()),
        ..previous.clone()
    };
    let (outcome, ready_after) = match &result {
        Ok(resolved) => {
            let mut next = ctx.settings.account_verify_interval;
            if let Some(until) = resolved.refresh_in() {
                next = next.min(until.max(Duration::from_secs(10)));
            }
            status.account_id = Some(resolved.account_id.clone());
            status.arn = Some(resolved.arn.clone());
            status.phase = Some(AccountPhase::Ready);
            (verified(resolved), next)
        }
        Err(e) => {
            let (reason, message) = (e.reason().as_str(), e.to_string());
            tracing::info!(namespace = ?account.namespace(), name = %account.name_any(), reason, error = %message, "cloudaccount not verified");
            let outcome = Outcome::of_class(e.class(), reason, message);
            if outcome.is_warning() {
                status.account_id = None;
                status.arn = None;
                status.phase = Some(AccountPhase::Failed);
            } else {
                status.phase = Some(previous.phase.unwrap_or(AccountPhase::Pending));
            }
            (outcome, Duration::ZERO)
        }
    };
    status.conditions = conditions::merge(
        &previous.conditions,
        &outcome.conditions(),
        generation,
        &conditions::now(),
    );
    let after = outcome.requeue(ctx, CONTROLLER, &uid, ready_after);
    let event = (previous.phase != status.phase).then(|| {
        (
            outcome.is_warning(),
            outcome.reason(),
            outcome.message().to_string(),
        )
    });
    (status, Action::requeue(after), event)
}

/// A verification that went through: whose identity, and the roles a
/// trust policy written before session tags made it assume untagged.
fn verified(resolved: &ResolvedAccount) -> Outcome {
    let mut message = format!(
        "verified as {} in account {}",
        resolved.arn, resolved.account_id
    );
    if !resolved.untagged.is_empty() {
        message.push_str(&format!(
            "; assumed {} without session tags (its trust policy does not allow sts:TagSession): `byoc-operator connect` again writes a trust policy that requires them",
            resolved.untagged.join(", ")
        ));
    }
    Outcome::Ready {
        reason: reason::VERIFIED,
        message,
    }
}

/// The generated external ID of an account that starts from the operator's
/// own identity in a namespace allowed to; `None` for Secret-based ones
/// (their external ID is the tenant's, and may be kept in the Secret).
fn published_external_id(accounts: &Accounts, account: &CloudAccount) -> Option<String> {
    if account.spec.credentials_secret_ref.is_some() {
        return None;
    }
    accounts.ambient().external_id(account).ok()
}

fn error_policy(account: Arc<CloudAccount>, error: &Error, actx: Arc<AccountContext>) -> Action {
    let uid = account.uid().unwrap_or_default();
    let backoff = outcome::after_failure(&actx.ctx, CONTROLLER, &uid, error);
    tracing::warn!(name = %account.name_any(), error = %error, "cloudaccount reconcile failed");
    Action::requeue(backoff)
}
