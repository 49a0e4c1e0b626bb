//! CloudWatch Logs log groups: each cluster's `/byoc/<namespace>/<name>`.
//! Log groups have no tag filter on describe: a cluster's is found by name
//! and its tags read to know whose it is.

use std::collections::BTreeMap;

use super::tags::OwnershipTags;
use super::{AwsClients, AwsResult, NotFoundExt, SdkResultExt};

/// Where every cluster's log group lives (the shared resync lists it).
pub const PREFIX: &str = "/byoc/";

/// A log group as a pass compares it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedLogGroup {
    pub name: String,
    /// Its ARN (without the `:*` of its streams).
    pub arn: String,
    /// `None`: kept forever.
    pub retention_days: Option<i32>,
    /// Its tags; empty where a listing read none (the shared resync).
    pub tags: BTreeMap<String, String>,
}

fn observed(g: &aws_sdk_cloudwatchlogs::types::LogGroup) -> Option<ObservedLogGroup> {
    let name = g.log_group_name()?.to_string();
    let arn = (g.log_group_arn().map(str::to_string))
        .or_else(|| g.arn().map(|a| a.trim_end_matches(":*").to_string()))
        .unwrap_or_default();
    Some(ObservedLogGroup {
        name,
        arn,
        retention_days: g.retention_in_days(),
        tags: BTreeMap::new(),
    })
}

/// The log groups whose names start with `prefix`, all pages.
pub async fn list(c: &AwsClients, prefix: &str) -> AwsResult<Vec<ObservedLogGroup>> {
    const OP: &str = "logs:DescribeLogGroups";
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = (c.logs.describe_log_groups())
            .log_group_name_prefix(prefix)
            .set_next_token(token.take())
            .send()
            .await
            .op(OP)?;
        out.extend(page.log_groups().iter().filter_map(observed));
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

/// Log group `name` with its tags; `None` when there is none.
pub async fn describe(c: &AwsClients, name: &str) -> AwsResult<Option<ObservedLogGroup>> {
    let listed = list(c, name).await?;
    let Some(mut group) = listed.into_iter().find(|g| g.name == name) else {
        return Ok(None);
    };
    group.tags = tags(c, &group.arn).await?;
    Ok(Some(group))
}

/// The tags of log group `arn` (none when it is gone).
pub async fn tags(c: &AwsClients, arn: &str) -> AwsResult<BTreeMap<String, String>> {
    let tags = (c.logs.list_tags_for_resource())
        .resource_arn(arn)
        .send()
        .await
        .op("logs:ListTagsForResource")
        .found()?;
    Ok(tags
        .and_then(|t| t.tags().cloned())
        .unwrap_or_default()
        .into_iter()
        .collect())
}

/// Makes log group `name` with the cluster's tags; one that exists already
/// is left as it is (`false`).
pub async fn create(c: &AwsClients, owner: &OwnershipTags, name: &str) -> AwsResult<bool> {
    let tags: std::collections::HashMap<String, String> =
        owner.for_part("log-group", &[]).into_iter().collect();
    let made = (c.logs.create_log_group())
        .log_group_name(name)
        .set_tags(Some(tags))
        .send()
        .await
        .op("logs:CreateLogGroup");
    match made {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("ResourceAlreadyExistsException") => Ok(false),
        Err(e) => Err(e),
    }
}

pub async fn put_retention(c: &AwsClients, name: &str, days: i32) -> AwsResult<()> {
    (c.logs.put_retention_policy())
        .log_group_name(name)
        .retention_in_days(days)
        .send()
        .await
        .op("logs:PutRetentionPolicy")
        .map(|_| ())
}

pub async fn delete(c: &AwsClients, name: &str) -> AwsResult<()> {
    (c.logs.delete_log_group())
        .log_group_name(name)
        .send()
        .await
        .op("logs:DeleteLogGroup")
        .or_gone()
}
