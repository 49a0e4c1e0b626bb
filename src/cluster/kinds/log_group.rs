//! The cluster's CloudWatch Logs log group (`spec.logging`):
//! `/byoc/<namespace>/<name>`, made with the cluster's tags and retention,
//! put back when deleted or changed out of band, deleted when the field
//! goes or the cluster does. A group of the name that is not the cluster's
//! is never touched: the cluster is stalled (`NameTaken`).

use super::{put, Board, Observed, Pass, StepInput, StepResult};
use crate::aws::log_group::{self, ObservedLogGroup};
use crate::aws::tags::{of_installation, CLUSTER_UID, INSTALLATION};
use crate::aws::{AwsClients, AwsResult, OwnershipTags};
use crate::cluster::status::Progress;
use crate::Error;

/// The cluster's log group name.
pub fn name_of(owner: &OwnershipTags) -> String {
    format!("{}{}/{}", log_group::PREFIX, owner.namespace, owner.name)
}

/// Whether a group with these tags is this cluster's.
pub fn is_ours(group: &ObservedLogGroup, owner: &OwnershipTags) -> bool {
    let tag = |k: &str| group.tags.get(k).map(String::as_str);
    tag(CLUSTER_UID) == Some(owner.uid.as_str())
        && of_installation(tag(INSTALLATION), &owner.installation)
}

/// What a pass does to the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogGroupAction {
    /// In place as asked.
    Keep,
    Create,
    /// Ours, with another retention (changed out of band, or the spec's
    /// changed): put back.
    PutRetention,
    /// The name is held by a group that is not the cluster's.
    Taken,
    /// Not asked for (any more): ours deleted, if there is one.
    Remove,
}

/// The decision, from the spec's retention (`None`: no logging), the
/// cluster's group as observed, and whether a group not the cluster's
/// holds its name.
pub fn plan(wanted: Option<i32>, ours: Option<&ObservedLogGroup>, taken: bool) -> LogGroupAction {
    match (wanted, ours) {
        (None, _) => LogGroupAction::Remove,
        (Some(_), None) if taken => LogGroupAction::Taken,
        (Some(_), None) => LogGroupAction::Create,
        (Some(days), Some(g)) if g.retention_days != Some(days) => LogGroupAction::PutRetention,
        (Some(_), Some(_)) => LogGroupAction::Keep,
    }
}

/// What the step learned: the group's name, when there is one.
pub struct LogGroupDone(pub Option<String>);

async fn ensure(p: Pass<'_>) -> Result<LogGroupDone, Error> {
    let owner = &p.spec.owner;
    let name = name_of(owner);
    let wanted = p.spec.logging.as_ref().map(|l| l.retention_days());
    let o = p.observed;
    let days = match plan(wanted, o.log_group.as_ref(), o.log_group_taken) {
        LogGroupAction::Taken => {
            return Err(Error::NameTaken {
                what: "log group",
                name,
            })
        }
        LogGroupAction::Remove => {
            remove(p.c, o).await?;
            return Ok(LogGroupDone(None));
        }
        LogGroupAction::Keep => None,
        LogGroupAction::Create => {
            // One made meanwhile (or not yet listed): changed only if ours.
            if !log_group::create(p.c, owner, &name).await? {
                let now = log_group::describe(p.c, &name).await?;
                if !now.is_some_and(|g| is_ours(&g, owner)) {
                    return Err(Error::NameTaken {
                        what: "log group",
                        name,
                    });
                }
            }
            wanted
        }
        LogGroupAction::PutRetention => wanted,
    };
    if let Some(days) = days {
        log_group::put_retention(p.c, &name, days).await?;
    }
    Ok(LogGroupDone(Some(name)))
}

/// Deletes the cluster's group, when there is one.
async fn remove(c: &AwsClients, o: &Observed) -> AwsResult<()> {
    match o.log_group.as_ref() {
        Some(group) => log_group::delete(c, &group.name).await,
        None => Ok(()),
    }
}

/// Step `LogGroup`.
pub fn step<'a>(i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move { put(&b.log_group, ensure(i.pass).await?) })
}

/// This kind's part of a deletion pass (its row's `delete`).
pub fn deletion<'a>(
    c: &'a AwsClients,
    _: &'a OwnershipTags,
    o: &'a Observed,
) -> super::DeleteResult<'a> {
    super::at_once(remove(c, o))
}

/// Row `LogGroup`'s leftover: a group of the cluster's when the spec no
/// longer asks for one.
pub fn leftover(o: &Observed, _: &crate::api::compute_cluster::NetworkStatus) -> bool {
    o.log_group.is_some()
}

/// Row `LogGroup`'s learning: the group's name.
pub fn learn(b: &Board, p: &mut Progress) -> bool {
    let Some(LogGroupDone(name)) = b.log_group.get() else {
        return false;
    };
    p.storage.log_group = name.clone();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn group(uid: &str, retention: Option<i32>) -> ObservedLogGroup {
        ObservedLogGroup {
            name: "/byoc/team-a/ml".into(),
            arn: "arn:aws:logs:us-east-1:123456789012:log-group:/byoc/team-a/ml".into(),
            retention_days: retention,
            tags: BTreeMap::from([
                (CLUSTER_UID.to_string(), uid.to_string()),
                (INSTALLATION.to_string(), "inst-a".to_string()),
            ]),
        }
    }

    #[test]
    fn plan_makes_keeps_puts_back_refuses_or_removes() {
        let ours = group("uid-1", Some(30));
        let changed = group("uid-1", Some(7));
        let forever = group("uid-1", None);
        type Row<'a> = (
            Option<i32>,
            Option<&'a ObservedLogGroup>,
            bool,
            LogGroupAction,
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (Some(30), None, false, LogGroupAction::Create, "none yet"),
            (
                Some(30),
                Some(&ours),
                false,
                LogGroupAction::Keep,
                "as asked",
            ),
            (
                Some(30),
                Some(&changed),
                false,
                LogGroupAction::PutRetention,
                "changed out of band",
            ),
            (
                Some(30),
                Some(&forever),
                false,
                LogGroupAction::PutRetention,
                "a crash between create and retention",
            ),
            (
                Some(14),
                Some(&ours),
                false,
                LogGroupAction::PutRetention,
                "the spec's retention changed",
            ),
            (
                Some(30),
                None,
                true,
                LogGroupAction::Taken,
                "another's holds the name",
            ),
            (
                None,
                Some(&ours),
                false,
                LogGroupAction::Remove,
                "the field removed",
            ),
            (
                None,
                None,
                true,
                LogGroupAction::Remove,
                "not asked: another's is never touched",
            ),
        ];
        for (wanted, found, taken, want, why) in rows {
            assert_eq!(plan(wanted, found, taken), want, "{why}");
        }
    }

    #[test]
    fn a_group_is_ours_only_with_our_uid_and_installation() {
        let owner = OwnershipTags::of_test_cluster("uid-1");
        assert!(is_ours(&group("uid-1", None), &owner));
        assert!(!is_ours(&group("uid-2", None), &owner), "another cluster's");
        let other_installation = OwnershipTags {
            installation: "inst-b".into(),
            ..OwnershipTags::of_test_cluster("uid-1")
        };
        assert!(!is_ours(&group("uid-1", None), &other_installation));
        let untagged = ObservedLogGroup {
            tags: BTreeMap::new(),
            ..group("uid-1", None)
        };
        assert!(!is_ours(&untagged, &owner), "someone's own");
    }
}
