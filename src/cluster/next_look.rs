//! When to look at a ComputeCluster again after a converge pass: the one
//! place that decides it. The pass's outcome gives its own delay (ready:
//! the resync; progressing: the progress poll; failed: the backoff, in
//! `outcome.rs`); this module shortens it when AWS only lags behind what
//! was just made, hands a cluster whose AWS is still creating to its account
//! and region's shared wait (`catching_up/shared_wait.rs`), and a settled one to the shared
//! resync (`resync.rs`), which looks for drift while the cluster waits for a
//! change. A deletion looks again after its outcome's delay too, and at
//! least every resync while something not the cluster's blocks it.

use std::time::Duration;

use super::catching_up::CATCH_UP;

/// How a converge pass ended, as far as looking again goes.
#[derive(Clone, Copy, Debug)]
pub struct PassEnd {
    /// The outcome's own delay.
    pub after: Duration,
    /// AWS did not show or know yet what was just made.
    pub catching_up: bool,
    /// The pass went through and AWS is still creating something (a NAT
    /// gateway pending, instances starting).
    pub aws_creating: bool,
    /// The pass went through and every part is ready.
    pub settled: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextLook {
    /// After this long.
    After(Duration),
    /// When AWS is done creating (the account and region's shared wait),
    /// at the latest after this long.
    WhenAwsIsDone(Duration),
    /// On a change of the object; its drift is looked for by the account
    /// and region's shared resync.
    OnChangeAndResync,
}

pub fn next_look(end: PassEnd) -> NextLook {
    if end.settled {
        return NextLook::OnChangeAndResync;
    }
    let after = if end.catching_up {
        end.after.min(CATCH_UP)
    } else {
        end.after
    };
    if end.aws_creating {
        NextLook::WhenAwsIsDone(after)
    } else {
        NextLook::After(after)
    }
}

/// When to look again at a cluster being deleted: the outcome's own delay
/// (the progress poll while AWS deletes, the backoff after a failure), and
/// at least every `resync` while something not the cluster's blocks it.
pub fn next_look_deleting(after: Duration, blocked: bool, resync: Duration) -> Duration {
    if blocked {
        after.min(resync)
    } else {
        after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_look_after_a_pass() {
        let poll = Duration::from_secs(5);
        let end = |catching_up, aws_creating, settled| PassEnd {
            after: poll,
            catching_up,
            aws_creating,
            settled,
        };
        let rows = [
            (
                end(false, false, true),
                NextLook::OnChangeAndResync,
                "running as asked",
            ),
            (
                end(false, true, false),
                NextLook::WhenAwsIsDone(poll),
                "a NAT gateway pending",
            ),
            (
                end(true, false, false),
                NextLook::After(CATCH_UP),
                "a describe behind a create",
            ),
            (
                end(false, false, false),
                NextLook::After(poll),
                "the outcome's own delay",
            ),
        ];
        for (pass, want, why) in rows {
            assert_eq!(next_look(pass), want, "{why}");
        }
    }

    #[test]
    fn a_blocked_deletion_is_looked_at_every_resync_at_least() {
        let (backoff, resync) = (Duration::from_secs(900), Duration::from_secs(300));
        assert_eq!(next_look_deleting(backoff, true, resync), resync);
        assert_eq!(next_look_deleting(backoff, false, resync), backoff);
        let poll = Duration::from_secs(5);
        assert_eq!(next_look_deleting(poll, true, resync), poll);
    }
}
