//! Everything in an account and region that carries the operator's
//! ownership tags, whichever cluster it belongs to: one paginated
//! DescribeTags for EC2, the IAM roles named like the operator's (one
//! paginated GetAccountAuthorizationDetails), and the log groups under
//! `/byoc/` (one paginated DescribeLogGroups, and their tags, one call
//! each: CloudWatch Logs lists no tags).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;

use super::instance_profile::{self, tag_value};
use super::tags::{
    OwnershipTags, CLUSTER, CLUSTER_UID, INSTALLATION, MANAGED_BY, MANAGED_BY_VALUE, RETAINED,
};
use super::{AwsClients, AwsResult, NotFoundExt, SdkResultExt};

/// A resource of the operator's, as its tags say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tagged {
    /// EC2's resource type (`vpc`, `natgateway`, `instance`, ...) or `iam-role`.
    pub kind: String,
    pub id: String,
    /// The owning cluster's UID.
    pub uid: String,
    /// The owning cluster's `namespace/name`.
    pub cluster: String,
    /// The installation tag: `None` on what was made before installations
    /// were told apart.
    pub installation: Option<String>,
    /// Let go with `deletionPolicy: Retain` (the `byoc.dev/retained` tag).
    pub retained: bool,
}

/// EC2 resources carrying the managed-by tag and a cluster UID.
pub async fn ec2(c: &AwsClients) -> AwsResult<Vec<Tagged>> {
    let keys = Filter::builder()
        .name("key")
        .values(CLUSTER_UID)
        .values(CLUSTER)
        .values(MANAGED_BY)
        .values(INSTALLATION)
        .values(RETAINED)
        .build();
    // Resource ID → (type, tags).
    let mut seen: BTreeMap<String, (String, BTreeMap<String, String>)> = BTreeMap::new();
    let mut pages = c.ec2.describe_tags().filters(keys).into_paginator().send();
    while let Some(page) = pages.next().await {
        for t in page.op("ec2:DescribeTags")?.tags() {
            let (Some(id), Some(key)) = (t.resource_id(), t.key()) else {
                continue;
            };
            let kind = t.resource_type().map(|r| r.as_str()).unwrap_or("unknown");
            let entry = seen
                .entry(id.to_string())
                .or_insert_with(|| (kind.to_string(), BTreeMap::new()));
            entry
                .1
                .insert(key.to_string(), t.value().unwrap_or_default().to_string());
        }
    }
    Ok(seen
        .into_iter()
        .filter_map(|(id, (kind, tags))| owned(kind, id, &tags))
        .collect())
}

fn owned(kind: String, id: String, tags: &BTreeMap<String, String>) -> Option<Tagged> {
    if tags.get(MANAGED_BY).map(String::as_str) != Some(MANAGED_BY_VALUE) {
        return None;
    }
    Some(Tagged {
        kind,
        id,
        uid: tags.get(CLUSTER_UID)?.clone(),
        cluster: tags.get(CLUSTER).cloned().unwrap_or_default(),
        installation: tags.get(INSTALLATION).cloned(),
        retained: tags.contains_key(RETAINED),
    })
}

/// Log groups under [`super::log_group::PREFIX`] whose tags say they are
/// the operator's.
pub async fn log_groups(c: &AwsClients) -> AwsResult<Vec<Tagged>> {
    let mut out = Vec::new();
    for group in super::log_group::list(c, super::log_group::PREFIX).await? {
        let tags = super::log_group::tags(c, &group.arn).await?;
        out.extend(owned("log-group".into(), group.name, &tags));
    }
    Ok(out)
}

/// The installation's cluster keys (by their description, which names the
/// installation and the cluster's UID: a key a crash left untagged is
/// found too): those not scheduled for deletion as the clusters' resources,
/// and those scheduled, each with the date KMS deletes it.
pub async fn kms_keys(
    c: &AwsClients,
    installation: &str,
) -> AwsResult<(Vec<Tagged>, Vec<super::kms_key::ObservedKey>)> {
    let made_for = super::kms_key::made_for(installation, "");
    let (pending, live): (Vec<_>, Vec<_>) = super::kms_key::described(c, &made_for)
        .await?
        .into_iter()
        .partition(|k| k.pending_deletion());
    let tagged = live
        .into_iter()
        .filter_map(|k| {
            let rest = k.description.strip_prefix(&made_for)?;
            let (uid, named) = rest.split_once(": ComputeCluster ")?;
            Some(Tagged {
                kind: "kms-key".into(),
                id: k.id,
                uid: uid.to_string(),
                cluster: named.to_string(),
                installation: Some(installation.to_string()),
                retained: k.tags.contains_key(RETAINED),
            })
        })
        .collect();
    Ok((tagged, pending))
}

/// IAM roles whose names start with `prefix` and whose tags say they are
/// the operator's. IAM has no tag filter: every role comes with its tags in
/// one paginated GetAccountAuthorizationDetails (the call the drift check
/// makes), not a ListRoles and a GetRole per role.
pub async fn iam_roles(c: &AwsClients, prefix: &str) -> AwsResult<Vec<Tagged>> {
    let mut out = Vec::new();
    let mut pages = c
        .iam
        .get_account_authorization_details()
        .filter(aws_sdk_iam::types::EntityType::Role)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for r in page
            .op("iam:GetAccountAuthorizationDetails")?
            .role_detail_list()
        {
            let Some(name) = r.role_name().filter(|n| n.starts_with(prefix)) else {
                continue;
            };
            let tags: BTreeMap<String, String> = r
                .tags()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect();
            out.extend(owned("iam-role".into(), name.to_string(), &tags));
        }
    }
    Ok(out)
}

/// What [`adopt`] tagged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// EC2 resource IDs.
    pub ec2: Vec<String>,
    /// `iam-role` and `iam-instance-profile` names.
    pub iam: Vec<String>,
}

/// Tags what cluster `owner.uid` made before installations were told apart
/// (the managed-by and UID tags, no installation tag) with this
/// installation's: one CreateTags for EC2 (1000 resources a call), one
/// TagRole and one TagInstanceProfile for the IAM role and profile named
/// `iam_name`. The caller knows the cluster is live in this installation's
/// apiserver. Nothing of another installation's is touched: what carries
/// any installation tag is left as it is.
pub async fn adopt(c: &AwsClients, owner: &OwnershipTags, iam_name: &str) -> AwsResult<Adopted> {
    let mut adopted = Adopted::default();
    let of_cluster = Filter::builder().name("key").values(CLUSTER_UID).build();
    let uid = Filter::builder().name("value").values(&owner.uid).build();
    let mut ids = Vec::new();
    let mut pages = c
        .ec2
        .describe_tags()
        .filters(of_cluster)
        .filters(uid)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        ids.extend(
            page.op("ec2:DescribeTags")?
                .tags()
                .iter()
                .filter_map(|t| t.resource_id().map(str::to_string)),
        );
    }
    for chunk in ids.chunks(200) {
        let tags = ownership_tags_of(c, chunk).await?;
        adopted.ec2.extend(
            chunk
                .iter()
                .filter(|id| {
                    tags.get(*id).is_some_and(|t| {
                        t.get(MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_VALUE)
                            && !t.contains_key(INSTALLATION)
                    })
                })
                .cloned(),
        );
    }
    let installation = aws_sdk_ec2::types::Tag::builder()
        .key(INSTALLATION)
        .value(&owner.installation)
        .build();
    for chunk in adopted.ec2.chunks(1000) {
        c.ec2
            .create_tags()
            .set_resources(Some(chunk.to_vec()))
            .tags(installation.clone())
            .send()
            .await
            .op("ec2:CreateTags")?;
    }
    adopted.iam = adopt_iam(c, owner, iam_name).await?;
    Ok(adopted)
}

/// The managed-by and installation tags of up to 200 EC2 resources, by ID.
async fn ownership_tags_of(
    c: &AwsClients,
    ids: &[String],
) -> AwsResult<BTreeMap<String, BTreeMap<String, String>>> {
    let mut tags: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let filters = [
        Filter::builder()
            .name("resource-id")
            .set_values(Some(ids.to_vec()))
            .build(),
        Filter::builder()
            .name("key")
            .values(MANAGED_BY)
            .values(INSTALLATION)
            .build(),
    ];
    let mut pages = c
        .ec2
        .describe_tags()
        .set_filters(Some(filters.to_vec()))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for t in page.op("ec2:DescribeTags")?.tags() {
            let (Some(id), Some(key)) = (t.resource_id(), t.key()) else {
                continue;
            };
            tags.entry(id.to_string())
                .or_default()
                .insert(key.to_string(), t.value().unwrap_or_default().to_string());
        }
    }
    Ok(tags)
}

/// The IAM part of [`adopt`].
async fn adopt_iam(c: &AwsClients, owner: &OwnershipTags, name: &str) -> AwsResult<Vec<String>> {
    let legacy = |tags: &[aws_sdk_iam::types::Tag]| {
        tag_value(tags, MANAGED_BY) == Some(MANAGED_BY_VALUE)
            && tag_value(tags, CLUSTER_UID) == Some(owner.uid.as_str())
            && tag_value(tags, INSTALLATION).is_none()
    };
    let tag = || instance_profile::tag(INSTALLATION, &owner.installation);
    let mut adopted = Vec::new();
    let role = c
        .iam
        .get_role()
        .role_name(name)
        .send()
        .await
        .op("iam:GetRole")
        .found()?;
    if role.and_then(|r| r.role).is_some_and(|r| legacy(r.tags())) {
        c.iam
            .tag_role()
            .role_name(name)
            .tags(tag()?)
            .send()
            .await
            .op("iam:TagRole")?;
        adopted.push(format!("iam-role/{name}"));
    }
    let profile = c
        .iam
        .get_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
        .op("iam:GetInstanceProfile")
        .found()?;
    if profile
        .and_then(|p| p.instance_profile)
        .is_some_and(|p| legacy(p.tags()))
    {
        c.iam
            .tag_instance_profile()
            .instance_profile_name(name)
            .tags(tag()?)
            .send()
            .await
            .op("iam:TagInstanceProfile")?;
        adopted.push(format!("iam-instance-profile/{name}"));
    }
    Ok(adopted)
}

/// Marks what a cluster deleted with `deletionPolicy: Retain` leaves in
/// AWS as let go on purpose (`byoc.dev/retained`): EC2 resources by ID
/// (1000 a call) and the IAM role and profile named `iam_name` when they
/// are there, so no audit counts them as leaked.
pub async fn mark_retained(
    c: &AwsClients,
    ec2_ids: &[String],
    iam_name: Option<&str>,
) -> AwsResult<()> {
    let retained = aws_sdk_ec2::types::Tag::builder()
        .key(RETAINED)
        .value("true")
        .build();
    for chunk in ec2_ids.chunks(1000) {
        c.ec2
            .create_tags()
            .set_resources(Some(chunk.to_vec()))
            .tags(retained.clone())
            .send()
            .await
            .op("ec2:CreateTags")?;
    }
    let Some(name) = iam_name else {
        return Ok(());
    };
    let tag = instance_profile::tag(RETAINED, "true")?;
    c.iam
        .tag_role()
        .role_name(name)
        .tags(tag.clone())
        .send()
        .await
        .op("iam:TagRole")
        .found()?;
    c.iam
        .tag_instance_profile()
        .instance_profile_name(name)
        .tags(tag)
        .send()
        .await
        .op("iam:TagInstanceProfile")
        .found()?;
    Ok(())
}
