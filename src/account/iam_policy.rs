//! The IAM policies a target account needs: the permissions of the
//! cross-account role, and its trust policy with the external ID.

use serde_json::{json, Value};

use crate::aws::tags::{MANAGED_BY, MANAGED_BY_VALUE};

/// Read-only calls: observation by tag and lookups.
pub const DESCRIBE: &[&str] = &[
    "ec2:DescribeVpcs",
    "ec2:DescribeSubnets",
    "ec2:DescribeInternetGateways",
    "ec2:DescribeAddresses",
    "ec2:DescribeNatGateways",
    "ec2:DescribeRouteTables",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeInstances",
    "ec2:DescribeInstanceStatus",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeImages",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeAvailabilityZones",
    "ec2:DescribeTags",
    "ec2:DescribeKeyPairs",
];

/// Creations: allowed only when the request carries the managed-by tag.
pub const CREATE: &[&str] = &[
    "ec2:CreateVpc",
    "ec2:CreateSubnet",
    "ec2:CreateInternetGateway",
    "ec2:AllocateAddress",
    "ec2:CreateNatGateway",
    "ec2:CreateRouteTable",
    "ec2:CreateSecurityGroup",
    "ec2:ImportKeyPair",
];

/// Changes and deletions: allowed only on resources carrying the managed-by tag.
pub const MUTATE_OWNED: &[&str] = &[
    "ec2:ModifyVpcAttribute",
    "ec2:ModifySubnetAttribute",
    "ec2:AttachInternetGateway",
    "ec2:DetachInternetGateway",
    "ec2:CreateRoute",
    "ec2:ReplaceRoute",
    "ec2:AssociateRouteTable",
    "ec2:DisassociateRouteTable",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:TerminateInstances",
    "ec2:DeleteVpc",
    "ec2:DeleteSubnet",
    "ec2:DeleteInternetGateway",
    "ec2:ReleaseAddress",
    "ec2:DeleteNatGateway",
    "ec2:DeleteRouteTable",
    "ec2:DeleteSecurityGroup",
    "ec2:DeleteKeyPair",
];

/// IAM calls, on `byoc-*` names only.
pub const IAM: &[&str] = &[
    "iam:GetRole",
    "iam:CreateRole",
    "iam:DeleteRole",
    "iam:TagRole",
    "iam:GetInstanceProfile",
    "iam:CreateInstanceProfile",
    "iam:DeleteInstanceProfile",
    "iam:TagInstanceProfile",
    "iam:AddRoleToInstanceProfile",
    "iam:RemoveRoleFromInstanceProfile",
    "iam:ListAttachedRolePolicies",
    "iam:AttachRolePolicy",
    "iam:DetachRolePolicy",
];

/// The cross-account role's permissions policy. `pass_roles`: the roles of
/// instance profiles brought by clusters (`iam.instanceProfileName`), which
/// the nodes are launched with.
pub fn permissions_policy(pass_roles: &[String]) -> Value {
    let mut passed = vec!["arn:aws:iam::*:role/byoc-*".to_string()];
    passed.extend(pass_roles.iter().cloned());
    let tag_condition =
        |key: &str| json!({ "StringEquals": { format!("{key}/{MANAGED_BY}"): MANAGED_BY_VALUE } });
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Observe", "Effect": "Allow", "Action": DESCRIBE, "Resource": "*"},
            {"Sid": "FindLeakedRoles", "Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*"},
            {"Sid": "QuotaPreflight", "Effect": "Allow", "Action": "servicequotas:GetServiceQuota", "Resource": "*"},
            {"Sid": "CreateTagged", "Effect": "Allow", "Action": CREATE, "Resource": "*",
             "Condition": tag_condition("aws:RequestTag")},
            {"Sid": "TagOnCreate", "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*",
             "Condition": {"StringEquals": {"ec2:CreateAction": [
                "CreateVpc", "CreateSubnet", "CreateInternetGateway", "AllocateAddress", "CreateNatGateway",
                "CreateRouteTable", "CreateSecurityGroup", "ImportKeyPair", "RunInstances"]}}},
            {"Sid": "ChangeOwned", "Effect": "Allow", "Action": MUTATE_OWNED, "Resource": "*",
             "Condition": tag_condition("aws:ResourceTag")},
            {"Sid": "LaunchNodes", "Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "*"},
            {"Sid": "NodeIdentity", "Effect": "Allow", "Action": IAM, "Resource": [
                "arn:aws:iam::*:role/byoc-*", "arn:aws:iam::*:instance-profile/byoc-*"]},
            {"Sid": "EncryptRootVolumes", "Effect": "Allow",
             "Action": ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"],
             "Resource": "*", "Condition": {"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}},
            {"Sid": "FindBroughtInstanceProfiles", "Effect": "Allow", "Action": "iam:GetInstanceProfile", "Resource": "arn:aws:iam::*:instance-profile/*"},
            {"Sid": "PassNodeRole", "Effect": "Allow", "Action": "iam:PassRole", "Resource": passed,
             "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}}
        ]
    })
}

/// The cross-account role's trust policy: `principal` (the operator's
/// identity, or the user whose keys are in the Secret) may assume it with
/// `external_id`.
pub fn trust_policy(principal: &str, external_id: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": external_id}}
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every AWS operation the aws module calls is granted (read from the source).
    #[test]
    fn grants_every_operation_the_operator_calls() {
        // At run time: a test binary built in another checkout sharing the
        // target directory must read this checkout's source.
        let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
        let dir = std::path::Path::new(&root).join("src/aws");
        let granted = serde_json::to_string(&permissions_policy(&[])).unwrap_or_default();
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for op in text
                .split(".op(\"")
                .skip(1)
                .filter_map(|s| s.split('"').next())
            {
                checked += 1;
                assert!(
                    granted.contains(&format!("\"{op}\"")),
                    "{op} is not in the permissions policy"
                );
            }
        }
        assert!(checked > 30, "only {checked} operations found");
    }

    #[test]
    fn brought_roles_may_be_passed() {
        let role = "arn:aws:iam::111111111111:role/team-nodes".to_string();
        let p = permissions_policy(std::slice::from_ref(&role));
        let pass = p["Statement"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["Sid"] == "PassNodeRole"))
            .map(|s| s["Resource"].clone());
        assert_eq!(
            pass,
            Some(json!(["arn:aws:iam::*:role/byoc-*", role])),
            "{p}"
        );
    }

    #[test]
    fn trust_requires_the_external_id() {
        let t = trust_policy("arn:aws:iam::111111111111:role/byoc-operator", "x-1");
        assert_eq!(
            t["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"],
            "x-1"
        );
    }
}
