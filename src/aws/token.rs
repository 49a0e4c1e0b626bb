//! Client tokens: AWS's idempotency keys. The same inputs give the same
//! token in every release of the operator (SHA-256, whose output is fixed by
//! its standard), so an operator upgraded in the middle of a create retries
//! with the token it used before and gets the resource created then.

use sha2::{Digest, Sha256};

/// `<prefix>-<first 16 hex digits of SHA-256 over the parts>`; each part is
/// followed by a NUL so `["ab", "c"]` and `["a", "bc"]` differ. At most 64
/// characters (EC2's limit) when `prefix` is at most 47.
pub fn client_token(prefix: &str, parts: &[&str]) -> String {
    let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    hash_token(prefix, &bytes)
}

/// [`client_token`] over byte strings (content that need not be UTF-8).
pub fn hash_token(prefix: &str, parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part);
        hash.update([0]);
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_and_separate_their_parts() {
        // A known value: it must never change between releases.
        assert_eq!(
            client_token("byoc-nat", &["uid-1", "us-east-1a", "eipalloc-1"]),
            client_token("byoc-nat", &["uid-1", "us-east-1a", "eipalloc-1"])
        );
        assert_eq!(client_token("t", &["abc"]), KNOWN_ABC);
        assert_ne!(
            client_token("t", &["ab", "c"]),
            client_token("t", &["a", "bc"])
        );
        assert!(client_token(&"p".repeat(47), &["x"]).len() <= 64);
    }

    /// `printf 'abc\0' | sha256sum`, first 16 hex digits.
    const KNOWN_ABC: &str = "t-dc1114cd074914bd";
}
