//! KMS keys: each cluster's own (`spec.storage`), found by its alias
//! `alias/byoc-<installation>-<uid>`. Made with a key policy that lets the
//! operator's role manage that key alone (the role's IAM policy manages no
//! key, so tagging a key the operator did not make gives it nothing), and a
//! description naming the installation and cluster, set atomically: a key
//! made but not yet tagged or aliased (a crash in between) is found by it.
//! A key brought by a team is only described.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::tags::OwnershipTags;
use super::{AwsClients, AwsError, AwsResult, NotFoundExt, SdkResultExt};

/// The tag a cluster's key carries its deletion window in (days), so the
/// window holds once the spec that asked for it is gone.
pub const DELETION_WINDOW: &str = "byoc.dev/deletion-window-days";

/// Every cluster key's alias starts so (then the installation's ID).
pub const ALIAS_PREFIX: &str = "alias/byoc-";

/// The alias of the key of cluster `uid` of `installation`.
pub fn alias_of(installation: &str, uid: &str) -> String {
    format!("{ALIAS_PREFIX}{installation}-{uid}")
}

/// A key's state in which it is gone for a cluster: deleted, or waiting
/// to be.
pub const PENDING_DELETION: &str = "PendingDeletion";
/// A key's state in which it is usable.
pub const ENABLED: &str = "Enabled";

/// A KMS key as a pass compares it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedKey {
    pub id: String,
    pub arn: String,
    /// `Enabled`, `Disabled`, `PendingDeletion`, ...
    pub state: String,
    /// When AWS deletes it, once scheduled (RFC 3339).
    pub deletion_date: Option<String>,
    /// Whether AWS rotates it yearly; `None` where not read.
    pub rotation: Option<bool>,
    /// Its description (empty where not read).
    pub description: String,
    pub tags: BTreeMap<String, String>,
}

impl ObservedKey {
    pub fn pending_deletion(&self) -> bool {
        self.state == PENDING_DELETION
    }

    /// The deletion window its tag records, if it is one KMS accepts.
    pub fn window(&self) -> Option<i32> {
        let days = self.tags.get(DELETION_WINDOW)?.parse().ok()?;
        (7..=30).contains(&days).then_some(days)
    }
}

/// Key `key` (an ID, ARN or alias) as KMS describes it, without its tags;
/// `None` when there is none.
pub async fn describe(c: &AwsClients, key: &str) -> AwsResult<Option<ObservedKey>> {
    const OP: &str = "kms:DescribeKey";
    let Some(out) = (c.kms.describe_key().key_id(key).send().await)
        .op(OP)
        .found()?
    else {
        return Ok(None);
    };
    observed(OP, out.key_metadata()).map(Some)
}

/// A key as KMS's metadata of it says (without tags or rotation).
fn observed(
    operation: &'static str,
    m: Option<&aws_sdk_kms::types::KeyMetadata>,
) -> AwsResult<ObservedKey> {
    let m = m.ok_or(AwsError::Incomplete {
        operation,
        missing: "KeyMetadata",
    })?;
    Ok(ObservedKey {
        id: m.key_id().to_string(),
        arn: m.arn().unwrap_or_default().to_string(),
        state: (m.key_state().map(|s| s.as_str().to_string())).unwrap_or_default(),
        deletion_date: m.deletion_date().map(|d| d.to_string()),
        rotation: None,
        description: m.description().unwrap_or_default().to_string(),
        tags: BTreeMap::new(),
    })
}

/// The tags of key `id`.
pub async fn tags(c: &AwsClients, id: &str) -> AwsResult<BTreeMap<String, String>> {
    let out = (c.kms.list_resource_tags().key_id(id).send().await)
        .op("kms:ListResourceTags")
        .found()?;
    Ok(out
        .map(|o| {
            o.tags()
                .iter()
                .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
                .collect()
        })
        .unwrap_or_default())
}

/// The key behind `alias`, with its tags and rotation; `None` when the
/// alias names none.
pub async fn by_alias(c: &AwsClients, alias: &str) -> AwsResult<Option<ObservedKey>> {
    let Some(mut key) = with_rotation(c, alias).await? else {
        return Ok(None);
    };
    key.tags = tags(c, &key.id).await?;
    Ok(Some(key))
}

/// Key `key` described, with its rotation while it is enabled (what the
/// shared resync compares).
pub async fn with_rotation(c: &AwsClients, key: &str) -> AwsResult<Option<ObservedKey>> {
    let Some(mut key) = describe(c, key).await? else {
        return Ok(None);
    };
    if key.state == ENABLED {
        let rotation = (c.kms.get_key_rotation_status().key_id(&key.id).send().await)
            .op("kms:GetKeyRotationStatus")?;
        key.rotation = Some(rotation.key_rotation_enabled());
    }
    Ok(Some(key))
}

/// The description every key of cluster `uid` of `installation` starts
/// with (and every key of the installation's with `uid` empty).
pub fn made_for(installation: &str, uid: &str) -> String {
    format!("byoc-operator {installation} {uid}")
}

/// The description of the cluster's key.
fn description_of(owner: &OwnershipTags) -> String {
    format!(
        "{}: ComputeCluster {}/{}",
        made_for(&owner.installation, &owner.uid),
        owner.namespace,
        owner.name
    )
}

/// Every key of the account and region whose description starts with
/// `made_for` ([`made_for`]), with its state and tags: one listing, then a
/// describe of each key (KMS has no filter).
pub async fn described(c: &AwsClients, made_for: &str) -> AwsResult<Vec<ObservedKey>> {
    let mut ids = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = (c.kms.list_keys().set_marker(marker.take()).send().await).op("kms:ListKeys")?;
        ids.extend(
            page.keys()
                .iter()
                .filter_map(|k| k.key_id().map(str::to_string)),
        );
        match page.next_marker() {
            Some(m) if page.truncated() => marker = Some(m.to_string()),
            _ => break,
        }
    }
    let mut out = Vec::new();
    for id in ids {
        let Some(mut key) = describe(c, &id).await? else {
            continue;
        };
        if key.description.starts_with(made_for) {
            key.tags = tags(c, &id).await?;
            out.push(key);
        }
    }
    Ok(out)
}

/// The key policy of a cluster's key: the account's IAM policies decide
/// (its administrators, and the nodes through their grants), and
/// `operator` (the role the operator works through) manages this key.
pub fn key_policy(account: &str, operator: &str) -> Value {
    json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "AccountIamPolicies", "Effect": "Allow",
         "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
         "Action": "kms:*", "Resource": "*"},
        {"Sid": "OperatorManagesThisKey", "Effect": "Allow",
         "Principal": {"AWS": operator},
         "Action": KEY_POLICY_GRANTS, "Resource": "*"},
    ]})
}

/// What a cluster key's policy lets the operator's role do to that key.
/// `PutKeyPolicy` it never calls: KMS makes a key only when its policy
/// lets the caller change that policy (the lockout safety check), and the
/// role's own policy grants no key anything.
pub const KEY_POLICY_GRANTS: &[&str] = &[
    "kms:PutKeyPolicy",
    "kms:TagResource",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:EnableKeyRotation",
    "kms:ScheduleKeyDeletion",
];

/// Makes the cluster's key with its description and `policy` (untagged:
/// the tags follow, under the key's own policy).
pub async fn create(
    c: &AwsClients,
    owner: &OwnershipTags,
    policy: &Value,
) -> AwsResult<ObservedKey> {
    const OP: &str = "kms:CreateKey";
    let out = (c.kms.create_key())
        .description(description_of(owner))
        .policy(policy.to_string())
        .send()
        .await
        .op(OP)?;
    observed(OP, out.key_metadata())
}

/// Tags key `id` with the cluster's ownership tags and its deletion window.
pub async fn tag(c: &AwsClients, id: &str, owner: &OwnershipTags, window: i32) -> AwsResult<()> {
    let window = window.to_string();
    put_tags(
        c,
        id,
        owner.for_part("kms-key", &[(DELETION_WINDOW, &window)]),
    )
    .await
}

/// Puts `tags` on key `id`.
async fn put_tags(c: &AwsClients, id: &str, tags: BTreeMap<String, String>) -> AwsResult<()> {
    let tags: Vec<aws_sdk_kms::types::Tag> = (tags.into_iter())
        .filter_map(|(k, v)| {
            let tag = aws_sdk_kms::types::Tag::builder().tag_key(k).tag_value(v);
            tag.build().ok()
        })
        .collect();
    (c.kms
        .tag_resource()
        .key_id(id)
        .set_tags(Some(tags))
        .send()
        .await)
        .op("kms:TagResource")
        .map(|_| ())
}

pub async fn create_alias(c: &AwsClients, alias: &str, key_id: &str) -> AwsResult<()> {
    (c.kms.create_alias())
        .alias_name(alias)
        .target_key_id(key_id)
        .send()
        .await
        .op("kms:CreateAlias")
        .map(|_| ())
}

pub async fn enable_rotation(c: &AwsClients, key_id: &str) -> AwsResult<()> {
    (c.kms.enable_key_rotation().key_id(key_id).send().await)
        .op("kms:EnableKeyRotation")
        .map(|_| ())
}

/// Schedules key `key_id`'s deletion in `days` (7 to 30); one already
/// scheduled or gone is left as it is.
pub async fn schedule_deletion(c: &AwsClients, key_id: &str, days: i32) -> AwsResult<()> {
    let done = (c.kms.schedule_key_deletion())
        .key_id(key_id)
        .pending_window_in_days(days)
        .send()
        .await
        .op("kms:ScheduleKeyDeletion");
    match done {
        Err(e) if e.code() == Some("KMSInvalidStateException") => Ok(()),
        other => other.map(|_| ()).or_gone(),
    }
}

pub async fn delete_alias(c: &AwsClients, alias: &str) -> AwsResult<()> {
    (c.kms.delete_alias().alias_name(alias).send().await)
        .op("kms:DeleteAlias")
        .or_gone()
}

/// The keys the aliases starting with `prefix` name, by alias: their IDs
/// and ARNs alone (all pages of one listing, for the shared resync).
pub async fn aliased(c: &AwsClients, prefix: &str) -> AwsResult<BTreeMap<String, ObservedKey>> {
    let mut out = BTreeMap::new();
    let mut marker: Option<String> = None;
    loop {
        let page =
            (c.kms.list_aliases().set_marker(marker.take()).send().await).op("kms:ListAliases")?;
        for a in page.aliases() {
            let (Some(name), Some(id)) = (a.alias_name(), a.target_key_id()) else {
                continue;
            };
            if !name.starts_with(prefix) {
                continue;
            }
            // The key's ARN is the alias's, `alias/NAME` made `key/ID`.
            let arn = (a.alias_arn().and_then(|arn| arn.split_once(":alias/")))
                .map(|(at, _)| format!("{at}:key/{id}"))
                .unwrap_or_default();
            let key = ObservedKey {
                id: id.to_string(),
                arn,
                ..Default::default()
            };
            out.insert(name.to_string(), key);
        }
        match page.next_marker() {
            Some(m) if page.truncated() => marker = Some(m.to_string()),
            _ => return Ok(out),
        }
    }
}

/// Marks key `id` retained (its cluster let it go), so no audit counts it
/// as leaked.
pub async fn mark_retained(c: &AwsClients, id: &str) -> AwsResult<()> {
    let retained = BTreeMap::from([(super::tags::RETAINED.to_string(), "true".to_string())]);
    put_tags(c, id, retained).await
}
