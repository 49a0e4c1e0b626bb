//! AWS catching up with what was just made: the one place that handles it.
//! EC2's API is eventually consistent ("Eventual consistency in the Amazon
//! EC2 API", EC2 API Reference): for seconds after a create, a describe may
//! not list the new resource and a call naming it may be answered
//! `Invalid<Kind>ID.NotFound`; for about ten seconds EC2 may not accept a
//! new instance profile. The policy, from the shortest wait to the longest:
//!
//! 1. A call that names what was just made is retried inside the SDK
//!    (`aws/settling.rs`, `RetryNewIds`; the SDK half lives in `aws/`, the
//!    only module that touches the SDK).
//! 2. Right after a create or delete whose result the pass needs (instances
//!    running, a NAT gateway available, instances gone), the kind looks
//!    again briefly: [`look_briefly`].
//! 3. The IDs a pass's creates answered (`aws/created.rs`, `CreatedIds`)
//!    are kept until a describe shows them ([`recent`]); a pass whose view
//!    lacks one stops with `Error::NotVisibleYet` instead of creating it
//!    again, and a deletion waits instead of declaring the cluster gone.
//! 4. A pass that ended on AWS lagging ([`is_catching_up`]) looks again
//!    after [`CATCH_UP`], not after the progress poll or a growing backoff
//!    (the class `Class::CatchingUp` of `Error::classify` keeps it out of
//!    the backoff; `next_look.rs` applies the delay).
//! 5. What AWS takes tens of seconds to make (a NAT gateway, instances
//!    starting) is waited for by the account and region's
//!    [`shared_wait`]: one describe a second for all its clusters.

pub mod recent;
pub mod shared_wait;

use std::future::Future;
use std::time::Duration;

use crate::Error;

/// How soon a pass that found AWS behind what was just made looks again:
/// AWS's consistency window is a second or two, far below the progress poll.
pub const CATCH_UP: Duration = Duration::from_secs(1);

/// The pass ended on AWS not showing, or not knowing, what was just made
/// (a describe without a recent creation; an unknown new ID the SDK's
/// retries did not outlast). A young instance profile is not: EC2 takes
/// about ten seconds to accept one, and the progress poll suits it.
pub fn is_catching_up(result: &Result<(), Error>) -> bool {
    match result {
        Err(Error::NotVisibleYet { .. }) => true,
        Err(Error::Aws(e)) => e.is_unknown_id(),
        _ => false,
    }
}

/// Looks again a few times right after a create or delete (at once, then
/// after 0.1, 0.2 and 0.4 s), until `check` says it is done; returns the last
/// result. `None` when `enabled` is false. A quick AWS then needs no second
/// pass; a slow one costs four describes.
pub async fn look_briefly<T, E, F, Fut>(check: F, enabled: bool) -> Result<Option<T>, E>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(T, bool), E>>,
{
    if !enabled {
        return Ok(None);
    }
    let mut delay = Duration::ZERO;
    let mut last = None;
    for _ in 0..4 {
        tokio::time::sleep(delay).await;
        let (value, done) = check().await?;
        last = Some(value);
        if done {
            break;
        }
        delay = (delay * 2).max(Duration::from_millis(100));
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::AwsError;

    #[test]
    fn a_pass_behind_what_was_just_made_is_catching_up() {
        let aws = |code: &str, message: &str| {
            Err(Error::Aws(AwsError::Service {
                operation: "ec2:CreateSubnet",
                code: code.into(),
                message: message.into(),
                class: crate::aws::error::classify(code, message, Some(400)),
            }))
        };
        let rows: Vec<(Result<(), Error>, bool)> = vec![
            (
                Err(Error::NotVisibleYet {
                    unseen: vec![("vpc-1".into(), Duration::from_secs(1))],
                }),
                true,
            ),
            (aws("InvalidVpcID.NotFound", "m"), true),
            (aws("NatGatewayNotFound", "m"), true),
            // EC2 takes ~10 s to accept a new profile: the progress poll.
            (
                aws("InvalidParameterValue", "Invalid IAM Instance Profile name"),
                false,
            ),
            (aws("InvalidAMIID.NotFound", "m"), false),
            (aws("RequestLimitExceeded", "m"), false),
            (Ok(()), false),
        ];
        for (result, expected) in rows {
            assert_eq!(is_catching_up(&result), expected, "{result:?}");
        }
    }
}
