//! SSH key pairs imported for node groups.

use aws_sdk_ec2::types::ResourceType;

use super::tags::{tag_value, Owned, OwnershipTags, Scope, NODE_GROUP};
use super::{required, AwsClients, AwsResult, NotFoundExt, SdkResultExt};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedKeyPair {
    pub name: String,
    pub group: Option<String>,
}

/// Key pairs (DescribeKeyPairs has no pages: one answer holds all).
pub async fn describe(c: &AwsClients, scope: Scope<'_>) -> AwsResult<Vec<Owned<ObservedKeyPair>>> {
    const OP: &str = "ec2:DescribeKeyPairs";
    let out = c
        .ec2
        .describe_key_pairs()
        .filters(scope.filter())
        .send()
        .await
        .op(OP)?;
    out.key_pairs()
        .iter()
        .filter_map(|k| Some((scope.owner_of(k.tags())?, k)))
        .map(|(uid, k)| {
            let pair = ObservedKeyPair {
                name: required(k.key_name(), OP, "KeyName")?,
                group: tag_value(k.tags(), NODE_GROUP).map(str::to_string),
            };
            Ok((uid, pair))
        })
        .collect()
}

/// Which of `names` exist as key pairs in the region (any owner's: these
/// are the user's, used and never changed).
pub async fn existing(c: &AwsClients, names: &[String]) -> AwsResult<Vec<String>> {
    const OP: &str = "ec2:DescribeKeyPairs";
    let out = c
        .ec2
        .describe_key_pairs()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("key-name")
                .set_values(Some(names.to_vec()))
                .build(),
        )
        .send()
        .await
        .op(OP)?;
    out.key_pairs()
        .iter()
        .map(|k| required(k.key_name(), OP, "KeyName"))
        .collect()
}

/// Imports `public_key` as the key pair `name`, tagged as the group's.
pub async fn import(
    c: &AwsClients,
    owner: &OwnershipTags,
    name: &str,
    group: &str,
    public_key: &str,
) -> AwsResult<()> {
    match c
        .ec2
        .import_key_pair()
        .key_name(name)
        .public_key_material(aws_smithy_types::Blob::new(public_key.as_bytes()))
        .tag_specifications(owner.ec2_spec(
            ResourceType::KeyPair,
            "ssh-key",
            &[(NODE_GROUP, group)],
        ))
        .send()
        .await
        .op("ec2:ImportKeyPair")
    {
        // Imported before a crash: the name carries the key's hash.
        Err(e) if e.code() == Some("InvalidKeyPair.Duplicate") => Ok(()),
        other => other.map(|_| ()),
    }
}

pub async fn delete(c: &AwsClients, name: &str) -> AwsResult<()> {
    c.ec2
        .delete_key_pair()
        .key_name(name)
        .send()
        .await
        .op("ec2:DeleteKeyPair")
        .or_gone()
}
