//! The nodes' IAM role and the instance profile holding it.

use std::collections::BTreeMap;

use aws_sdk_iam::types::{EntityType, Tag};

use super::tags::{
    of_installation, Claim, OwnershipTags, CLUSTER_UID, INSTALLATION, MANAGED_BY, MANAGED_BY_VALUE,
};
use super::{AwsClients, AwsError, AwsResult, NotFoundExt, SdkResultExt};

const EC2_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedIam {
    pub name: String,
    /// The role exists and carries our UID tag.
    pub role: Option<String>,
    /// A role of that name exists but is not ours.
    pub role_not_ours: bool,
    /// Instance profile ARN, when it exists and is ours.
    pub instance_profile: Option<String>,
    pub instance_profile_not_ours: bool,
    /// Roles in the instance profile.
    pub profile_roles: Vec<String>,
    /// Managed policies attached to the role, when they were listed.
    pub attached_policies: Option<Vec<String>>,
    /// The role's permissions boundary.
    pub boundary: Option<String>,
}

fn iam_tags(owner: &OwnershipTags) -> Vec<Tag> {
    owner
        .for_part("node-role", &[])
        .into_iter()
        .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
        .collect()
}

fn ours(tags: &[Tag], owner: &OwnershipTags) -> bool {
    owner_uid(tags, &owner.installation) == Some(owner.uid.as_str())
}

/// The cluster UID an IAM role or profile is tagged with, unless another
/// installation made it.
fn owner_uid<'a>(tags: &'a [Tag], installation: &str) -> Option<&'a str> {
    tag_value(tags, CLUSTER_UID)
        .filter(|_| of_installation(tag_value(tags, INSTALLATION), installation))
}

/// The value of `key` among IAM tags.
pub fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == key).map(|t| t.value())
}

/// The IAM tag `key` = `value`.
pub fn tag(key: &str, value: &str) -> AwsResult<Tag> {
    Tag::builder()
        .key(key)
        .value(value)
        .build()
        .map_err(|_| AwsError::Incomplete {
            operation: "iam:Tag",
            missing: "Tag",
        })
}

/// IAM has no tag filter: the role and profile are named after the cluster
/// (`name`), and the tags say whether what carries the name is ours. The
/// role's managed policies are listed when `list_policies`.
pub async fn describe(
    c: &AwsClients,
    owner: &OwnershipTags,
    name: &str,
    list_policies: bool,
) -> AwsResult<ObservedIam> {
    let mut observed = ObservedIam {
        name: name.to_string(),
        ..Default::default()
    };
    // Both looked up at once.
    let (role, profile) = tokio::join!(
        c.iam.get_role().role_name(name).send(),
        c.iam
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
    );
    let role = role.op("iam:GetRole").found()?;
    if let Some(role) = role.as_ref().and_then(|out| out.role()) {
        if ours(role.tags(), owner) {
            observed.role = Some(role.role_name().to_string());
            observed.boundary = role
                .permissions_boundary()
                .and_then(|b| b.permissions_boundary_arn())
                .map(str::to_string);
            if list_policies {
                observed.attached_policies = Some(attached_policies(c, name).await?);
            }
        } else {
            observed.role_not_ours = true;
        }
    }
    let profile = profile.op("iam:GetInstanceProfile").found()?;
    if let Some(p) = profile.as_ref().and_then(|out| out.instance_profile()) {
        if ours(p.tags(), owner) {
            observed.instance_profile = Some(p.arn().to_string());
            observed.profile_roles = p
                .roles()
                .iter()
                .map(|r| r.role_name().to_string())
                .collect();
        } else {
            observed.instance_profile_not_ours = true;
        }
    }
    Ok(observed)
}

/// A role of the account as the shared resync sees it: its owner's UID
/// tag, its managed policies and the instance profiles holding it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleDetail {
    pub uid: Option<String>,
    pub policies: Vec<String>,
    pub boundary: Option<String>,
    /// `(name, ARN, owner's UID tag, roles)` of each profile holding it.
    pub profiles: Vec<(String, String, Option<String>, Vec<String>)>,
}

/// Every role of the account by name, in one paginated call
/// (GetAccountAuthorizationDetails): IAM has no tag filter and no batch
/// describe, and this answer holds what GetRole, GetInstanceProfile and
/// ListAttachedRolePolicies say of each cluster's.
pub async fn describe_account(
    c: &AwsClients,
    installation: &str,
) -> AwsResult<BTreeMap<String, RoleDetail>> {
    const OP: &str = "iam:GetAccountAuthorizationDetails";
    let uid_of = |tags: &[Tag]| owner_uid(tags, installation).map(str::to_string);
    let mut out = BTreeMap::new();
    let mut pages = c
        .iam
        .get_account_authorization_details()
        .filter(EntityType::Role)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for r in page.op(OP)?.role_detail_list() {
            let Some(name) = r.role_name() else { continue };
            let detail = RoleDetail {
                uid: uid_of(r.tags()),
                boundary: r
                    .permissions_boundary()
                    .and_then(|b| b.permissions_boundary_arn())
                    .map(str::to_string),
                policies: r
                    .attached_managed_policies()
                    .iter()
                    .filter_map(|p| p.policy_arn().map(str::to_string))
                    .collect(),
                profiles: r
                    .instance_profile_list()
                    .iter()
                    .map(|p| {
                        let roles = p.roles().iter().map(|r| r.role_name().to_string());
                        (
                            p.instance_profile_name().to_string(),
                            p.arn().to_string(),
                            uid_of(p.tags()),
                            roles.collect(),
                        )
                    })
                    .collect(),
            };
            out.insert(name.to_string(), detail);
        }
    }
    Ok(out)
}

/// What [`describe`] would have said of the role and profile `name` of
/// cluster `uid`, from the account's roles (a profile holding no role is
/// not in them: it reads as absent).
pub fn observed_in(
    roles: &BTreeMap<String, RoleDetail>,
    name: &str,
    uid: &str,
    list_policies: bool,
) -> ObservedIam {
    let mut observed = ObservedIam {
        name: name.to_string(),
        ..Default::default()
    };
    if let Some(role) = roles.get(name) {
        if role.uid.as_deref() == Some(uid) {
            observed.role = Some(name.to_string());
            observed.boundary = role.boundary.clone();
            if list_policies {
                observed.attached_policies = Some(role.policies.clone());
            }
        } else {
            observed.role_not_ours = true;
        }
    }
    let profile = roles
        .values()
        .flat_map(|r| &r.profiles)
        .find(|(profile, ..)| profile == name);
    if let Some((_, arn, owner, roles)) = profile {
        if owner.as_deref() == Some(uid) {
            observed.instance_profile = Some(arn.clone());
            observed.profile_roles = roles.clone();
        } else {
            observed.instance_profile_not_ours = true;
        }
    }
    observed
}

/// Creates the nodes' role, with the permissions `boundary` when one is required.
pub async fn create_role(
    c: &AwsClients,
    owner: &OwnershipTags,
    name: &str,
    boundary: Option<&str>,
) -> AwsResult<()> {
    c.iam
        .create_role()
        .role_name(name)
        .set_permissions_boundary(boundary.map(str::to_string))
        .assume_role_policy_document(EC2_TRUST)
        .description(format!(
            "byoc-operator nodes of {}/{}",
            owner.namespace, owner.name
        ))
        .set_tags(Some(iam_tags(owner)))
        .send()
        .await
        .op("iam:CreateRole")
        .map(|_| ())
}

pub async fn create_instance_profile(
    c: &AwsClients,
    owner: &OwnershipTags,
    name: &str,
) -> AwsResult<String> {
    let out = c
        .iam
        .create_instance_profile()
        .instance_profile_name(name)
        .set_tags(Some(iam_tags(owner)))
        .send()
        .await
        .op("iam:CreateInstanceProfile")?;
    out.instance_profile()
        .map(|p| p.arn().to_string())
        .ok_or(AwsError::Incomplete {
            operation: "iam:CreateInstanceProfile",
            missing: "InstanceProfile",
        })
}

/// The managed policies attached to role `name`.
pub async fn attached_policies(c: &AwsClients, name: &str) -> AwsResult<Vec<String>> {
    let pages: Vec<_> = c
        .iam
        .list_attached_role_policies()
        .role_name(name)
        .into_paginator()
        .items()
        .send()
        .collect::<Vec<_>>()
        .await;
    pages
        .into_iter()
        .map(|p| {
            p.op("iam:ListAttachedRolePolicies").and_then(|p| {
                p.policy_arn()
                    .map(str::to_string)
                    .ok_or(AwsError::Incomplete {
                        operation: "iam:ListAttachedRolePolicies",
                        missing: "PolicyArn",
                    })
            })
        })
        .collect()
}

pub async fn attach_policy(c: &AwsClients, role: &str, arn: &str) -> AwsResult<()> {
    c.iam
        .attach_role_policy()
        .role_name(role)
        .policy_arn(arn)
        .send()
        .await
        .op("iam:AttachRolePolicy")
        .map(|_| ())
}

pub async fn detach_policy(c: &AwsClients, role: &str, arn: &str) -> AwsResult<()> {
    c.iam
        .detach_role_policy()
        .role_name(role)
        .policy_arn(arn)
        .send()
        .await
        .op("iam:DetachRolePolicy")
        .or_gone()
}

/// A brought instance profile: its ARN and the role in it; `None` when
/// there is no profile of that name.
/// A brought instance profile as IAM shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BroughtProfile {
    pub arn: String,
    /// The role in it.
    pub role: Option<String>,
    /// The cluster UID and installation the profile or its role is tagged
    /// with, when the operator made it (a cluster's own identity).
    pub owner: Option<Claim>,
}

/// Looks up the instance profile `name` and whose its role is.
pub async fn get_brought(c: &AwsClients, name: &str) -> AwsResult<Option<BroughtProfile>> {
    let out = c
        .iam
        .get_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
        .op("iam:GetInstanceProfile")
        .found()?;
    let Some(p) = out.and_then(|out| out.instance_profile) else {
        return Ok(None);
    };
    let role = p.roles().first().map(|r| r.role_name().to_string());
    let owner_of = |tags: &[Tag]| {
        let uid = tag_value(tags, CLUSTER_UID)
            .filter(|_| tag_value(tags, MANAGED_BY) == Some(MANAGED_BY_VALUE))?;
        Some((
            uid.to_string(),
            tag_value(tags, INSTALLATION).map(str::to_string),
        ))
    };
    // The profile's tags, else the role's (GetInstanceProfile lists the
    // role without them).
    let mut owner = owner_of(p.tags());
    if let (None, Some(role)) = (&owner, &role) {
        let got = c
            .iam
            .get_role()
            .role_name(role)
            .send()
            .await
            .op("iam:GetRole")
            .found()?;
        owner = got.and_then(|r| r.role).and_then(|r| owner_of(r.tags()));
    }
    Ok(Some(BroughtProfile {
        arn: p.arn().to_string(),
        role,
        owner,
    }))
}

/// Sets the permissions boundary of role `name`.
pub async fn put_boundary(c: &AwsClients, name: &str, boundary: &str) -> AwsResult<()> {
    c.iam
        .put_role_permissions_boundary()
        .role_name(name)
        .permissions_boundary(boundary)
        .send()
        .await
        .op("iam:PutRolePermissionsBoundary")
        .map(|_| ())
}

pub async fn add_role(c: &AwsClients, name: &str) -> AwsResult<()> {
    match c
        .iam
        .add_role_to_instance_profile()
        .instance_profile_name(name)
        .role_name(name)
        .send()
        .await
        .op("iam:AddRoleToInstanceProfile")
    {
        // Instance profiles hold one role: it is already there.
        Err(e) if e.code() == Some("LimitExceeded") => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Removes the role from the profile and deletes both (what of it is ours).
pub async fn delete(c: &AwsClients, observed: &ObservedIam) -> AwsResult<()> {
    let name = &observed.name;
    if observed.instance_profile.is_some() {
        for role in &observed.profile_roles {
            remove_role(c, name, role).await?;
        }
        delete_instance_profile(c, name).await?;
    }
    if observed.role.is_some() {
        // IAM refuses to delete a role with policies attached.
        let attached = match &observed.attached_policies {
            Some(listed) => listed.clone(),
            None => attached_policies(c, name)
                .await
                .found()?
                .unwrap_or_default(),
        };
        for arn in &attached {
            detach_policy(c, name, arn).await?;
        }
        delete_role(c, name).await?;
    }
    Ok(())
}

pub async fn remove_role(c: &AwsClients, profile: &str, role: &str) -> AwsResult<()> {
    c.iam
        .remove_role_from_instance_profile()
        .instance_profile_name(profile)
        .role_name(role)
        .send()
        .await
        .op("iam:RemoveRoleFromInstanceProfile")
        .or_gone()
}

pub async fn delete_instance_profile(c: &AwsClients, name: &str) -> AwsResult<()> {
    c.iam
        .delete_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
        .op("iam:DeleteInstanceProfile")
        .or_gone()
}

pub async fn delete_role(c: &AwsClients, name: &str) -> AwsResult<()> {
    c.iam
        .delete_role()
        .role_name(name)
        .send()
        .await
        .op("iam:DeleteRole")
        .or_gone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accounts_roles_read_as_a_clusters_describe() {
        let profile = |uid: &str, roles: &[&str]| {
            (
                "byoc-x".to_string(),
                "arn:profile".to_string(),
                Some(uid.to_string()),
                roles.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            )
        };
        let role = |uid: &str, profiles| RoleDetail {
            uid: Some(uid.into()),
            policies: vec!["arn:p".into()],
            boundary: None,
            profiles,
        };
        let ours = BTreeMap::from([(
            "byoc-x".to_string(),
            role("u-1", vec![profile("u-1", &["byoc-x"])]),
        )]);
        let theirs = BTreeMap::from([(
            "byoc-x".to_string(),
            role("u-2", vec![profile("u-2", &["byoc-x"])]),
        )]);
        let no_profile = BTreeMap::from([("byoc-x".to_string(), role("u-1", vec![]))]);

        let got = observed_in(&ours, "byoc-x", "u-1", true);
        assert_eq!(got.role.as_deref(), Some("byoc-x"));
        assert_eq!(got.instance_profile.as_deref(), Some("arn:profile"));
        assert_eq!(got.profile_roles, ["byoc-x"]);
        assert_eq!(got.attached_policies, Some(vec!["arn:p".to_string()]));
        assert_eq!(
            observed_in(&ours, "byoc-x", "u-1", false).attached_policies,
            None
        );

        let got = observed_in(&theirs, "byoc-x", "u-1", true);
        assert!(got.role.is_none() && got.role_not_ours && got.instance_profile_not_ours);

        let got = observed_in(&no_profile, "byoc-x", "u-1", false);
        assert!(got.role.is_some() && got.instance_profile.is_none());
        assert_eq!(
            observed_in(&BTreeMap::new(), "byoc-x", "u-1", false),
            ObservedIam {
                name: "byoc-x".into(),
                ..Default::default()
            }
        );
    }
}
