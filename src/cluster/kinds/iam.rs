//! The nodes' IAM role and the instance profile holding it, named after the
//! cluster. A role or profile of that name that is not the cluster's is
//! never adopted. Deleted last of all.

use super::Pass;
use crate::aws::instance_profile::{self, ObservedIam};
use crate::aws::{AwsClients, AwsResult, OwnershipTags};
use crate::Error;

/// The IAM role and instance profile, with the role in the profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iam {
    pub role_name: String,
    pub profile_arn: String,
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
}

pub fn plan(o: &ObservedIam) -> Result<IamActions, Error> {
    if o.role_not_ours || o.instance_profile_not_ours {
        return Err(Error::IamNameTaken(o.name.clone()));
    }
    Ok(IamActions {
        create_role: o.role.is_none(),
        create_profile: o.instance_profile.is_none(),
        add_role: !o.profile_roles.iter().any(|r| r == &o.name),
    })
}

pub async fn ensure(p: Pass<'_>) -> Result<Iam, Error> {
    let o = &p.observed.iam;
    let actions = plan(o)?;
    // The role and the profile are independent; the role joins the profile after.
    let role = async {
        if actions.create_role {
            instance_profile::create_role(p.c, &p.spec.owner, &o.name).await?;
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
    if actions.add_role {
        instance_profile::add_role(p.c, &o.name).await?;
    }
    Ok(Iam {
        role_name: o.name.clone(),
        profile_arn: arn,
    })
}

pub async fn delete(c: &AwsClients, observed: &ObservedIam) -> AwsResult<()> {
    instance_profile::delete(c, observed).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit() {
        let owner = OwnershipTags {
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
                    create_role: false,
                    create_profile: false,
                    add_role: true,
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
            match (plan(&observed), want) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "{why}"),
                (Err(Error::IamNameTaken(name)), None) => assert_eq!(name, base.name, "{why}"),
                (got, want) => panic!("{why}: got {got:?}, want {want:?}"),
            }
        }
    }
}
