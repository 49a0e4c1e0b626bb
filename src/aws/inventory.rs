//! Everything in an account and region that carries the operator's
//! ownership tags, whichever cluster it belongs to: one paginated
//! DescribeTags for EC2, and the IAM roles named like the operator's.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;

use super::tags::{CLUSTER, CLUSTER_UID, MANAGED_BY, MANAGED_BY_VALUE};
use super::{AwsClients, AwsResult, SdkResultExt};

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
}

/// EC2 resources carrying the managed-by tag and a cluster UID.
pub async fn ec2(c: &AwsClients) -> AwsResult<Vec<Tagged>> {
    let keys = Filter::builder()
        .name("key")
        .values(CLUSTER_UID)
        .values(CLUSTER)
        .values(MANAGED_BY)
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
    })
}

/// IAM roles whose names start with `prefix` and whose tags say they are
/// the operator's (IAM has no tag filter: one GetRole each).
pub async fn iam_roles(c: &AwsClients, prefix: &str) -> AwsResult<Vec<Tagged>> {
    let mut names = Vec::new();
    let mut pages = c.iam.list_roles().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.op("iam:ListRoles")?;
        names.extend(
            page.roles()
                .iter()
                .map(|r| r.role_name().to_string())
                .filter(|n| n.starts_with(prefix)),
        );
    }
    let mut out = Vec::new();
    for name in names {
        let role = c
            .iam
            .get_role()
            .role_name(&name)
            .send()
            .await
            .op("iam:GetRole")?;
        let tags: BTreeMap<String, String> = role
            .role()
            .map(|r| {
                r.tags()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        out.extend(owned("iam-role".into(), name, &tags));
    }
    Ok(out)
}
