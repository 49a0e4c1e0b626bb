//! The nodes' IAM role and the instance profile holding it, named after the
//! cluster. A role or profile of that name that is not the cluster's is
//! never adopted. Deleted last of all.

use futures::future::try_join_all;

use super::{put, Board, Observed, Pass, StepInput, StepResult};
use crate::api::compute_cluster::IamStatus;
use crate::aws::instance_profile::{self, BroughtProfile, ObservedIam};
use crate::aws::tags::Owner;
use crate::aws::{AwsClients, AwsResult, OwnershipTags};
use crate::cluster::spec::{ClusterKey, ValidatedSpec};
use crate::cluster::status::Progress;
use crate::{Brought, Error};

/// The nodes' identity after a pass: the instance profile they launch with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iam {
    /// The role in the profile (the operator's, or the brought profile's).
    pub role_name: Option<String>,
    pub profile_arn: String,
    /// Managed policies attached to the operator's role.
    pub policies: Vec<String>,
}

/// IAM role and instance profile name: `byoc-<ns>-<name>-<uid8>`, at most 64 characters.
pub fn iam_name(owner: &OwnershipTags) -> String {
    let uid8: String = owner
        .uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    let mut base = format!("byoc-{}-{}", owner.namespace, owner.name);
    base.truncate(64 - 1 - uid8.len());
    format!("{base}-{uid8}")
}

/// What IAM calls a pass makes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IamActions {
    pub create_role: bool,
    pub create_profile: bool,
    pub add_role: bool,
    /// Managed policies to attach to the role, and to detach from it.
    pub attach: Vec<String>,
    pub detach: Vec<String>,
    /// The existing role lacks the required permissions boundary.
    pub put_boundary: bool,
}

/// The calls that bring the operator's role and profile to `policies`
/// attached and the role to `boundary` (when one is required; a boundary
/// is never taken away). Policies not listed this pass are taken as
/// unchanged.
pub fn plan(
    o: &ObservedIam,
    policies: &[String],
    boundary: Option<&str>,
) -> Result<IamActions, Error> {
    if o.role_not_ours || o.instance_profile_not_ours {
        return Err(Error::IamNameTaken {
            name: o.name.clone(),
        });
    }
    let attached = o.attached_policies.as_deref().unwrap_or_default();
    Ok(IamActions {
        put_boundary: o.role.is_some() && boundary.is_some() && o.boundary.as_deref() != boundary,
        create_role: o.role.is_none(),
        create_profile: o.instance_profile.is_none(),
        add_role: !o.profile_roles.iter().any(|r| r == &o.name),
        attach: policies
            .iter()
            .filter(|p| !attached.contains(p))
            .cloned()
            .collect(),
        detach: attached
            .iter()
            .filter(|p| !policies.contains(p))
            .cloned()
            .collect(),
    })
}

/// The managed policies the operator's node role holds: those listed
/// (`iam.managedPolicyArns`), and the nodes' grants while the cluster has
/// something to grant them: its log group, or its own key (named by the
/// cluster's UID tag). Never while a group not the cluster's holds its
/// group's name: the grants name the group by the cluster's name, whatever
/// they are attached for.
pub fn wanted_policies(spec: &ValidatedSpec, o: &Observed) -> Vec<String> {
    let mut policies = spec.iam.managed_policy_arns.clone();
    let own_key = matches!(spec.key, Some(ClusterKey::Own { .. }));
    let grant = (spec.logging.is_some() || own_key) && !o.log_group_taken;
    policies.extend(spec.node_grants.clone().filter(|_| grant));
    policies
}

pub async fn ensure(p: Pass<'_>) -> Result<Iam, Error> {
    if let Some(name) = &p.spec.iam.instance_profile_name {
        return brought(p.c, &p.spec.owner, name).await;
    }
    let o = &p.observed.iam;
    let policies = &wanted_policies(p.spec, p.observed);
    let boundary = p.spec.permissions_boundary.as_deref();
    let actions = plan(o, policies, boundary)?;
    // The role and the profile are independent; the role joins the profile
    // and gets its policies after.
    let role = async {
        if actions.create_role {
            instance_profile::create_role(p.c, &p.spec.owner, &o.name, boundary).await?;
        }
        if let Some(b) = boundary.filter(|_| actions.put_boundary) {
            instance_profile::put_boundary(p.c, &o.name, b).await?;
        }
        Ok::<_, Error>(())
    };
    let profile = async {
        Ok::<_, Error>(match &o.instance_profile {
            Some(arn) => arn.clone(),
            None => instance_profile::create_instance_profile(p.c, &p.spec.owner, &o.name).await?,
        })
    };
    let ((), arn) = tokio::try_join!(role, profile)?;
    let add_role = async {
        if actions.add_role {
            instance_profile::add_role(p.c, &o.name).await?;
        }
        Ok::<_, Error>(())
    };
    let _: ((), Vec<()>, Vec<()>) = tokio::try_join!(
        add_role,
        try_join_all(actions.attach.iter().map(|arn| attach(p, &o.name, arn))),
        try_join_all(actions.detach.iter().map(|arn| async {
            Ok::<_, Error>(instance_profile::detach_policy(p.c, &o.name, arn).await?)
        }),),
    )?;
    Ok(Iam {
        role_name: Some(o.name.clone()),
        profile_arn: arn,
        policies: policies.to_vec(),
    })
}

async fn attach(p: Pass<'_>, role: &str, arn: &str) -> Result<(), Error> {
    match instance_profile::attach_policy(p.c, role, arn).await {
        Err(e) if e.is_not_found() => {
            let arn = arn.to_string();
            Err(match p.spec.node_grants.as_ref() == Some(&arn) {
                true => Error::NodeGrantsNotFound { arn },
                false => Error::IamPolicyNotFound { arn },
            })
        }
        other => Ok(other?),
    }
}

/// A brought instance profile: looked up, used, never changed. One the
/// operator made for another cluster (or another installation) is refused:
/// its nodes would act as that cluster's.
async fn brought(c: &AwsClients, owner: &OwnershipTags, name: &str) -> Result<Iam, Error> {
    let Some(found) = instance_profile::get_brought(c, name).await? else {
        return Err(Error::InstanceProfileNotFound {
            name: name.to_string(),
        });
    };
    if let Some(owner) = foreign_identity(&found, owner) {
        return Err(Error::NotOursToUse {
            brought: Brought::InstanceProfile(name.to_string()),
            owner,
        });
    }
    Ok(Iam {
        role_name: found.role,
        profile_arn: found.arn,
        policies: vec![],
    })
}

/// Why a brought profile may not be used: it is another cluster's or
/// another installation's.
pub fn foreign_identity(found: &BroughtProfile, owner: &OwnershipTags) -> Option<Owner> {
    owner.claim_of_another(found.owner.as_ref()?)
}

pub async fn delete(c: &AwsClients, observed: &ObservedIam) -> AwsResult<()> {
    instance_profile::delete(c, observed).await
}

/// Step `Iam`: the nodes' role and instance profile.
pub fn step<'a>(i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move { put(&b.iam, ensure(i.pass).await?) })
}

/// This kind's part of a deletion pass (its row's `delete`).
pub fn deletion<'a>(
    c: &'a AwsClients,
    _: &'a crate::aws::OwnershipTags,
    o: &'a super::Observed,
) -> super::DeleteResult<'a> {
    super::at_once(delete(c, &o.iam))
}

/// Row `Iam`'s learning: the role and instance profile.
pub fn learn(b: &Board, p: &mut Progress) -> bool {
    let Some(iam) = b.iam.get() else {
        return false;
    };
    p.iam = Some(IamStatus {
        role_name: iam.role_name.clone(),
        instance_profile_arn: Some(iam.profile_arn.clone()),
        managed_policy_arns: iam.policies.clone(),
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nodes' grants: while the cluster has a log group that is its
    /// own to have, and only when the account names a role.
    #[test]
    fn nodes_are_granted_only_their_clusters_own_log_group() {
        let cc: crate::api::ComputeCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "byoc.dev/v1alpha1", "kind": "ComputeCluster",
            "metadata": {"name": "c", "namespace": "team", "uid": "cc-1"},
            "spec": {"cloudAccountRef": {"name": "acme"}, "region": "us-east-1",
                "network": {"vpcCidr": "10.0.0.0/16"},
                "iam": {"managedPolicyArns": ["arn:aws:iam::aws:policy/P"]},
                "nodeGroups": [{"name": "w", "instanceType": "t3.large", "count": 1}]}
        }))
        .expect("a ComputeCluster");
        let grants = "arn:aws:iam::123456789012:policy/r-byoc-operator-nodes";
        let mut spec = crate::cluster::spec::validate(&cc, "i").expect("a valid spec");
        spec.node_grants = Some(grants.into());
        let listed = vec!["arn:aws:iam::aws:policy/P".to_string()];
        let mut granted = listed.clone();
        granted.push(grants.into());
        let mut logged = spec.clone();
        logged.logging = Some(Default::default());
        let taken = Observed {
            log_group_taken: true,
            ..Default::default()
        };
        let mut unnamed = logged.clone();
        unnamed.node_grants = None;
        let mut keyed = spec.clone();
        keyed.key = Some(ClusterKey::Own { window_days: 30 });
        let mut brought = spec.clone();
        brought.key = Some(ClusterKey::Brought("arn:aws:kms:us-east-1:1:key/k".into()));
        let rows = [
            (
                &spec,
                Observed::default(),
                &listed,
                "no log group: nothing to grant",
            ),
            (
                &logged,
                Observed::default(),
                &granted,
                "a log group: granted",
            ),
            (
                &logged,
                taken,
                &listed,
                "the group's name is another's: never granted",
            ),
            (
                &unnamed,
                Observed::default(),
                &listed,
                "no role named: no grants to attach",
            ),
            (
                &keyed,
                Observed::default(),
                &granted,
                "its own key: granted",
            ),
            (
                &keyed,
                Observed {
                    log_group_taken: true,
                    ..Default::default()
                },
                &listed,
                "its own key, but its group's name another's: never granted",
            ),
            (
                &brought,
                Observed::default(),
                &listed,
                "a brought key: the team grants it",
            ),
        ];
        for (spec, observed, want, why) in rows {
            assert_eq!(&wanted_policies(spec, &observed), want, "{why}");
        }
    }

    #[test]
    fn names_fit() {
        let owner = OwnershipTags {
            installation: "i".into(),
            uid: "0123abcd-ef".into(),
            namespace: "n".repeat(63),
            name: "x".repeat(63),
            user: Default::default(),
        };
        let name = iam_name(&owner);
        assert!(name.len() <= 64, "{name}");
        assert!(name.ends_with("-0123abcd"));
    }

    #[test]
    fn plan_creates_what_is_missing_and_never_adopts_a_stranger() {
        let base = ObservedIam {
            name: "byoc-ns-c-0123abcd".into(),
            ..Default::default()
        };
        let role = Some("byoc-ns-c-0123abcd".to_string());
        let profile = Some("arn:aws:iam::1:instance-profile/byoc-ns-c-0123abcd".to_string());
        let all = IamActions {
            create_role: true,
            create_profile: true,
            add_role: true,
            ..Default::default()
        };
        let rows: Vec<(ObservedIam, Option<IamActions>, &str)> = vec![
            (base.clone(), Some(all.clone()), "nothing yet"),
            (
                ObservedIam {
                    role: role.clone(),
                    ..base.clone()
                },
                Some(IamActions {
                    create_role: false,
                    ..all.clone()
                }),
                "a crash after the role: the profile is created and the role added",
            ),
            (
                ObservedIam {
                    role: role.clone(),
                    instance_profile: profile.clone(),
                    ..base.clone()
                },
                Some(IamActions {
                    add_role: true,
                    ..Default::default()
                }),
                "a crash before the role joined the profile",
            ),
            (
                ObservedIam {
                    role: role.clone(),
                    instance_profile: profile.clone(),
                    profile_roles: vec![base.name.clone()],
                    ..base.clone()
                },
                Some(IamActions::default()),
                "converged",
            ),
            (
                ObservedIam {
                    role_not_ours: true,
                    ..base.clone()
                },
                None,
                "the role's name is taken",
            ),
            (
                ObservedIam {
                    instance_profile_not_ours: true,
                    ..base.clone()
                },
                None,
                "the profile's name is taken",
            ),
        ];
        for (observed, want, why) in rows {
            match (plan(&observed, &[], None), want) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "{why}"),
                (Err(Error::IamNameTaken { name }), None) => assert_eq!(name, base.name, "{why}"),
                (got, want) => panic!("{why}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn plan_puts_a_required_boundary_and_never_takes_one_away() {
        let b = "arn:aws:iam::1:policy/boundary";
        let role = ObservedIam {
            name: "byoc-ns-c-0123abcd".into(),
            role: Some("byoc-ns-c-0123abcd".into()),
            ..Default::default()
        };
        let bounded = ObservedIam {
            boundary: Some(b.into()),
            ..role.clone()
        };
        let other = ObservedIam {
            boundary: Some("arn:aws:iam::1:policy/other".into()),
            ..role.clone()
        };
        let none = ObservedIam {
            name: role.name.clone(),
            ..Default::default()
        };
        // (observed, required, put_boundary, why)
        let rows = [
            (&role, Some(b), true, "a role made before it was required"),
            (&bounded, Some(b), false, "already there"),
            (&other, Some(b), true, "another boundary is replaced"),
            (&bounded, None, false, "not required: left as it is"),
            (&none, Some(b), false, "a new role is created with it"),
        ];
        for (observed, required, want, why) in rows {
            let got = plan(observed, &[], required).expect(why);
            assert_eq!(got.put_boundary, want, "{why}");
        }
    }

    #[test]
    fn a_brought_profile_of_another_cluster_or_installation_is_refused() {
        let owner = OwnershipTags {
            installation: "inst-a".into(),
            uid: "u-1".into(),
            namespace: "team-a".into(),
            name: "ml".into(),
            user: Default::default(),
        };
        let profile = |tagged: Option<(&str, Option<&str>)>| BroughtProfile {
            arn: "arn:aws:iam::1:instance-profile/p".into(),
            role: Some("r".into()),
            owner: tagged.map(|(u, i)| (u.to_string(), i.map(String::from))),
        };
        // (tags, refused)
        let rows = [
            (None, false),
            (Some(("u-1", Some("inst-a"))), false),
            (Some(("u-1", None)), false),
            (Some(("u-2", Some("inst-a"))), true),
            (Some(("u-2", None)), true),
            (Some(("u-1", Some("inst-b"))), true),
        ];
        for (tags, refused) in rows {
            assert_eq!(
                foreign_identity(&profile(tags), &owner).is_some(),
                refused,
                "{tags:?}"
            );
        }
    }

    #[test]
    fn plan_attaches_what_is_asked_and_detaches_what_is_not() {
        let arn = |n: &str| format!("arn:aws:iam::aws:policy/{n}");
        let converged = ObservedIam {
            name: "byoc-ns-c-0123abcd".into(),
            role: Some("byoc-ns-c-0123abcd".into()),
            instance_profile: Some("arn:aws:iam::1:instance-profile/byoc-ns-c-0123abcd".into()),
            profile_roles: vec!["byoc-ns-c-0123abcd".into()],
            ..Default::default()
        };
        let listed = |names: &[&str]| ObservedIam {
            attached_policies: Some(names.iter().map(|n| arn(n)).collect()),
            ..converged.clone()
        };
        type Row = (
            ObservedIam,
            Vec<String>,
            Vec<String>,
            Vec<String>,
            &'static str,
        );
        // (observed, wanted, attach, detach, why)
        let rows: Vec<Row> = vec![
            (
                ObservedIam {
                    name: converged.name.clone(),
                    ..Default::default()
                },
                vec![arn("A")],
                vec![arn("A")],
                vec![],
                "a new role gets every policy",
            ),
            (
                listed(&["A"]),
                vec![arn("A"), arn("B")],
                vec![arn("B")],
                vec![],
                "one added to the list",
            ),
            (
                listed(&["A", "B"]),
                vec![arn("B")],
                vec![],
                vec![arn("A")],
                "one removed from the list",
            ),
            (
                listed(&["A"]),
                vec![],
                vec![],
                vec![arn("A")],
                "the list emptied",
            ),
            (
                converged.clone(),
                vec![],
                vec![],
                vec![],
                "not listed this pass: nothing asked, nothing known to detach",
            ),
        ];
        for (observed, wanted, attach, detach, why) in rows {
            let got = plan(&observed, &wanted, None).expect(why);
            assert_eq!((got.attach, got.detach), (attach, detach), "{why}");
        }
    }
}
