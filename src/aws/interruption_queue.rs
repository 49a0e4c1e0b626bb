//! The interruption queue of an installation in one account and region:
//! an SQS queue (SSE-SQS, short retention) and the EventBridge rules of the
//! default bus that feed it. Named by the installation, tagged with it;
//! what the queue's policy says and which rules there are is decided in
//! `interruption::queue`.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_eventbridge::types::{RuleState, Tag, Target};
use aws_sdk_sqs::types::QueueAttributeName;

use super::{AwsClients, AwsError, AwsResult, NotFoundExt, SdkResultExt};

/// The one target of every rule: the queue.
const TARGET_ID: &str = "byoc-interruption-queue";

/// The queue as SQS holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedQueue {
    pub url: String,
    pub arn: String,
    pub tags: HashMap<String, String>,
    /// Its access policy, as set.
    pub policy: Option<String>,
    /// Encrypted with SQS's own keys (not a KMS key, which EventBridge
    /// could not use without a key policy for it).
    pub sse_sqs: bool,
    pub kms_key: Option<String>,
    pub retention_seconds: Option<u32>,
}

/// What the queue is made with.
#[derive(Clone, Debug)]
pub struct QueueSpec<'a> {
    pub name: &'a str,
    pub tags: &'a HashMap<String, String>,
    pub policy: &'a str,
    pub retention: Duration,
}

fn attributes(spec: &QueueSpec<'_>) -> HashMap<QueueAttributeName, String> {
    HashMap::from([
        (QueueAttributeName::SqsManagedSseEnabled, "true".to_string()),
        (
            QueueAttributeName::MessageRetentionPeriod,
            spec.retention.as_secs().to_string(),
        ),
        (QueueAttributeName::Policy, spec.policy.to_string()),
    ])
}

/// The queue `name`, if SQS has it.
pub async fn describe_queue(c: &AwsClients, name: &str) -> AwsResult<Option<ObservedQueue>> {
    let url = c
        .sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .op("sqs:GetQueueUrl")
        .found()?;
    let Some(url) = url.and_then(|u| u.queue_url().map(str::to_string)) else {
        return Ok(None);
    };
    const OP: &str = "sqs:GetQueueAttributes";
    let out = c
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .op(OP)
        .found()?;
    let Some(out) = out else {
        return Ok(None);
    };
    let attrs = out.attributes().cloned().unwrap_or_default();
    let get = |k: QueueAttributeName| attrs.get(&k).cloned();
    let tags = c
        .sqs
        .list_queue_tags()
        .queue_url(&url)
        .send()
        .await
        .op("sqs:ListQueueTags")
        .found()?
        .and_then(|t| t.tags().cloned())
        .unwrap_or_default();
    Ok(Some(ObservedQueue {
        arn: get(QueueAttributeName::QueueArn).ok_or(AwsError::Incomplete {
            operation: OP,
            missing: "QueueArn",
        })?,
        url,
        tags,
        policy: get(QueueAttributeName::Policy),
        sse_sqs: get(QueueAttributeName::SqsManagedSseEnabled).as_deref() == Some("true"),
        kms_key: get(QueueAttributeName::KmsMasterKeyId).filter(|k| !k.is_empty()),
        retention_seconds: get(QueueAttributeName::MessageRetentionPeriod)
            .and_then(|s| s.parse().ok()),
    }))
}

/// Makes the queue, tagged at creation: its URL. SQS answers a queue of
/// that name already there with the same attributes as made (a retry).
pub async fn create_queue(c: &AwsClients, spec: &QueueSpec<'_>) -> AwsResult<String> {
    const OP: &str = "sqs:CreateQueue";
    let out = c
        .sqs
        .create_queue()
        .queue_name(spec.name)
        .set_attributes(Some(attributes(spec)))
        .set_tags(Some(spec.tags.clone()))
        .send()
        .await
        .op(OP)?;
    out.queue_url()
        .map(str::to_string)
        .ok_or(AwsError::Incomplete {
            operation: OP,
            missing: "QueueUrl",
        })
}

/// Puts back what the queue is made with (its policy, encryption and
/// retention), where changed out of band.
pub async fn repair_queue(c: &AwsClients, url: &str, spec: &QueueSpec<'_>) -> AwsResult<()> {
    c.sqs
        .set_queue_attributes()
        .queue_url(url)
        .set_attributes(Some(attributes(spec)))
        .send()
        .await
        .op("sqs:SetQueueAttributes")?;
    Ok(())
}

/// Deletes the queue; one already gone is done.
pub async fn delete_queue(c: &AwsClients, url: &str) -> AwsResult<()> {
    c.sqs
        .delete_queue()
        .queue_url(url)
        .send()
        .await
        .op("sqs:DeleteQueue")
        .found()?;
    Ok(())
}

/// One message: its body, and the handle that deletes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub body: String,
    pub receipt: String,
}

/// Up to ten messages, waiting up to `wait` (at most 20 s, SQS's longest)
/// for the first.
pub async fn receive(c: &AwsClients, url: &str, wait: Duration) -> AwsResult<Vec<Message>> {
    let wait = i32::try_from(wait.as_secs().min(20)).unwrap_or(20);
    let out = c
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait)
        .send()
        .await
        .op("sqs:ReceiveMessage")?;
    Ok(out
        .messages()
        .iter()
        .filter_map(|m| {
            Some(Message {
                body: m.body().unwrap_or_default().to_string(),
                receipt: m.receipt_handle()?.to_string(),
            })
        })
        .collect())
}

/// Deletes a message read (or one that says nothing to act on).
pub async fn delete_message(c: &AwsClients, url: &str, receipt: &str) -> AwsResult<()> {
    c.sqs
        .delete_message()
        .queue_url(url)
        .receipt_handle(receipt)
        .send()
        .await
        .op("sqs:DeleteMessage")
        .found()?;
    Ok(())
}

/// A rule of the default bus as EventBridge holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedRule {
    pub name: String,
    pub arn: String,
    pub pattern: Option<String>,
    pub enabled: bool,
    pub tags: HashMap<String, String>,
    /// The ARNs its targets send to.
    pub targets: Vec<String>,
}

/// The rules of the default bus whose names start with `prefix`, with
/// their tags and targets.
pub async fn describe_rules(c: &AwsClients, prefix: &str) -> AwsResult<Vec<ObservedRule>> {
    let mut out = Vec::new();
    let mut next = None;
    loop {
        let page = c
            .events
            .list_rules()
            .name_prefix(prefix)
            .set_next_token(next)
            .send()
            .await
            .op("events:ListRules")?;
        for r in page.rules() {
            let (Some(name), Some(arn)) = (r.name(), r.arn()) else {
                continue;
            };
            out.push(ObservedRule {
                name: name.to_string(),
                arn: arn.to_string(),
                pattern: r.event_pattern().map(str::to_string),
                enabled: r.state() == Some(&RuleState::Enabled),
                tags: HashMap::new(),
                targets: Vec::new(),
            });
        }
        next = page.next_token().map(str::to_string);
        if next.is_none() {
            break;
        }
    }
    for rule in &mut out {
        let tags = c
            .events
            .list_tags_for_resource()
            .resource_arn(&rule.arn)
            .send()
            .await
            .op("events:ListTagsForResource")
            .found()?;
        rule.tags = tags
            .map(|t| {
                t.tags()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let targets = c
            .events
            .list_targets_by_rule()
            .rule(&rule.name)
            .send()
            .await
            .op("events:ListTargetsByRule")
            .found()?;
        rule.targets = targets
            .map(|t| t.targets().iter().map(|t| t.arn().to_string()).collect())
            .unwrap_or_default();
    }
    Ok(out)
}

/// Makes (or puts back) rule `name` matching `pattern`, tagged, sending to
/// the queue `queue_arn`: the rule's ARN.
pub async fn put_rule(
    c: &AwsClients,
    name: &str,
    pattern: &str,
    tags: &HashMap<String, String>,
    queue_arn: &str,
) -> AwsResult<String> {
    const OP: &str = "events:PutRule";
    let tags = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| AwsError::Incomplete {
            operation: OP,
            missing: "a tag's key or value",
        })?;
    let out = c
        .events
        .put_rule()
        .name(name)
        .event_pattern(pattern)
        .state(RuleState::Enabled)
        .description("byoc-operator: interruptions into the installation's queue")
        .set_tags(Some(tags))
        .send()
        .await
        .op(OP)?;
    let arn = out
        .rule_arn()
        .map(str::to_string)
        .ok_or(AwsError::Incomplete {
            operation: OP,
            missing: "RuleArn",
        })?;
    let target = Target::builder()
        .id(TARGET_ID)
        .arn(queue_arn)
        .build()
        .map_err(|_| AwsError::Incomplete {
            operation: "events:PutTargets",
            missing: "the target's ID or ARN",
        })?;
    let out = c
        .events
        .put_targets()
        .rule(name)
        .targets(target)
        .send()
        .await
        .op("events:PutTargets")?;
    if out.failed_entry_count() > 0 {
        let why = out
            .failed_entries()
            .iter()
            .filter_map(|e| e.error_message())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(AwsError::Service {
            operation: "events:PutTargets",
            code: "FailedEntry".into(),
            message: why,
            class: super::ErrorClass::Transient,
        });
    }
    Ok(arn)
}

/// Removes rule `name` (its target first, as EventBridge requires); one
/// already gone is done.
pub async fn delete_rule(c: &AwsClients, name: &str) -> AwsResult<()> {
    c.events
        .remove_targets()
        .rule(name)
        .ids(TARGET_ID)
        .send()
        .await
        .op("events:RemoveTargets")
        .found()?;
    c.events
        .delete_rule()
        .name(name)
        .send()
        .await
        .op("events:DeleteRule")
        .found()?;
    Ok(())
}
