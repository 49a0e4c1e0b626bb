//! The IAM calls `byoc-operator connect aws` makes with a person's admin
//! credentials in a team's account: the cross-account role, its inline
//! policies, and the account's shared node role and instance profile. The
//! operator's own role never makes these calls.

use std::collections::BTreeMap;

use aws_sdk_iam::types::Tag;
use serde_json::Value;

pub use super::instance_profile::{
    attach_policy as attach, delete_instance_profile, delete_role, detach_policy as detach,
    remove_role,
};
use super::{AwsClients, AwsError, AwsResult, NotFoundExt, SdkResultExt};

/// A role as `connect` compares it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedRole {
    pub arn: String,
    /// The trust policy, parsed.
    pub trust: Value,
    pub tags: BTreeMap<String, String>,
    /// The role's inline policies by name, parsed.
    pub inline: BTreeMap<String, Value>,
    /// Managed policies attached.
    pub attached: Vec<String>,
}

/// An instance profile as `connect` compares it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedProfile {
    pub arn: String,
    pub roles: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// A customer-managed policy as `connect` compares it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedPolicy {
    pub arn: String,
    /// Its default version's document, parsed.
    pub document: Value,
    pub tags: BTreeMap<String, String>,
}

/// AWS keeps at most this many versions of a managed policy.
const MAX_POLICY_VERSIONS: usize = 5;

/// IAM answers policy documents URL-encoded; some servers send them as is.
pub fn policy_document(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| {
        let decoded: String =
            form_urlencoded::parse(format!("d={}", raw.replace('+', "%2B")).as_bytes())
                .map(|(_, v)| v.into_owned())
                .next()
                .unwrap_or_default();
        serde_json::from_str(&decoded).unwrap_or(Value::String(decoded))
    })
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

fn tags(tags: &BTreeMap<String, String>) -> AwsResult<Vec<Tag>> {
    tags.iter()
        .map(|(k, v)| super::instance_profile::tag(k, v))
        .collect()
}

/// Role `name` with its trust, tags, inline policies and attached policies.
pub async fn get_role(c: &AwsClients, name: &str) -> AwsResult<Option<ObservedRole>> {
    let Some(out) = c
        .iam
        .get_role()
        .role_name(name)
        .send()
        .await
        .op("iam:GetRole")
        .found()?
    else {
        return Ok(None);
    };
    let Some(role) = out.role() else {
        return Err(AwsError::Incomplete {
            operation: "iam:GetRole",
            missing: "Role",
        });
    };
    let names = c
        .iam
        .list_role_policies()
        .role_name(name)
        .send()
        .await
        .op("iam:ListRolePolicies")?;
    let mut inline = BTreeMap::new();
    for policy in names.policy_names() {
        let got = c
            .iam
            .get_role_policy()
            .role_name(name)
            .policy_name(policy)
            .send()
            .await
            .op("iam:GetRolePolicy")?;
        inline.insert(policy.clone(), policy_document(got.policy_document()));
    }
    let attached = super::instance_profile::attached_policies(c, name).await?;
    Ok(Some(ObservedRole {
        arn: role.arn().to_string(),
        trust: role
            .assume_role_policy_document()
            .map(policy_document)
            .unwrap_or(Value::Null),
        tags: tag_map(role.tags()),
        inline,
        attached,
    }))
}

/// Instance profile `name` with its roles and tags.
pub async fn get_instance_profile(
    c: &AwsClients,
    name: &str,
) -> AwsResult<Option<ObservedProfile>> {
    let Some(out) = c
        .iam
        .get_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
        .op("iam:GetInstanceProfile")
        .found()?
    else {
        return Ok(None);
    };
    let Some(p) = out.instance_profile() else {
        return Err(AwsError::Incomplete {
            operation: "iam:GetInstanceProfile",
            missing: "InstanceProfile",
        });
    };
    Ok(Some(ObservedProfile {
        arn: p.arn().to_string(),
        roles: p
            .roles()
            .iter()
            .map(|r| r.role_name().to_string())
            .collect(),
        tags: tag_map(p.tags()),
    }))
}

pub async fn create_role(
    c: &AwsClients,
    name: &str,
    path: &str,
    trust: &Value,
    tag_set: &BTreeMap<String, String>,
    description: &str,
) -> AwsResult<()> {
    c.iam
        .create_role()
        .role_name(name)
        .path(path)
        .assume_role_policy_document(trust.to_string())
        .description(description)
        .set_tags(Some(tags(tag_set)?))
        .send()
        .await
        .op("iam:CreateRole")
        .map(|_| ())
}

pub async fn tag_role(
    c: &AwsClients,
    name: &str,
    tag_set: &BTreeMap<String, String>,
) -> AwsResult<()> {
    c.iam
        .tag_role()
        .role_name(name)
        .set_tags(Some(tags(tag_set)?))
        .send()
        .await
        .op("iam:TagRole")
        .map(|_| ())
}

pub async fn update_trust(c: &AwsClients, name: &str, trust: &Value) -> AwsResult<()> {
    c.iam
        .update_assume_role_policy()
        .role_name(name)
        .policy_document(trust.to_string())
        .send()
        .await
        .op("iam:UpdateAssumeRolePolicy")
        .map(|_| ())
}

pub async fn put_inline(c: &AwsClients, role: &str, policy: &str, doc: &Value) -> AwsResult<()> {
    c.iam
        .put_role_policy()
        .role_name(role)
        .policy_name(policy)
        .policy_document(doc.to_string())
        .send()
        .await
        .op("iam:PutRolePolicy")
        .map(|_| ())
}

pub async fn delete_inline(c: &AwsClients, role: &str, policy: &str) -> AwsResult<()> {
    c.iam
        .delete_role_policy()
        .role_name(role)
        .policy_name(policy)
        .send()
        .await
        .op("iam:DeleteRolePolicy")
        .or_gone()
}

pub async fn create_instance_profile(
    c: &AwsClients,
    name: &str,
    tag_set: &BTreeMap<String, String>,
) -> AwsResult<()> {
    c.iam
        .create_instance_profile()
        .instance_profile_name(name)
        .set_tags(Some(tags(tag_set)?))
        .send()
        .await
        .op("iam:CreateInstanceProfile")
        .map(|_| ())
}

/// Managed policy `arn` with its default document and tags.
pub async fn get_policy(c: &AwsClients, arn: &str) -> AwsResult<Option<ObservedPolicy>> {
    let Some(out) = (c.iam.get_policy().policy_arn(arn).send().await)
        .op("iam:GetPolicy")
        .found()?
    else {
        return Ok(None);
    };
    let Some(policy) = out.policy() else {
        return Err(AwsError::Incomplete {
            operation: "iam:GetPolicy",
            missing: "Policy",
        });
    };
    let version = policy.default_version_id().unwrap_or("v1");
    let got = (c.iam.get_policy_version())
        .policy_arn(arn)
        .version_id(version)
        .send()
        .await
        .op("iam:GetPolicyVersion")?;
    let document = (got.policy_version())
        .and_then(|v| v.document())
        .map(policy_document)
        .unwrap_or(Value::Null);
    Ok(Some(ObservedPolicy {
        arn: arn.to_string(),
        document,
        tags: tag_map(policy.tags()),
    }))
}

pub async fn create_policy(
    c: &AwsClients,
    name: &str,
    doc: &Value,
    tag_set: &BTreeMap<String, String>,
    description: &str,
) -> AwsResult<()> {
    c.iam
        .create_policy()
        .policy_name(name)
        .policy_document(doc.to_string())
        .description(description)
        .set_tags(Some(tags(tag_set)?))
        .send()
        .await
        .op("iam:CreatePolicy")
        .map(|_| ())
}

/// Non-default versions of policy `arn`, oldest first.
async fn old_versions(c: &AwsClients, arn: &str) -> AwsResult<(Vec<String>, usize)> {
    let out =
        (c.iam.list_policy_versions().policy_arn(arn).send().await).op("iam:ListPolicyVersions")?;
    let all = out.versions();
    let mut old: Vec<(Option<aws_smithy_types::DateTime>, String)> = all
        .iter()
        .filter(|v| !v.is_default_version())
        .filter_map(|v| Some((v.create_date().copied(), v.version_id()?.to_string())))
        .collect();
    old.sort();
    Ok((old.into_iter().map(|(_, id)| id).collect(), all.len()))
}

async fn delete_version(c: &AwsClients, arn: &str, id: &str) -> AwsResult<()> {
    (c.iam.delete_policy_version())
        .policy_arn(arn)
        .version_id(id)
        .send()
        .await
        .op("iam:DeletePolicyVersion")
        .or_gone()
}

/// Makes `doc` the default version of policy `arn`, deleting its oldest
/// old version first when AWS holds as many as it keeps.
pub async fn set_policy_document(c: &AwsClients, arn: &str, doc: &Value) -> AwsResult<()> {
    let (old, count) = old_versions(c, arn).await?;
    if count >= MAX_POLICY_VERSIONS {
        if let Some(oldest) = old.first() {
            delete_version(c, arn, oldest).await?;
        }
    }
    (c.iam.create_policy_version())
        .policy_arn(arn)
        .policy_document(doc.to_string())
        .set_as_default(true)
        .send()
        .await
        .op("iam:CreatePolicyVersion")
        .map(|_| ())
}

/// Detaches policy `arn` from `role` and deletes it with its versions.
pub async fn delete_policy(c: &AwsClients, role: &str, arn: &str) -> AwsResult<()> {
    detach(c, role, arn).await?;
    let (old, _) = match old_versions(c, arn).await.found()? {
        Some(versions) => versions,
        None => return Ok(()),
    };
    for id in old {
        delete_version(c, arn, &id).await?;
    }
    (c.iam.delete_policy().policy_arn(arn).send().await)
        .op("iam:DeletePolicy")
        .or_gone()
}

/// Who the admin credentials are: `(account ID, ARN)`.
pub async fn caller_identity(config: &aws_config::SdkConfig) -> AwsResult<(String, String)> {
    const OP: &str = "sts:GetCallerIdentity";
    let out = aws_sdk_sts::Client::new(config)
        .get_caller_identity()
        .send()
        .await
        .op(OP)?;
    let account = out.account().ok_or(AwsError::Incomplete {
        operation: OP,
        missing: "Account",
    })?;
    let arn = out.arn().ok_or(AwsError::Incomplete {
        operation: OP,
        missing: "Arn",
    })?;
    Ok((account.to_string(), arn.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_documents_are_read_encoded_or_not() {
        let doc = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::a+b/*"}]});
        assert_eq!(policy_document(&doc.to_string()), doc);
        let encoded: String = form_urlencoded::byte_serialize(doc.to_string().as_bytes()).collect();
        assert_eq!(policy_document(&encoded), doc);
    }
}
