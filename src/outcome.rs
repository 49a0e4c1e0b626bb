//! One outcome path: every reconcile of both controllers, deletion too,
//! comes to an [`Outcome`]; this module turns it into the kstatus
//! conditions (`Ready`, `Reconciling`, `Stalled`), says whether it is a
//! warning, and when to look again (with backoff and failure metrics for
//! the ones that failed). Each controller maps it onto its own phase.

use std::time::Duration;

use crate::api::conditions::{Desired, READY, RECONCILING, STALLED};
use crate::context::Context;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// As the spec asks.
    Ready {
        reason: &'static str,
        message: String,
    },
    /// Work goes on (AWS is creating something); looked at again soon.
    Progressing {
        reason: &'static str,
        message: String,
    },
    /// The user must act (spec, permissions, something in the way).
    NeedsUser {
        reason: &'static str,
        message: String,
    },
    /// A failure that passes by itself; retried with backoff.
    Transient {
        reason: &'static str,
        message: String,
    },
    /// Deletion goes on; looked at again soon.
    Deleting {
        reason: &'static str,
        message: String,
    },
}

impl Outcome {
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Ready { reason, .. }
            | Outcome::Progressing { reason, .. }
            | Outcome::NeedsUser { reason, .. }
            | Outcome::Transient { reason, .. }
            | Outcome::Deleting { reason, .. } => reason,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Outcome::Ready { message, .. }
            | Outcome::Progressing { message, .. }
            | Outcome::NeedsUser { message, .. }
            | Outcome::Transient { message, .. }
            | Outcome::Deleting { message, .. } => message,
        }
    }

    /// Its Event is a warning.
    pub fn is_warning(&self) -> bool {
        matches!(self, Outcome::NeedsUser { .. })
    }

    /// `Ready`, `Reconciling` and `Stalled`.
    pub fn conditions(&self) -> [Desired; 3] {
        let (reason, message) = (self.reason(), self.message());
        let (ready, reconciling, stalled) = match self {
            Outcome::Ready { .. } => (true, false, false),
            Outcome::NeedsUser { .. } => (false, false, true),
            Outcome::Progressing { .. } | Outcome::Transient { .. } | Outcome::Deleting { .. } => {
                (false, true, false)
            }
        };
        let said = |on: bool| if on { message } else { "" };
        [
            Desired::new(READY, ready, reason, message),
            Desired::new(RECONCILING, reconciling, reason, said(reconciling)),
            Desired::new(STALLED, stalled, reason, said(stalled)),
        ]
    }

    /// When to look again at the object `key` (its UID): `ready_after` when
    /// ready, the progress poll while progressing or deleting (backoff
    /// forgotten), the next backoff when it failed (counted in metrics).
    pub fn requeue(
        &self,
        ctx: &Context,
        controller: &'static str,
        key: &str,
        ready_after: Duration,
    ) -> Duration {
        match self {
            Outcome::Ready { .. } => {
                ctx.reset_backoff(key);
                ready_after
            }
            Outcome::Progressing { .. } | Outcome::Deleting { .. } => {
                ctx.reset_backoff(key);
                ctx.settings.progress_poll
            }
            Outcome::NeedsUser { reason, .. } | Outcome::Transient { reason, .. } => {
                ctx.retry_later(controller, key, reason)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_per_outcome() {
        let m = || "m".to_string();
        // (outcome, Ready, Reconciling, Stalled)
        let rows = [
            (
                Outcome::Ready {
                    reason: "R",
                    message: m(),
                },
                [true, false, false],
            ),
            (
                Outcome::Progressing {
                    reason: "R",
                    message: m(),
                },
                [false, true, false],
            ),
            (
                Outcome::NeedsUser {
                    reason: "R",
                    message: m(),
                },
                [false, false, true],
            ),
            (
                Outcome::Transient {
                    reason: "R",
                    message: m(),
                },
                [false, true, false],
            ),
            (
                Outcome::Deleting {
                    reason: "R",
                    message: m(),
                },
                [false, true, false],
            ),
        ];
        for (outcome, want) in rows {
            let got = outcome.conditions();
            assert_eq!(
                got.iter().map(|d| d.status).collect::<Vec<_>>(),
                want,
                "{outcome:?}"
            );
            for d in &got {
                assert_eq!(d.reason, "R");
                assert_eq!(
                    d.message.is_empty(),
                    !d.status && d.type_ != READY,
                    "{outcome:?} {}",
                    d.type_
                );
            }
        }
    }
}
