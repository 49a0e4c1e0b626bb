//! Whose the cluster's AWS resources are, decided once for converge and
//! deletion alike: what the cluster recorded before its first AWS call
//! (the installation that made them, the AWS account they are in) against
//! this installation and the account its reference resolves to now. A
//! mismatch stops the pass before any AWS call; only its wording differs
//! between making and deleting. Pure.

use kube::ResourceExt;

use super::spec::AccountRef;
use crate::api::conditions::reason;
use crate::api::ComputeCluster;
use crate::aws::tags::OwnershipTags;
pub use crate::outcome::Intent;
use crate::outcome::Outcome;

/// How a deletion that cannot go on lets the cluster go.
pub const LET_GO: &str = "set spec.deletionPolicy: Retain to let the cluster go and leave its AWS resources (an Event then lists their IDs)";

/// The cluster's resources are not this pass's to touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Foreign {
    /// Made by another installation of the operator.
    OtherInstallation { made_by: String, this: String },
    /// In another AWS account than the reference resolves to now.
    AccountChanged { recorded: String, now: String },
}

/// What the cluster recorded of its resources (`status.installation`,
/// `status.awsAccountId`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Recorded<'a> {
    pub installation: Option<&'a str>,
    pub aws_account_id: Option<&'a str>,
}

/// Whether the recorded resources are foreign to `installation` and, once
/// the reference is resolved, to the AWS account `resolved`. The other
/// installation is checked first: its resources are never touched, not
/// even to resolve an account for them.
pub fn foreign(
    recorded: Recorded<'_>,
    installation: &str,
    resolved: Option<&str>,
) -> Option<Foreign> {
    if let Some(other) = recorded.installation.filter(|i| *i != installation) {
        return Some(Foreign::OtherInstallation {
            made_by: other.to_string(),
            this: installation.to_string(),
        });
    }
    match (recorded.aws_account_id, resolved) {
        (Some(was), Some(now)) if was != now => Some(Foreign::AccountChanged {
            recorded: was.to_string(),
            now: now.to_string(),
        }),
        _ => None,
    }
}

impl Foreign {
    /// The user must act: what to do, worded for `intent`.
    pub fn outcome(&self, intent: Intent) -> Outcome {
        let message = match (self, intent) {
            (Foreign::OtherInstallation { made_by, this }, Intent::Converge) => format!("the cluster's AWS resources were made by operator installation {made_by}, not this one ({this}): this operator neither changes nor deletes them; let the installation {made_by} manage the cluster"),
            (Foreign::OtherInstallation { made_by, this }, Intent::Delete) => format!("cannot delete: the cluster's AWS resources were made by operator installation {made_by}, not this one ({this}), and this operator never touches them; let installation {made_by} delete the cluster, or {LET_GO}"),
            (Foreign::AccountChanged { recorded, now }, Intent::Converge) => format!("the cluster's AWS resources are in account {recorded}, but spec.cloudAccountRef now resolves to account {now}; point it back at account {recorded}"),
            (Foreign::AccountChanged { recorded, now }, Intent::Delete) => format!("cannot delete: the cluster's AWS resources are in account {recorded}, but spec.cloudAccountRef now resolves to account {now}; point it back at account {recorded}, or {LET_GO}"),
        };
        let reason = match self {
            Foreign::OtherInstallation { .. } => reason::OTHER_INSTALLATION,
            Foreign::AccountChanged { .. } => reason::ACCOUNT_CHANGED,
        };
        Outcome::NeedsUser { reason, message }
    }
}

/// What a deletion works from, none of it validated (a spec that no longer
/// validates must not block it): the region (immutable), the account the
/// reference names (checked against the account status recorded), and the
/// ownership tags of the cluster's identity.
pub struct DeletionTarget {
    pub region: String,
    pub account: AccountRef,
    pub owner: OwnershipTags,
}

impl DeletionTarget {
    pub fn of(cc: &ComputeCluster, installation: &str) -> Self {
        DeletionTarget {
            region: cc.spec.region.clone(),
            account: cc.account_key().into(),
            owner: OwnershipTags {
                installation: installation.to_string(),
                uid: cc.uid().unwrap_or_default(),
                namespace: cc.namespace().unwrap_or_default(),
                name: cc.name_any(),
                user: Default::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_resources_are_named_the_same_for_converge_and_deletion() {
        let rec = |installation, aws_account_id| Recorded {
            installation,
            aws_account_id,
        };
        // (recorded, resolved now, expected)
        let rows: Vec<(Recorded, Option<&str>, Option<&str>)> = vec![
            (rec(None, None), None, None),
            (rec(None, None), Some("111"), None),
            (rec(Some("this"), Some("111")), Some("111"), None),
            (rec(Some("this"), Some("111")), None, None),
            // Made before installations were recorded: this one may adopt.
            (rec(None, Some("111")), Some("111"), None),
            (
                rec(Some("other"), Some("111")),
                Some("111"),
                Some(reason::OTHER_INSTALLATION),
            ),
            // Another installation's resources: decided before any account.
            (
                rec(Some("other"), None),
                None,
                Some(reason::OTHER_INSTALLATION),
            ),
            (
                rec(Some("this"), Some("111")),
                Some("222"),
                Some(reason::ACCOUNT_CHANGED),
            ),
            (
                rec(None, Some("111")),
                Some("222"),
                Some(reason::ACCOUNT_CHANGED),
            ),
        ];
        for (recorded, resolved, expected) in rows {
            let got = foreign(recorded, "this", resolved);
            let reasons = [Intent::Converge, Intent::Delete]
                .map(|i| got.as_ref().map(|f| f.outcome(i).reason()));
            assert_eq!(reasons, [expected, expected], "{recorded:?} {resolved:?}");
        }
    }

    #[test]
    fn a_deletion_names_the_way_to_let_go_and_a_converge_does_not() {
        for f in [
            Foreign::OtherInstallation {
                made_by: "b".into(),
                this: "a".into(),
            },
            Foreign::AccountChanged {
                recorded: "111".into(),
                now: "222".into(),
            },
        ] {
            let converge = f.outcome(Intent::Converge);
            let delete = f.outcome(Intent::Delete);
            assert!(
                !converge.message().contains("deletionPolicy"),
                "{converge:?}"
            );
            assert!(
                delete.message().starts_with("cannot delete: "),
                "{delete:?}"
            );
            assert!(delete.message().ends_with(LET_GO), "{delete:?}");
            assert!(converge.is_warning() && delete.is_warning());
        }
    }
}
