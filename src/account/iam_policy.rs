//! The IAM policies a target account needs: the permissions of the
//! cross-account role, and its trust policy with the external ID.
//!
//! AWS authorizes a request once per resource it touches, each with the
//! condition keys of that resource (the Service Authorization Reference):
//! `CreateSubnet` on the new subnet, with the request's tags, and on the
//! VPC, with the VPC's own tags. So the statements go by group of resource
//! types, as AWS's own examples and Karpenter's policy do:
//! - what is created, only with this installation's tags in the request;
//! - what is used or changed, only when it carries this installation's
//!   tags (or, brought by a team, the tag `byoc.dev/usable-by` naming this
//!   installation);
//! - images only of amazon, the account itself and the owners listed;
//!   snapshots and launch templates never;
//! - KMS only for the keys listed, and only through EC2;
//! - node roles made with this installation's tag (and the permissions
//!   boundary when one is required), only the managed policies listed
//!   attached to them, only this installation's roles and the brought ones
//!   passed to instances; never the cross-account role or the shared node
//!   role (made by `connect aws`, without this installation's tag);
//! - adoption of what predates the installation tag only while the admin
//!   opens it (`--adopt`).

use serde_json::{json, Value};

use crate::aws::peering::ROUTE_BACK;
use crate::aws::route_table::{self, PEER_ROUTES};
use crate::aws::tags::{
    CLUSTER, CLUSTER_UID, INSTALLATION, INTERRUPTED, MANAGED_BY, MANAGED_BY_VALUE, RETAINED,
};

/// The tag a team puts on a VPC, subnet, security group or key pair it
/// brings, with this installation's ID as its value: the operator may use
/// it (create its security group in the VPC, launch into the subnets with
/// the groups and the key), never change it.
pub const USABLE_BY: &str = "byoc.dev/usable-by";

/// Read-only calls: observation by tag and lookups.
pub const DESCRIBE: &[&str] = &[
    "ec2:DescribeVpcs",
    "ec2:DescribeVpcEndpoints",
    "ec2:DescribeVpcPeeringConnections",
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
    "ec2:DescribeSpotPriceHistory",
    "events:ListRules",
];

/// Creations: allowed only when the request carries the managed-by tag.
pub const CREATE: &[&str] = &[
    "ec2:CreateVpc",
    "ec2:CreateVpcEndpoint",
    "ec2:CreateVpcPeeringConnection",
    "ec2:CreateSubnet",
    "ec2:CreateInternetGateway",
    "ec2:AllocateAddress",
    "ec2:CreateNatGateway",
    "ec2:CreateRouteTable",
    "ec2:CreateSecurityGroup",
    "ec2:ImportKeyPair",
];

/// The EC2 resource types the creations make (ARN `…:TYPE/*`).
const CREATED_TYPES: &[&str] = &[
    "vpc",
    "vpc-endpoint",
    "vpc-peering-connection",
    "subnet",
    "internet-gateway",
    "elastic-ip",
    "natgateway",
    "route-table",
    "security-group",
    "key-pair",
];

/// Creations that also act on an existing resource: a subnet, table or
/// group in a VPC, a NAT gateway in a subnet with an address, an endpoint
/// in subnets and tables with a group.
const CREATE_IN: &[&str] = &[
    "ec2:CreateSubnet",
    "ec2:CreateRouteTable",
    "ec2:CreateSecurityGroup",
    "ec2:CreateVpcEndpoint",
    "ec2:CreateVpcPeeringConnection",
    "ec2:CreateNatGateway",
];

/// The resource types those creations act in.
const CREATED_IN_TYPES: &[&str] = &[
    "vpc",
    "subnet",
    "route-table",
    "security-group",
    "elastic-ip",
];

/// Changes and deletions: allowed only on resources carrying the managed-by tag.
pub const MUTATE_OWNED: &[&str] = &[
    "ec2:ModifyVpcAttribute",
    "ec2:ModifyVpcEndpoint",
    "ec2:DeleteVpcEndpoints",
    "ec2:AcceptVpcPeeringConnection",
    "ec2:DeleteVpcPeeringConnection",
    "ec2:DeleteRoute",
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

/// IAM reads, on `byoc-*` names (a name taken by someone else is seen).
pub const IAM_READ: &[&str] = &[
    "iam:GetRole",
    "iam:GetInstanceProfile",
    "iam:ListAttachedRolePolicies",
];

/// IAM changes and deletions: only on `byoc-*` roles and profiles carrying
/// this installation's tag.
pub const IAM_MUTATE_OWNED: &[&str] = &[
    "iam:DeleteRole",
    "iam:TagRole",
    "iam:DeleteInstanceProfile",
    "iam:TagInstanceProfile",
    "iam:AddRoleToInstanceProfile",
    "iam:RemoveRoleFromInstanceProfile",
];

/// Attaching and detaching managed policies: only those listed.
pub const IAM_POLICIES: &[&str] = &["iam:AttachRolePolicy", "iam:DetachRolePolicy"];

/// What EC2 asks of KMS on the caller's behalf for an encrypted volume.
const VOLUME_KEY_USE: &[&str] = &[
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
];

/// What the permissions policy is made for.
#[derive(Clone, Debug, Default)]
pub struct PolicyOptions {
    /// This installation's public ID (`byoc-operator version`).
    pub installation: String,
    /// Managed policies node roles may get (`iam.managedPolicyArns`); none:
    /// no policy may be attached.
    pub managed_policy_arns: Vec<String>,
    /// The permissions boundary every created role must carry (the
    /// CloudAccount's `permissionsBoundaryArn`).
    pub permissions_boundary: Option<String>,
    /// Roles of instance profiles brought by clusters
    /// (`iam.instanceProfileName`), which nodes are launched with.
    pub pass_roles: Vec<String>,
    /// The role of the account's shared node identity
    /// (`nodeInstanceProfileName`, made by `connect aws`): the one role the
    /// ongoing policy may pass.
    pub shared_node_role: Option<String>,
    /// AMI owners beside amazon and the account itself (the CloudAccount's
    /// `imageOwners`).
    pub image_owners: Vec<String>,
    /// KMS keys nodes' volumes may be encrypted with (the CloudAccount's
    /// `kmsKeyArns`); AWS's default EBS key needs no grant here.
    pub kms_key_arns: Vec<String>,
    /// The adoption window is open: resources made before installations
    /// were tagged may be given this installation's tag (`--adopt`).
    pub adopt: bool,
    /// The managed policy of the nodes' grants ([`nodes_policy`], made by
    /// `connect aws` beside the role): the one more policy node roles may
    /// get.
    pub node_grants_arn: Option<String>,
}

/// The statements only the making of nodes' own IAM roles and profiles
/// needs: the setup policy. An account whose clusters share one node
/// identity does without them (the ongoing policy).
pub const SETUP_STATEMENTS: &[&str] = &[
    "NodeRoleCreate",
    "NodeProfileCreate",
    "NodeIdentityChange",
    "NodeRoleBoundary",
    "NodeIdentityAdopt",
    "NodeRolePolicies",
    "NodeRoleGrants",
    "PassNodeRole",
];

/// The statements of the clusters' storage (log groups, keys): the storage
/// policy, needed with a shared node identity too.
pub const STORAGE_STATEMENTS: &[&str] = &[
    "LogGroupMake",
    "LogGroupOwned",
    "LogGroupRead",
    "KeyMake",
    "KeyAliases",
    "KeyRead",
];

/// Which part of the cross-account role's permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyPart {
    /// Everything: the parts below together.
    All,
    /// Day to day with a shared node identity: no IAM write at all, only
    /// PassRole of the shared node role.
    Ongoing,
    /// What making each cluster's node role and profile needs, on top of
    /// the ongoing policy.
    Setup,
    /// The clusters' storage (log groups, keys), on top of the ongoing
    /// policy: a part of its own, as AWS holds a role's inline policies to
    /// 10,240 characters in all.
    Storage,
}

impl PolicyPart {
    /// The part statement `sid` belongs to.
    fn of(sid: &str) -> PolicyPart {
        if SETUP_STATEMENTS.contains(&sid) {
            PolicyPart::Setup
        } else if STORAGE_STATEMENTS.contains(&sid) {
            PolicyPart::Storage
        } else {
            PolicyPart::Ongoing
        }
    }
}

/// The part `part` of the permissions policy.
pub fn policy_part(o: &PolicyOptions, part: PolicyPart) -> Value {
    let mut doc = permissions_policy(o);
    if part == PolicyPart::All {
        return doc;
    }
    let keep = |s: &Value| s["Sid"].as_str().map(PolicyPart::of) == Some(part);
    if let Some(statements) = doc["Statement"].as_array_mut() {
        statements.retain(keep);
    }
    doc
}

/// The cross-account role's permissions policy.
pub fn permissions_policy(o: &PolicyOptions) -> Value {
    let mut statements = ec2_statements(o);
    statements.extend(node_identity_statements(o));
    statements.extend(launch_statements(o));
    statements.extend(interruption_statements(o));
    statements.extend(logging_statements(o));
    statements.extend(key_statements(o));
    let ours = ours("aws:ResourceTag", &o.installation);
    if !o.managed_policy_arns.is_empty() {
        let mut condition = ours.clone();
        condition["ArnEquals"] = json!({"iam:PolicyARN": o.managed_policy_arns});
        statements.push(
            json!({"Sid": "NodeRolePolicies", "Effect": "Allow", "Action": IAM_POLICIES,
         "Resource": "arn:aws:iam::*:role/byoc-*", "Condition": condition}),
        );
    }
    if let Some(grants) = &o.node_grants_arn {
        let mut condition = ours.clone();
        condition["ArnEquals"] = json!({"iam:PolicyARN": grants});
        statements.push(
            json!({"Sid": "NodeRoleGrants", "Effect": "Allow", "Action": IAM_POLICIES,
         "Resource": "arn:aws:iam::*:role/byoc-*", "Condition": condition}),
        );
    }
    if let Some(role) = &o.shared_node_role {
        statements.push(
            json!({"Sid": "PassSharedNodeRole", "Effect": "Allow", "Action": "iam:PassRole",
         "Resource": format!("arn:aws:iam::*:role/{role}"),
         "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}}),
        );
    }
    if !o.pass_roles.is_empty() {
        statements.push(
            json!({"Sid": "PassBroughtRole", "Effect": "Allow", "Action": "iam:PassRole",
         "Resource": o.pass_roles,
         "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}}),
        );
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// The installation's interruption queue and the rules that feed it,
/// scoped by name (which carries the installation's ID): made only tagged
/// as the installation's, and the rules may send only to that queue.
/// `events:ListRules` is in `Observe`; the instance's mark in `MarkRetained`.
fn interruption_statements(o: &PolicyOptions) -> Vec<Value> {
    let queue = format!(
        "arn:aws:sqs:*:*:{}",
        crate::interruption::queue::queue_name(&o.installation)
    );
    let rules = format!(
        "arn:aws:events:*:*:rule/{}*",
        crate::interruption::queue::rule_prefix(&o.installation)
    );
    let made = ours("aws:RequestTag", &o.installation);
    // A list (ArrayOfARN): every target the queue, and some target named.
    let target = json!({"ForAllValues:ArnLike": {"events:TargetArn": queue},
        "Null": {"events:TargetArn": "false"}});
    vec![
        json!({"Sid": "IntrQueueMake", "Effect": "Allow",
            "Action": ["sqs:CreateQueue", "sqs:TagQueue"], "Resource": queue, "Condition": made}),
        json!({"Sid": "IntrQueue", "Effect": "Allow",
            "Action": ["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:ListQueueTags", "sqs:ReceiveMessage", "sqs:DeleteMessage",
                "sqs:SetQueueAttributes", "sqs:DeleteQueue"], "Resource": queue}),
        json!({"Sid": "IntrRuleMake", "Effect": "Allow", "Action": "events:PutRule",
            "Resource": rules, "Condition": made}),
        json!({"Sid": "IntrRuleTarget", "Effect": "Allow", "Action": "events:PutTargets",
            "Resource": rules, "Condition": target}),
        json!({"Sid": "IntrRule", "Effect": "Allow",
            "Action": ["events:DescribeRule", "events:ListTagsForResource", "events:ListTargetsByRule", "events:RemoveTargets", "events:DeleteRule"],
            "Resource": rules}),
    ]
}

/// The clusters' log groups, all under `/byoc/`: made only tagged as the
/// installation's (a group another installation tagged is never tagged
/// again), changed and deleted only when so tagged; listed, and their tags
/// read, to tell the installation's from another's.
fn logging_statements(o: &PolicyOptions) -> Vec<Value> {
    let groups = format!(
        "arn:aws:logs:*:*:log-group:{}*",
        crate::aws::log_group::PREFIX
    );
    let mut made = ours("aws:RequestTag", &o.installation);
    made["Null"] = json!({format!("aws:ResourceTag/{INSTALLATION}"): "true"});
    vec![
        json!({"Sid": "LogGroupMake", "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:TagResource"], "Resource": groups,
            "Condition": made}),
        json!({"Sid": "LogGroupOwned", "Effect": "Allow",
            "Action": ["logs:PutRetentionPolicy", "logs:DeleteLogGroup"], "Resource": groups,
            "Condition": ours("aws:ResourceTag", &o.installation)}),
        json!({"Sid": "LogGroupRead", "Effect": "Allow",
            "Action": ["logs:DescribeLogGroups", "logs:ListTagsForResource"], "Resource": "*"}),
    ]
}

/// The clusters' KMS keys: made (never with another's policy in mind: a
/// key's own policy names the operator's role for that key alone, see
/// `aws::kms_key::key_policy`), aliased only under the installation's
/// names, read. No statement here manages a key by its tags: a tag write
/// on a key another made would then hand it over.
fn key_statements(o: &PolicyOptions) -> Vec<Value> {
    let aliases = format!(
        "arn:aws:kms:*:*:{}*",
        crate::aws::kms_key::alias_of(&o.installation, "")
    );
    vec![
        json!({"Sid": "KeyMake", "Effect": "Allow", "Action": "kms:CreateKey", "Resource": "*",
            "Condition": {"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT", "kms:KeyUsage": "ENCRYPT_DECRYPT"},
                "Bool": {"kms:MultiRegion": "false"}}}),
        json!({"Sid": "KeyAliases", "Effect": "Allow",
            "Action": ["kms:CreateAlias", "kms:DeleteAlias"], "Resource": aliases}),
        json!({"Sid": "KeyRead", "Effect": "Allow",
            "Action": ["kms:ListKeys", "kms:ListAliases", "kms:DescribeKey", "kms:ListResourceTags", "kms:GetKeyRotationStatus"],
            "Resource": "*"}),
    ]
}

/// The nodes' grants: what a cluster's nodes may do with what the operator
/// made for that cluster alone, named by the cluster tag their role carries
/// (`aws:PrincipalTag`), so one policy serves every cluster. `connect aws`
/// makes it; the operator attaches it to a cluster's node role while the
/// cluster has something to grant (`logging`), and never to a role of
/// another cluster's name. Holds no installation: the role's tags are the
/// operator's, set when it made the role. (`log-group:NAME:*` is the group
/// as IAM names it for every call but tagging, and its streams.)
pub fn nodes_policy() -> Value {
    let group = format!(
        "arn:aws:logs:*:*:log-group:{}${{aws:PrincipalTag/{CLUSTER}}}",
        crate::aws::log_group::PREFIX
    );
    let uid = format!("${{aws:PrincipalTag/{CLUSTER_UID}}}");
    json!({"Version": "2012-10-17", "Statement": [
        json!({"Sid": "WriteOwnLogGroup", "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            "Resource": format!("{group}:*")}),
        json!({"Sid": "UseOwnKey", "Effect": "Allow",
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:DescribeKey"],
            "Resource": "arn:aws:kms:*:*:key/*",
            "Condition": {"StringEquals": {format!("aws:ResourceTag/{CLUSTER_UID}"): uid}}}),
    ]})
}

/// Tags saying this installation made it, as the condition on `key`
/// (`aws:RequestTag` for a create, `aws:ResourceTag` for a change).
fn ours(key: &str, installation: &str) -> Value {
    json!({ "StringEquals": {
        format!("{key}/{MANAGED_BY}"): MANAGED_BY_VALUE,
        format!("{key}/{INSTALLATION}"): installation,
    }})
}

/// Made before installations were tagged: the one tag write that adopts it.
fn adopt_condition(installation: &str) -> Value {
    json!({
        "StringEquals": {
            format!("aws:ResourceTag/{MANAGED_BY}"): MANAGED_BY_VALUE,
            format!("aws:RequestTag/{INSTALLATION}"): installation,
        },
        "Null": { format!("aws:ResourceTag/{INSTALLATION}"): "true" },
        "ForAllValues:StringEquals": { "aws:TagKeys": [INSTALLATION] }
    })
}

/// `arn:aws:ec2:*:*:TYPE/*` for each type.
fn ec2_arns(types: &[&str]) -> Vec<String> {
    types
        .iter()
        .map(|t| format!("arn:aws:ec2:*:*:{t}/*"))
        .collect()
}

/// Observing, and making, changing and launching into EC2 resources.
fn ec2_statements(o: &PolicyOptions) -> Vec<Value> {
    let ours = |key: &str| ours(key, &o.installation);
    // The retain mark, and the interruption listener's on an instance.
    let mut retain = ours("aws:ResourceTag");
    retain["ForAllValues:StringEquals"] = json!({ "aws:TagKeys": [RETAINED, INTERRUPTED] });
    let mut tag_on_create = ours("aws:RequestTag");
    tag_on_create["StringEquals"]["ec2:CreateAction"] = json!([
        "CreateVpc",
        "CreateSubnet",
        "CreateInternetGateway",
        "AllocateAddress",
        "CreateNatGateway",
        "CreateRouteTable",
        "CreateSecurityGroup",
        "ImportKeyPair",
        "RunInstances",
        "CreateVpcEndpoint",
        "CreateVpcPeeringConnection"
    ]);
    let mut tagged_on_create = CREATED_TYPES.to_vec();
    tagged_on_create.extend(["instance", "volume"]);
    let mut statements = vec![
        json!({"Sid": "Observe", "Effect": "Allow", "Action": DESCRIBE, "Resource": "*"}),
        json!({"Sid": "FindLeakedRoles", "Effect": "Allow",
         "Action": "iam:GetAccountAuthorizationDetails", "Resource": "*"}),
        json!({"Sid": "QuotaPreflight", "Effect": "Allow", "Action": "servicequotas:GetServiceQuota", "Resource": "*"}),
        json!({"Sid": "ListPrices", "Effect": "Allow", "Action": "pricing:GetProducts", "Resource": "*"}),
        json!({"Sid": "CreateTagged", "Effect": "Allow", "Action": CREATE,
         "Resource": ec2_arns(CREATED_TYPES), "Condition": ours("aws:RequestTag")}),
        json!({"Sid": "CreateInOwned", "Effect": "Allow", "Action": CREATE_IN,
         "Resource": ec2_arns(CREATED_IN_TYPES), "Condition": ours("aws:ResourceTag")}),
        json!({"Sid": "CreateInBrought", "Effect": "Allow", "Action": "ec2:CreateSecurityGroup",
         "Resource": ec2_arns(&["vpc"]),
         "Condition": {"StringEquals": {format!("aws:ResourceTag/{USABLE_BY}"): o.installation}}}),
        json!({"Sid": "TagOnCreate", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": ec2_arns(&tagged_on_create), "Condition": tag_on_create}),
    ];
    if o.adopt {
        statements.push(
            json!({"Sid": "AdoptUntagged", "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*",
         "Condition": adopt_condition(&o.installation)}),
        );
    }
    statements.extend([
        json!({"Sid": "MarkRetained", "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*",
         "Condition": retain}),
        json!({"Sid": "ChangeOwned", "Effect": "Allow", "Action": MUTATE_OWNED, "Resource": "*",
         "Condition": ours("aws:ResourceTag")}),
    ]);
    statements.extend(peering_statements(o));
    statements
}

/// Accepting peering connections, and the routes back in peers' tables.
fn peering_statements(o: &PolicyOptions) -> Vec<Value> {
    vec![
        // Acceptance is bounded by the accepter VPC: this installation's
        // (ChangeOwned) or one brought to it (the usable-by tag). The
        // connection itself carries no tag in the accepter's region when
        // it crosses regions (tags are regional), so any connection.
        json!({"Sid": "AcceptPeering", "Effect": "Allow", "Action": "ec2:AcceptVpcPeeringConnection",
         "Resource": ec2_arns(&["vpc-peering-connection"])}),
        json!({"Sid": "AcceptIntoBrought", "Effect": "Allow", "Action": "ec2:AcceptVpcPeeringConnection",
         "Resource": ec2_arns(&["vpc"]),
         "Condition": {"StringEquals": {format!("aws:ResourceTag/{USABLE_BY}"): o.installation}}}),
        // Routes back in a peer's table, only where its owner opened it to
        // this installation (the namespace is the operator's to check).
        json!({"Sid": "PeerRouteTables", "Effect": "Allow", "Action": ["ec2:CreateRoute", "ec2:DeleteRoute"],
         "Resource": "arn:aws:ec2:*:*:route-table/*",
         "Condition": {"StringLike": {format!("aws:ResourceTag/{PEER_ROUTES}"): route_table::opened_to(&o.installation, "*")}}}),
        // Each route back recorded on its connection before it is made, and
        // forgotten once deleted: those tags only, on this installation's
        // connections.
        json!({"Sid": "RecordRoutesBack", "Effect": "Allow", "Action": ["ec2:CreateTags", "ec2:DeleteTags"],
        "Resource": ec2_arns(&["vpc-peering-connection"]),
        "Condition": {
            "StringEquals": {
                format!("aws:ResourceTag/{MANAGED_BY}"): MANAGED_BY_VALUE,
                format!("aws:ResourceTag/{INSTALLATION}"): o.installation,
            },
            "ForAllValues:StringLike": {"aws:TagKeys": [format!("{ROUTE_BACK}*")]},
        }}),
    ]
}

/// Each cluster's node role and instance profile: made, changed, adopted
/// only under this installation's names and tags.
fn node_identity_statements(o: &PolicyOptions) -> Vec<Value> {
    let ours = |key: &str| ours(key, &o.installation);
    let iam_names = json!([
        "arn:aws:iam::*:role/byoc-*",
        "arn:aws:iam::*:instance-profile/byoc-*"
    ]);
    let mut create_role = ours("aws:RequestTag");
    if let Some(boundary) = &o.permissions_boundary {
        create_role["StringEquals"]["iam:PermissionsBoundary"] = json!(boundary);
    }
    let mut statements = vec![
        json!({"Sid": "NodeIdentityRead", "Effect": "Allow", "Action": IAM_READ, "Resource": iam_names}),
        json!({"Sid": "NodeRoleCreate", "Effect": "Allow", "Action": "iam:CreateRole",
         "Resource": "arn:aws:iam::*:role/byoc-*", "Condition": create_role}),
        json!({"Sid": "NodeProfileCreate", "Effect": "Allow", "Action": "iam:CreateInstanceProfile",
         "Resource": "arn:aws:iam::*:instance-profile/byoc-*", "Condition": ours("aws:RequestTag")}),
        json!({"Sid": "NodeIdentityChange", "Effect": "Allow", "Action": IAM_MUTATE_OWNED, "Resource": iam_names,
         "Condition": ours("aws:ResourceTag")}),
    ];
    // A boundary is put back only as the one required: never swapped
    // (with none required, any boundary only narrows a role).
    let mut put = ours("aws:ResourceTag");
    if let Some(boundary) = &o.permissions_boundary {
        put["StringEquals"]["iam:PermissionsBoundary"] = json!(boundary);
    }
    statements.push(
        json!({"Sid": "NodeRoleBoundary", "Effect": "Allow", "Action": "iam:PutRolePermissionsBoundary",
     "Resource": "arn:aws:iam::*:role/byoc-*", "Condition": put}),
    );
    if o.adopt {
        statements.push(
            json!({"Sid": "NodeIdentityAdopt", "Effect": "Allow", "Action": ["iam:TagRole", "iam:TagInstanceProfile"],
         "Resource": iam_names, "Condition": adopt_condition(&o.installation)}),
        );
    }
    statements
}

/// Launching nodes: the instance and its volumes tagged as this
/// installation's, into its subnets and groups (or brought ones), from
/// images of amazon, the account or the owners listed, with the keys
/// listed; this installation's node role passed to EC2.
fn launch_statements(o: &PolicyOptions) -> Vec<Value> {
    let ours = |key: &str| ours(key, &o.installation);
    let mut owners = vec!["amazon".to_string(), "${aws:PrincipalAccount}".to_string()];
    owners.extend(o.image_owners.iter().cloned());
    let mut statements = vec![
        json!({"Sid": "LaunchTagged", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": ec2_arns(&["instance", "volume"]), "Condition": ours("aws:RequestTag")}),
        json!({"Sid": "LaunchInterfaces", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": ec2_arns(&["network-interface"])}),
        json!({"Sid": "LaunchIntoOwned", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": ec2_arns(&["subnet", "security-group", "key-pair"]), "Condition": ours("aws:ResourceTag")}),
        json!({"Sid": "LaunchIntoBrought", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": ec2_arns(&["subnet", "security-group", "key-pair"]),
         "Condition": {"StringEquals": {format!("aws:ResourceTag/{USABLE_BY}"): o.installation}}}),
        json!({"Sid": "LaunchImages", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": "arn:aws:ec2:*::image/*", "Condition": {"StringEquals": {"ec2:Owner": owners}}}),
    ];
    if !o.kms_key_arns.is_empty() {
        statements.extend([
            json!({"Sid": "EncryptRootVolumes", "Effect": "Allow", "Action": VOLUME_KEY_USE,
             "Resource": o.kms_key_arns, "Condition": {"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}}),
            json!({"Sid": "GrantRootVolumeKeys", "Effect": "Allow", "Action": "kms:CreateGrant",
             "Resource": o.kms_key_arns, "Condition": {
                "StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"},
                "Bool": {"kms:GrantIsForAWSResource": "true"}}}),
        ]);
    }
    statements.extend([
        json!({"Sid": "FindBroughtInstanceProfiles", "Effect": "Allow", "Action": ["iam:GetInstanceProfile", "iam:GetRole"], "Resource": ["arn:aws:iam::*:instance-profile/*", "arn:aws:iam::*:role/*"]}),
        json!({"Sid": "PassNodeRole", "Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::*:role/byoc-*",
         "Condition": {"StringEquals": {
            "iam:PassedToService": "ec2.amazonaws.com",
            format!("iam:ResourceTag/{INSTALLATION}"): o.installation}}}),
    ]);
    statements
}

/// The policy of the operator's own identity (its IRSA or Pod Identity
/// role, or the user whose keys it runs with): `sts:AssumeRole` only on
/// roles `connect` made for this installation (tagged
/// `byoc.dev/connected-installation`), and, when `accounts` lists any,
/// only in those AWS accounts. A role that merely trusts the identity (no
/// external ID, or made by hand) is not assumed.
pub fn operator_policy(installation: &str, accounts: &[String]) -> Value {
    let resource: Vec<String> = match accounts.is_empty() {
        true => vec!["arn:aws:iam::*:role/*".into()],
        false => accounts
            .iter()
            .map(|a| format!("arn:aws:iam::{a}:role/*"))
            .collect(),
    };
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AssumeConnectedRoles",
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Resource": resource,
            "Condition": {"StringEquals": {
                format!("aws:ResourceTag/{}", crate::aws::tags::CONNECTED_INSTALLATION): installation
            }}
        }]
    })
}

/// The cross-account role's trust policy: `principal` (the operator's
/// identity, or the user whose keys are in the Secret) may assume it, with
/// `external_id` when there is one. The operator tags every session with
/// its CloudAccount's namespace and name; with `namespace`, the policy
/// requires that namespace's tag, so no CloudAccount of another namespace
/// can assume the role even with the same external ID. `sts:TagSession`
/// is allowed apart: it is authorized with the request's tags only.
pub fn trust_policy(principal: &str, external_id: Option<&str>, namespace: Option<&str>) -> Value {
    let tag = format!("aws:RequestTag/{}", crate::aws::tags::SESSION_NAMESPACE);
    let mut assume = serde_json::Map::new();
    if let Some(id) = external_id {
        assume.insert("sts:ExternalId".into(), json!(id));
    }
    let mut tag_session = serde_json::Map::new();
    if let Some(ns) = namespace {
        assume.insert(tag.clone(), json!(ns));
        tag_session.insert(tag, json!(ns));
    }
    let statement = |sid: &str, action: &str, equals: serde_json::Map<String, Value>| {
        let mut s = json!({
            "Sid": sid,
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": action,
        });
        if !equals.is_empty() {
            s["Condition"] = json!({"StringEquals": equals});
        }
        s
    };
    json!({
        "Version": "2012-10-17",
        "Statement": [
            statement("AssumeWithExternalId", "sts:AssumeRole", assume),
            statement("TagSessionWithNamespace", "sts:TagSession", tag_session),
        ]
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
        let all = PolicyOptions {
            installation: "i".into(),
            managed_policy_arns: vec!["arn:aws:iam::aws:policy/P".into()],
            permissions_boundary: Some("arn:aws:iam::111111111111:policy/b".into()),
            pass_roles: vec!["arn:aws:iam::111111111111:role/r".into()],
            shared_node_role: Some("shared".into()),
            image_owners: vec![],
            kms_key_arns: vec!["arn:aws:kms:us-east-1:111111111111:key/k".into()],
            adopt: true,
            node_grants_arn: Some("arn:aws:iam::111111111111:policy/r-byoc-operator-nodes".into()),
        };
        // A cluster key's own policy grants the operator's role the rest.
        let granted = serde_json::to_string(&permissions_policy(&all)).unwrap_or_default()
            + &serde_json::to_string(crate::aws::kms_key::KEY_POLICY_GRANTS).unwrap_or_default();
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            // A person's admin credentials make these calls (`connect aws`),
            // never the operator's role; and STS's are decided by the
            // role's trust (AssumeRole) or need no permission at all
            // (GetCallerIdentity).
            if entry.file_name() == "admin.rs" || entry.file_name() == "sts.rs" {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            // `.op("svc:Op")` and `const OP: &str = "svc:Op"` alike.
            let literal = text.split(".op(\"").skip(1);
            let constant = text.split("const OP: &str = \"").skip(1);
            for op in literal.chain(constant).filter_map(|s| s.split('"').next()) {
                checked += 1;
                assert!(
                    granted.contains(&format!("\"{op}\"")),
                    "{op} is not in the permissions policy"
                );
            }
        }
        assert!(checked > 30, "only {checked} operations found");
    }

    /// AWS refuses a role's inline policies above 10,240 characters (all of
    /// them together, whitespace not counted) and a managed policy above
    /// 6,144: the ongoing part (inline) and the setup and storage parts
    /// (managed, see `connect`) each fit, with every option given.
    #[test]
    fn each_part_fits_its_aws_limit_with_every_option() {
        let o = PolicyOptions {
            installation: "0123456789abcdef".into(),
            managed_policy_arns: vec![
                "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore".into(),
                "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy".into(),
            ],
            permissions_boundary: Some("arn:aws:iam::123456789012:policy/boundary".into()),
            pass_roles: vec!["arn:aws:iam::123456789012:role/team-nodes".into()],
            shared_node_role: Some("byoc-shared-nodes".into()),
            image_owners: vec!["123456789012".into()],
            kms_key_arns: vec!["arn:aws:kms:us-east-1:123456789012:key/k".into()],
            adopt: true,
            node_grants_arn: Some(
                "arn:aws:iam::123456789012:policy/byoc-cross-account-byoc-operator-nodes".into(),
            ),
        };
        let size = |part| {
            let text = serde_json::to_string(&policy_part(&o, part)).unwrap_or_default();
            text.chars().filter(|c| !c.is_whitespace()).count()
        };
        let (ongoing, setup) = (size(PolicyPart::Ongoing), size(PolicyPart::Setup));
        let storage = size(PolicyPart::Storage);
        assert!(ongoing <= 10_240, "ongoing (inline): {ongoing} characters");
        assert!(setup <= 6_144, "setup (managed): {setup} characters");
        assert!(storage <= 6_144, "storage (managed): {storage} characters");
        assert!(
            ongoing + storage > 10_240,
            "the storage part would fit inline: its managed policy is no longer needed"
        );
        assert!(
            ongoing + setup > 10_240,
            "both inline would fit: the managed part is no longer needed"
        );
    }

    /// The nodes' grants name the group by the role's own cluster tag, and
    /// the operator may attach that one policy besides the listed ones.
    #[test]
    fn nodes_are_granted_their_own_clusters_group_by_their_roles_tag() {
        let doc = nodes_policy();
        let text = serde_json::to_string(&doc).unwrap_or_default();
        assert!(
            text.contains("log-group:/byoc/${aws:PrincipalTag/byoc.dev/cluster}:*"),
            "{text}"
        );
        assert!(!text.contains("\"Resource\":\"*\""), "{text}");
        let arn = "arn:aws:iam::123456789012:policy/r-byoc-operator-nodes";
        let p = policy_part(
            &PolicyOptions {
                installation: "inst-a".into(),
                node_grants_arn: Some(arn.into()),
                ..Default::default()
            },
            PolicyPart::Setup,
        );
        let attach = statement(&p, "NodeRoleGrants").unwrap_or_default();
        assert_eq!(attach["Condition"]["ArnEquals"]["iam:PolicyARN"], arn);
        assert_eq!(
            attach["Condition"]["StringEquals"]["aws:ResourceTag/byoc.dev/installation"],
            "inst-a"
        );
        assert!(statement(
            &permissions_policy(&PolicyOptions::default()),
            "NodeRoleGrants"
        )
        .is_none());
    }

    fn statement(p: &Value, sid: &str) -> Option<Value> {
        p["Statement"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["Sid"] == sid))
            .cloned()
    }

    #[test]
    fn brought_roles_may_be_passed_and_own_ones_only_by_installation() {
        let role = "arn:aws:iam::111111111111:role/team-nodes".to_string();
        let p = permissions_policy(&PolicyOptions {
            installation: "inst-a".into(),
            pass_roles: vec![role.clone()],
            ..Default::default()
        });
        let brought = statement(&p, "PassBroughtRole").map(|s| s["Resource"].clone());
        assert_eq!(brought, Some(json!([role])), "{p}");
        let own = statement(&p, "PassNodeRole").unwrap_or_default();
        assert_eq!(
            own["Condition"]["StringEquals"]["iam:ResourceTag/byoc.dev/installation"],
            "inst-a"
        );
        assert!(statement(
            &permissions_policy(&PolicyOptions::default()),
            "PassBroughtRole"
        )
        .is_none());
    }

    #[test]
    fn policies_are_attached_only_from_the_list_and_roles_made_only_with_the_boundary() {
        let none = permissions_policy(&PolicyOptions::default());
        assert!(statement(&none, "NodeRolePolicies").is_none(), "{none}");
        assert!(!serde_json::to_string(&none)
            .unwrap_or_default()
            .contains("iam:AttachRolePolicy"));
        let p = permissions_policy(&PolicyOptions {
            installation: "inst-a".into(),
            managed_policy_arns: vec!["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore".into()],
            permissions_boundary: Some("arn:aws:iam::111111111111:policy/boundary".into()),
            pass_roles: vec![],
            shared_node_role: None,
            ..Default::default()
        });
        let attach = statement(&p, "NodeRolePolicies").unwrap_or_default();
        assert_eq!(
            attach["Condition"]["ArnEquals"]["iam:PolicyARN"],
            json!(["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"])
        );
        let create = statement(&p, "NodeRoleCreate").unwrap_or_default();
        assert_eq!(
            create["Condition"]["StringEquals"]["iam:PermissionsBoundary"],
            "arn:aws:iam::111111111111:policy/boundary"
        );
        assert_eq!(
            create["Condition"]["StringEquals"]["aws:RequestTag/byoc.dev/installation"],
            "inst-a"
        );
        // The boundary is a role's: an instance profile's creation has no such key.
        let profile = statement(&p, "NodeProfileCreate").unwrap_or_default();
        assert!(profile["Condition"]["StringEquals"]
            .get("iam:PermissionsBoundary")
            .is_none());
        let change = statement(&p, "ChangeOwned").unwrap_or_default();
        assert_eq!(
            change["Condition"]["StringEquals"]["aws:ResourceTag/byoc.dev/installation"],
            "inst-a"
        );
    }

    fn actions(p: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for s in p["Statement"].as_array().into_iter().flatten() {
            match &s["Action"] {
                Value::String(a) => out.push(a.clone()),
                Value::Array(a) => {
                    out.extend(a.iter().filter_map(|a| a.as_str()).map(String::from))
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn the_ongoing_policy_writes_no_iam_and_passes_only_the_shared_role() {
        let o = PolicyOptions {
            installation: "inst-a".into(),
            managed_policy_arns: vec!["arn:aws:iam::aws:policy/P".into()],
            permissions_boundary: None,
            pass_roles: vec![],
            shared_node_role: Some("byoc-shared-nodes".into()),
            ..Default::default()
        };
        let ongoing = policy_part(&o, PolicyPart::Ongoing);
        let writes: Vec<String> = actions(&ongoing)
            .into_iter()
            .filter(|a| {
                [
                    "iam:Create",
                    "iam:Attach",
                    "iam:Detach",
                    "iam:Delete",
                    "iam:Put",
                    "iam:Tag",
                    "iam:Add",
                    "iam:Remove",
                ]
                .iter()
                .any(|w| a.starts_with(w))
            })
            .collect();
        assert!(writes.is_empty(), "{writes:?}");
        let passes: Vec<Value> = ongoing["Statement"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["Action"] == "iam:PassRole")
            .map(|s| s["Resource"].clone())
            .collect();
        assert_eq!(passes, [json!("arn:aws:iam::*:role/byoc-shared-nodes")]);
        // The parts together are the whole, with nothing twice.
        let setup = policy_part(&o, PolicyPart::Setup);
        let storage = policy_part(&o, PolicyPart::Storage);
        let all = policy_part(&o, PolicyPart::All);
        let count = |p: &Value| p["Statement"].as_array().map_or(0, Vec::len);
        assert_eq!(
            count(&ongoing) + count(&setup) + count(&storage),
            count(&all)
        );
        assert!(actions(&setup).contains(&"iam:CreateRole".to_string()));
        assert!(!actions(&ongoing).contains(&"iam:CreateRole".to_string()));
    }

    #[test]
    fn trust_requires_the_external_id() {
        let t = trust_policy(
            "arn:aws:iam::111111111111:role/byoc-operator",
            Some("x-1"),
            Some("team-a"),
        );
        let assume = &t["Statement"][0]["Condition"]["StringEquals"];
        assert_eq!(assume["sts:ExternalId"], "x-1");
        assert_eq!(assume["aws:RequestTag/byoc.dev/namespace"], "team-a");
        assert_eq!(t["Statement"][1]["Action"], "sts:TagSession");
        let open = trust_policy("arn:aws:iam::111111111111:user/u", None, None);
        assert!(open["Statement"][0].get("Condition").is_none());
    }
}
