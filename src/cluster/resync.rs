//! The shared resync: drift is looked for per AWS account and region, not
//! per cluster. A cluster whose pass came out `running` joins its account
//! and region's group with a fingerprint of what it saw, and waits for a
//! change instead of a timer. Every resync interval the group describes
//! once per kind for every cluster of the operator's (a tag-filtered call
//! and its pages; IAM in one GetAccountAuthorizationDetails; log groups in
//! one DescribeLogGroups of the `/byoc/` prefix; keys in one ListAliases,
//! then each aliased key's state and rotation: KMS has no batch describe),
//! splits the
//! answer by owning cluster, and reconciles only the clusters whose part
//! no longer matches their fingerprint or holds an impaired instance. That
//! reconcile describes its own cluster afresh before it acts, so nothing is
//! done on the shared view. A failed shared describe reconciles the whole
//! group. User changes reconcile their own cluster at once, as before.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream};
use kube::runtime::reflector::ObjectRef;

use super::groups::{Entry, Groups};
use super::kinds::{self, iam, kms_key, log_group, Looks, Observed};
use crate::api::ComputeCluster;
use crate::aws::log_group::{self as log_group_api, ObservedLogGroup};
use crate::aws::tags::Scope;
use crate::aws::{instance_profile, instances, AwsClients, AwsResult, OwnershipTags};
use crate::metrics::Metrics;

/// A settled cluster.
#[derive(Clone, Debug)]
pub struct Member {
    /// The name of its IAM role and instance profile.
    pub iam_name: String,
    /// The name of its log group.
    pub log_group: String,
    /// The alias of its KMS key.
    pub key_alias: String,
    /// What its pass looked at, so the shared view is cut the same way.
    pub looks: Looks,
    /// [`fingerprint`] of what its pass observed.
    pub fingerprint: u64,
}

impl Member {
    pub fn new(owner: &OwnershipTags, looks: Looks, seen: &Observed) -> Self {
        Member {
            iam_name: iam::iam_name(owner),
            log_group: log_group::name_of(owner),
            key_alias: kms_key::alias_of(owner),
            looks,
            fingerprint: fingerprint(seen, looks),
        }
    }
}

/// The settled clusters of each account and region.
pub type Resync = Groups<Member>;

/// The groups, each looking every `interval`; the stream yields the
/// clusters found changed.
pub fn groups(
    interval: Duration,
    metrics: Metrics,
    installation: String,
) -> (
    Resync,
    impl Stream<Item = ObjectRef<ComputeCluster>> + Send + 'static,
) {
    let look = Arc::new(
        move |c: AwsClients, members: BTreeMap<String, Entry<Member>>| {
            let (metrics, installation) = (metrics.clone(), installation.clone());
            async move {
                let seen = describe(&c, &installation, &members).await;
                if let Err(e) = &seen {
                    tracing::info!(error = %e, "shared resync describe failed; each cluster looks for itself");
                }
                let due = due(&members, seen.as_ref().ok());
                let result = if seen.is_err() { "failed" } else { "changed" };
                metrics.resynced(result, due.len());
                metrics.resynced("unchanged", members.len().saturating_sub(due.len()));
                due
            }
            .boxed()
        },
    );
    Groups::new(interval, look)
}

/// What the shared describe says of each member: its part of the view and
/// whether any of its instances is impaired.
pub type Seen = BTreeMap<String, (Observed, bool)>;

/// One describe per kind for the whole account and region, cut per member
/// as its own pass would have described it.
async fn describe(
    c: &AwsClients,
    installation: &str,
    members: &BTreeMap<String, Entry<Member>>,
) -> AwsResult<Seen> {
    let looks = (members.values()).fold(Looks::NONE, |all, e| all.or(e.member.looks));
    let aliases = crate::aws::kms_key::alias_of(installation, "");
    let (mut by_owner, roles, impaired, groups, keys) = tokio::try_join!(
        Observed::describe_ec2(c, Scope::Operator(installation), looks),
        instance_profile::describe_account(c, installation),
        instances::impaired_in_region(c),
        kinds::when(looks.logging, log_group_api::list(c, log_group_api::PREFIX)),
        kinds::when(looks.storage, crate::aws::kms_key::aliased(c, &aliases)),
    )?;
    let groups: BTreeMap<String, ObservedLogGroup> =
        groups.into_iter().map(|g| (g.name.clone(), g)).collect();
    // The members' keys, each described with its rotation.
    let aliased: Vec<&crate::aws::kms_key::ObservedKey> = (members.values())
        .filter(|e| e.member.looks.storage)
        .filter_map(|e| keys.get(&e.member.key_alias))
        .collect();
    let described = futures::future::try_join_all(
        (aliased.iter()).map(|k| crate::aws::kms_key::with_rotation(c, &k.id)),
    )
    .await?;
    let described: BTreeMap<&str, &crate::aws::kms_key::ObservedKey> = (described.iter())
        .flatten()
        .map(|d| (d.id.as_str(), d))
        .collect();
    let keys: BTreeMap<&String, crate::aws::kms_key::ObservedKey> = (keys.iter())
        .filter_map(|(alias, k)| Some((alias, (*described.get(k.id.as_str())?).clone())))
        .collect();
    Ok(members
        .iter()
        .map(|(uid, e)| {
            let m = &e.member;
            let mut observed = by_owner.remove(uid).unwrap_or_default();
            m.looks.clear_unlooked(&mut observed);
            observed.iam =
                instance_profile::observed_in(&roles, &m.iam_name, uid, m.looks.role_policies);
            if m.looks.logging {
                observed.log_group = groups.get(&m.log_group).cloned();
            }
            if m.looks.storage {
                observed.kms_key = keys.get(&m.key_alias).cloned();
            }
            let sick = observed
                .instances
                .iter()
                .any(|i| impaired.contains_key(&i.id));
            (uid.clone(), (observed, sick))
        })
        .collect())
}

/// The members to reconcile: those whose part changed or holds an impaired
/// instance; all of them when the shared describe failed (`None`).
pub fn due(members: &BTreeMap<String, Entry<Member>>, seen: Option<&Seen>) -> BTreeSet<String> {
    let Some(seen) = seen else {
        return members.keys().cloned().collect();
    };
    members
        .iter()
        .filter(|(uid, e)| match seen.get(*uid) {
            Some((observed, sick)) => {
                *sick || fingerprint(observed, e.member.looks) != e.member.fingerprint
            }
            None => true,
        })
        .map(|(uid, _)| uid.clone())
        .collect()
}

/// A hash of what a pass saw, the same whatever order AWS listed things in;
/// what `looks` left out is left out.
pub fn fingerprint(o: &Observed, looks: Looks) -> u64 {
    fn kind<T: Debug>(h: &mut DefaultHasher, items: &[T]) {
        let mut lines: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
        lines.sort();
        lines.hash(h);
    }
    let mut h = DefaultHasher::new();
    kind(&mut h, &o.vpcs);
    kind(&mut h, &o.subnets);
    kind(&mut h, &o.internet_gateways);
    kind(&mut h, &o.addresses);
    kind(&mut h, &o.nat_gateways);
    kind(&mut h, &o.route_tables);
    kind(&mut h, &o.security_groups);
    kind(&mut h, &o.instances);
    if looks.key_pairs {
        kind(&mut h, &o.key_pairs);
    }
    if looks.endpoints {
        kind(&mut h, &o.endpoints);
    }
    if looks.peering {
        kind(&mut h, &o.peerings);
        kind(&mut h, &o.peering_routes);
    }
    if looks.logging {
        // What a listing shows too: a pass reads its group's tags, the
        // shared listing does not.
        let group = (o.log_group.as_ref()).map(|g| (&g.name, g.retention_days));
        format!("{group:?}").hash(&mut h);
    }
    if looks.storage {
        // What the shared view shows: the key the alias names, its state
        // and rotation.
        let key = (o.kms_key.as_ref()).map(|k| (&k.id, &k.state, k.rotation));
        format!("{key:?}").hash(&mut h);
    }
    let mut iam = o.iam.clone();
    iam.profile_roles.sort();
    match looks.role_policies {
        true => {
            if let Some(p) = iam.attached_policies.as_mut() {
                p.sort();
            }
        }
        false => iam.attached_policies = None,
    }
    format!("{iam:?}").hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::instances::{InstanceState, ObservedInstance};
    use crate::aws::key_pair::ObservedKeyPair;
    use crate::aws::vpc::ObservedVpc;

    fn instance(id: &str, state: InstanceState) -> ObservedInstance {
        ObservedInstance {
            launched: 1,
            zone: "us-east-1a".into(),
            ..ObservedInstance::of(id, "cpu", "t3.small", state)
        }
    }

    fn seen() -> Observed {
        let mut o = Observed {
            vpcs: vec![ObservedVpc {
                id: "vpc-1".into(),
                cidr: "10.0.0.0/16".into(),
            }],
            instances: vec![
                instance("i-1", InstanceState::Running),
                instance("i-2", InstanceState::Running),
            ],
            ..Default::default()
        };
        o.iam.name = "byoc-x".into();
        o.iam.role = Some("byoc-x".into());
        o.iam.attached_policies = Some(vec!["arn:b".into(), "arn:a".into()]);
        o
    }

    const PLAIN: Looks = Looks::NONE;

    #[test]
    fn a_fingerprint_ignores_order_and_what_was_not_looked_at() {
        let base = seen();
        let f = |o: &Observed, looks| fingerprint(o, looks);
        let mut reordered = base.clone();
        reordered.instances.reverse();
        let mut stopped = base.clone();
        stopped.instances[0].state = InstanceState::Stopped;
        let mut gone = base.clone();
        gone.vpcs.clear();
        let mut keyed = base.clone();
        keyed.key_pairs.push(ObservedKeyPair {
            name: "k".into(),
            group: None,
        });
        let mut policies = base.clone();
        policies.iam.attached_policies = Some(vec!["arn:a".into()]);
        let mut policies_reordered = base.clone();
        policies_reordered.iam.attached_policies = Some(vec!["arn:a".into(), "arn:b".into()]);
        // (changed, looks, same fingerprint as base)
        let rows = [
            (&reordered, PLAIN, true),
            (&stopped, PLAIN, false),
            (&gone, PLAIN, false),
            (&keyed, PLAIN, true),
            (&keyed, Looks::ALL, false),
            (&policies, PLAIN, true),
            (&policies, Looks::ALL, false),
            (&policies_reordered, Looks::ALL, true),
        ];
        for (i, (changed, looks, same)) in rows.into_iter().enumerate() {
            assert_eq!(f(changed, looks) == f(&base, looks), same, "row {i}");
        }
    }

    #[test]
    fn due_are_the_changed_the_impaired_and_the_unseen() {
        let object = ObjectRef::new("c").within("ns");
        let member = |o: &Observed| Entry {
            object: object.clone(),
            member: Member {
                iam_name: "byoc-x".into(),
                log_group: "/byoc/ns/c".into(),
                key_alias: "alias/byoc-i-u".into(),
                looks: PLAIN,
                fingerprint: fingerprint(o, PLAIN),
            },
        };
        let base = seen();
        let mut stopped = base.clone();
        stopped.instances[1].state = InstanceState::Stopped;
        let members: BTreeMap<String, Entry<Member>> = ["same", "changed", "sick", "unseen"]
            .into_iter()
            .map(|uid| (uid.to_string(), member(&base)))
            .collect();
        let view: Seen = BTreeMap::from([
            ("same".to_string(), (base.clone(), false)),
            ("changed".to_string(), (stopped, false)),
            ("sick".to_string(), (base.clone(), true)),
        ]);
        let got: Vec<String> = due(&members, Some(&view)).into_iter().collect();
        assert_eq!(got, ["changed", "sick", "unseen"]);
        // A failed shared describe: everyone looks for itself.
        assert_eq!(due(&members, None).len(), 4);
    }
}
