//! Clusters grouped by CloudAccount, AWS account and region, looked at
//! together: one task per group calls AWS once per tick for all its members
//! and names the members to reconcile, which leave the group until a pass
//! puts them back.
//! The shared resync (`resync.rs`) and the shared wait for what AWS is
//! creating (`catching_up/shared_wait.rs`) are two such looks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::Stream;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use crate::api::ComputeCluster;
use crate::aws::AwsClients;

/// One CloudAccount's reach into one account and region: a group's
/// clients are its CloudAccount's, so no tenant's credentials look at
/// another's clusters, and they go with the last member.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    /// The UID of the CloudAccount its members reach AWS through.
    pub cloud_account: String,
    pub account_id: String,
    pub region: String,
}

/// A member: the object to reconcile, and what the look needs of it.
#[derive(Clone, Debug)]
pub struct Entry<M> {
    pub object: ObjectRef<ComputeCluster>,
    pub member: M,
}

/// What a group's tick does: given the clients and the members (by cluster
/// UID), the UIDs to reconcile.
pub type Look<M> = Arc<
    dyn Fn(AwsClients, BTreeMap<String, Entry<M>>) -> BoxFuture<'static, BTreeSet<String>>
        + Send
        + Sync,
>;

struct Group<M> {
    clients: AwsClients,
    members: BTreeMap<String, Entry<M>>,
}

struct Inner<M> {
    tick: Duration,
    groups: Mutex<HashMap<GroupKey, Group<M>>>,
    due: mpsc::UnboundedSender<ObjectRef<ComputeCluster>>,
    look: Look<M>,
}

/// The groups of one look.
pub struct Groups<M> {
    inner: Arc<Inner<M>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<M: Clone + Send + Sync + 'static> Groups<M> {
    /// Groups ticking every `tick`; the stream yields the clusters to
    /// reconcile (the controller's `reconcile_on`). Ticks stop once the
    /// stream is dropped.
    pub fn new(
        tick: Duration,
        look: Look<M>,
    ) -> (
        Self,
        impl Stream<Item = ObjectRef<ComputeCluster>> + Send + 'static,
    ) {
        let (due, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            tick,
            groups: Mutex::default(),
            due,
            look,
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        (Groups { inner }, stream)
    }

    /// Cluster `uid` joins the group `key`; `clients` are the key's
    /// CloudAccount's (the latest member's are used: the freshest
    /// credentials of the same CloudAccount). Every pass starts by leaving
    /// ([`Groups::leave`]), so a cluster whose account changed is in the
    /// new group alone.
    pub fn join(&self, key: GroupKey, clients: AwsClients, uid: &str, entry: Entry<M>) {
        let mut groups = lock(&self.inner.groups);
        let start = !groups.contains_key(&key);
        let group = groups.entry(key.clone()).or_insert_with(|| Group {
            clients: clients.clone(),
            members: BTreeMap::new(),
        });
        group.clients = clients;
        group.members.insert(uid.to_string(), entry);
        drop(groups);
        if start {
            let inner = self.inner.clone();
            tokio::spawn(async move { inner.tick_until_empty(key).await });
        }
    }

    /// Cluster `uid` leaves whatever group it is in.
    pub fn leave(&self, uid: &str) {
        for group in lock(&self.inner.groups).values_mut() {
            group.members.remove(uid);
        }
    }
}

impl<M: Clone + Send + Sync + 'static> Inner<M> {
    async fn tick_until_empty(self: Arc<Self>, key: GroupKey) {
        loop {
            tokio::time::sleep(self.tick).await;
            if self.due.is_closed() {
                lock(&self.groups).remove(&key);
                return;
            }
            let (clients, members) = {
                let mut groups = lock(&self.groups);
                let Some(group) = groups.get(&key) else {
                    return;
                };
                if group.members.is_empty() {
                    groups.remove(&key);
                    return;
                }
                (group.clients.clone(), group.members.clone())
            };
            let due = (self.look)(clients, members).await;
            let mut groups = lock(&self.groups);
            let Some(group) = groups.get_mut(&key) else {
                return;
            };
            for uid in &due {
                if let Some(m) = group.members.remove(uid) {
                    let _ = self.due.send(m.object);
                }
            }
        }
    }
}
