//! Dereference: each node group's user data, read from the Secret it names
//! in the cluster's namespace. The content goes to RunInstances and nowhere
//! else (not logs, Events, status or metrics); only its hash is kept, in the
//! launch configuration, so a change rolls the group.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::api::compute_cluster::UserDataSecretRef;
use crate::aws::token::hash_token;
use crate::cluster::spec::NodeGroup;
use crate::secret_use::{self, SecretUse, Unread};
use crate::Error;

/// AWS's limit on user data, before base64.
pub const MAX_BYTES: usize = 16 * 1024;

/// One group's user data. Debug shows the hash only.
#[derive(Clone, PartialEq, Eq)]
pub struct UserData {
    content: Vec<u8>,
    /// A short hash of the content (part of the launch configuration).
    pub hash: String,
}

impl std::fmt::Debug for UserData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserData({})", self.hash)
    }
}

impl UserData {
    /// The content as RunInstances takes it (base64).
    pub fn encoded(&self) -> String {
        aws_smithy_types::base64::encode(&self.content)
    }
}

/// What of a node group's user data is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Secret,
    Key,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Missing::Secret => "the Secret was not found",
            Missing::Key => "the Secret has no such key",
        })
    }
}

/// The user data `r` names, from `secret` (None: there is no such Secret).
pub fn from_secret(r: &UserDataSecretRef, secret: Option<&Secret>) -> Result<UserData, Error> {
    let not_found = |missing| Error::UserDataNotFound {
        secret: r.name.clone(),
        key: r.key.clone(),
        missing,
    };
    let secret = secret.ok_or_else(|| not_found(Missing::Secret))?;
    let content = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|s| s.as_bytes().to_vec())
        })
        .ok_or_else(|| not_found(Missing::Key))?;
    if content.len() > MAX_BYTES {
        return Err(Error::UserDataTooLarge {
            secret: r.name.clone(),
            key: r.key.clone(),
            bytes: content.len(),
            max: MAX_BYTES,
        });
    }
    // The bytes themselves: gzipped cloud-init is not UTF-8.
    let hash = hash_token("ud", &[&content]);
    Ok(UserData { content, hash })
}

/// The user data of every group that names some, by group; only from
/// Secrets labelled `byoc.dev/use: user-data` (`secret_use`).
pub async fn read(
    client: &Client,
    namespace: &str,
    groups: &[NodeGroup],
) -> Result<BTreeMap<String, UserData>, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut out = BTreeMap::new();
    for g in groups {
        if let Some(r) = &g.user_data_secret_ref {
            let secret =
                match secret_use::read(&api, namespace, &r.name, SecretUse::UserData).await? {
                    Ok(secret) => Some(secret),
                    Err(Unread::NotFound { .. }) => None,
                    Err(e @ Unread::NotLabelled { .. }) => return Err(Error::SecretNotLabelled(e)),
                };
            out.insert(g.name.clone(), from_secret(r, secret.as_ref())?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(key: &str, content: &[u8]) -> Secret {
        Secret {
            data: Some([(key.to_string(), ByteString(content.to_vec()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn user_data_from_its_secret() {
        let r = UserDataSecretRef {
            name: "boot".into(),
            key: "user-data".into(),
        };
        let ok = from_secret(
            &r,
            Some(&secret("user-data", b"#!/bin/sh\necho marker-1\n")),
        )
        .expect("read");
        assert_eq!(
            ok.encoded(),
            aws_smithy_types::base64::encode("#!/bin/sh\necho marker-1\n")
        );
        assert!(
            !format!("{ok:?}").contains("marker-1"),
            "Debug shows the hash only"
        );
        let other = from_secret(
            &r,
            Some(&secret("user-data", b"#!/bin/sh\necho marker-2\n")),
        )
        .expect("read");
        assert_ne!(ok.hash, other.hash, "a change changes the hash");
        let (gz1, gz2) = (
            from_secret(&r, Some(&secret("user-data", &[0x1f, 0x8b, 0xff]))),
            from_secret(&r, Some(&secret("user-data", &[0x1f, 0x8b, 0xfe]))),
        );
        assert_ne!(
            gz1.expect("binary").hash,
            gz2.expect("binary").hash,
            "binary content is hashed as bytes"
        );
        // (secret, error kind, the message names)
        let rows: Vec<(Option<Secret>, &str)> = vec![
            (None, "the Secret was not found"),
            (Some(secret("other", b"x")), "the Secret has no such key"),
            (
                Some(secret("user-data", &vec![b'x'; MAX_BYTES + 1])),
                "holds 16385 bytes",
            ),
        ];
        for (s, says) in rows {
            let e = from_secret(&r, s.as_ref()).expect_err(says).to_string();
            assert!(
                e.contains("Secret boot key user-data") && e.contains(says),
                "{e}"
            );
        }
        assert!(
            from_secret(&r, Some(&secret("user-data", &vec![b'x'; MAX_BYTES]))).is_ok(),
            "16 KB fits"
        );
    }
}
