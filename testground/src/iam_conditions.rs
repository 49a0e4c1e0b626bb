//! The IAM conditions moto does not evaluate. moto's enforcement checks a
//! policy's actions and `sts:ExternalId`, and passes every other condition
//! as met; AWS refuses a request that no statement allows with its
//! conditions. The proxy evaluates, for the calls whose conditions decide
//! what the operator may do to a team's account, the policy the test gives
//! it ([`crate::proxy::Faults::iam_policy`]):
//! - `AttachRolePolicy` and `DetachRolePolicy`: `iam:PolicyARN`;
//! - `CreateRole` and `CreateInstanceProfile`: `iam:PermissionsBoundary`,
//!   `aws:RequestTag/<key>` and `aws:TagKeys`;
//! - `PutRolePermissionsBoundary`: `iam:PermissionsBoundary`.
//!
//! Operators: `StringEquals`, `StringLike`, `ArnEquals`, `ArnLike`, `Null`,
//! and `ForAllValues:` / `ForAnyValue:` of the string ones. A condition key
//! the request does not have fails every operator but `Null: true`, as on
//! AWS. Resources are not matched (moto matches them).

use std::collections::BTreeMap;

use serde_json::Value;

/// The request context of one call, when the call is one modelled here.
pub fn context(op: &str, body: &[u8]) -> Option<BTreeMap<String, Vec<String>>> {
    let params: Vec<(String, String)> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut ctx = BTreeMap::new();
    match op {
        "AttachRolePolicy" | "DetachRolePolicy" => {
            ctx.insert(
                "iam:policyarn".into(),
                get("PolicyArn").into_iter().collect(),
            );
        }
        "CreateRole" | "CreateInstanceProfile" | "PutRolePermissionsBoundary" => {
            if let Some(b) = get("PermissionsBoundary") {
                ctx.insert("iam:permissionsboundary".into(), vec![b]);
            }
            let mut keys = Vec::new();
            for n in 1.. {
                let Some(key) = get(&format!("Tags.member.{n}.Key")) else {
                    break;
                };
                let value = get(&format!("Tags.member.{n}.Value")).unwrap_or_default();
                ctx.insert(
                    format!("aws:requesttag/{}", key.to_ascii_lowercase()),
                    vec![value],
                );
                keys.push(key);
            }
            if !keys.is_empty() {
                ctx.insert("aws:tagkeys".into(), keys);
            }
        }
        _ => return None,
    }
    Some(ctx)
}

/// Whether `policy` allows `iam:<op>` in `ctx`: some `Allow` statement
/// names the action and all its conditions hold. (The policies given here
/// have no `Deny`.)
pub fn allows(policy: &Value, op: &str, ctx: &BTreeMap<String, Vec<String>>) -> bool {
    let action = format!("iam:{op}");
    let statements = match &policy["Statement"] {
        Value::Array(s) => s.clone(),
        one @ Value::Object(_) => vec![one.clone()],
        _ => vec![],
    };
    statements.iter().any(|s| {
        s["Effect"] == "Allow"
            && strings(&s["Action"]).iter().any(|a| like(a, &action))
            && conditions_hold(&s["Condition"], ctx)
    })
}

fn conditions_hold(conditions: &Value, ctx: &BTreeMap<String, Vec<String>>) -> bool {
    let Some(blocks) = conditions.as_object() else {
        return true;
    };
    blocks.iter().all(|(operator, keys)| {
        keys.as_object().is_some_and(|keys| {
            keys.iter().all(|(key, expected)| {
                let actual = ctx.get(&key.to_ascii_lowercase());
                holds(operator, actual.map(Vec::as_slice), &strings(expected))
            })
        })
    })
}

fn holds(operator: &str, actual: Option<&[String]>, expected: &[String]) -> bool {
    let (set, operator) = match operator.split_once(':') {
        Some((set, op)) => (Some(set), op),
        None => (None, operator),
    };
    if operator == "Null" {
        let absent = actual.is_none_or(|a| a.is_empty());
        return expected.iter().any(|e| (e == "true") == absent);
    }
    let matches = |value: &String| {
        expected.iter().any(|e| match operator {
            "StringEquals" | "ArnEquals" => e == value,
            "StringLike" | "ArnLike" => like(e, value),
            _ => false,
        })
    };
    match (set, actual) {
        (Some("ForAllValues"), None) => true,
        (Some("ForAllValues"), Some(values)) => values.iter().all(matches),
        (_, None) => false,
        (_, Some(values)) => values.iter().any(matches),
    }
}

/// A string or a list of strings.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}

/// IAM's wildcard match: `*` any run, `?` one character.
fn like(pattern: &str, value: &str) -> bool {
    fn at(p: &[char], v: &[char]) -> bool {
        match (p.first(), v.first()) {
            (None, None) => true,
            (Some('*'), _) => at(&p[1..], v) || (!v.is_empty() && at(p, &v[1..])),
            (Some('?'), Some(_)) => at(&p[1..], &v[1..]),
            (Some(a), Some(b)) => a == b && at(&p[1..], &v[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    at(&p, &v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Value {
        json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["iam:GetRole", "iam:CreateRole"], "Resource": "*",
             "Condition": {"StringEquals": {
                "aws:RequestTag/byoc.dev/installation": "inst-a",
                "iam:PermissionsBoundary": "arn:aws:iam::1:policy/b"}}},
            {"Effect": "Allow", "Action": ["iam:AttachRolePolicy", "iam:DetachRolePolicy"], "Resource": "*",
             "Condition": {"ArnEquals": {"iam:PolicyARN": ["arn:aws:iam::aws:policy/Allowed"]}}},
            {"Effect": "Allow", "Action": "iam:TagRole", "Resource": "*",
             "Condition": {"Null": {"aws:ResourceTag/x": "true"}}}
        ]})
    }

    fn body(pairs: &[(&str, &str)]) -> Vec<u8> {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
            .into_bytes()
    }

    #[test]
    fn attach_is_allowed_only_for_listed_policies() {
        let p = policy();
        let attach = |arn: &str| {
            let ctx = context("AttachRolePolicy", &body(&[("PolicyArn", arn)])).unwrap_or_default();
            allows(&p, "AttachRolePolicy", &ctx)
        };
        assert!(attach("arn:aws:iam::aws:policy/Allowed"));
        assert!(!attach("arn:aws:iam::aws:policy/AdministratorAccess"));
    }

    #[test]
    fn create_role_needs_the_boundary_and_the_tag() {
        let p = policy();
        let create = |pairs: &[(&str, &str)]| {
            let ctx = context("CreateRole", &body(pairs)).unwrap_or_default();
            allows(&p, "CreateRole", &ctx)
        };
        let tag = [
            ("Tags.member.1.Key", "byoc.dev/installation"),
            ("Tags.member.1.Value", "inst-a"),
        ];
        let boundary = ("PermissionsBoundary", "arn:aws:iam::1:policy/b");
        assert!(create(&[tag[0], tag[1], boundary]));
        assert!(!create(&[tag[0], tag[1]]), "no boundary");
        assert!(!create(&[boundary]), "no tag");
        assert!(!create(&[
            tag[0],
            ("Tags.member.1.Value", "inst-b"),
            boundary
        ]));
    }

    #[test]
    fn only_modelled_calls_have_a_context() {
        assert!(context("GetRole", b"RoleName=x").is_none());
        assert!(context("AttachRolePolicy", b"").is_some());
    }

    #[test]
    fn operators_as_aws_reads_them() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(holds("Null", None, &v(&["true"])));
        assert!(!holds("Null", Some(&v(&["x"])), &v(&["true"])));
        assert!(holds(
            "ForAllValues:StringEquals",
            Some(&v(&["a"])),
            &v(&["a", "b"])
        ));
        assert!(!holds(
            "ForAllValues:StringEquals",
            Some(&v(&["a", "c"])),
            &v(&["a", "b"])
        ));
        assert!(holds("StringLike", Some(&v(&["byoc-x"])), &v(&["byoc-*"])));
        assert!(!holds("StringEquals", None, &v(&["a"])));
        assert!(!holds("NumericEquals", Some(&v(&["1"])), &v(&["1"])));
    }
}
