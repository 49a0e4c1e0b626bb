//! The interruption queue of an installation in one account and region,
//! and the rules that feed it: their names, the queue's policy, the rules'
//! patterns, and what to do given what AWS holds. Pure; the calls are in
//! `aws::interruption_queue`.
//!
//! One queue and one rule per event kind ([`super::message::MATCHED`]) for
//! each (installation, account, region), whatever the number of clusters:
//! EventBridge cannot filter by tag, so the rules match by source and
//! detail type only, and the listener finds an instance's cluster itself.
//! Named by the installation, so two installations on one account each
//! have their own and never read the other's messages.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{json, Value};

use super::message::MATCHED;
use crate::api::{Market, NodeGroupSpec};
use crate::aws::interruption_queue::{ObservedQueue, ObservedRule};
use crate::aws::tags::{INSTALLATION, MANAGED_BY, MANAGED_BY_VALUE, NAME, PART};

/// How long a message is kept: a warning older than the two minutes it
/// gives is no use, and a backlog must not outlive a long outage.
pub const RETENTION: Duration = Duration::from_secs(300);

/// The `byoc.dev/part` of the queue and its rules.
pub const PART_VALUE: &str = "interruption-queue";

/// Whether a cluster of these groups needs its account and region's
/// queue: one of them may run spot.
pub fn wanted_by<'a>(groups: impl IntoIterator<Item = &'a NodeGroupSpec>) -> bool {
    groups
        .into_iter()
        .any(|g| g.markets().contains(&Market::Spot))
}

/// The queue's name (SQS: up to 80 of letters, digits, `-`, `_`).
pub fn queue_name(installation: &str) -> String {
    format!("byoc-{installation}-interruptions")
}

/// What every rule's name starts with (EventBridge: up to 64 characters).
pub fn rule_prefix(installation: &str) -> String {
    format!("byoc-{installation}-interruption-")
}

/// The rule for the events labelled `label` in [`MATCHED`].
pub fn rule_name(installation: &str, label: &str) -> String {
    format!("{}{label}", rule_prefix(installation))
}

/// The ARN of a rule of the default bus.
pub fn rule_arn(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:events:{region}:{account}:rule/{name}")
}

/// A rule's event pattern: its source and detail type, nothing else.
pub fn pattern(source: &str, detail_type: &str) -> String {
    json!({"source": [source], "detail-type": [detail_type]}).to_string()
}

/// The tags of the queue and of each rule: managed by the operator, of
/// this installation, no cluster's.
pub fn tags(installation: &str) -> HashMap<String, String> {
    HashMap::from([
        (MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (INSTALLATION.to_string(), installation.to_string()),
        (PART.to_string(), PART_VALUE.to_string()),
        (NAME.to_string(), queue_name(installation)),
    ])
}

/// Whether a queue or rule so tagged is this installation's.
pub fn is_ours(installation: &str, tags: &HashMap<String, String>) -> bool {
    tags.get(INSTALLATION).map(String::as_str) == Some(installation)
        && tags.get(MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

/// The queue's policy: only the rules (`events.amazonaws.com` with
/// `aws:SourceArn` one of `rule_arns`) may send, and nothing reaches the
/// queue but over TLS.
pub fn policy(queue_arn: &str, rule_arns: &[String]) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TheInstallationsRulesSend",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arns}},
            },
            {
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": queue_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ],
    })
    .to_string()
}

/// The rule ARNs of an installation in an account and region, in
/// [`MATCHED`]'s order.
pub fn rule_arns(installation: &str, account: &str, region: &str) -> Vec<String> {
    MATCHED
        .iter()
        .map(|(label, _, _)| rule_arn(region, account, &rule_name(installation, label)))
        .collect()
}

/// What to do with the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueStep {
    Create,
    /// Ours, but changed out of band: put back (why).
    Repair(String),
    Keep,
    /// A queue of that name that is not this installation's: left alone,
    /// never used (why).
    NotOurs(String),
}

/// The queue's step, from what SQS holds of `queue_name(installation)`.
pub fn queue_step(
    installation: &str,
    observed: Option<&ObservedQueue>,
    want_policy: &str,
) -> QueueStep {
    let Some(q) = observed else {
        return QueueStep::Create;
    };
    if !is_ours(installation, &q.tags) {
        return QueueStep::NotOurs(format!(
            "the queue {} is not tagged {INSTALLATION}={installation}",
            queue_name(installation)
        ));
    }
    let mut why = Vec::new();
    if !same_json(q.policy.as_deref(), want_policy) {
        why.push("its policy changed");
    }
    if !q.sse_sqs || q.kms_key.is_some() {
        why.push("its encryption is no longer SSE-SQS");
    }
    if q.retention_seconds != Some(RETENTION.as_secs() as u32) {
        why.push("its retention changed");
    }
    match why.is_empty() {
        true => QueueStep::Keep,
        false => QueueStep::Repair(why.join(", ")),
    }
}

fn same_json(have: Option<&str>, want: &str) -> bool {
    let parse = |s: &str| serde_json::from_str::<Value>(s).ok();
    match have {
        Some(h) => parse(h).is_some() && parse(h) == parse(want),
        None => false,
    }
}

/// What to do with one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleStep {
    /// Make it, or put it back as it should be: its label.
    Put(&'static str),
    /// One of ours no kind names any more: its name.
    Delete(String),
}

/// The rules' steps, from the rules of the default bus named with
/// [`rule_prefix`] and the queue's ARN.
pub fn rule_steps(installation: &str, observed: &[ObservedRule], queue_arn: &str) -> Vec<RuleStep> {
    let by_name: BTreeMap<&str, &ObservedRule> =
        observed.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut steps: Vec<RuleStep> = MATCHED
        .iter()
        .filter(|(label, source, detail_type)| {
            let name = rule_name(installation, label);
            !by_name.get(name.as_str()).is_some_and(|r| {
                r.enabled
                    && same_json(r.pattern.as_deref(), &pattern(source, detail_type))
                    && r.targets == [queue_arn]
                    && is_ours(installation, &r.tags)
            })
        })
        .map(|(label, _, _)| RuleStep::Put(label))
        .collect();
    let known: Vec<String> = MATCHED
        .iter()
        .map(|(label, _, _)| rule_name(installation, label))
        .collect();
    steps.extend(
        observed
            .iter()
            .filter(|r| r.name.starts_with(&rule_prefix(installation)))
            .filter(|r| is_ours(installation, &r.tags))
            .filter(|r| !known.contains(&r.name))
            .map(|r| RuleStep::Delete(r.name.clone())),
    );
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const INST: &str = "0123456789abcdef";
    const ARN: &str = "arn:aws:sqs:us-east-1:111122223333:byoc-0123456789abcdef-interruptions";

    fn queue() -> ObservedQueue {
        let arns = rule_arns(INST, "111122223333", "us-east-1");
        ObservedQueue {
            url: "https://sqs/q".into(),
            arn: ARN.into(),
            tags: tags(INST),
            policy: Some(policy(ARN, &arns)),
            sse_sqs: true,
            kms_key: None,
            retention_seconds: Some(300),
        }
    }

    fn rules() -> Vec<ObservedRule> {
        MATCHED
            .iter()
            .map(|(label, source, detail_type)| {
                let name = rule_name(INST, label);
                ObservedRule {
                    arn: rule_arn("us-east-1", "111122223333", &name),
                    name,
                    pattern: Some(pattern(source, detail_type)),
                    enabled: true,
                    tags: tags(INST),
                    targets: vec![ARN.into()],
                }
            })
            .collect()
    }

    #[test]
    fn names_fit_aws_limits_and_differ_by_installation() {
        assert!(queue_name(INST).len() <= 80);
        for (label, _, _) in MATCHED {
            let name = rule_name(INST, label);
            assert!(name.len() <= 64, "{name}");
            assert!(name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        }
        assert_ne!(queue_name(INST), queue_name("fedcba9876543210"));
        assert!(!rule_name("fedcba9876543210", "spot").starts_with(&rule_prefix(INST)));
    }

    #[test]
    fn the_policy_lets_only_the_rules_send_and_only_over_tls() {
        let arns = rule_arns(INST, "111122223333", "us-east-1");
        let p: Value = serde_json::from_str(&policy(ARN, &arns)).unwrap();
        let allow = &p["Statement"][0];
        assert_eq!(allow["Principal"]["Service"], "events.amazonaws.com");
        assert_eq!(allow["Action"], "sqs:SendMessage");
        assert_eq!(
            allow["Condition"]["ArnEquals"]["aws:SourceArn"],
            json!(arns)
        );
        assert_eq!(arns.len(), MATCHED.len());
        let deny = &p["Statement"][1];
        assert_eq!(deny["Effect"], "Deny");
        assert_eq!(deny["Condition"]["Bool"]["aws:SecureTransport"], "false");
    }

    #[test]
    fn the_queue_is_made_kept_repaired_or_left_alone() {
        let arns = rule_arns(INST, "111122223333", "us-east-1");
        let want = policy(ARN, &arns);
        let other = |f: &dyn Fn(&mut ObservedQueue)| {
            let mut q = queue();
            f(&mut q);
            queue_step(INST, Some(&q), &want)
        };
        assert_eq!(queue_step(INST, None, &want), QueueStep::Create);
        assert_eq!(other(&|_| {}), QueueStep::Keep);
        // The same policy, formatted by SQS: kept.
        let spaced =
            serde_json::to_string_pretty(&serde_json::from_str::<Value>(&want).unwrap()).unwrap();
        assert_eq!(other(&|q| q.policy = Some(spaced.clone())), QueueStep::Keep);
        type Change<'a> = &'a dyn Fn(&mut ObservedQueue);
        let rows: [(Change, &str); 4] = [
            (&|q| q.policy = None, "policy"),
            (&|q| q.policy = Some("{}".into()), "policy"),
            (&|q| q.kms_key = Some("alias/x".into()), "encryption"),
            (&|q| q.retention_seconds = Some(345600), "retention"),
        ];
        for (change, said) in rows {
            match other(change) {
                QueueStep::Repair(why) => assert!(why.contains(said), "{why}"),
                step => panic!("{said}: {step:?}"),
            }
        }
        for change in [
            &(|q: &mut ObservedQueue| q.tags.clear()) as &dyn Fn(&mut ObservedQueue),
            &|q| {
                q.tags
                    .insert(INSTALLATION.into(), "fedcba9876543210".into());
            },
        ] {
            assert!(matches!(other(change), QueueStep::NotOurs(_)));
        }
    }

    #[test]
    fn rules_are_put_where_missing_or_changed_and_strays_deleted() {
        assert!(rule_steps(INST, &rules(), ARN).is_empty());
        let all: Vec<RuleStep> = MATCHED
            .iter()
            .map(|(label, _, _)| RuleStep::Put(label))
            .collect();
        assert_eq!(rule_steps(INST, &[], ARN), all);
        type Change = fn(&mut ObservedRule);
        let rows: [Change; 5] = [
            |r| r.enabled = false,
            |r| r.pattern = Some(pattern("aws.ec2", "anything")),
            |r| r.targets.clear(),
            |r| r.targets.push("arn:aws:sqs:us-east-1:1:other".into()),
            |r| {
                r.tags.remove(INSTALLATION);
            },
        ];
        for change in rows {
            let mut observed = rules();
            change(&mut observed[0]);
            assert_eq!(
                rule_steps(INST, &observed, ARN),
                vec![RuleStep::Put(MATCHED[0].0)]
            );
        }
        // A rule of ours no kind names: deleted; another installation's
        // and a stranger's: never.
        let mut observed = rules();
        let mut stray = observed[0].clone();
        stray.name = rule_name(INST, "retired");
        observed.push(stray.clone());
        let mut foreign = stray.clone();
        foreign
            .tags
            .insert(INSTALLATION.into(), "fedcba9876543210".into());
        foreign.name = rule_name(INST, "foreign");
        observed.push(foreign);
        assert_eq!(
            rule_steps(INST, &observed, ARN),
            vec![RuleStep::Delete(stray.name)]
        );
    }
}
