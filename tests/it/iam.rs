//! The generated permissions policy, decided as AWS decides it: each row
//! one authorization (an action on one resource, in that resource's
//! context), evaluated by the ground's evaluator (AWS's Service
//! Authorization Reference and an IAM engine, `testground/iam`). The
//! expectation of each row is the policy's promise, written here: this
//! installation's resources allowed, every other one denied. The first
//! rows are the ten authorizations the policy of 6bc0996 denied on the
//! happy path, and the attacks it let through.

use std::collections::BTreeMap;

use anyhow::Result;
use byoc_operator::account::iam_policy::{permissions_policy, PolicyOptions, USABLE_BY};
use serde_json::{json, Value};
use testground::iam_eval::{Check, Evaluator, Principal};

const ME: &str = "0123456789abcdef";
const OTHER: &str = "fedcba9876543210";
const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";

fn principal() -> Principal {
    Principal {
        arn: format!("arn:aws:sts::{ACCOUNT}:assumed-role/byoc-cross-account/byoc"),
        role: format!("arn:aws:iam::{ACCOUNT}:role/byoc-cross-account"),
        account: ACCOUNT.into(),
        tags: Default::default(),
    }
}

/// Tags of a resource made by `installation` (none: made before
/// installations were tagged).
fn made_by(installation: Option<&str>) -> Vec<(&'static str, String)> {
    let mut tags = vec![("byoc.dev/managed-by", "byoc-operator".to_string())];
    if let Some(i) = installation {
        tags.push(("byoc.dev/installation", i.to_string()));
    }
    tags
}

struct Row {
    what: String,
    check: Check,
    allowed: bool,
}

fn arn(t: &str, id: &str) -> String {
    match t {
        "image" | "snapshot" => format!("arn:aws:ec2:{REGION}::{t}/{id}"),
        _ => format!("arn:aws:ec2:{REGION}:{ACCOUNT}:{t}/{id}"),
    }
}

fn context(prefixes: &[&str], tags: &[(&str, String)]) -> BTreeMap<String, Value> {
    let mut ctx = BTreeMap::from([
        ("ec2:Region".to_string(), json!(REGION)),
        ("aws:RequestedRegion".to_string(), json!(REGION)),
    ]);
    for (k, v) in tags {
        for p in prefixes {
            ctx.insert(format!("{p}/{k}"), json!(v));
        }
    }
    if prefixes.contains(&"aws:RequestTag") && !tags.is_empty() {
        let keys: Vec<&str> = tags.iter().map(|(k, _)| *k).collect();
        ctx.insert("aws:TagKeys".into(), json!(keys));
    }
    ctx
}

fn row(
    what: String,
    action: &str,
    t: &str,
    resource: String,
    ctx: BTreeMap<String, Value>,
    allowed: bool,
) -> Row {
    // A KMS key's default policy: the account's IAM policies decide.
    let resource_policy = (t == "key").then(|| {
        json!({"Version": "2012-10-17", "Statement": [{"Sid": "Enable IAM User Permissions",
            "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
            "Action": "kms:*", "Resource": "*"}]})
    });
    Row {
        what,
        check: Check {
            action: action.into(),
            resource_type: Some(t.into()),
            resource,
            context: ctx,
            resource_policy,
        },
        allowed,
    }
}

/// An existing resource of type `t` with `tags`.
fn on(action: &str, t: &str, id: &str, tags: &[(&str, String)], allowed: bool, what: &str) -> Row {
    let prefixes: &[&str] = if action.starts_with("iam:") {
        &["aws:ResourceTag", "iam:ResourceTag"]
    } else {
        &["aws:ResourceTag", "ec2:ResourceTag"]
    };
    row(
        format!("{action} on {t} {what}"),
        action,
        t,
        arn(t, id),
        context(prefixes, tags),
        allowed,
    )
}

/// A resource of type `t` the request creates, with `tags` asked for.
fn creating(action: &str, t: &str, tags: &[(&str, String)], allowed: bool, what: &str) -> Row {
    row(
        format!("{action} creating {t} {what}"),
        action,
        t,
        arn(t, "*"),
        context(&["aws:RequestTag"], tags),
        allowed,
    )
}

fn rows() -> Vec<Row> {
    let mine = made_by(Some(ME));
    let others = made_by(Some(OTHER));
    let untagged: Vec<(&str, String)> = vec![];
    let old = made_by(None);
    let brought = vec![(USABLE_BY, ME.to_string())];
    let brought_other = vec![(USABLE_BY, OTHER.to_string())];
    let mut rows = Vec::new();

    // The ten authorizations 6bc0996's policy denied on the happy path.
    for (action, t) in [
        ("ec2:CreateSubnet", "vpc"),
        ("ec2:CreateRouteTable", "vpc"),
        ("ec2:CreateSecurityGroup", "vpc"),
        ("ec2:CreateVpcPeeringConnection", "vpc"),
        ("ec2:CreateNatGateway", "subnet"),
        ("ec2:CreateNatGateway", "elastic-ip"),
        ("ec2:CreateVpcEndpoint", "vpc"),
        ("ec2:CreateVpcEndpoint", "subnet"),
        ("ec2:CreateVpcEndpoint", "route-table"),
        ("ec2:CreateVpcEndpoint", "security-group"),
    ] {
        rows.push(on(
            action,
            t,
            "x-1",
            &mine,
            true,
            "of this installation (denied at 6bc0996)",
        ));
        rows.push(on(
            action,
            t,
            "x-2",
            &others,
            false,
            "of another installation",
        ));
        rows.push(on(action, t, "x-3", &untagged, false, "of nobody"));
    }
    // Creations: only with this installation's tags asked for.
    for (action, t) in [
        ("ec2:CreateVpc", "vpc"),
        ("ec2:CreateSubnet", "subnet"),
        ("ec2:CreateInternetGateway", "internet-gateway"),
        ("ec2:AllocateAddress", "elastic-ip"),
        ("ec2:CreateNatGateway", "natgateway"),
        ("ec2:CreateRouteTable", "route-table"),
        ("ec2:CreateSecurityGroup", "security-group"),
        ("ec2:ImportKeyPair", "key-pair"),
        ("ec2:CreateVpcEndpoint", "vpc-endpoint"),
        ("ec2:CreateVpcPeeringConnection", "vpc-peering-connection"),
    ] {
        rows.push(creating(
            action,
            t,
            &mine,
            true,
            "tagged as this installation's",
        ));
        rows.push(creating(
            action,
            t,
            &others,
            false,
            "tagged as another installation's",
        ));
        rows.push(creating(action, t, &untagged, false, "untagged"));
        rows.push(creating(
            action,
            t,
            &old,
            false,
            "without the installation tag",
        ));
    }
    // Changes and deletions: only of this installation's.
    for (action, t) in [
        ("ec2:ModifyVpcAttribute", "vpc"),
        ("ec2:DeleteVpc", "vpc"),
        ("ec2:ModifySubnetAttribute", "subnet"),
        ("ec2:DeleteSubnet", "subnet"),
        ("ec2:AttachInternetGateway", "internet-gateway"),
        ("ec2:AttachInternetGateway", "vpc"),
        ("ec2:DetachInternetGateway", "internet-gateway"),
        ("ec2:DeleteInternetGateway", "internet-gateway"),
        ("ec2:ReleaseAddress", "elastic-ip"),
        ("ec2:DeleteNatGateway", "natgateway"),
        ("ec2:CreateRoute", "route-table"),
        ("ec2:ReplaceRoute", "route-table"),
        ("ec2:DeleteRoute", "route-table"),
        ("ec2:AssociateRouteTable", "route-table"),
        ("ec2:AssociateRouteTable", "subnet"),
        ("ec2:DisassociateRouteTable", "route-table"),
        ("ec2:DeleteRouteTable", "route-table"),
        ("ec2:AuthorizeSecurityGroupIngress", "security-group"),
        ("ec2:RevokeSecurityGroupIngress", "security-group"),
        ("ec2:DeleteSecurityGroup", "security-group"),
        ("ec2:TerminateInstances", "instance"),
        ("ec2:DeleteKeyPair", "key-pair"),
        ("ec2:ModifyVpcEndpoint", "vpc-endpoint"),
        ("ec2:DeleteVpcEndpoints", "vpc-endpoint"),
        ("ec2:DeleteVpcPeeringConnection", "vpc-peering-connection"),
    ] {
        rows.push(on(action, t, "y-1", &mine, true, "of this installation"));
        rows.push(on(
            action,
            t,
            "y-2",
            &others,
            false,
            "of another installation",
        ));
        rows.push(on(
            action,
            t,
            "y-3",
            &old,
            false,
            "made before installations were tagged",
        ));
        rows.push(on(
            action,
            t,
            "y-4",
            &brought,
            false,
            "brought (used, never changed)",
        ));
    }
    // Launching: into this installation's subnets and groups, or brought ones.
    for t in ["subnet", "security-group"] {
        rows.push(on(
            "ec2:RunInstances",
            t,
            "z-1",
            &mine,
            true,
            "of this installation",
        ));
        rows.push(on(
            "ec2:RunInstances",
            t,
            "z-2",
            &brought,
            true,
            "brought for this installation",
        ));
        rows.push(on(
            "ec2:RunInstances",
            t,
            "z-3",
            &others,
            false,
            "of another installation (attack)",
        ));
        rows.push(on(
            "ec2:RunInstances",
            t,
            "z-4",
            &brought_other,
            false,
            "brought for another installation",
        ));
        rows.push(on(
            "ec2:RunInstances",
            t,
            "z-5",
            &untagged,
            false,
            "of nobody",
        ));
    }
    rows.push(on(
        "ec2:CreateSecurityGroup",
        "vpc",
        "b-1",
        &brought,
        true,
        "brought for this installation",
    ));
    rows.push(on(
        "ec2:CreateSecurityGroup",
        "vpc",
        "b-2",
        &brought_other,
        false,
        "brought for another installation",
    ));
    // Accepting a connection: into this installation's VPC or one brought
    // to it; the connection itself, in the accepter's region, carries no
    // tags when it crosses regions.
    let accept = "ec2:AcceptVpcPeeringConnection";
    for (id, tags, allowed, what) in [
        ("a-1", &mine, true, "of this installation"),
        ("a-2", &brought, true, "brought for this installation"),
        ("a-3", &others, false, "of another installation (attack)"),
        (
            "a-4",
            &brought_other,
            false,
            "brought for another installation",
        ),
        ("a-5", &untagged, false, "of nobody (attack)"),
    ] {
        rows.push(on(accept, "vpc", id, tags, allowed, what));
    }
    rows.push(on(
        accept,
        "vpc-peering-connection",
        "a-6",
        &untagged,
        true,
        "requested in another region (no tags here)",
    ));
    // Routes back in a peer's table: only where its owner opened it to
    // this installation (the namespace is the operator's to check).
    for (value, allowed, what) in [
        (
            Some(format!("{ME}/team-a")),
            true,
            "opened to this installation",
        ),
        (
            Some(format!("{OTHER}/team-a")),
            false,
            "opened to another installation (attack)",
        ),
        (
            Some("allowed".to_string()),
            false,
            "opened by the old value, to no one",
        ),
        (None, false, "not opened"),
    ] {
        let tags: Vec<(&str, String)> = value
            .into_iter()
            .map(|v| ("byoc.dev/peer-routes", v))
            .collect();
        for action in ["ec2:CreateRoute", "ec2:DeleteRoute"] {
            rows.push(on(action, "route-table", "p-1", &tags, allowed, what));
        }
    }
    // A route back recorded on the connection: that tag only, on this
    // installation's connections.
    for (action, key, tags, allowed, what) in [
        (
            "ec2:CreateTags",
            "byoc.dev/route-back/rtb-1",
            &mine,
            true,
            "recording a route back",
        ),
        (
            "ec2:DeleteTags",
            "byoc.dev/route-back/rtb-1",
            &mine,
            true,
            "forgetting a route back",
        ),
        (
            "ec2:CreateTags",
            "byoc.dev/route-back/rtb-1",
            &others,
            false,
            "recording on another installation's connection (attack)",
        ),
        (
            "ec2:CreateTags",
            "byoc.dev/installation",
            &mine,
            false,
            "rewriting its installation tag (attack)",
        ),
        (
            "ec2:DeleteTags",
            "byoc.dev/cluster-uid",
            &mine,
            false,
            "removing its owner tag (attack)",
        ),
    ] {
        let mut ctx = context(&["aws:ResourceTag", "ec2:ResourceTag"], tags);
        ctx.insert("aws:TagKeys".into(), json!([key]));
        rows.push(row(
            format!("{action} {key} on a peering connection: {what}"),
            action,
            "vpc-peering-connection",
            arn("vpc-peering-connection", "pcx-r"),
            ctx,
            allowed,
        ));
    }
    for (tags, allowed, what) in [
        (&mine, true, "tagged as this installation's"),
        (
            &others,
            false,
            "minted with another installation's tags (attack)",
        ),
        (&old, false, "minted without the installation tag (attack)"),
        (&untagged, false, "untagged"),
    ] {
        for t in ["instance", "volume"] {
            rows.push(creating("ec2:RunInstances", t, tags, allowed, what));
        }
        let mut tag = context(&["aws:RequestTag"], tags);
        tag.insert("ec2:CreateAction".into(), json!("RunInstances"));
        rows.push(row(
            format!("ec2:CreateTags on create of an instance {what}"),
            "ec2:CreateTags",
            "instance",
            arn("instance", "*"),
            tag,
            allowed,
        ));
    }
    // Images by owner; snapshots never.
    for (owner, allowed) in [
        ("amazon", true),
        (ACCOUNT, true),
        ("210987654321", false),
        ("aws-marketplace", false),
    ] {
        let mut ctx = context(&[], &[]);
        ctx.insert("ec2:Owner".into(), json!(owner));
        ctx.insert("aws:PrincipalAccount".into(), json!(ACCOUNT));
        rows.push(row(
            format!("ec2:RunInstances of an image owned by {owner}"),
            "ec2:RunInstances",
            "image",
            arn("image", "ami-1"),
            ctx,
            allowed,
        ));
    }
    for owner in [ACCOUNT, "210987654321"] {
        let mut ctx = context(&[], &[]);
        ctx.insert("ec2:Owner".into(), json!(owner));
        rows.push(row(
            format!("ec2:RunInstances from a snapshot owned by {owner} (attack)"),
            "ec2:RunInstances",
            "snapshot",
            arn("snapshot", "snap-1"),
            ctx,
            false,
        ));
    }
    // KMS: only listed keys, only through EC2.
    for (key, via, allowed) in [
        ("listed", "ec2.us-east-1.amazonaws.com", true),
        ("other", "ec2.us-east-1.amazonaws.com", false),
        ("listed", "s3.us-east-1.amazonaws.com", false),
    ] {
        for action in [
            "kms:CreateGrant",
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:Decrypt",
        ] {
            let mut ctx = BTreeMap::from([("kms:ViaService".to_string(), json!(via))]);
            if action == "kms:CreateGrant" {
                ctx.insert("kms:GrantIsForAWSResource".into(), json!("true"));
            }
            rows.push(row(
                format!("{action} on the {key} key via {via}"),
                action,
                "key",
                format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{key}"),
                ctx,
                allowed,
            ));
        }
    }
    // IAM: node roles of this installation only; never the cross-account
    // role or the shared node role (connect's, no installation tag).
    let role = |name: &str| format!("arn:aws:iam::{ACCOUNT}:role/{name}");
    let connected = vec![("byoc.dev/connected-account", "ns/acme".to_string())];
    for (name, tags, allowed, what) in [
        ("byoc-ns-c-1", &mine, true, "this installation's node role"),
        (
            "byoc-ns-c-2",
            &others,
            false,
            "another installation's node role",
        ),
        (
            "byoc-cross-account",
            &connected,
            false,
            "the cross-account role (attack)",
        ),
        (
            "byoc-shared-nodes",
            &connected,
            false,
            "the shared node role",
        ),
        (
            "byoc-ns-c-3",
            &old,
            false,
            "a node role made before installations were tagged",
        ),
    ] {
        let attach = |policy: &str, ok: bool| {
            let mut ctx = context(&["aws:ResourceTag", "iam:ResourceTag"], tags);
            ctx.insert("iam:PolicyARN".into(), json!(policy));
            row(
                format!("iam:AttachRolePolicy {policy} to {what}"),
                "iam:AttachRolePolicy",
                "role",
                role(name),
                ctx,
                ok,
            )
        };
        rows.push(attach(
            "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
            allowed,
        ));
        rows.push(attach("arn:aws:iam::aws:policy/AdministratorAccess", false));
        for action in ["iam:DeleteRole", "iam:TagRole"] {
            let ctx = context(&["aws:ResourceTag", "iam:ResourceTag"], tags);
            rows.push(row(
                format!("{action} on {what}"),
                action,
                "role",
                role(name),
                ctx,
                allowed,
            ));
        }
        for (boundary, ok) in [("boundary", allowed), ("permissive", false)] {
            let mut ctx = context(&["aws:ResourceTag", "iam:ResourceTag"], tags);
            ctx.insert(
                "iam:PermissionsBoundary".into(),
                json!(format!("arn:aws:iam::{ACCOUNT}:policy/{boundary}")),
            );
            rows.push(row(
                format!(
                    "iam:PutRolePermissionsBoundary {boundary} on {what} (a swap is an attack)"
                ),
                "iam:PutRolePermissionsBoundary",
                "role",
                role(name),
                ctx,
                ok,
            ));
        }
        let mut pass = context(&["aws:ResourceTag", "iam:ResourceTag"], tags);
        pass.insert("iam:PassedToService".into(), json!("ec2.amazonaws.com"));
        rows.push(row(
            format!("iam:PassRole of {what}"),
            "iam:PassRole",
            "role",
            role(name),
            pass,
            allowed || name == "byoc-shared-nodes",
        ));
    }
    for (tags, boundary, allowed, what) in [
        (&mine, "boundary", true, "tagged, with the boundary"),
        (&mine, "permissive", false, "with another boundary"),
        (
            &others,
            "boundary",
            false,
            "tagged as another installation's",
        ),
    ] {
        let mut ctx = context(&["aws:RequestTag"], tags);
        ctx.insert(
            "iam:PermissionsBoundary".into(),
            json!(format!("arn:aws:iam::{ACCOUNT}:policy/{boundary}")),
        );
        rows.push(row(
            format!("iam:CreateRole {what}"),
            "iam:CreateRole",
            "role",
            role("byoc-ns-c-9"),
            ctx,
            allowed,
        ));
    }
    // Adoption across installations: closed unless the window is open, and
    // never of another installation's.
    for (tags, what) in [
        (&others, "another installation's"),
        (
            &old,
            "made before installations were tagged (window closed)",
        ),
    ] {
        let mut ctx = context(&["aws:ResourceTag", "ec2:ResourceTag"], tags);
        ctx.insert("aws:RequestTag/byoc.dev/installation".into(), json!(ME));
        ctx.insert("aws:TagKeys".into(), json!(["byoc.dev/installation"]));
        rows.push(row(
            format!("ec2:CreateTags adopting a subnet {what} (attack)"),
            "ec2:CreateTags",
            "subnet",
            arn("subnet", "a-1"),
            ctx,
            false,
        ));
    }
    interruption_rows(&mut rows);
    rows
}

/// The interruption queue and its rules: this installation's, by name and
/// tag; another installation's, or a stranger's, never.
fn interruption_rows(rows: &mut Vec<Row>) {
    let mine = made_by(Some(ME));
    let others = made_by(Some(OTHER));
    let none: Vec<(&str, String)> = vec![];
    let queue = |i: &str| format!("arn:aws:sqs:{REGION}:{ACCOUNT}:byoc-{i}-interruptions");
    let rule =
        |i: &str| format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/byoc-{i}-interruption-spot");
    let stranger_queue = format!("arn:aws:sqs:{REGION}:{ACCOUNT}:orders");
    let rt = ["aws:ResourceTag"];
    let qt = "queue";
    let rtype = "rule-on-default-event-bus";
    for action in ["sqs:CreateQueue", "sqs:TagQueue"] {
        for (name, tags, allowed, what) in [
            (queue(ME), &mine, true, "its own, tagged"),
            (queue(ME), &none, false, "its own name, untagged"),
            (
                queue(OTHER),
                &mine,
                false,
                "another installation's name (attack)",
            ),
            (
                queue(ME),
                &others,
                false,
                "tagged as another installation's (attack)",
            ),
        ] {
            let ctx = context(&["aws:RequestTag"], tags);
            rows.push(row(
                format!("{action} making a queue: {what}"),
                action,
                qt,
                name,
                ctx,
                allowed,
            ));
        }
    }
    for action in [
        "sqs:GetQueueUrl",
        "sqs:GetQueueAttributes",
        "sqs:ListQueueTags",
    ] {
        for (name, allowed, what) in [
            (queue(ME), true, "its own"),
            (queue(OTHER), false, "another installation's"),
            (stranger_queue.clone(), false, "a stranger's"),
        ] {
            rows.push(row(
                format!("{action} on {what} queue"),
                action,
                qt,
                name,
                context(&rt, &none),
                allowed,
            ));
        }
    }
    for action in [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:SetQueueAttributes",
        "sqs:DeleteQueue",
    ] {
        for (name, tags, allowed, what) in [
            (queue(ME), &mine, true, "its own"),
            (
                queue(OTHER),
                &mine,
                false,
                "another installation's (attack)",
            ),
            (
                stranger_queue.clone(),
                &mine,
                false,
                "a stranger's name tagged as its own (attack)",
            ),
        ] {
            rows.push(row(
                format!("{action} on a queue {what}"),
                action,
                qt,
                name,
                context(&rt, tags),
                allowed,
            ));
        }
    }
    for (name, tags, allowed, what) in [
        (rule(ME), &mine, true, "its own, tagged"),
        (rule(ME), &none, false, "its own name, untagged"),
        (
            rule(OTHER),
            &mine,
            false,
            "another installation's name (attack)",
        ),
    ] {
        let ctx = context(&["aws:RequestTag"], tags);
        rows.push(row(
            format!("events:PutRule making a rule: {what}"),
            "events:PutRule",
            rtype,
            name,
            ctx,
            allowed,
        ));
    }
    for (name, tags, target, allowed, what) in [
        (
            rule(ME),
            &mine,
            queue(ME),
            true,
            "its own rule to its queue",
        ),
        (
            rule(ME),
            &mine,
            stranger_queue.clone(),
            false,
            "its own rule to a stranger's queue (attack)",
        ),
        (
            rule(ME),
            &mine,
            queue(OTHER),
            false,
            "its own rule to another installation's queue (attack)",
        ),
        (
            rule(OTHER),
            &mine,
            queue(ME),
            false,
            "another installation's rule, tagged as this one's (attack)",
        ),
    ] {
        let mut ctx = context(&rt, tags);
        ctx.insert("events:TargetArn".into(), json!([target]));
        rows.push(row(
            format!("events:PutTargets: {what}"),
            "events:PutTargets",
            rtype,
            name,
            ctx,
            allowed,
        ));
    }
    for action in ["events:RemoveTargets", "events:DeleteRule"] {
        for (name, tags, allowed, what) in [
            (rule(ME), &mine, true, "its own"),
            (
                rule(OTHER),
                &mine,
                false,
                "another installation's, tagged as this one's (attack)",
            ),
        ] {
            rows.push(row(
                format!("{action} on a rule {what}"),
                action,
                rtype,
                name,
                context(&rt, tags),
                allowed,
            ));
        }
    }
    for action in [
        "events:DescribeRule",
        "events:ListTagsForResource",
        "events:ListTargetsByRule",
    ] {
        for (name, allowed, what) in [
            (rule(ME), true, "its own"),
            (rule(OTHER), false, "another installation's"),
        ] {
            rows.push(row(
                format!("{action} on {what} rule"),
                action,
                rtype,
                name,
                context(&rt, &none),
                allowed,
            ));
        }
    }
    // The listener's mark on an instance AWS takes back: that tag alone,
    // on this installation's instances alone.
    for (tags, key, allowed, what) in [
        (&mine, "byoc.dev/interrupted", true, "its own instance"),
        (
            &others,
            "byoc.dev/interrupted",
            false,
            "another installation's instance",
        ),
        (
            &mine,
            "byoc.dev/installation",
            false,
            "its own instance, another tag (attack)",
        ),
    ] {
        let mut ctx = context(&["aws:ResourceTag", "ec2:ResourceTag"], tags);
        ctx.insert(format!("aws:RequestTag/{key}"), json!("1765000000"));
        ctx.insert("aws:TagKeys".into(), json!([key]));
        let instance = arn("instance", "i-0abc");
        rows.push(row(
            format!("ec2:CreateTags marking interrupted: {what}"),
            "ec2:CreateTags",
            "instance",
            instance,
            ctx,
            allowed,
        ));
    }
    rows.push(Row {
        what: "events:ListRules".into(),
        check: Check {
            action: "events:ListRules".into(),
            resource_type: None,
            resource: "*".into(),
            context: context(&[], &none),
            resource_policy: None,
        },
        allowed: true,
    });
}

fn options() -> PolicyOptions {
    PolicyOptions {
        installation: ME.into(),
        managed_policy_arns: vec!["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore".into()],
        permissions_boundary: Some(format!("arn:aws:iam::{ACCOUNT}:policy/boundary")),
        pass_roles: vec![],
        shared_node_role: Some("byoc-shared-nodes".into()),
        image_owners: vec![],
        kms_key_arns: vec![format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/listed")],
        adopt: false,
        node_grants_arn: None,
    }
}

#[test]
fn the_generated_policy_allows_this_installation_and_denies_every_other_as_aws_evaluates_it(
) -> Result<()> {
    let log =
        std::env::temp_dir().join(format!("{}.log", crate::support::unique_name("iam-table")));
    let evaluator = Evaluator::start(&log)?;
    let rows = rows();
    assert!(rows.len() >= 200, "only {} rows", rows.len());
    let checks: Vec<Check> = rows.iter().map(|r| r.check.clone()).collect();
    let policy = permissions_policy(&options());
    let decisions = evaluator.decide_each(&principal(), &[policy], &checks)?;
    let wrong: Vec<String> = rows
        .iter()
        .zip(&decisions)
        .filter(|(r, d)| d.allowed() != r.allowed)
        .map(|(r, d)| {
            format!(
                "{}: {} (by {:?}) in {:?}",
                r.what, d.decision, d.allowed_by, d.context
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} rows wrong:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );

    // The same rows under 6bc0996's policy: the ten happy-path
    // authorizations were denied, and attacks allowed.
    let old: Value = serde_json::from_str(&std::fs::read_to_string(
        testground::repo_root().join("tests/fixtures/iam/policy-6bc0996.json"),
    )?)?;
    let before = evaluator.decide_each(&principal(), &[old], &checks)?;
    let denied_then: Vec<&str> = rows
        .iter()
        .zip(&before)
        .filter(|(r, d)| r.what.contains("denied at 6bc0996") && !d.allowed())
        .map(|(r, _)| r.what.as_str())
        .collect();
    assert_eq!(denied_then.len(), 10, "{denied_then:?}");
    let attacks_then = rows
        .iter()
        .zip(&before)
        .filter(|(r, d)| r.what.contains("attack") && d.allowed())
        .count();
    assert!(
        attacks_then >= 7,
        "only {attacks_then} attacks passed 6bc0996's policy"
    );
    Ok(())
}

#[test]
fn the_operators_own_identity_assumes_only_roles_connected_for_its_installation() -> Result<()> {
    let log = std::env::temp_dir().join(format!(
        "{}.log",
        crate::support::unique_name("iam-operator")
    ));
    let evaluator = Evaluator::start(&log)?;
    let other_account = "210987654321";
    let assume = |account: &str, name: &str, tags: &[(&str, &str)], allowed: bool, what: &str| {
        let tags: Vec<(&str, String)> = tags.iter().map(|(k, v)| (*k, v.to_string())).collect();
        row(
            format!("sts:AssumeRole of {name} in {account}: {what}"),
            "sts:AssumeRole",
            "role",
            format!("arn:aws:iam::{account}:role/{name}"),
            context(&["aws:ResourceTag", "iam:ResourceTag"], &tags),
            allowed,
        )
    };
    let connected = [
        ("byoc.dev/connected-account", "team-a/acme"),
        ("byoc.dev/connected-installation", ME),
    ];
    let connected_other = [
        ("byoc.dev/connected-account", "team-a/acme"),
        ("byoc.dev/connected-installation", OTHER),
    ];
    let earlier = [("byoc.dev/connected-account", "team-a/acme")];
    // Any account's connected roles; then only the accounts listed.
    for (accounts, rows) in [
        (
            vec![],
            vec![
                assume(
                    ACCOUNT,
                    "byoc-cross-account",
                    &connected,
                    true,
                    "connected for this installation",
                ),
                assume(
                    other_account,
                    "byoc-cross-account",
                    &connected,
                    true,
                    "connected for this installation",
                ),
                assume(
                    ACCOUNT,
                    "trusts-anyone",
                    &[],
                    false,
                    "a role trusting the identity without an external ID (attack)",
                ),
                assume(
                    ACCOUNT,
                    "byoc-cross-account",
                    &connected_other,
                    false,
                    "connected for another installation (attack)",
                ),
                assume(
                    ACCOUNT,
                    "byoc-cross-account",
                    &earlier,
                    false,
                    "connected before the installation tag (connect tags it)",
                ),
            ],
        ),
        (
            vec![ACCOUNT.to_string()],
            vec![
                assume(
                    ACCOUNT,
                    "byoc-cross-account",
                    &connected,
                    true,
                    "connected, in a listed account",
                ),
                assume(
                    other_account,
                    "byoc-cross-account",
                    &connected,
                    false,
                    "connected, in an account not listed",
                ),
            ],
        ),
    ] {
        let policy = byoc_operator::account::iam_policy::operator_policy(ME, &accounts);
        let checks: Vec<Check> = rows.iter().map(|r| r.check.clone()).collect();
        let decisions = evaluator.decide_each(&principal(), &[policy], &checks)?;
        let wrong: Vec<String> = rows
            .iter()
            .zip(&decisions)
            .filter(|(r, d)| d.allowed() != r.allowed)
            .map(|(r, d)| format!("{}: {}", r.what, d.decision))
            .collect();
        assert!(
            wrong.is_empty(),
            "accounts {accounts:?}:\n{}",
            wrong.join("\n")
        );
    }
    Ok(())
}

/// The cross-account role's trust policy (`connect`'s and `iam-policy
/// trust`'s), decided as AWS decides AssumeRole: the role's trust policy
/// alone (no identity policy helps), with the request's external ID and
/// session tags. The operator tags every session with its CloudAccount's
/// namespace and name.
#[test]
fn the_trust_policy_admits_only_sessions_tagged_with_its_namespace_and_its_external_id(
) -> Result<()> {
    let log =
        std::env::temp_dir().join(format!("{}.log", crate::support::unique_name("iam-trust")));
    let evaluator = Evaluator::start(&log)?;
    let operator = Principal {
        arn: format!("arn:aws:sts::{ACCOUNT}:assumed-role/byoc-operator/byoc"),
        role: format!("arn:aws:iam::{ACCOUNT}:role/byoc-operator"),
        account: ACCOUNT.into(),
        tags: Default::default(),
    };
    let role = format!("arn:aws:iam::{ACCOUNT}:role/byoc-cross-account");
    let trust = byoc_operator::account::iam_policy::trust_policy(
        &operator.role,
        Some("byoc-x-1"),
        Some("team-a"),
    );
    let ask = |action: &str, external_id: Option<&str>, namespace: Option<&str>| {
        let mut ctx = BTreeMap::new();
        if let Some(id) = external_id {
            ctx.insert("sts:ExternalId".to_string(), json!(id));
        }
        if let Some(ns) = namespace {
            ctx.insert("aws:RequestTag/byoc.dev/namespace".into(), json!(ns));
            ctx.insert(
                "aws:RequestTag/byoc.dev/cloud-account".into(),
                json!("acme"),
            );
            ctx.insert(
                "aws:TagKeys".into(),
                json!(["byoc.dev/namespace", "byoc.dev/cloud-account"]),
            );
        }
        Check {
            action: action.into(),
            resource_type: Some("role".into()),
            resource: role.clone(),
            context: ctx,
            resource_policy: Some(trust.clone()),
        }
    };
    let rows = [
        (
            ask("sts:AssumeRole", Some("byoc-x-1"), Some("team-a")),
            true,
            "AssumeRole: its external ID, tagged with its namespace",
        ),
        (
            ask("sts:TagSession", Some("byoc-x-1"), Some("team-a")),
            true,
            "TagSession: tagged with its namespace",
        ),
        (
            ask("sts:AssumeRole", Some("byoc-x-1"), Some("team-b")),
            false,
            "AssumeRole: another namespace's CloudAccount with the same external ID (attack)",
        ),
        (
            ask("sts:TagSession", Some("byoc-x-1"), Some("team-b")),
            false,
            "TagSession: tagged with another namespace (attack)",
        ),
        (
            ask("sts:AssumeRole", Some("byoc-x-1"), None),
            false,
            "AssumeRole: untagged (attack)",
        ),
        (
            ask("sts:AssumeRole", Some("byoc-x-2"), Some("team-a")),
            false,
            "AssumeRole: another external ID (attack)",
        ),
        (
            ask("sts:AssumeRole", None, Some("team-a")),
            false,
            "AssumeRole: no external ID (attack)",
        ),
    ];
    let checks: Vec<Check> = rows.iter().map(|(c, ..)| c.clone()).collect();
    let decisions = evaluator.decide_each(&operator, &[], &checks)?;
    let wrong: Vec<String> = rows
        .iter()
        .zip(&decisions)
        .filter(|((_, allowed, _), d)| d.allowed() != *allowed)
        .map(|((_, _, what), d)| format!("{what}: {}", d.decision))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}
