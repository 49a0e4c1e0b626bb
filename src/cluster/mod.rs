//! The ComputeCluster controller: dereference → validate (`spec`) → observe
//! → decide and act (`converge` runs `graph`'s steps, each the `ensure` of a
//! kind in `kinds`) → status, behind the cluster's finalizer;
//! deletion in `cleanup` (each kind's `delete`).

pub mod admission;
pub mod blockers;
pub mod catalog;
pub mod catching_up;
pub mod cleanup;
pub mod consent;
pub mod converge;
pub mod cost;
pub mod fair;
pub mod graph;
pub mod groups;
pub mod kinds;
pub mod learned;
pub mod next_look;
pub mod ownership;
pub mod quotas;

pub mod resync;
pub mod retain;
pub mod spec;
pub mod status;
pub mod user_data;

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use crate::account::credentials::ResolvedAccount;
use crate::account::{in_use, Accounts};
use crate::api::conditions::reason;
use crate::api::{AccountPhase, CloudAccount, ComputeCluster};
use crate::aws::created::CreatedIds;
use crate::aws::AwsClients;
use crate::context::{run_controller, Context};
use crate::leadership::Shutdown;
use crate::outcome;
use crate::triggers;
use crate::{Class, Error};
use catalog::Catalog;
use catching_up::recent::Recent;
use catching_up::shared_wait::{self, Waiting};
use cleanup::Deletion;
use groups::{Entry, GroupKey};
use kinds::{Looks, Observed};
use next_look::{next_look, NextLook, PassEnd};
use resync::{Member, Resync};
use spec::{AccountRef, NetworkPlan, ValidatedSpec};
use status::{Proceed, Report};

pub const CONTROLLER: &str = "computecluster";
pub const FINALIZER: &str = "byoc.dev/cleanup";
/// `byoc.dev/paused: "true"` stops reconciliation (and deletion) of one
/// ComputeCluster until it is removed.
pub const PAUSED_ANNOTATION: &str = "byoc.dev/paused";

fn is_paused(cc: &ComputeCluster) -> bool {
    cc.annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// What the ComputeCluster controller's reconciles share: the operator's
/// [`Context`], the verified accounts, and what AWS offers each region.
pub struct ClusterContext {
    pub operator: Arc<Context>,
    pub accounts: Arc<Accounts>,
    pub catalog: Catalog,
    /// Quotas and usage the pre-flight looked up lately.
    pub quotas: quotas::QuotaMemory,
    /// Creations no describe has shown yet, per cluster.
    pub recent: Recent,
    /// Settled clusters, their drift looked for per account and region.
    pub resync: Resync,
    /// Clusters waiting for what AWS is creating, looked at together.
    pub waiting: Waiting,
    /// Each namespace's share of the workers.
    pub fair: Arc<fair::Fair>,
    /// Every ComputeCluster in scope (what the others hold, for limits).
    pub clusters: kube::runtime::reflector::Store<ComputeCluster>,
    /// Which accounts and regions the clusters use: each has a listener of
    /// its interruption queue.
    pub listeners: Arc<crate::interruption::listener::Listeners>,
}

/// Runs the ComputeCluster controller until shutdown.
pub async fn run(ctx: Arc<Context>, accounts: Arc<Accounts>, shutdown: Shutdown) {
    let (store, changes) = triggers::user_changes(ctx.api::<ComputeCluster>());
    let account_changes =
        triggers::clusters_of_changed_accounts(ctx.api::<CloudAccount>(), store.clone());
    let installation = ctx.installation.id().to_string();
    let (resync, resync_due) = resync::groups(
        ctx.settings.resync,
        ctx.metrics.clone(),
        installation.clone(),
    );
    let (waiting, waited) = shared_wait::groups(
        shared_wait::TICK.min(ctx.settings.progress_poll),
        installation,
    );
    // Clusters an interruption message names, reconciled at once.
    let (heard, interrupted) = futures::channel::mpsc::unbounded();
    let controller = Controller::for_stream(changes, store.clone())
        .reconcile_on(account_changes)
        .reconcile_on(interrupted)
        .reconcile_on(resync_due)
        .reconcile_on(waited)
        .watches_stream(
            triggers::secret_changes(
                ctx.api::<PartialObjectMeta<Secret>>(),
                ctx.secret_reads.clone(),
            ),
            triggers::clusters_naming_secret(store.clone()),
        );
    let concurrency = ctx.settings.concurrency;
    let namespace_share = ctx.settings.namespace_concurrency;
    let refusal_ttl = ctx.settings.capacity_refusal_ttl;
    let listeners = Arc::new(crate::interruption::listener::Listeners::default());
    let refusals = Arc::new(kinds::offerings::Refusals::new(refusal_ttl));
    // A spot offering AWS takes back is skipped as one it refused.
    let skip = refusals.clone();
    let supervise = crate::interruption::listener::supervise(
        ctx.clone(),
        listeners.clone(),
        store.clone(),
        heard,
        Arc::new(move |place, instance_type, zone| {
            let offering = kinds::offerings::Offering {
                instance_type: instance_type.to_string(),
                zone: zone.to_string(),
                market: crate::api::Market::Spot,
            };
            let key = (place.account_id.clone(), place.region.clone());
            skip.refuse(&key, offering, 1, "SpotInterruptionWarning");
        }),
    );
    let cx = Arc::new(ClusterContext {
        operator: ctx,
        accounts,
        catalog: Catalog::new(refusals),
        quotas: Default::default(),
        recent: Recent::default(),
        resync,
        waiting,
        fair: fair::Fair::new(namespace_share),
        clusters: store.clone(),
        listeners,
    });
    // The listeners stop with the controller (their tasks with them).
    tokio::select! {
        _ = run_controller(controller, concurrency, shutdown, reconcile, error_policy, cx) => {}
        _ = supervise => {}
    }
}

async fn reconcile(cc: Arc<ComputeCluster>, ctx: Arc<ClusterContext>) -> Result<Action, Error> {
    let deleting = cc.meta().deletion_timestamp.is_some();
    let Some(_turn) = ctx
        .fair
        .enter(&cc.namespace().unwrap_or_default(), deleting)
    else {
        ctx.operator.metrics.turned_away(CONTROLLER);
        return Ok(Action::requeue(fair::TURNED_AWAY));
    };
    let started = Instant::now();
    let api: Api<ComputeCluster> = Api::namespaced(
        ctx.operator.client.clone(),
        &cc.namespace().unwrap_or_default(),
    );
    // Whatever this pass finds, the cluster looks for itself until a pass
    // settles it again.
    let uid = cc.uid().unwrap_or_default();
    ctx.resync.leave(&uid);
    ctx.waiting.leave(&uid);
    let finalized = in_use::has_finalizer(&*cc, FINALIZER);
    let result = match (deleting, finalized) {
        // The finalizer goes on before anything else; that change brings
        // the first pass.
        (false, false) => in_use::add_finalizer(&api, &cc, FINALIZER)
            .await
            .map(|_| Action::await_change())
            .map_err(Error::from),
        // Deleted before it had one, or its deletion already done.
        (true, false) => Ok(Action::await_change()),
        (false, true) => converge_or_hold(cc, ctx.clone()).await,
        (true, true) => match delete(cc.clone(), ctx.clone()).await {
            Ok(Deletion::Done) => {
                ctx.listeners.release(&uid);
                in_use::remove_finalizer(&api, &cc, FINALIZER)
                    .await
                    .map(|_| Action::await_change())
                    .map_err(Error::from)
            }
            Ok(Deletion::NotYet(after)) => Ok(Action::requeue(after)),
            Err(e) => Err(e),
        },
    };
    ctx.operator
        .metrics
        .reconciled(CONTROLLER, started.elapsed());
    result
}

/// A pass over a cluster that is not being deleted. A borrowed account's
/// withdrawn consent outranks the pause.
async fn converge_or_hold(
    cc: Arc<ComputeCluster>,
    ctx: Arc<ClusterContext>,
) -> Result<Action, Error> {
    match consent::withdrawn(&ctx, &cc).await? {
        Some(w) => consent::hold_or_release(cc, ctx.clone(), w).await,
        None if is_paused(&cc) => {
            Report::new(&cc).paused(&ctx.operator).await?;
            Ok(Action::await_change())
        }
        None => apply(cc, ctx.clone()).await,
    }
}

/// A deletion pass. A borrowed account's withdrawn consent outranks the
/// pause and deletionPolicy Retain: the lender's account is held for the
/// deletion only, and only for the grace period.
async fn delete(cc: Arc<ComputeCluster>, ctx: Arc<ClusterContext>) -> Result<Deletion, Error> {
    match consent::withdrawn(&ctx, &cc).await? {
        Some(w) => consent::delete(cc, ctx.clone(), &w).await,
        None if is_paused(&cc) => {
            Report::new(&cc).paused(&ctx.operator).await?;
            // The finalizer stays while paused; removing the annotation
            // is a change the controller sees at once.
            Ok(Deletion::NotYet(ctx.operator.settings.resync))
        }
        None => cleanup::cleanup(cc, ctx.clone()).await,
    }
}

fn error_policy(cc: Arc<ComputeCluster>, error: &Error, ctx: Arc<ClusterContext>) -> Action {
    let uid = cc.uid().unwrap_or_default();
    let backoff = outcome::after_failure(&ctx.operator, CONTROLLER, &uid, error);
    tracing::warn!(namespace = ?cc.namespace(), name = %cc.name_any(), error = %error, "computecluster reconcile failed");
    Action::requeue(backoff)
}

/// Why the account cannot be used now.
pub struct AccountBlocked {
    pub reason: &'static str,
    pub message: String,
    /// The user must act (Stalled), rather than wait for the account.
    pub stalled: bool,
}

/// The CloudAccount a cluster uses and its verified identity.
pub struct UsableAccount {
    pub account: CloudAccount,
    pub resolved: ResolvedAccount,
}

/// Dereferences the CloudAccount: exists, allows this namespace, is ready,
/// and takes this cluster (an account being deleted takes no new one). A
/// cluster being deleted may use the account's last verified credentials
/// when the account no longer verifies.
pub async fn use_account(
    ctx: &ClusterContext,
    cc: &ComputeCluster,
    at: &AccountRef,
) -> Result<UsableAccount, AccountBlocked> {
    let AccountRef {
        namespace: ns,
        name,
    } = at;
    let api: Api<CloudAccount> = Api::namespaced(ctx.operator.client.clone(), ns);
    let own_ns = cc.namespace().unwrap_or_default();
    let account = match api.get_opt(name).await {
        Ok(Some(a)) => a,
        // Another namespace's account that does not exist is refused as
        // one that does not allow this namespace: the answer tells nobody
        // which CloudAccounts exist where they may not look.
        Ok(None) if *ns != own_ns => return Err(not_allowed(at, &own_ns)),
        Ok(None) => {
            return Err(AccountBlocked {
                reason: reason::ACCOUNT_NOT_FOUND,
                message: format!("CloudAccount {ns}/{name} was not found"),
                stalled: true,
            })
        }
        Err(e) => {
            return Err(AccountBlocked {
                reason: reason::ACCOUNT_NOT_READY,
                message: format!("reading CloudAccount {ns}/{name}: {e}"),
                stalled: false,
            })
        }
    };
    if let Some(refused) = refusal(cc, &account, at) {
        return Err(refused);
    }
    let cleaning_up = cc.meta().deletion_timestamp.is_some();
    let phase = account.status.as_ref().and_then(|s| s.phase);
    if phase != Some(AccountPhase::Ready) {
        if let Some(resolved) = ctx.accounts.last_verified(&account).filter(|_| cleaning_up) {
            return Ok(UsableAccount { account, resolved });
        }
        let why = account
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.message.clone())
            .unwrap_or_else(|| "not verified yet".into());
        return Err(AccountBlocked {
            reason: reason::ACCOUNT_NOT_READY,
            message: format!("CloudAccount {ns}/{name} is not ready: {why}"),
            stalled: phase == Some(AccountPhase::Failed),
        });
    }
    match ctx.accounts.get(&account).await {
        Ok(resolved) => Ok(UsableAccount { account, resolved }),
        Err(e) => Err(AccountBlocked {
            reason: reason::ACCOUNT_NOT_READY,
            message: format!("CloudAccount {ns}/{name}: {e}"),
            stalled: e.class() == Class::NeedsUser,
        }),
    }
}

/// Whether the cluster may use `account` (named `at`), whatever its
/// verification says: `Some` says why not. Pure.
/// A reference the cluster's namespace may not use: the same answer
/// whether the account exists or not.
fn not_allowed(at: &AccountRef, own_ns: &str) -> AccountBlocked {
    AccountBlocked {
        reason: reason::NAMESPACE_NOT_ALLOWED,
        message: format!(
            "CloudAccount {at} does not exist or does not allow namespace {own_ns} (spec.allowedNamespaces)"
        ),
        stalled: true,
    }
}

pub(crate) fn refusal(
    cc: &ComputeCluster,
    account: &CloudAccount,
    at: &AccountRef,
) -> Option<AccountBlocked> {
    let AccountRef {
        namespace: ns,
        name,
    } = at;
    let own_ns = cc.namespace().unwrap_or_default();
    let cleaning_up = cc.meta().deletion_timestamp.is_some();
    let standing = in_use::Standing::of(account, cc);
    if !standing.may_act(cleaning_up) {
        return Some(not_allowed(at, &own_ns));
    }
    if account.meta().deletion_timestamp.is_some() && !standing.recorded && !cleaning_up {
        return Some(AccountBlocked {
            reason: reason::ACCOUNT_DELETING,
            message: format!("CloudAccount {ns}/{name} is being deleted and takes no new cluster; point spec.cloudAccountRef at another CloudAccount"),
            stalled: true,
        });
    }
    None
}

/// A converge pass: dereference, observe and converge, write the status,
/// and decide when to look again.
async fn apply(cc: Arc<ComputeCluster>, ctx: Arc<ClusterContext>) -> Result<Action, Error> {
    let (input, mut report) = match dereference(&cc, &ctx).await? {
        Proceed::Go(dereferenced) => dereferenced,
        Proceed::Stopped(action) => return Ok(action),
    };
    let (result, seen) = converge_pass(&cc, &ctx, &input, &mut report).await;
    if let Some(seen) = &seen {
        let counts: Vec<(String, i32)> = input
            .spec
            .node_groups
            .iter()
            .map(|g| (g.spec.name.clone(), g.spec.count))
            .collect();
        let uid = cc.uid().unwrap_or_default();
        for took in ctx.listeners.replaced(&uid, &seen.instances, &counts) {
            ctx.operator.metrics.interruption_replaced(took);
        }
    }
    let ready = report.parts_ready();
    let catching_up = catching_up::is_catching_up(&result);
    let aws_creating = seen.is_some() && !ready && report.aws_creating();
    let end = PassEnd {
        after: report.finish(&ctx.operator, result).await?,
        catching_up,
        aws_creating,
        settled: seen.is_some() && ready,
    };
    look_again(&cc, &ctx, &input, next_look(end), seen)
}

/// What a pass works from, read once: the validated spec, the usable
/// account, and what the object records that the pass acts on (what to
/// describe beyond what every pass needs; pinned images and a pending
/// refresh). The raw object is not read again.
struct Input {
    spec: ValidatedSpec,
    resolved: ResolvedAccount,
    /// The UID of the CloudAccount `resolved` came from.
    account_uid: String,
    /// That account's limits.
    limits: Option<crate::api::cloud_account::AccountLimits>,
    looks: Looks,
    recorded: kinds::images::Recorded,
}

/// Validates the spec and dereferences the account: the pass's input and
/// the report that records its account; stops the pass when it cannot
/// reach AWS (its status written).
async fn dereference(
    cc: &Arc<ComputeCluster>,
    ctx: &Arc<ClusterContext>,
) -> Result<Proceed<(Input, Report)>, Error> {
    let report = Report::new(cc);
    let stop = |report: Report, reason, message: String| async move {
        let outcome = crate::outcome::Outcome::NeedsUser { reason, message };
        report
            .settle(&ctx.operator, outcome)
            .await
            .map(Proceed::Stopped)
    };
    let mut spec = match spec::validate(cc, ctx.operator.installation.id()) {
        Ok(spec) => spec,
        Err(e) => return stop(report, reason::INVALID_SPEC, e.to_string()).await,
    };
    let UsableAccount { account, resolved } = match use_account(ctx, cc, &spec.account).await {
        Ok(r) => r,
        Err(blocked) => {
            return report
                .account_blocked(&ctx.operator, blocked)
                .await
                .map(Proceed::Stopped)
        }
    };
    if let Some((reason, message)) = with_account(&mut spec, &account) {
        return stop(report, reason, message).await;
    }
    // The account (and so its Secret) is kept while this cluster may have
    // resources to delete: protected before the first AWS call.
    let accounts: Api<CloudAccount> = Api::namespaced(
        ctx.operator.client.clone(),
        &account.namespace().unwrap_or_default(),
    );
    in_use::add_finalizer(&accounts, &account, in_use::IN_USE_FINALIZER).await?;
    let mut report = report;
    report.account_ready();
    Ok(
        match report
            .record_account(&ctx.operator, &account, &resolved.account_id)
            .await?
        {
            Proceed::Go(report) => {
                let input = Input {
                    account_uid: account.uid().unwrap_or_default(),
                    limits: account.spec.limits.clone(),
                    looks: looks(cc, &spec),
                    recorded: kinds::images::Recorded::of(cc),
                    spec,
                    resolved,
                };
                Proceed::Go((input, report))
            }
            Proceed::Stopped(action) => Proceed::Stopped(action),
        },
    )
}

/// What the account adds to the spec (its permissions boundary, its
/// shared node identity, what it lets nodes use), or why the spec cannot
/// run through it.
fn with_account(
    spec: &mut ValidatedSpec,
    account: &CloudAccount,
) -> Option<(&'static str, String)> {
    spec.permissions_boundary = account.spec.permissions_boundary_arn.clone();
    spec.node_grants = (account.spec.role_arn.as_deref()).and_then(crate::connect::node_grants_arn);
    let principal = account.status.as_ref().and_then(|s| s.principal.clone());
    spec.key_manager = account.spec.role_arn.clone().or(principal);
    match (
        spec::shared_node_identity(spec, account),
        spec::account_allowances(spec, account),
    ) {
        (Err(e), _) => Some((reason::SHARED_NODE_IDENTITY, e.to_string())),
        (_, Err(e)) => Some((reason::KMS_KEY_NOT_LISTED, e.to_string())),
        _ => None,
    }
}

/// Observes the cluster's resources and converges them: the pass's result
/// and, when it went through, what it observed.
async fn converge_pass(
    cc: &ComputeCluster,
    ctx: &ClusterContext,
    input: &Input,
    report: &mut Report,
) -> (Result<(), Error>, Option<Observed>) {
    let created = CreatedIds::default();
    let clients = AwsClients::new(
        &input.resolved.config,
        &input.spec.region,
        ctx.operator
            .metrics
            .aws_interceptor_for(&input.resolved.account_id),
    )
    .with_ec2_interceptor(created.clone());
    let uid = cc.uid().unwrap_or_default();
    // A cluster with spot capacity hears AWS's warnings through its
    // account and region's interruption queue.
    let spot = ctx.operator.settings.interruption_queue
        && crate::interruption::queue::wanted_by(input.spec.node_groups.iter().map(|g| &g.spec));
    match spot {
        true => ctx.listeners.want(
            &uid,
            crate::interruption::listener::Place {
                account_id: input.resolved.account_id.clone(),
                region: input.spec.region.clone(),
            },
            &input.resolved.config,
        ),
        false => ctx.listeners.release(&uid),
    }
    let adopt = report.needs_adoption();
    let result = observe_and_converge(cc, ctx, input, &clients, adopt, &mut report.progress).await;
    ctx.recent.remember(&uid, created.take(), Instant::now());
    if adopt && result.is_ok() {
        report.adopted(ctx.operator.installation.id());
    }
    match result {
        Ok(seen) => (Ok(()), Some(seen)),
        Err(e) => (Err(e), None),
    }
}

/// One pass's AWS work: the user data read, the resources adopted when
/// they must be, observed, admitted against limits and quotas, converged
/// and priced; what it observed.
async fn observe_and_converge(
    cc: &ComputeCluster,
    ctx: &ClusterContext,
    input: &Input,
    clients: &AwsClients,
    adopt: bool,
    progress: &mut status::Progress,
) -> Result<Observed, Error> {
    let uid = cc.uid().unwrap_or_default();
    let (spec, looks) = (&input.spec, input.looks);
    // Before any AWS call: a group whose user data cannot be read
    // launches nothing.
    let ns = cc.namespace().unwrap_or_default();
    let user_data = user_data::read(&ctx.operator.client, &ns, &spec.node_groups).await?;
    if adopt {
        let iam_name = kinds::iam::iam_name(&spec.owner);
        let adopted = crate::aws::inventory::adopt(clients, &spec.owner, &iam_name).await?;
        tracing::info!(namespace = %ns, name = %cc.name_any(), ec2 = adopted.ec2.len(), iam = adopted.iam.len(), "adopted the cluster's resources into this installation");
    }
    let observed = Observed::describe_kinds(clients, &spec.owner, looks).await?;
    // A view that lacks what this process just created is stale: acting
    // on it would create the same again.
    let unseen = ctx.recent.unseen(&uid, &observed.ids(), Instant::now());
    if !unseen.is_empty() {
        return Err(Error::NotVisibleYet { unseen });
    }
    // Within the account's limits, before anything is made.
    admission::admit(
        ctx,
        clients,
        cc,
        spec,
        &input.account_uid,
        input.limits.as_ref(),
    )
    .await?;
    // Before the first create and a scale-up: nothing is made that a
    // quota would stop halfway.
    let memory = &ctx.quotas;
    let quotas = quotas::preflight(clients, &ctx.catalog, memory, spec, &observed).await?;
    let launch_cap = kinds::node_groups::launch_cap(quotas.is_some());
    if let Some(note) = quotas {
        let note = format!("{note}; launches are capped at {launch_cap} instances a pass");
        progress.notes.push((reason::QUOTA_UNKNOWN, note));
    }
    let account_id = &input.resolved.account_id;
    kinds::peering::preflight(clients, spec, account_id, &observed.peerings).await?;
    let pass = kinds::Pass {
        c: clients,
        spec,
        observed: &observed,
        user_data: &user_data,
        recorded: &input.recorded,
        account_id: &input.resolved.account_id,
        launch_cap,
    };
    let converged = converge::converge(&ctx.catalog, pass, progress).await;
    // What the pass leaves costs what it costs, converged or not.
    let prices = (&ctx.operator.prices, &ctx.catalog);
    let priced = cost::of_pass(prices, clients, spec, progress, &observed.endpoints).await;
    progress.cost = priced;
    converged?;
    Ok(observed)
}

/// Carries out the next look: a requeue, the shared wait for what AWS is
/// creating, or the shared resync for a settled cluster (which then waits
/// for a change, not a timer); both shared with the clusters of the same
/// CloudAccount, account and region.
fn look_again(
    cc: &Arc<ComputeCluster>,
    ctx: &ClusterContext,
    input: &Input,
    next: NextLook,
    seen: Option<Observed>,
) -> Result<Action, Error> {
    let Input {
        spec,
        looks,
        resolved,
        account_uid,
        ..
    } = input;
    let key = GroupKey {
        cloud_account: account_uid.clone(),
        account_id: resolved.account_id.clone(),
        region: spec.region.clone(),
    };
    let uid = cc.uid().unwrap_or_default();
    let clients = || {
        AwsClients::new(
            &resolved.config,
            &spec.region,
            ctx.operator
                .metrics
                .aws_interceptor_for(&resolved.account_id),
        )
    };
    match (next, seen) {
        (NextLook::After(after), _) => Ok(Action::requeue(after)),
        (NextLook::WhenAwsIsDone(after), _) => {
            let entry = Entry {
                object: ObjectRef::from_obj(&**cc),
                member: *looks,
            };
            ctx.waiting.join(key, clients(), &uid, entry);
            Ok(Action::requeue(after))
        }
        (NextLook::OnChangeAndResync, Some(seen)) => {
            let entry = Entry {
                object: ObjectRef::from_obj(&**cc),
                member: Member::new(&spec.owner, *looks, &seen),
            };
            ctx.resync.join(key, clients(), &uid, entry);
            Ok(Action::await_change())
        }
        (NextLook::OnChangeAndResync, None) => Err(Error::Internal(
            "a pass settled without what it observed".into(),
        )),
    }
}

/// What a converge pass describes beyond what every pass needs: key pairs
/// when a group imports one; the role's policies when the spec asks for
/// some, the last status recorded some, or the spec changed since (a
/// policy removed from the list in a crash window is still detached); the
/// VPC endpoints and peering connections likewise, once a status exists.
fn looks(cc: &ComputeCluster, spec: &ValidatedSpec) -> Looks {
    let status = cc.status.as_ref();
    let recorded = status
        .and_then(|s| s.iam.as_ref())
        .is_some_and(|iam| !iam.managed_policy_arns.is_empty());
    let changed = status.and_then(|s| s.observed_generation) != cc.metadata.generation;
    let network = status.and_then(|s| s.network.as_ref());
    let (endpoints, peering) = match &spec.network {
        NetworkPlan::Managed {
            endpoints, peering, ..
        } => (!endpoints.is_empty(), !peering.is_empty()),
        NetworkPlan::Existing { .. } => (false, false),
    };
    // A spec changed since a status was written may have dropped endpoints
    // or peers made in a crash window (before status recorded them); a new
    // cluster has made nothing yet.
    let edited = changed && status.is_some_and(|s| s.observed_generation.is_some());
    Looks {
        key_pairs: spec.node_groups.iter().any(|g| g.ssh_public_key.is_some()),
        // The nodes' grants go with the log group and the key.
        role_policies: !spec.iam.managed_policy_arns.is_empty()
            || spec.logging.is_some()
            || spec.key.is_some()
            || recorded
            || changed,
        endpoints: endpoints || network.is_some_and(|n| !n.endpoint_ids.is_empty()) || edited,
        peering: peering || network.is_some_and(|n| !n.peering_connection_ids.is_empty()) || edited,
        // A cluster granted for its key alone looks at its group's name
        // too: the grants name the group by the cluster's name.
        logging: spec.logging.is_some()
            || matches!(spec.key, Some(spec::ClusterKey::Own { .. }))
            || status
                .and_then(|s| s.storage.as_ref())
                .is_some_and(|s| s.log_group.is_some())
            || edited,
        storage: spec.key.is_some()
            || status
                .and_then(|s| s.storage.as_ref())
                .is_some_and(|s| s.kms_key_arn.is_some())
            || edited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(deleting: bool) -> CloudAccount {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "byoc.dev/v1alpha1", "kind": "CloudAccount",
            "metadata": {"name": "acme", "namespace": "team-a", "uid": "acct-1",
                "deletionTimestamp": deleting.then_some("2026-01-01T00:00:00Z"),
                "finalizers": ["byoc.dev/in-use"]},
            "spec": {"region": "us-east-1", "allowedNamespaces": ["team-b"]}
        }))
        .expect("a CloudAccount")
    }

    fn cluster(namespace: &str, deleting: bool, recorded: Option<&str>) -> ComputeCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "byoc.dev/v1alpha1", "kind": "ComputeCluster",
            "metadata": {"name": "c", "namespace": namespace, "uid": "cc-1",
                "deletionTimestamp": deleting.then_some("2026-01-01T00:00:00Z"),
                "finalizers": ["byoc.dev/cleanup"]},
            "spec": {"cloudAccountRef": {"name": "acme", "namespace": "team-a"},
                "region": "us-east-1", "network": {"vpcCidr": "10.0.0.0/16"}, "nodeGroups": []},
            "status": recorded.map(|uid| serde_json::json!({
                "cloudAccount": {"namespace": "team-a", "name": "acme", "uid": uid}}))
        }))
        .expect("a ComputeCluster")
    }

    #[test]
    fn which_clusters_may_use_an_account() {
        let at = AccountRef {
            namespace: "team-a".into(),
            name: "acme".into(),
        };
        // (cluster, account, refused with, why)
        let rows = [
            (
                cluster("team-a", false, None),
                account(false),
                None,
                "its own namespace",
            ),
            (
                cluster("team-b", false, None),
                account(false),
                None,
                "an allowed namespace",
            ),
            (
                cluster("team-c", false, None),
                account(false),
                Some(reason::NAMESPACE_NOT_ALLOWED),
                "a namespace not allowed",
            ),
            (
                cluster("team-c", true, Some("acct-1")),
                account(false),
                None,
                "not allowed now, deleting what it made through this very account",
            ),
            (
                cluster("team-c", true, Some("acct-0")),
                account(false),
                Some(reason::NAMESPACE_NOT_ALLOWED),
                "deleting, but it made its resources through an account since re-created",
            ),
            (
                cluster("team-a", false, None),
                account(true),
                Some(reason::ACCOUNT_DELETING),
                "a new cluster on an account being deleted",
            ),
            (
                cluster("team-a", false, Some("acct-1")),
                account(true),
                None,
                "a cluster the deleting account already serves",
            ),
        ];
        for (cc, account, want, why) in rows {
            let got = refusal(&cc, &account, &at).map(|r| r.reason);
            assert_eq!(got, want, "{why}");
        }
    }

    #[test]
    fn what_a_pass_describes_beyond_every_pass() {
        // (node group, spec's policies, status's policies, network asked,
        // network in status, generation observed, looks, why)
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBUe8WXdciTjIF9A4ssgb5fI76msqWQ00GpX7iDC6DnX u";
        let plain = serde_json::json!({"name": "w", "instanceType": "t3.large", "count": 1});
        let keyed = serde_json::json!({"name": "w", "instanceType": "t3.large", "count": 1,
            "sshPublicKey": key});
        let policy = "arn:aws:iam::aws:policy/P";
        let nothing = Looks::NONE;
        use serde_json::json;
        let managed = json!({"vpcCidr": "10.0.0.0/16"});
        let none = json!({});
        let rows = [
            (
                plain.clone(),
                None,
                None,
                managed.clone(),
                none.clone(),
                1,
                nothing,
                "nothing extra",
            ),
            (
                keyed,
                None,
                None,
                managed.clone(),
                none.clone(),
                1,
                Looks {
                    key_pairs: true,
                    ..nothing
                },
                "a group imports a key",
            ),
            (
                plain.clone(),
                Some(policy),
                None,
                managed.clone(),
                none.clone(),
                1,
                Looks {
                    role_policies: true,
                    ..nothing
                },
                "the spec asks for policies",
            ),
            (
                plain.clone(),
                None,
                Some(policy),
                managed.clone(),
                none.clone(),
                1,
                Looks {
                    role_policies: true,
                    ..nothing
                },
                "status recorded some: to detach",
            ),
            (
                plain.clone(),
                None,
                None,
                json!({"vpcCidr": "10.0.0.0/16", "endpoints": ["s3"]}),
                none.clone(),
                1,
                Looks {
                    endpoints: true,
                    ..nothing
                },
                "the spec asks for endpoints",
            ),
            (
                plain.clone(),
                None,
                None,
                managed.clone(),
                json!({"endpointIds": ["vpce-1"], "peeringConnectionIds": ["pcx-1"]}),
                1,
                Looks {
                    endpoints: true,
                    peering: true,
                    ..nothing
                },
                "status recorded endpoints and a connection: to delete",
            ),
            (
                plain.clone(),
                None,
                None,
                json!({"vpcCidr": "10.0.0.0/16",
                    "peering": [{"vpcId": "vpc-0123456789abcdef0"}]}),
                none.clone(),
                1,
                Looks {
                    peering: true,
                    ..nothing
                },
                "the spec asks for peering",
            ),
            (
                plain,
                None,
                None,
                managed,
                none,
                0,
                Looks {
                    key_pairs: false,
                    ..Looks::ALL
                },
                "the spec changed since the last status",
            ),
        ];
        // A new cluster (no status at all) looks at its role's policies
        // only, as the spec changed since no status.
        let new: ComputeCluster = serde_json::from_value(json!({
            "apiVersion": "byoc.dev/v1alpha1", "kind": "ComputeCluster",
            "metadata": {"name": "c", "namespace": "team", "uid": "cc-1", "generation": 1},
            "spec": {"cloudAccountRef": {"name": "acme"}, "region": "us-east-1",
                "network": {"vpcCidr": "10.0.0.0/16"}, "nodeGroups": [{"name": "w", "instanceType": "t3.large", "count": 1}]}
        }))
        .expect("a ComputeCluster");
        let spec = spec::validate(&new, "installation-1").expect("a valid spec");
        // A log group: asked for, or recorded (to delete once unasked).
        let mut logged = new.clone();
        logged.spec.logging = Some(Default::default());
        let logged_spec = spec::validate(&logged, "installation-1").expect("a valid spec");
        assert!(
            super::looks(&logged, &logged_spec).logging,
            "the spec asks for logging"
        );
        let mut recorded = new.clone();
        recorded.status = serde_json::from_value(json!({"observedGeneration": 1,
            "storage": {"logGroup": "/byoc/team/c"}}))
        .ok();
        assert!(
            super::looks(&recorded, &spec).logging,
            "status recorded a group"
        );
        assert!(!super::looks(&new, &spec).logging);
        // Settled with a log group: its role's policies too (the nodes'
        // grants are put back, and taken off with the group).
        let mut settled = logged.clone();
        settled.status = serde_json::from_value(json!({"observedGeneration": 1})).ok();
        let looks = super::looks(&settled, &logged_spec);
        assert!(looks.role_policies && looks.logging, "{looks:?}");
        assert_eq!(
            super::looks(&new, &spec),
            Looks {
                role_policies: true,
                ..nothing
            },
            "a new cluster"
        );
        for (group, asked, recorded, network, in_status, observed, want, why) in rows {
            let cc: ComputeCluster = serde_json::from_value(serde_json::json!({
                "apiVersion": "byoc.dev/v1alpha1", "kind": "ComputeCluster",
                "metadata": {"name": "c", "namespace": "team", "uid": "cc-1", "generation": 1},
                "spec": {"cloudAccountRef": {"name": "acme"}, "region": "us-east-1",
                    "network": network, "nodeGroups": [group],
                    "iam": {"managedPolicyArns": asked.into_iter().collect::<Vec<_>>()}},
                "status": {"observedGeneration": observed, "network": in_status,
                    "iam": {"managedPolicyArns": recorded.into_iter().collect::<Vec<_>>()}}
            }))
            .expect("a ComputeCluster");
            let spec = spec::validate(&cc, "installation-1").expect("a valid spec");
            assert_eq!(super::looks(&cc, &spec), want, "{why}");
        }
    }
}
