//! One outcome path: every reconcile of both controllers, deletion too,
//! comes to an [`Outcome`]; this module turns it into the kstatus
//! conditions (`Ready`, `Reconciling`, `Stalled`), says whether it is a
//! warning, and when to look again (with backoff and failure metrics for
//! the ones that failed). Each controller maps it onto its own phase.

use std::time::Duration;

use crate::api::conditions::{reason, Desired, READY, RECONCILING, STALLED};
use crate::context::Context;
use crate::{Class, Error};

/// What a pass means to do with what it touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    Converge,
    Delete,
}

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

    /// The one path from an error to an outcome, for a converge and a
    /// deletion alike (`Error::classify` decides, the intent words it):
    /// the user must act (Stalled); AWS catching up with what was just
    /// made is progress; AWS's passing failures and its capacity are the
    /// object's state, retried with backoff. `None`: a failure of the
    /// operator's own (the Kubernetes API, an account not verified for
    /// now), left to the controller's error policy with no status written.
    pub fn of_error(e: &Error, intent: Intent) -> Option<Outcome> {
        let (why, class) = e.classify();
        let why = why.as_str();
        let aws = matches!(e, Error::Aws(_));
        let ours = !aws && !matches!(e, Error::InsufficientCapacity { .. });
        let message = match (intent, class, aws) {
            (Intent::Delete, Class::NeedsUser, _) => format!("cannot delete: {e}"),
            (Intent::Converge, Class::CatchingUp, true) => {
                format!("waiting for AWS to catch up with what was just made: {e}")
            }
            (Intent::Converge, Class::Transient | Class::Throttled, true) => {
                format!("retrying after a transient AWS error: {e}")
            }
            _ => e.to_string(),
        };
        Some(match (intent, class) {
            (_, Class::NeedsUser) | (Intent::Converge, Class::CatchingUp) => {
                Outcome::of_class(class, why, message)
            }
            _ if ours => return None,
            (Intent::Converge, _) => Outcome::of_class(class, why, message),
            (Intent::Delete, _) => Outcome::Transient {
                reason: reason::DELETING,
                message: format!("deleting, retrying: {e}"),
            },
        })
    }

    /// A failure of `class` as the object's state, for either controller:
    /// Stalled when the user must act, progress while AWS catches up,
    /// otherwise retried with backoff.
    pub fn of_class(class: Class, reason: &'static str, message: String) -> Outcome {
        match class {
            Class::NeedsUser => Outcome::NeedsUser { reason, message },
            Class::CatchingUp => Outcome::Progressing { reason, message },
            Class::Transient | Class::Throttled => Outcome::Transient { reason, message },
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

/// When to look again after a reconcile failed with no status written (the
/// Kubernetes API, an account not usable for now; `Outcome::of_error` left
/// it to the controller): the next backoff, as for a failed outcome. Both
/// controllers' error policies.
pub fn after_failure(ctx: &Context, controller: &'static str, key: &str, e: &Error) -> Duration {
    ctx.retry_later(controller, key, e.classify().0.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::AwsError;

    #[test]
    fn an_error_comes_to_one_outcome_per_intent() {
        let aws = |code: &str| {
            Error::Aws(AwsError::Service {
                operation: "ec2:CreateVpc",
                code: code.into(),
                message: "m".into(),
                class: crate::aws::error::classify(code, "m", Some(400)),
            })
        };
        let capacity = || Error::InsufficientCapacity { groups: vec![] };
        let kube = || Error::WatchStopped { watched: "x" };
        let internal = || Error::Internal("x".into());
        // (error, converge: kind and reason, delete: kind and reason)
        type Want = Option<(&'static str, &'static str)>;
        let rows: Vec<(Error, Want, Want)> = vec![
            (
                aws("UnauthorizedOperation"),
                Some(("NeedsUser", reason::ACCESS_DENIED)),
                Some(("NeedsUser", reason::ACCESS_DENIED)),
            ),
            (
                aws("InvalidVpcID.NotFound"),
                Some(("Progressing", reason::PROVISIONING)),
                Some(("Transient", reason::DELETING)),
            ),
            (
                aws("RequestLimitExceeded"),
                Some(("Transient", reason::AWS_THROTTLED)),
                Some(("Transient", reason::DELETING)),
            ),
            (
                aws("InternalError"),
                Some(("Transient", reason::AWS_ERROR)),
                Some(("Transient", reason::DELETING)),
            ),
            (
                capacity(),
                Some(("Transient", reason::INSUFFICIENT_CAPACITY)),
                Some(("Transient", reason::DELETING)),
            ),
            (kube(), None, None),
            (
                internal(),
                Some(("NeedsUser", reason::INTERNAL_ERROR)),
                Some(("NeedsUser", reason::INTERNAL_ERROR)),
            ),
        ];
        let kind = |o: &Outcome| match o {
            Outcome::Ready { .. } => "Ready",
            Outcome::Progressing { .. } => "Progressing",
            Outcome::NeedsUser { .. } => "NeedsUser",
            Outcome::Transient { .. } => "Transient",
            Outcome::Deleting { .. } => "Deleting",
        };
        for (e, converge, delete) in rows {
            for (intent, want) in [(Intent::Converge, converge), (Intent::Delete, delete)] {
                let got = Outcome::of_error(&e, intent);
                assert_eq!(
                    got.as_ref().map(|o| (kind(o), o.reason())),
                    want,
                    "{e} {intent:?}"
                );
                if let Some(o) = got.filter(|_| intent == Intent::Delete) {
                    assert!(
                        o.message().starts_with("cannot delete: ")
                            || o.message().starts_with("deleting, retrying: "),
                        "{o:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_class_is_one_outcome_and_one_next_look_for_either_controller() {
        // (class, outcome, Stalled, retried with backoff)
        let rows = [
            (Class::NeedsUser, "NeedsUser", true, true),
            (Class::Transient, "Transient", false, true),
            (Class::Throttled, "Transient", false, true),
            (Class::CatchingUp, "Progressing", false, false),
        ];
        for (class, want, stalled, backoff) in rows {
            let o = Outcome::of_class(class, "R", "m".into());
            let kind = match o {
                Outcome::NeedsUser { .. } => "NeedsUser",
                Outcome::Transient { .. } => "Transient",
                Outcome::Progressing { .. } => "Progressing",
                _ => "other",
            };
            assert_eq!(kind, want, "{class:?}");
            assert_eq!(o.is_warning(), stalled, "{class:?}");
            assert_eq!(o.conditions()[2].status, stalled, "{class:?}");
            let backed_off = matches!(o, Outcome::NeedsUser { .. } | Outcome::Transient { .. });
            assert_eq!(backed_off, backoff, "{class:?}");
        }
    }

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
