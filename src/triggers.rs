//! What starts a reconcile of our own kinds: a watch filtered to the changes
//! the user makes (generation: spec and deletion; finalizers; annotations,
//! such as the pause). The operator's own status writes pass no event, so
//! each write does not cost another pass over AWS; the requeue a reconcile
//! returns (progress poll, resync, backoff) brings the next one.

use futures::Stream;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{predicates, watcher, Predicate, WatchStreamExt};
use kube::{Api, Resource, ResourceExt};

use crate::api::{CloudAccount, ComputeCluster};
use serde::de::DeserializeOwned;

/// The store of `api`'s objects and the stream of their user changes.
pub fn user_changes<K>(
    api: Api<K>,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let changes = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation
                .combine(predicates::finalizers)
                .combine(predicates::annotations),
            Default::default(),
        );
    (reader, changes)
}

/// The Secrets of `api` as their content changes, watched as metadata
/// only: a rotation of the few that CloudAccounts and user data name is
/// noticed without holding any Secret's content (the cluster's Secrets may
/// be many and large; Helm alone keeps one per release revision). Only
/// Secrets opted in for a use are watched; each change of one is read once
/// for both controllers (`reads`) and passed on only when its data, type or
/// labels differ from what this watch last passed (kept as a digest):
/// touching an annotation of a Secret many accounts name re-verifies none
/// of them and re-runs no cluster. A Secret that is gone or cannot be read
/// is passed on, so its users notice. What a reconcile needs of one is
/// read when it needs it.
pub fn secret_changes(
    api: Api<PartialObjectMeta<Secret>>,
    reads: SecretReads,
) -> impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static {
    use futures::StreamExt;
    use std::sync::{Arc, Mutex};
    let config = watcher::Config::default()
        .any_semantic()
        .labels(&crate::secret_use::any_use_selector());
    let seen: Arc<Mutex<ContentSeen>> = Arc::default();
    watcher(api, config)
        .default_backoff()
        .touched_objects()
        .filter_map(move |event| {
            let (reads, seen) = (reads.clone(), seen.clone());
            async move {
                let Ok(meta) = event else { return Some(event) };
                let key = (meta.namespace().unwrap_or_default(), meta.name_any());
                let version = meta.resource_version().unwrap_or_default();
                let digest = reads.digest(key.clone(), version).await;
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                seen.changed(key, digest).then_some(Ok(meta))
            }
        })
}

/// The content digest of each use-labelled Secret at the resourceVersion a
/// watch event named, shared by both controllers' Secret watches: a change
/// is read once, not once per controller. Reads are one at a time (Secret
/// changes are few), so the second watch finds what the first read.
#[derive(Clone)]
pub struct SecretReads {
    client: kube::Client,
    read: std::sync::Arc<tokio::sync::Mutex<std::collections::HashMap<(String, String), Read>>>,
}

/// A Secret's digest as read at a resourceVersion (`None`: gone or
/// unreadable).
type Read = (String, Option<u64>);

impl SecretReads {
    pub fn new(client: kube::Client) -> Self {
        SecretReads {
            client,
            read: Default::default(),
        }
    }

    /// The digest of the Secret `key` at `version`, read unless this
    /// version was read already.
    async fn digest(&self, key: (String, String), version: String) -> Option<u64> {
        let client = self.client.clone();
        self.digest_with(key, version, |(ns, name)| async move {
            match Api::<Secret>::namespaced(client, &ns).get_opt(&name).await {
                Ok(Some(secret)) => Some(content_digest(&secret)),
                _ => None,
            }
        })
        .await
    }

    async fn digest_with<F, R>(
        &self,
        key: (String, String),
        version: String,
        read: F,
    ) -> Option<u64>
    where
        F: FnOnce((String, String)) -> R,
        R: std::future::Future<Output = Option<u64>>,
    {
        let mut cache = self.read.lock().await;
        match cache.get(&key) {
            Some((v, digest)) if *v == version && !version.is_empty() => *digest,
            _ => {
                let digest = read(key.clone()).await;
                cache.insert(key, (version, digest));
                digest
            }
        }
    }
}

/// The content digest last seen of each Secret, by `(namespace, name)`.
#[derive(Debug, Default)]
struct ContentSeen(std::collections::HashMap<(String, String), u64>);

impl ContentSeen {
    /// Whether a change of `key` whose content now digests to `digest`
    /// (`None`: gone or unreadable) concerns its users.
    fn changed(&mut self, key: (String, String), digest: Option<u64>) -> bool {
        match digest {
            Some(d) => self.0.insert(key, d) != Some(d),
            None => {
                self.0.remove(&key);
                true
            }
        }
    }
}

/// A digest of what the operator uses of a Secret: its data, type and
/// labels (the use label decides whether it may be read at all). Kept in
/// memory only, never shown.
fn content_digest(secret: &Secret) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (k, v) in secret.data.iter().flatten() {
        (k, &v.0).hash(&mut h);
    }
    for (k, v) in secret.string_data.iter().flatten() {
        (k, v).hash(&mut h);
    }
    secret.type_.hash(&mut h);
    for (k, v) in secret.labels() {
        (k, v).hash(&mut h);
    }
    h.finish()
}

/// For each object of `events` (a watch, relists included), the value of
/// `key` before and after every change of it: `(None, Some(new))` for a new
/// object, `(Some(old), Some(new))` when the value changed, `(Some(old),
/// None)` when the object is gone. Events that leave the value as it was
/// pass nothing, so a status write the key does not read starts nothing.
pub fn key_changes<K, V>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    key: impl Fn(&K) -> V + Send + 'static,
) -> impl Stream<Item = (Option<V>, Option<V>)> + Send + 'static
where
    K: Resource + Send + 'static,
    V: Clone + PartialEq + Send + 'static,
{
    use futures::StreamExt;
    use std::collections::{HashMap, HashSet};
    let mut known: HashMap<String, V> = HashMap::new();
    let mut relisted: HashSet<String> = HashSet::new();
    let id = |obj: &K| {
        let meta = obj.meta();
        format!(
            "{}/{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
            meta.uid.as_deref().unwrap_or_default()
        )
    };
    events
        .filter_map(|event| futures::future::ready(event.ok()))
        .map(move |event| {
            let mut changes = Vec::new();
            let seen = |obj: &K, known: &mut HashMap<String, V>, changes: &mut Vec<_>| {
                let value = key(obj);
                match known.insert(id(obj), value.clone()) {
                    Some(old) if old == value => {}
                    old => changes.push((old, Some(value))),
                }
            };
            match event {
                watcher::Event::Init => relisted.clear(),
                watcher::Event::InitApply(obj) => {
                    relisted.insert(id(&obj));
                    seen(&obj, &mut known, &mut changes);
                }
                watcher::Event::Apply(obj) => seen(&obj, &mut known, &mut changes),
                watcher::Event::Delete(obj) => {
                    if let Some(old) = known.remove(&id(&obj)) {
                        changes.push((Some(old), None));
                    }
                }
                watcher::Event::InitDone => {
                    // Gone while the watch was down.
                    let gone: Vec<String> = known
                        .keys()
                        .filter(|k| !relisted.contains(*k))
                        .cloned()
                        .collect();
                    for k in gone {
                        if let Some(old) = known.remove(&k) {
                            changes.push((Some(old), None));
                        }
                    }
                }
            }
            futures::stream::iter(changes)
        })
        .flatten()
}

/// The ComputeClusters (of `clusters`) that refer to an account whose
/// change alters what they can do with it: its spec, its deletion, its
/// verification. Its own bookkeeping (how many clusters use it) starts
/// nothing.
pub fn clusters_of_changed_accounts(
    accounts: Api<CloudAccount>,
    clusters: Store<ComputeCluster>,
) -> impl Stream<Item = ObjectRef<ComputeCluster>> + Send + 'static {
    use futures::StreamExt;
    let events = watcher(accounts, watcher::Config::default().any_semantic()).default_backoff();
    let usable = |a: &CloudAccount| {
        let status = a.status.as_ref();
        (
            (
                ObjectRef::from_obj(a),
                a.meta().generation,
                status.and_then(|s| s.phase),
                status.and_then(|s| s.account_id.clone()),
            ),
            status.and_then(|s| s.usage.clone()),
        )
    };
    key_changes(events, usable).flat_map(move |(old, new)| {
        // Only what the clusters hold changed: the clusters waiting for
        // room under the account's limits may now fit; the others have
        // nothing new to do.
        let usage_only = matches!((&old, &new), (Some((a, _)), Some((b, _))) if a == b);
        let refs: Vec<ObjectRef<ComputeCluster>> = new
            .or(old)
            .map(|((account, ..), _)| {
                clusters
                    .state()
                    .into_iter()
                    .filter(|c| {
                        let (ns, name) = c.account_key();
                        name == account.name && Some(ns) == account.namespace
                    })
                    .filter(|c| !usage_only || over_limit(c))
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect()
            })
            .unwrap_or_default();
        futures::stream::iter(refs)
    })
}

/// Whether `cc` waits for room under its account's limits (`Stalled`,
/// `LimitExceeded`).
fn over_limit(cc: &ComputeCluster) -> bool {
    cc.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == crate::api::conditions::STALLED
                && c.status == "True"
                && c.reason == crate::api::conditions::reason::LIMIT_EXCEEDED
        })
    })
}

/// For a changed Secret, the ComputeClusters (of `clusters`) whose node
/// groups take their user data from it (the content's hash rolls them).
pub fn clusters_naming_secret(
    clusters: Store<ComputeCluster>,
) -> impl Fn(PartialObjectMeta<Secret>) -> Vec<ObjectRef<ComputeCluster>> + Send + 'static {
    move |secret| {
        let (ns, name) = (secret.namespace(), secret.name_any());
        clusters
            .state()
            .into_iter()
            .filter(|c| c.namespace() == ns)
            .filter(|c| {
                c.spec.node_groups.iter().any(|g| {
                    g.user_data_secret_ref
                        .as_ref()
                        .is_some_and(|r| r.name == name)
                })
            })
            .map(|c| ObjectRef::from_obj(&*c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_secrets_change_is_read_once_for_both_watches() {
        let (client, _) = crate::fixtures::apiserver(serde_json::json!({}));
        let reads = SecretReads::new(client);
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let key = || ("team-a".to_string(), "keys".to_string());
        let read = |digest: u64| {
            let count = count.clone();
            move |_| async move {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Some(digest)
            }
        };
        // The account watch reads version 7; the cluster watch's event of
        // the same version finds it.
        assert_eq!(reads.digest_with(key(), "7".into(), read(1)).await, Some(1));
        assert_eq!(reads.digest_with(key(), "7".into(), read(2)).await, Some(1));
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A new version is read again, and so is one without a version.
        assert_eq!(reads.digest_with(key(), "8".into(), read(3)).await, Some(3));
        assert_eq!(
            reads.digest_with(key(), String::new(), read(4)).await,
            Some(4)
        );
        assert_eq!(
            reads.digest_with(key(), String::new(), read(5)).await,
            Some(5)
        );
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[test]
    fn a_secrets_annotations_alone_change_nothing_its_data_labels_or_absence_do() {
        let secret = |key: &str, label: &str, note: &str| Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("keys".into()),
                labels: Some([("byoc.dev/use".to_string(), label.to_string())].into()),
                annotations: Some([("touched".to_string(), note.to_string())].into()),
                ..Default::default()
            },
            data: Some(
                [(
                    "AWS_ACCESS_KEY_ID".to_string(),
                    k8s_openapi::ByteString(key.into()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let digest = |s: &Secret| Some(content_digest(s));
        let key = || ("ns".to_string(), "keys".to_string());
        let mut seen = ContentSeen::default();
        let first = secret("AKIA1", "credentials", "a");
        assert!(seen.changed(key(), digest(&first)), "first seen");
        assert!(
            !seen.changed(key(), digest(&secret("AKIA1", "credentials", "b"))),
            "annotation"
        );
        assert!(
            seen.changed(key(), digest(&secret("AKIA2", "credentials", "b"))),
            "rotated"
        );
        assert!(
            seen.changed(key(), digest(&secret("AKIA2", "user-data", "b"))),
            "relabelled"
        );
        assert!(seen.changed(key(), None), "gone");
        assert!(
            seen.changed(key(), digest(&secret("AKIA2", "user-data", "b"))),
            "back"
        );
    }
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            data: Some([("k".to_string(), value.to_string())].into()),
            ..Default::default()
        }
    }

    fn value(c: &ConfigMap) -> String {
        c.data
            .as_ref()
            .and_then(|d| d.get("k").cloned())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn key_changes_pass_new_changed_and_gone_values_only() {
        use watcher::Event::*;
        let events = vec![
            Init,
            InitApply(cm("a", "1")),
            InitApply(cm("b", "1")),
            InitDone,
            Apply(cm("a", "1")), // same value: nothing
            Apply(cm("a", "2")),
            Delete(cm("b", "1")),
            // A relist that no longer holds `a`.
            Init,
            InitApply(cm("c", "3")),
            InitDone,
        ];
        let out: Vec<(Option<String>, Option<String>)> =
            key_changes(futures::stream::iter(events.into_iter().map(Ok)), value)
                .collect()
                .await;
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            out,
            vec![
                (None, s("1")),
                (None, s("1")),
                (s("1"), s("2")),
                (s("1"), None),
                (None, s("3")),
                (s("2"), None),
            ]
        );
    }
}
