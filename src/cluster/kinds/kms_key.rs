//! The cluster's KMS key (`spec.storage`): its own, found by the alias
//! `alias/byoc-<installation>-<uid>`, made with the cluster's tags and
//! yearly rotation (put back when turned off), and scheduled for deletion,
//! never deleted at once, when the field goes or the cluster does; or one
//! brought by ARN, only described. A key made but not yet tagged or
//! aliased (a crash in between) is found by its description and finished,
//! never made twice. An alias of the cluster's name on a key not the cluster's is
//! never touched: the cluster is stalled (`NameTaken`).

use super::{put, Board, Observed, Pass, StepInput, StepResult};
use crate::aws::kms_key::{self, ObservedKey};
use crate::aws::tags::{of_installation, CLUSTER_UID, INSTALLATION};
use crate::aws::{AwsClients, AwsResult, OwnershipTags};
use crate::cluster::spec::ClusterKey;
use crate::cluster::status::Progress;
use crate::Error;

/// The alias of the cluster's own key.
pub fn alias_of(owner: &OwnershipTags) -> String {
    kms_key::alias_of(&owner.installation, &owner.uid)
}

/// Whether a key with these tags is this cluster's.
pub fn is_ours(key: &ObservedKey, owner: &OwnershipTags) -> bool {
    let tag = |k: &str| key.tags.get(k).map(String::as_str);
    tag(CLUSTER_UID) == Some(owner.uid.as_str())
        && of_installation(tag(INSTALLATION), &owner.installation)
}

/// What a pass does to the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyAction {
    /// In place as asked.
    Keep,
    /// None aliased: one made before (found by its description) is
    /// aliased, else one is made.
    Create,
    /// Ours, its rotation turned off: turned on again.
    EnableRotation,
    /// Ours, its recorded deletion window not the spec's: tagged anew.
    PutWindow(i32),
    /// Ours, but disabled or scheduled for deletion out of band: never
    /// replaced by a new key (what it encrypted would be lost), the user
    /// must enable it again (or let it go, removing `storage`).
    Unusable(String),
    /// The alias names a key that is not the cluster's.
    Taken,
    /// Brought: described, never changed.
    Brought(String),
    /// Not asked for (any more): ours scheduled for deletion, if there is
    /// one.
    Remove,
}

/// The decision, from the spec's key, the cluster's own key as its alias
/// names it, and whether the alias names a key not the cluster's.
pub fn plan(wanted: Option<&ClusterKey>, ours: Option<&ObservedKey>, taken: bool) -> KeyAction {
    match (wanted, ours) {
        (None, _) => KeyAction::Remove,
        (Some(ClusterKey::Brought(arn)), _) => KeyAction::Brought(arn.clone()),
        (Some(ClusterKey::Own { .. }), None) if taken => KeyAction::Taken,
        (Some(ClusterKey::Own { .. }), None) => KeyAction::Create,
        (Some(ClusterKey::Own { .. }), Some(k)) if k.state != kms_key::ENABLED => {
            KeyAction::Unusable(k.state.clone())
        }
        (Some(ClusterKey::Own { .. }), Some(k)) if k.rotation == Some(false) => {
            KeyAction::EnableRotation
        }
        (Some(ClusterKey::Own { window_days }), Some(k)) if k.window() != Some(*window_days) => {
            KeyAction::PutWindow(*window_days)
        }
        (Some(ClusterKey::Own { .. }), Some(_)) => KeyAction::Keep,
    }
}

/// What the step learned: the key's ARN, when there is one.
pub struct KeyDone(pub Option<String>);

async fn ensure(p: Pass<'_>) -> Result<KeyDone, Error> {
    let owner = &p.spec.owner;
    let alias = alias_of(owner);
    let o = p.observed;
    match plan(p.spec.key.as_ref(), o.kms_key.as_ref(), o.kms_key_taken) {
        KeyAction::Remove => {
            remove(p.c, owner, o).await?;
            Ok(KeyDone(None))
        }
        KeyAction::PutWindow(days) => {
            let key = o.kms_key.as_ref().map(|k| k.id.clone()).unwrap_or_default();
            kms_key::tag(p.c, &key, owner, days).await?;
            Ok(KeyDone(o.kms_key.as_ref().map(|k| k.arn.clone())))
        }
        KeyAction::Brought(arn) => brought(p.c, &arn).await.map(|arn| KeyDone(Some(arn))),
        KeyAction::Taken => Err(Error::NameTaken {
            what: "KMS alias",
            name: alias,
        }),
        KeyAction::Keep => Ok(KeyDone(o.kms_key.as_ref().map(|k| k.arn.clone()))),
        KeyAction::EnableRotation => {
            let key = o.kms_key.as_ref().map(|k| k.id.clone()).unwrap_or_default();
            kms_key::enable_rotation(p.c, &key).await?;
            Ok(KeyDone(o.kms_key.as_ref().map(|k| k.arn.clone())))
        }
        KeyAction::Create => create(p, &alias).await,
        KeyAction::Unusable(state) => {
            let key = o.kms_key.as_ref();
            let when = (key.and_then(|k| k.deletion_date.as_deref()))
                .map(|d| format!(" (KMS deletes it on {d})"))
                .unwrap_or_default();
            Err(Error::KmsKeyNotUsable {
                arn: key.map(|k| k.arn.clone()).unwrap_or_default(),
                why: format!("the cluster's own key is {state}{when}, changed out of band: the operator never replaces it, as what it encrypted would be lost; cancel its deletion and enable it (aws kms cancel-key-deletion, enable-key), or remove storage to let it go"),
            })
        }
    }
}

/// Tags, aliases and rotates the cluster's key, made now unless one made
/// before (a crash before its alias) is found by its description.
async fn create(p: Pass<'_>, alias: &str) -> Result<KeyDone, Error> {
    let (c, owner) = (p.c, &p.spec.owner);
    let made_for = kms_key::made_for(&owner.installation, &owner.uid);
    let found = kms_key::described(c, &made_for).await?;
    let key = match found.into_iter().find(|k| !k.pending_deletion()) {
        Some(k) => k,
        None => {
            let Some(manager) = p.spec.key_manager.as_deref() else {
                return Err(Error::Internal(
                    "no identity to name in the key's policy: the CloudAccount has no role".into(),
                ));
            };
            let policy = kms_key::key_policy(p.account_id, manager);
            kms_key::create(c, owner, &policy).await?
        }
    };
    let window = match p.spec.key {
        Some(ClusterKey::Own { window_days }) => window_days,
        _ => crate::api::compute_cluster::EncryptionSpec::DEFAULT_DELETION_WINDOW_DAYS,
    };
    if !is_ours(&key, owner) || key.window() != Some(window) {
        kms_key::tag(c, &key.id, owner, window).await?;
    }
    kms_key::create_alias(c, alias, &key.id).await?;
    kms_key::enable_rotation(c, &key.id).await?;
    Ok(KeyDone(Some(key.arn)))
}

/// A brought key: it must exist and be usable; never changed.
async fn brought(c: &AwsClients, arn: &str) -> Result<String, Error> {
    match kms_key::describe(c, arn).await? {
        Some(k) if k.state == "Enabled" => Ok(k.arn),
        Some(k) => Err(Error::KmsKeyNotUsable {
            arn: arn.to_string(),
            why: format!("it is {}", k.state),
        }),
        None => Err(Error::KmsKeyNotUsable {
            arn: arn.to_string(),
            why: "it does not exist (or the role may not describe it)".into(),
        }),
    }
}

/// Schedules the cluster's own key for deletion (in the window its tag
/// records, else 30 days), then drops its alias: a crash in between leaves
/// the alias on a key already scheduled, which the next pass drops.
async fn remove(c: &AwsClients, owner: &OwnershipTags, o: &Observed) -> AwsResult<()> {
    let Some(key) = o.kms_key.as_ref() else {
        return Ok(());
    };
    let days = key
        .window()
        .unwrap_or(crate::api::compute_cluster::EncryptionSpec::DEFAULT_DELETION_WINDOW_DAYS);
    if !key.pending_deletion() {
        kms_key::schedule_deletion(c, &key.id, days).await?;
    }
    kms_key::delete_alias(c, &alias_of(owner)).await
}

/// Step `KmsKey`.
pub fn step<'a>(i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move { put(&b.kms_key, ensure(i.pass).await?) })
}

/// This kind's part of a deletion pass (its row's `delete`): the cluster's
/// own key scheduled for deletion in its window.
pub fn deletion<'a>(
    c: &'a AwsClients,
    owner: &'a OwnershipTags,
    o: &'a Observed,
) -> super::DeleteResult<'a> {
    super::at_once(remove(c, owner, o))
}

/// Row `KmsKey`'s leftover: the cluster's own key when the spec no longer
/// asks for one.
pub fn leftover(o: &Observed, _: &crate::api::compute_cluster::NetworkStatus) -> bool {
    o.kms_key.is_some()
}

/// Row `KmsKey`'s learning: the key's ARN.
pub fn learn(b: &Board, p: &mut Progress) -> bool {
    let Some(KeyDone(arn)) = b.kms_key.get() else {
        return false;
    };
    p.storage.kms_key_arn = arn.clone();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn key(uid: &str, state: &str, rotation: Option<bool>) -> ObservedKey {
        ObservedKey {
            id: "1234abcd-12ab-34cd-56ef-1234567890ab".into(),
            arn: "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
                .into(),
            state: state.into(),
            deletion_date: None,
            rotation,
            description: String::new(),
            tags: BTreeMap::from([
                (CLUSTER_UID.to_string(), uid.to_string()),
                (INSTALLATION.to_string(), "inst-a".to_string()),
                (kms_key::DELETION_WINDOW.to_string(), "7".to_string()),
            ]),
        }
    }

    #[test]
    fn plan_makes_keeps_rotates_refuses_or_removes() {
        let own = ClusterKey::Own { window_days: 7 };
        let arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let brought = ClusterKey::Brought(arn.into());
        let ours = key("uid-1", "Enabled", Some(true));
        let unrotated = key("uid-1", "Enabled", Some(false));
        let pending = key("uid-1", "PendingDeletion", None);
        type Row<'a> = (
            Option<&'a ClusterKey>,
            Option<&'a ObservedKey>,
            bool,
            KeyAction,
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (Some(&own), None, false, KeyAction::Create, "none yet"),
            (Some(&own), Some(&ours), false, KeyAction::Keep, "as asked"),
            (
                Some(&own),
                Some(&unrotated),
                false,
                KeyAction::EnableRotation,
                "rotation turned off out of band",
            ),
            (
                Some(&own),
                Some(&pending),
                false,
                KeyAction::Unusable("PendingDeletion".into()),
                "scheduled for deletion out of band: never replaced",
            ),
            (
                Some(&own),
                None,
                true,
                KeyAction::Taken,
                "the alias names another's key",
            ),
            (
                Some(&brought),
                None,
                false,
                KeyAction::Brought(arn.into()),
                "brought: only described",
            ),
            (
                Some(&ClusterKey::Own { window_days: 30 }),
                Some(&ours),
                false,
                KeyAction::PutWindow(30),
                "the spec's window changed: recorded on the key",
            ),
            (
                None,
                Some(&ours),
                false,
                KeyAction::Remove,
                "the field removed",
            ),
            (
                None,
                None,
                true,
                KeyAction::Remove,
                "nothing asked: another's never touched",
            ),
        ];
        for (wanted, found, taken, want, why) in rows {
            assert_eq!(plan(wanted, found, taken), want, "{why}");
        }
    }

    #[test]
    fn a_key_is_ours_only_with_our_uid_and_installation() {
        let owner = OwnershipTags::of_test_cluster("uid-1");
        assert!(is_ours(&key("uid-1", "Enabled", None), &owner));
        assert!(!is_ours(&key("uid-2", "Enabled", None), &owner));
        let other = OwnershipTags {
            installation: "inst-b".into(),
            ..OwnershipTags::of_test_cluster("uid-1")
        };
        assert!(!is_ours(&key("uid-1", "Enabled", None), &other));
    }
}
