//! In-use protection: a CloudAccount that a ComputeCluster uses, and the
//! credentials Secret of such an account, carry the finalizer
//! [`IN_USE_FINALIZER`], so that deleting them (one by one, with a whole
//! namespace, or by a GitOps prune) waits until every cluster that needs
//! them for its cleanup is gone.
//!
//! The ComputeCluster controller adds the account's finalizer before its
//! first AWS call; the CloudAccount controller protects the Secret, counts
//! the users, and removes both finalizers once no cluster uses the account.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, TestOperation};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::{CloudAccount, ComputeCluster};

/// Kept on a used CloudAccount and on its credentials Secret.
pub const IN_USE_FINALIZER: &str = "byoc.dev/in-use";

/// Whether `obj` carries the in-use finalizer.
pub fn held<K: Resource>(obj: &K) -> bool {
    has_finalizer(obj, IN_USE_FINALIZER)
}

/// Whether `obj` carries `finalizer`.
pub fn has_finalizer<K: Resource>(obj: &K, finalizer: &str) -> bool {
    listed(obj.meta(), finalizer)
}

/// Whether `meta` lists `finalizer`.
fn listed(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

/// How a cluster stands to an account: the facts every "who uses this
/// account" question is decided from, here only (the cluster controller,
/// the in-use finalizer, consent and `disconnect` all ask this). Pure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// `spec.cloudAccountRef` names the account.
    pub refers: bool,
    /// The account allows the cluster's namespace (its own, or one of
    /// `allowedNamespaces`).
    pub allowed: bool,
    /// The cluster reached AWS through this very account (`status.cloudAccount`,
    /// the same UID): its resources need the account to be deleted.
    pub recorded: bool,
}

impl Standing {
    pub fn of(account: &CloudAccount, cluster: &ComputeCluster) -> Self {
        let account_ns = account.namespace().unwrap_or_default();
        let cluster_ns = cluster.namespace().unwrap_or_default();
        Standing {
            refers: cluster.account_key() == (account_ns.clone(), account.name_any()),
            allowed: account.spec.allows_namespace(&account_ns, &cluster_ns),
            recorded: cluster.recorded_account().is_some_and(|r| r.is(account)),
        }
    }

    /// The cluster holds the account: it references it and may use it, or
    /// its resources came through it. A reference alone to an account that
    /// does not allow the namespace is no use: such an account is never
    /// held for a stranger.
    pub fn uses(&self) -> bool {
        (self.refers && self.allowed) || self.recorded
    }

    /// The cluster may reach AWS through the account now: allowed, or
    /// deleting what it made through this very account (consent is bound
    /// to that account, never to whichever the reference now names).
    pub fn may_act(&self, deleting: bool) -> bool {
        self.allowed || (deleting && self.recorded)
    }

    /// The account the cluster's resources came through no longer allows
    /// its namespace.
    pub fn withdrawn(&self) -> bool {
        self.recorded && !self.allowed
    }
}

/// Whether `cluster` uses `account` ([`Standing::uses`]).
pub fn uses(account: &CloudAccount, cluster: &ComputeCluster) -> bool {
    Standing::of(account, cluster).uses()
}

/// The users of `account` among `clusters`, as sorted `namespace/name`.
pub fn users<'a>(
    account: &CloudAccount,
    clusters: impl IntoIterator<Item = &'a ComputeCluster>,
) -> Vec<String> {
    let mut names: Vec<String> = clusters
        .into_iter()
        .filter(|c| uses(account, c))
        .map(|c| format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()))
        .collect();
    names.sort();
    names
}

/// `waiting for 2 ComputeClusters: team-a/ml, team-b/etl`, naming at most
/// ten of them.
pub fn waiting_message(users: &[String]) -> String {
    const SHOWN: usize = 10;
    let noun = if users.len() == 1 {
        "ComputeCluster"
    } else {
        "ComputeClusters"
    };
    let mut names = users
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if users.len() > SHOWN {
        names.push_str(&format!(" and {} more", users.len() - SHOWN));
    }
    format!("waiting for {} {noun}: {names}", users.len())
}

/// How many times a finalizer write is tried, each after a fresh read when
/// another writer changed the list between the read and the write (both
/// controllers add the in-use finalizer; the test operation refuses a
/// stale list with 422). Such a race is settled at once, not backed off.
const FINALIZER_TRIES: usize = 3;

/// Whether `e` says the object changed between the read and the write: a
/// failed test operation (422) or a conflict (409).
fn changed_meanwhile(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(a) if a.code == 422 || a.code == 409)
}

/// The metadata of `obj` as the apiserver has it now (`None`: gone).
async fn reread<K>(api: &Api<K>, name: &str) -> Result<Option<ObjectMeta>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    Ok(api.get_metadata_opt(name).await?.map(|m| m.metadata))
}

/// Adds `finalizer` to `obj` unless it is there. An object already being
/// deleted takes no new finalizer (the apiserver refuses it): `Ok(false)`.
pub async fn add_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let name = obj.name_any();
    let mut meta = obj.meta().clone();
    let mut tries = 0;
    loop {
        if listed(&meta, finalizer) {
            return Ok(true);
        }
        if meta.deletion_timestamp.is_some() {
            return Ok(false);
        }
        tries += 1;
        let written = api
            .patch_metadata(
                &name,
                &PatchParams::default(),
                &Patch::Json::<()>(json_patch::Patch(add_ops(
                    meta.finalizers.as_deref().unwrap_or_default(),
                    finalizer,
                ))),
            )
            .await;
        match written {
            Ok(_) => return Ok(true),
            Err(e) if changed_meanwhile(&e) && tries < FINALIZER_TRIES => {
                match reread(api, &name).await? {
                    Some(now) => meta = now,
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The JSON patch adding `finalizer` to `finalizers`. Its test makes a
/// concurrent change fail (and retry) instead of being lost.
fn add_ops(finalizers: &[String], finalizer: &str) -> Vec<PatchOperation> {
    let path = |tokens: &[&str]| PointerBuf::from_tokens(tokens.iter().copied());
    if finalizers.is_empty() {
        vec![
            PatchOperation::Test(TestOperation {
                path: path(&["metadata", "finalizers"]),
                value: serde_json::Value::Null,
            }),
            PatchOperation::Add(AddOperation {
                path: path(&["metadata", "finalizers"]),
                value: vec![finalizer].into(),
            }),
        ]
    } else {
        vec![
            PatchOperation::Test(TestOperation {
                path: path(&["metadata", "finalizers"]),
                value: finalizers.into(),
            }),
            PatchOperation::Add(AddOperation {
                path: path(&["metadata", "finalizers", "-"]),
                value: finalizer.into(),
            }),
        ]
    }
}

/// Removes `finalizer` from `obj` when it is there.
pub async fn remove_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let name = obj.name_any();
    let mut finalizers = obj.finalizers().to_vec();
    let mut tries = 0;
    loop {
        let Some(index) = finalizers.iter().position(|f| f == finalizer) else {
            return Ok(());
        };
        tries += 1;
        let at = PointerBuf::from_tokens([
            "metadata".to_string(),
            "finalizers".into(),
            index.to_string(),
        ]);
        let ops = vec![
            PatchOperation::Test(TestOperation {
                path: at.clone(),
                value: finalizer.into(),
            }),
            PatchOperation::Remove(RemoveOperation { path: at }),
        ];
        let written = api
            .patch_metadata(
                &name,
                &PatchParams::default(),
                &Patch::Json::<()>(json_patch::Patch(ops)),
            )
            .await;
        match written {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) if changed_meanwhile(&e) && tries < FINALIZER_TRIES => {
                match reread(api, &name).await? {
                    Some(now) => finalizers = now.finalizers.unwrap_or_default(),
                    None => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Protects the credentials Secret of a used account. A Secret that is
/// missing, or already being deleted without the finalizer, is left as is
/// (the account's verification reports a missing Secret).
pub async fn protect_secret(api: &Api<Secret>, name: &str) -> Result<(), kube::Error> {
    match api.get_metadata_opt(name).await? {
        Some(meta) => {
            let secret = Secret {
                metadata: meta.metadata,
                ..Default::default()
            };
            add_finalizer(api, &secret, IN_USE_FINALIZER)
                .await
                .map(|_| ())
        }
        None => Ok(()),
    }
}

/// Removes the finalizer from every Secret of `namespace` that no account in
/// `in_use` (the namespace's accounts that are still used) refers to.
pub async fn release_secrets(
    api: &Api<Secret>,
    in_use: &[&CloudAccount],
) -> Result<(), kube::Error> {
    let secrets = api.list_metadata(&ListParams::default()).await?;
    for meta in secrets.items {
        let name = meta.name_any();
        let named = in_use.iter().any(|a| {
            a.spec
                .credentials_secret_ref
                .as_ref()
                .is_some_and(|r| r.name == name)
        });
        if named || !held(&meta) {
            continue;
        }
        let secret = Secret {
            metadata: meta.metadata,
            ..Default::default()
        };
        remove_finalizer(api, &secret, IN_USE_FINALIZER).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::compute_cluster::{CloudAccountRecord, CloudAccountRef};
    use crate::api::{CloudAccountSpec, ComputeClusterSpec, ComputeClusterStatus};

    fn account(ns: &str, name: &str, allowed: &[&str]) -> CloudAccount {
        let mut a = CloudAccount::new(
            name,
            CloudAccountSpec {
                region: "us-east-1".into(),
                allowed_namespaces: allowed.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        );
        a.metadata.namespace = Some(ns.into());
        a.metadata.uid = Some(format!("uid-{ns}-{name}"));
        a
    }

    fn cluster(ns: &str, name: &str, account: &str, account_ns: Option<&str>) -> ComputeCluster {
        let spec: ComputeClusterSpec = serde_json::from_value(serde_json::json!({
            "cloudAccountRef": {"name": account},
            "region": "us-east-1",
            "network": {"vpcCidr": "10.0.0.0/16"},
        }))
        .expect("a valid spec");
        let mut c = ComputeCluster::new(name, spec);
        c.spec.cloud_account_ref = CloudAccountRef {
            name: account.into(),
            namespace: account_ns.map(String::from),
        };
        c.metadata.namespace = Some(ns.into());
        c
    }

    /// The cluster reached AWS through `account`.
    fn reached_aws_through(mut c: ComputeCluster, account: &CloudAccount) -> ComputeCluster {
        c.status = Some(ComputeClusterStatus {
            aws_account_id: Some("123456789012".into()),
            cloud_account: Some(CloudAccountRecord {
                namespace: account.namespace().unwrap_or_default(),
                name: account.name_any(),
                uid: account.uid().unwrap_or_default(),
            }),
            ..Default::default()
        });
        c
    }

    #[test]
    fn users_are_the_clusters_that_may_use_the_account_or_reached_aws_through_it() {
        let acme = account("team-a", "acme", &["team-b"]);
        // Team C's own account, and acme deleted and made again (a new UID).
        let own = account("team-c", "own", &[]);
        let mut acme_again = acme.clone();
        acme_again.metadata.uid = Some("uid-acme-2".into());
        let rows: &[(ComputeCluster, bool, &str)] = &[
            (cluster("team-a", "ml", "acme", None), true, "own namespace"),
            (
                cluster("team-a", "other", "zeta", None),
                false,
                "another account",
            ),
            (
                cluster("team-b", "etl", "acme", Some("team-a")),
                true,
                "allowed namespace",
            ),
            (
                cluster("team-b", "twin", "acme", None),
                false,
                "same name in its own namespace",
            ),
            (
                cluster("team-c", "stray", "acme", Some("team-a")),
                false,
                "namespace not allowed, never reached AWS",
            ),
            (
                reached_aws_through(cluster("team-c", "old", "acme", Some("team-a")), &acme),
                true,
                "namespace no longer allowed, but has AWS resources through acme",
            ),
            (
                reached_aws_through(cluster("team-c", "moved", "acme", Some("team-a")), &own),
                false,
                "re-pointed at acme after reaching AWS through its own account",
            ),
            (
                reached_aws_through(
                    cluster("team-c", "reborn", "acme", Some("team-a")),
                    &acme_again,
                ),
                false,
                "reached AWS through an earlier account of the same name",
            ),
            (
                reached_aws_through(cluster("team-b", "left", "zeta", Some("team-a")), &acme),
                true,
                "now names another account, but its resources came through acme",
            ),
        ];
        for (c, expected, why) in rows {
            assert_eq!(uses(&acme, c), *expected, "{why}");
        }
        // (cluster, may act converging, may act deleting, consent withdrawn)
        let acts = [
            ("ml", true, true, false),
            ("etl", true, true, false),
            ("stray", false, false, false),
            ("old", false, true, true),
            ("moved", false, false, false),
            ("reborn", false, false, false),
            ("left", true, true, false),
        ];
        for (name, converging, deleting, withdrawn) in acts {
            let (c, ..) = rows
                .iter()
                .find(|r| r.0.name_any() == name)
                .expect("a row of that name");
            let s = Standing::of(&acme, c);
            assert_eq!(
                (s.may_act(false), s.may_act(true), s.withdrawn()),
                (converging, deleting, withdrawn),
                "{name}"
            );
        }
        let all: Vec<ComputeCluster> = rows.iter().map(|r| r.0.clone()).collect();
        assert_eq!(
            users(&acme, &all),
            vec!["team-a/ml", "team-b/etl", "team-b/left", "team-c/old"]
        );
    }

    #[test]
    fn waiting_message_names_the_users() {
        assert_eq!(
            waiting_message(&["team-a/ml".into(), "team-b/etl".into()]),
            "waiting for 2 ComputeClusters: team-a/ml, team-b/etl"
        );
        assert_eq!(
            waiting_message(&["a/x".into()]),
            "waiting for 1 ComputeCluster: a/x"
        );
        let many: Vec<String> = (0..12).map(|i| format!("ns/c{i}")).collect();
        assert!(waiting_message(&many).ends_with("ns/c9 and 2 more"));
    }

    /// The account `acme` in `default` as metadata, with `finalizers`.
    fn metadata(finalizers: &[&str]) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "acme", "namespace": "default", "finalizers": finalizers},
        })
    }

    fn patches(seen: &[crate::fixtures::Seen]) -> usize {
        seen.iter().filter(|s| s.method == "PATCH").count()
    }

    #[tokio::test]
    async fn a_finalizer_write_that_lost_a_race_is_settled_by_a_fresh_read_not_a_backoff() {
        use crate::fixtures::{scripted, status};
        let acme = account("default", "acme", &[]);
        // The other controller added it first: the test operation fails,
        // the fresh read shows it there, and that is success.
        let (client, server) = scripted(vec![
            status(422, "Invalid"),
            (200, metadata(&[IN_USE_FINALIZER])),
        ]);
        let api = Api::<CloudAccount>::namespaced(client, "default");
        let added = add_finalizer(&api, &acme, IN_USE_FINALIZER).await;
        assert!(matches!(added, Ok(true)), "{added:?}");
        let seen = server.seen();
        assert_eq!(patches(&seen), 1, "{seen:?}");
        assert_eq!(seen.iter().filter(|s| s.method == "GET").count(), 1);

        // Another finalizer came meanwhile: the write is made again
        // against the list as it is now.
        let (client, server) = scripted(vec![
            status(422, "Invalid"),
            (200, metadata(&["other.example/keep"])),
            (200, metadata(&["other.example/keep", IN_USE_FINALIZER])),
        ]);
        let api = Api::<CloudAccount>::namespaced(client, "default");
        let added = add_finalizer(&api, &acme, IN_USE_FINALIZER).await;
        assert!(matches!(added, Ok(true)), "{added:?}");
        let seen = server.seen();
        assert_eq!(patches(&seen), 2, "{seen:?}");
        assert_eq!(
            seen[2].body[0]["value"],
            serde_json::json!(["other.example/keep"]),
            "the second write tests the fresh list: {seen:?}"
        );

        // Control: a refusal that is no race is not retried.
        let (client, server) = scripted(vec![status(403, "Forbidden")]);
        let api = Api::<CloudAccount>::namespaced(client, "default");
        assert!(add_finalizer(&api, &acme, IN_USE_FINALIZER).await.is_err());
        assert_eq!(server.seen().len(), 1);

        // Removal: lost to a concurrent removal, the fresh read shows it
        // gone, and that is success.
        let mut held = acme.clone();
        held.metadata.finalizers = Some(vec![IN_USE_FINALIZER.into()]);
        let (client, server) = scripted(vec![status(422, "Invalid"), (200, metadata(&[]))]);
        let api = Api::<CloudAccount>::namespaced(client, "default");
        let removed = remove_finalizer(&api, &held, IN_USE_FINALIZER).await;
        assert!(removed.is_ok(), "{removed:?}");
        assert_eq!(patches(&server.seen()), 1);
    }
}
