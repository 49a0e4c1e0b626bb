//! SSH key pairs: a group's `sshPublicKey` is imported as a key pair of the
//! cluster's (tagged, named with the key's hash, so a new key is a new pair);
//! a group's `sshKeyName` is the user's and never touched. A pair no group
//! wants and no live instance uses is deleted; all go after the instances.

use std::collections::BTreeMap;

use futures::future::try_join_all;

use super::iam::iam_name;
use super::Pass;
use super::{put, Board, StepInput, StepResult};
use crate::aws::instances::ObservedInstance;
use crate::aws::key_pair::{self, ObservedKeyPair};
use crate::aws::token::client_token;
use crate::aws::{AwsClients, AwsResult, OwnershipTags};
use crate::cluster::spec::NodeGroup;
use crate::Error;

/// The name of the key pair imported for `group`'s `public_key`.
pub fn owned_name(owner: &OwnershipTags, group: &str, public_key: &str) -> String {
    let hash = client_token("k", &[public_key]);
    format!("{}-{group}-{}", iam_name(owner), &hash[2..10])
}

/// What to import and delete; and the key name each group launches with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyActions {
    /// `(name, group, public key)`.
    pub import: Vec<(String, String, String)>,
    pub delete: Vec<String>,
    pub key_names: BTreeMap<String, String>,
}

pub fn plan(
    owner: &OwnershipTags,
    groups: &[NodeGroup],
    observed: &[ObservedKeyPair],
    instances: &[ObservedInstance],
) -> KeyActions {
    let mut actions = KeyActions::default();
    for g in groups {
        if let Some(name) = &g.ssh_key_name {
            actions.key_names.insert(g.name.clone(), name.clone());
        }
        if let Some(key) = &g.ssh_public_key {
            let name = owned_name(owner, &g.name, key);
            if !observed.iter().any(|k| k.name == name) {
                actions
                    .import
                    .push((name.clone(), g.name.clone(), key.clone()));
            }
            actions.key_names.insert(g.name.clone(), name);
        }
    }
    let wanted: Vec<&String> = actions.key_names.values().collect();
    actions.delete = observed
        .iter()
        .filter(|k| !wanted.contains(&&k.name))
        .filter(|k| {
            !instances
                .iter()
                .any(|i| !i.state.is_ending() && i.key_name.as_deref() == Some(k.name.as_str()))
        })
        .map(|k| k.name.clone())
        .collect();
    actions
}

/// The key name each group launches with, by group.
pub async fn ensure(p: Pass<'_>) -> Result<BTreeMap<String, String>, Error> {
    let actions = plan(
        &p.spec.owner,
        &p.spec.node_groups,
        &p.observed.key_pairs,
        &p.observed.instances,
    );
    check_brought(p).await?;
    try_join_all(
        actions
            .import
            .iter()
            .map(|(name, group, key)| key_pair::import(p.c, &p.spec.owner, name, group, key)),
    )
    .await?;
    try_join_all(
        actions
            .delete
            .iter()
            .map(|name| key_pair::delete(p.c, name)),
    )
    .await?;
    Ok(actions.key_names)
}

/// The key pairs named by `sshKeyName` exist: EC2 would refuse the launch
/// only after the network is built and billing.
async fn check_brought(p: Pass<'_>) -> Result<(), Error> {
    let brought: Vec<(&String, &String)> = p
        .spec
        .node_groups
        .iter()
        .filter_map(|g| g.ssh_key_name.as_ref().map(|k| (&g.name, k)))
        .collect();
    if brought.is_empty() {
        return Ok(());
    }
    let mut names: Vec<String> = brought.iter().map(|(_, k)| (*k).clone()).collect();
    names.sort();
    names.dedup();
    let found = key_pair::existing(p.c, &names).await?;
    match brought.into_iter().find(|(_, k)| !found.contains(k)) {
        Some((group, name)) => Err(Error::KeyPairNotFound {
            group: group.clone(),
            name: name.clone(),
            region: p.spec.region.clone(),
        }),
        None => Ok(()),
    }
}

pub async fn delete(c: &AwsClients, observed: &[ObservedKeyPair]) -> AwsResult<()> {
    try_join_all(observed.iter().map(|k| key_pair::delete(c, &k.name))).await?;
    Ok(())
}

/// Step `KeyPairs`: the key pairs of the node groups that bring a key.
pub fn step<'a>(i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move { put(&b.keys, ensure(i.pass).await?) })
}

/// This kind's part of a deletion pass (its row's `delete`).
pub fn deletion<'a>(
    c: &'a AwsClients,
    _: &'a crate::aws::OwnershipTags,
    o: &'a super::Observed,
) -> super::DeleteResult<'a> {
    super::at_once(delete(c, &o.key_pairs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodeGroupSpec;
    use crate::aws::instances::InstanceState;

    fn owner() -> OwnershipTags {
        OwnershipTags::of_test_cluster("0123abcd-ef")
    }

    fn group(name: &str, key_name: Option<&str>, public_key: Option<&str>) -> NodeGroupSpec {
        NodeGroupSpec {
            name: name.into(),
            instance_type: "t3.large".into(),
            count: 1,
            ssh_key_name: key_name.map(String::from),
            ssh_public_key: public_key.map(String::from),
            ..Default::default()
        }
    }

    fn pair(name: &str) -> ObservedKeyPair {
        ObservedKeyPair {
            name: name.into(),
            group: Some("workers".into()),
        }
    }

    fn instance(key: &str, state: InstanceState) -> ObservedInstance {
        ObservedInstance {
            key_name: Some(key.into()),
            ..ObservedInstance::of("i-1", "workers", "t3.large", state)
        }
    }

    #[test]
    fn plan_imports_owned_keys_keeps_brought_ones_and_deletes_what_nothing_uses() {
        let o = owner();
        let (key1, key2) = ("ssh-ed25519 AAAA1 a@b", "ssh-ed25519 AAAA2 a@b");
        let (n1, n2) = (
            owned_name(&o, "workers", key1),
            owned_name(&o, "workers", key2),
        );
        assert!(
            n1.starts_with("byoc-team-a-ml-0123abcd-workers-") && n1 != n2,
            "{n1} {n2}"
        );
        // (groups, observed pairs, instances, imported, deleted, why)
        type Row<'a> = (
            Vec<NodeGroupSpec>,
            Vec<ObservedKeyPair>,
            Vec<ObservedInstance>,
            Vec<&'a str>,
            Vec<&'a str>,
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (
                vec![group("workers", None, Some(key1))],
                vec![],
                vec![],
                vec![n1.as_str()],
                vec![],
                "a new key is imported",
            ),
            (
                vec![group("workers", None, Some(key1))],
                vec![pair(&n1)],
                vec![],
                vec![],
                vec![],
                "imported before a crash: kept, not imported twice",
            ),
            (
                vec![group("workers", None, Some(key2))],
                vec![pair(&n1)],
                vec![instance(&n1, InstanceState::Running)],
                vec![n2.as_str()],
                vec![],
                "a new key: imported; the old one stays while an instance uses it",
            ),
            (
                vec![group("workers", None, Some(key2))],
                vec![pair(&n1), pair(&n2)],
                vec![instance(&n1, InstanceState::Terminated)],
                vec![],
                vec![n1.as_str()],
                "the old one goes once its instances have",
            ),
            (
                vec![group("workers", Some("alice"), None)],
                vec![],
                vec![],
                vec![],
                vec![],
                "a brought key is used, not imported",
            ),
        ];
        for (groups, observed, instances, import, delete, why) in rows {
            let groups: Vec<NodeGroup> = groups.into_iter().map(NodeGroup::of).collect();
            let got = plan(&o, &groups, &observed, &instances);
            let imported: Vec<&str> = got.import.iter().map(|(n, ..)| n.as_str()).collect();
            assert_eq!(
                (
                    imported,
                    got.delete.iter().map(String::as_str).collect::<Vec<_>>()
                ),
                (import, delete),
                "{why}"
            );
        }
        let brought = plan(
            &o,
            &[NodeGroup::of(group("workers", Some("alice"), None))],
            &[],
            &[],
        );
        assert_eq!(
            brought.key_names.get("workers").map(String::as_str),
            Some("alice")
        );
    }
}
