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
