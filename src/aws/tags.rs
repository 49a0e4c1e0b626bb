//! Ownership tags: every resource the operator creates carries the owning
//! cluster's UID, its namespace/name, a managed-by tag and the public ID of
//! the operator installation that made it, and nothing is modified or
//! deleted without them. A resource of another installation is never ours,
//! whatever cluster UID it carries; one without any installation tag was
//! made before installations were told apart, and belongs to the
//! installation whose apiserver holds its live cluster (which adopts it).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

/// Who manages the resource.
pub const MANAGED_BY: &str = "byoc.dev/managed-by";
pub const MANAGED_BY_VALUE: &str = "byoc-operator";
/// Public ID of the operator installation that made the resource.
pub const INSTALLATION: &str = "byoc.dev/installation";
/// Set on the resources of a cluster deleted with `deletionPolicy: Retain`:
/// let go on purpose, never a leak to clean up.
pub const RETAINED: &str = "byoc.dev/retained";
/// On what `byoc-operator connect aws` made in a team's account (the
/// cross-account role, the shared node role and profile): the CloudAccount
/// (`namespace/name`) it was made for. Nothing else carries it.
pub const CONNECTED: &str = "byoc.dev/connected-account";
/// Beside [`CONNECTED`] on the cross-account role: the public ID of the
/// installation it was connected for, which the operator's own identity
/// policy (`iam-policy operator`) requires of every role it assumes.
pub const CONNECTED_INSTALLATION: &str = "byoc.dev/connected-installation";
/// Beside [`CONNECTED`]: the UID of the CloudAccount it was connected for
/// (a CloudAccount deleted and made again under the same name is another).
pub const CONNECTED_UID: &str = "byoc.dev/connected-account-uid";
/// UID of the owning ComputeCluster: the ownership key.
/// Session tags of every AssumeRole: the CloudAccount's namespace and
/// name, so a trust policy can pin the namespace
/// (`aws:RequestTag/byoc.dev/namespace`) and CloudTrail names the tenant.
pub const SESSION_NAMESPACE: &str = "byoc.dev/namespace";
pub const SESSION_ACCOUNT: &str = "byoc.dev/cloud-account";
pub const CLUSTER_UID: &str = "byoc.dev/cluster-uid";
/// `namespace/name` of the owning ComputeCluster, for people.
pub const CLUSTER: &str = "byoc.dev/cluster";
/// What the resource is to the cluster, e.g. `public-subnet`.
pub const PART: &str = "byoc.dev/part";
/// Availability zone a zonal part serves.
pub const ZONE: &str = "byoc.dev/zone";
/// Node group of an instance.
pub const NODE_GROUP: &str = "byoc.dev/node-group";
/// The service of a VPC endpoint (`s3`, `ecr.dkr`).
pub const ENDPOINT_SERVICE: &str = "byoc.dev/endpoint-service";
/// The peer VPC of a peering connection.
pub const PEER_VPC: &str = "byoc.dev/peer-vpc";
/// On an instance AWS said it takes back (or a rebalance the group
/// replaces): when, in seconds since the epoch (0: no time given). Written
/// by the interruption listener before it deletes the message, so the mark
/// outlives a leader change; read by the node groups' plan.
pub const INTERRUPTED: &str = "byoc.dev/interrupted";
/// Hash of the launch configuration an instance was launched with.
pub const LAUNCH_CONFIG: &str = "byoc.dev/launch-config";
pub const NAME: &str = "Name";

/// The ownership tags of one cluster, plus the user's `spec.tags`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnershipTags {
    /// The installation's public ID.
    pub installation: String,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub user: BTreeMap<String, String>,
}

#[cfg(test)]
impl OwnershipTags {
    /// Cluster team-a/ml of installation inst-a: the unit tests' owner.
    pub fn of_test_cluster(uid: &str) -> Self {
        OwnershipTags {
            installation: "inst-a".into(),
            uid: uid.into(),
            namespace: "team-a".into(),
            name: "ml".into(),
            user: Default::default(),
        }
    }
}

impl OwnershipTags {
    /// All tags for a resource: user tags first, so ours always win.
    pub fn for_part(&self, part: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut tags = self.user.clone();
        tags.insert(MANAGED_BY.into(), MANAGED_BY_VALUE.into());
        tags.insert(INSTALLATION.into(), self.installation.clone());
        tags.insert(CLUSTER_UID.into(), self.uid.clone());
        tags.insert(CLUSTER.into(), format!("{}/{}", self.namespace, self.name));
        tags.insert(PART.into(), part.into());
        let zone = extra.iter().find(|(k, _)| *k == ZONE).map(|(_, v)| *v);
        let label = match zone {
            Some(z) => format!("{}-{}-{}", self.name, part, z),
            None => format!("{}-{}", self.name, part),
        };
        tags.insert(NAME.into(), label);
        for (k, v) in extra {
            tags.insert((*k).into(), (*v).into());
        }
        tags
    }

    /// EC2 tag specifications to tag a resource atomically at creation.
    pub fn ec2_spec(
        &self,
        resource: ResourceType,
        part: &str,
        extra: &[(&str, &str)],
    ) -> TagSpecification {
        TagSpecification::builder()
            .resource_type(resource)
            .set_tags(Some(ec2_tags(&self.for_part(part, extra))))
            .build()
    }

    /// Why something brought, which the operator tagged as cluster `uid` of
    /// `installation` (`None`: made before installations were tagged), is
    /// not this cluster's to use: it is another installation's, or another
    /// cluster's.
    pub fn claim_of_another(&self, claim: &Claim) -> Option<Owner> {
        let (uid, installation) = claim;
        if let Some(other) = installation.as_deref().filter(|i| *i != self.installation) {
            return Some(Owner::Installation(other.to_string()));
        }
        (*uid != self.uid).then(|| Owner::Cluster(uid.clone()))
    }

    /// The describe filter that finds this cluster's resources.
    pub fn filter(&self) -> Filter {
        Filter::builder()
            .name(format!("tag:{CLUSTER_UID}"))
            .values(&self.uid)
            .build()
    }
}

/// Whose a resource the operator made is, when it is not this cluster's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Another operator installation's (its public ID).
    Installation(String),
    /// Another cluster's (its UID).
    Cluster(String),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Whose it is stays unsaid: a tenant learns neither another
            // installation's ID nor another cluster's UID.
            Owner::Installation(_) => f.write_str("belongs to another operator installation"),
            Owner::Cluster(_) => f.write_str("belongs to another ComputeCluster"),
        }
    }
}

/// Whose resources a describe looks for: one cluster's, or every cluster's
/// this operator manages in the account and region (the shared resync).
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    Cluster(&'a OwnershipTags),
    /// These clusters' of this installation (by UID; AWS takes 200 values in a filter).
    Clusters {
        installation: &'a str,
        uids: &'a [String],
    },
    /// Every cluster's of this installation (its public ID).
    Operator(&'a str),
}

impl Scope<'_> {
    /// The describe filter that finds the scope's resources.
    pub fn filter(&self) -> Filter {
        match self {
            Scope::Cluster(owner) => owner.filter(),
            Scope::Clusters { uids, .. } => Filter::builder()
                .name(format!("tag:{CLUSTER_UID}"))
                .set_values(Some(uids.to_vec()))
                .build(),
            // Not filtered by installation: what was made before the tag
            // existed is found too, and `owner_of` decides.
            Scope::Operator(_) => Filter::builder()
                .name(format!("tag:{MANAGED_BY}"))
                .values(MANAGED_BY_VALUE)
                .build(),
        }
    }

    /// The installation whose resources the scope covers.
    pub fn installation(&self) -> &str {
        match self {
            Scope::Cluster(owner) => &owner.installation,
            Scope::Clusters { installation, .. } | Scope::Operator(installation) => installation,
        }
    }

    /// The UID of the cluster owning a resource with these tags, when it is
    /// in the scope: managed by the operator, not another installation's,
    /// and the cluster's when the scope is one cluster.
    pub fn owner_of(&self, tags: &[Tag]) -> Option<String> {
        if tag_value(tags, MANAGED_BY) != Some(MANAGED_BY_VALUE)
            || !of_installation(tag_value(tags, INSTALLATION), self.installation())
        {
            return None;
        }
        let uid = tag_value(tags, CLUSTER_UID)?;
        match self {
            Scope::Cluster(owner) if owner.uid != uid => None,
            Scope::Clusters { uids, .. } if !uids.iter().any(|u| u == uid) => None,
            _ => Some(uid.to_string()),
        }
    }
}

/// Whether a resource whose installation tag is `tagged` may be
/// `installation`'s: its own, or made before the tag existed (untagged; the
/// caller knows the cluster is live here, and adopts it).
pub fn of_installation(tagged: Option<&str>, installation: &str) -> bool {
    tagged.is_none_or(|t| t == installation)
}

/// Whose the operator made a resource: its cluster UID and installation tags.
pub type Claim = (String, Option<String>);

/// The claim on an EC2 resource with these tags, when the operator made it.
pub fn claim(tags: &[Tag]) -> Option<Claim> {
    if tag_value(tags, MANAGED_BY) != Some(MANAGED_BY_VALUE) {
        return None;
    }
    let uid = tag_value(tags, CLUSTER_UID)?;
    Some((
        uid.to_string(),
        tag_value(tags, INSTALLATION).map(String::from),
    ))
}

/// An observed resource and the UID of the cluster owning it.
pub type Owned<T> = (String, T);

/// The resources of one scope, without their owners (a cluster's scope has
/// one owner).
pub fn items<T>(owned: Vec<Owned<T>>) -> Vec<T> {
    owned.into_iter().map(|(_, item)| item).collect()
}

pub fn ec2_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// The value of `key` among EC2 tags.
pub fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> OwnershipTags {
        OwnershipTags {
            user: BTreeMap::from([
                ("team".into(), "a".into()),
                (CLUSTER_UID.into(), "spoof".into()),
            ]),
            ..OwnershipTags::of_test_cluster("u-1")
        }
    }

    #[test]
    fn ownership_tags_override_user_tags() {
        let tags = owner().for_part("public-subnet", &[(ZONE, "us-east-1a")]);
        assert_eq!(tags[CLUSTER_UID], "u-1");
        assert_eq!(tags[INSTALLATION], "inst-a");
        assert_eq!(tags[CLUSTER], "team-a/ml");
        assert_eq!(tags["team"], "a");
        assert_eq!(tags[NAME], "ml-public-subnet-us-east-1a");
    }

    #[test]
    fn a_scope_owns_what_carries_the_uid_and_managed_by() {
        let o = owner();
        let ours = ec2_tags(&o.for_part("vpc", &[]));
        let theirs = ec2_tags(&BTreeMap::from([(
            CLUSTER_UID.to_string(),
            "u-1".to_string(),
        )]));
        let other = OwnershipTags {
            uid: "u-2".into(),
            ..o.clone()
        };
        // The same cluster UID made by another installation, and by one
        // before installations were tagged.
        let other_installation = ec2_tags(
            &OwnershipTags {
                installation: "inst-b".into(),
                ..o.clone()
            }
            .for_part("vpc", &[]),
        );
        let mut untagged = o.for_part("vpc", &[]);
        untagged.remove(INSTALLATION);
        let legacy = ec2_tags(&untagged);
        let both = ["u-2".to_string(), "u-1".to_string()];
        let clusters = |uids| Scope::Clusters {
            installation: "inst-a",
            uids,
        };
        // (scope, tags, owner)
        let rows = [
            (Scope::Cluster(&o), &ours, Some("u-1")),
            (Scope::Cluster(&o), &theirs, None),
            (Scope::Cluster(&other), &ours, None),
            (Scope::Cluster(&o), &other_installation, None),
            (Scope::Cluster(&o), &legacy, Some("u-1")),
            (Scope::Operator("inst-a"), &ours, Some("u-1")),
            (Scope::Operator("inst-b"), &ours, None),
            (Scope::Operator("inst-b"), &other_installation, Some("u-1")),
            (Scope::Operator("inst-a"), &legacy, Some("u-1")),
            (clusters(&both), &ours, Some("u-1")),
            (clusters(&both[..1]), &ours, None),
            (clusters(&both), &other_installation, None),
            (Scope::Operator("inst-a"), &theirs, None),
        ];
        for (scope, tags, want) in rows {
            assert_eq!(scope.owner_of(tags).as_deref(), want, "{scope:?}");
        }
    }
}
