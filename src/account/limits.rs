//! Limits per tenant: what the clusters using one CloudAccount may hold, per
//! namespace and in total (`spec.limits`), and the ledger that holds each
//! cluster to them.
//!
//! A pass is admitted before it creates anything: the cluster's whole
//! desired shape (one cluster, its node groups' instances, their vCPUs and
//! GPUs at the largest of each group's types) is reserved in the ledger
//! under one lock, against every other cluster's reservation, so passes
//! running at once never overshoot. A cluster over a limit is `Stalled`
//! (`LimitExceeded`) and its pass makes nothing; what it already runs is
//! left alone. A cluster the ledger has not seen yet in this process counts
//! what its status shows it running, so a restart cannot let a newcomer
//! take what an existing cluster holds. A reservation ends with the
//! cluster's deletion.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::api::cloud_account::{AccountLimits, Caps, Usage};

/// What a cluster holds, or asks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Use {
    pub clusters: i64,
    pub instances: i64,
    pub vcpus: i64,
    pub gpus: i64,
    /// Millionths of a USD per hour: the instances at on-demand list price.
    pub micro_usd: i64,
}

impl Use {
    fn add(self, o: Use) -> Use {
        Use {
            clusters: self.clusters + o.clusters,
            instances: self.instances + o.instances,
            vcpus: self.vcpus + o.vcpus,
            gpus: self.gpus + o.gpus,
            micro_usd: self.micro_usd + o.micro_usd,
        }
    }
}

/// `"12.5"` USD as millionths (12_500_000); `None` unless a decimal of at
/// most six places.
pub fn micro_usd(usd: &str) -> Option<i64> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (whole, fraction) = match usd.split_once('.') {
        Some((whole, fraction)) if digits(fraction) && fraction.len() <= 6 => (whole, fraction),
        Some(_) => return None,
        None => (usd, ""),
    };
    if !digits(whole) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = format!("{fraction:0<6}").parse().ok()?;
    whole.checked_mul(1_000_000)?.checked_add(fraction)
}

/// Millionths of a USD as a decimal of up to four places (`12.5`, `0.0832`).
pub fn usd(micro: i64) -> String {
    let text = format!("{:.4}", micro as f64 / 1_000_000.0);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A limit a request would pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exceeded {
    /// `limits.total.vcpus`, `limits.perNamespace.instances`, ...
    pub limit: String,
    pub cap: i64,
    /// What the others hold against it.
    pub used: i64,
    /// What the cluster asks for.
    pub requested: i64,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |n: i64| match self.limit.ends_with(".pricePerHour") {
            true => format!("${}", usd(n)),
            false => n.to_string(),
        };
        write!(
            f,
            "{} is {}: other clusters hold {} and this one asks for {}",
            self.limit,
            show(self.cap),
            show(self.used),
            show(self.requested)
        )
    }
}

/// Whether `want` of a cluster in `namespace` that held `before` fits
/// `limits`, beside `others` (the other clusters' namespaces and
/// holdings). A measure the cluster does not grow is never refused, even
/// where others went over it (a limit lowered). Pure.
pub fn check(
    limits: &AccountLimits,
    others: &[(String, Use)],
    namespace: &str,
    want: Use,
    before: Use,
) -> Result<(), Exceeded> {
    let total = others.iter().fold(Use::default(), |a, (_, u)| a.add(*u));
    let own_namespace = others
        .iter()
        .filter(|(ns, _)| ns == namespace)
        .fold(Use::default(), |a, (_, u)| a.add(*u));
    let scopes = [
        ("total", limits.total.as_ref(), total),
        ("perNamespace", limits.per_namespace.as_ref(), own_namespace),
    ];
    for (scope, caps, used) in scopes {
        let Some(caps) = caps else { continue };
        for ((what, cap, used, requested), (.., held)) in measures(caps, used, want)
            .into_iter()
            .zip(measures(caps, used, before))
        {
            if let Some(cap) = cap {
                if requested > held && used + requested > cap {
                    return Err(Exceeded {
                        limit: format!("limits.{scope}.{what}"),
                        cap,
                        used,
                        requested,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Each capped measure: its name, cap, what is used and what is asked.
fn measures(caps: &Caps, used: Use, want: Use) -> [(&'static str, Option<i64>, i64, i64); 5] {
    let price = caps.price_per_hour.as_deref().and_then(micro_usd);
    [
        ("clusters", caps.clusters, used.clusters, want.clusters),
        ("instances", caps.instances, used.instances, want.instances),
        ("vcpus", caps.vcpus, used.vcpus, want.vcpus),
        ("gpus", caps.gpus, used.gpus, want.gpus),
        ("pricePerHour", price, used.micro_usd, want.micro_usd),
    ]
}

/// Whether `limits` caps the price per hour anywhere.
pub fn caps_price(limits: &AccountLimits) -> bool {
    [&limits.total, &limits.per_namespace]
        .into_iter()
        .flatten()
        .any(|c| c.price_per_hour.is_some())
}

/// One cluster's reservation.
#[derive(Clone, Debug)]
struct Held {
    account: String,
    namespace: String,
    holds: Use,
}

/// Every cluster's reservation, by cluster UID.
#[derive(Debug, Default)]
pub struct Ledger {
    held: Mutex<HashMap<String, Held>>,
}

/// A cluster as the ledger sees it when asked to admit another.
pub struct Known {
    pub uid: String,
    pub namespace: String,
    /// What its status shows it running, counted until it is admitted
    /// itself in this process.
    pub running: Use,
}

impl Ledger {
    /// Reserves `want` for the cluster `uid` of `namespace` on the account
    /// `account` (its UID) under `limits`, or says which limit it passes
    /// (its reservation then stays as it was). `known`: the other clusters
    /// using the account, counted by what they run until they hold a
    /// reservation. One lock over the check and the reservation.
    pub fn admit(
        &self,
        account: &str,
        limits: Option<&AccountLimits>,
        uid: &str,
        namespace: &str,
        want: Use,
        known: &[Known],
    ) -> Result<(), Exceeded> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(limits) = limits {
            let mut others: BTreeMap<&str, (String, Use)> = known
                .iter()
                .filter(|k| k.uid != uid)
                .map(|k| (k.uid.as_str(), (k.namespace.clone(), k.running)))
                .collect();
            for (other, h) in held.iter() {
                if other != uid && h.account == account {
                    others.insert(other.as_str(), (h.namespace.clone(), h.holds));
                }
            }
            let others: Vec<(String, Use)> = others.into_values().collect();
            let before = held
                .get(uid)
                .map(|h| h.holds)
                .or_else(|| known.iter().find(|k| k.uid == uid).map(|k| k.running))
                .unwrap_or_default();
            check(limits, &others, namespace, want, before)?;
        }
        held.insert(
            uid.to_string(),
            Held {
                account: account.to_string(),
                namespace: namespace.to_string(),
                holds: want,
            },
        );
        Ok(())
    }

    /// The cluster `uid` holds nothing any more (deleted).
    pub fn release(&self, uid: &str) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    /// What the clusters of the account `account` hold, as its status shows it.
    pub fn usage(&self, account: &str) -> Usage {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let total = held
            .values()
            .filter(|h| h.account == account)
            .fold(Use::default(), |a, h| a.add(h.holds));
        Usage {
            clusters: total.clusters,
            instances: total.instances,
            vcpus: total.vcpus,
            gpus: total.gpus,
            price_per_hour: (total.micro_usd > 0).then(|| usd(total.micro_usd)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn caps(clusters: Option<i64>, instances: Option<i64>, vcpus: Option<i64>) -> Caps {
        Caps {
            clusters,
            instances,
            vcpus,
            ..Caps::default()
        }
    }

    fn asks(instances: i64, vcpus: i64) -> Use {
        Use {
            clusters: 1,
            instances,
            vcpus,
            ..Use::default()
        }
    }

    #[test]
    fn a_request_fits_or_names_the_limit_it_passes() {
        let limits = AccountLimits {
            per_namespace: Some(caps(Some(2), None, Some(8))),
            total: Some(caps(None, Some(10), None)),
        };
        let others = vec![("a".to_string(), asks(4, 8)), ("b".to_string(), asks(4, 2))];
        let none = Use::default();
        assert_eq!(check(&limits, &others, "b", asks(2, 4), none), Ok(()));
        let over = check(&limits, &others, "a", asks(1, 2), none);
        assert_eq!(
            over.map_err(|e| e.to_string()),
            Err(
                "limits.perNamespace.vcpus is 8: other clusters hold 8 and this one asks for 2"
                    .into()
            )
        );
        let over = check(&limits, &others, "c", asks(3, 1), none);
        assert_eq!(
            over.map_err(|e| e.limit),
            Err("limits.total.instances".to_string())
        );
        // What a cluster does not grow is never refused, even where the
        // others went over the limit (lowered since).
        assert_eq!(check(&limits, &others, "a", asks(1, 2), asks(3, 6)), Ok(()));
        assert!(
            check(&limits, &others, "a", asks(1, 7), asks(3, 6)).is_err(),
            "growing vCPUs"
        );
    }

    #[test]
    fn a_price_cap_counts_in_millionths_and_names_dollars() {
        assert_eq!(micro_usd("40"), Some(40_000_000));
        assert_eq!(micro_usd("0.0832"), Some(83_200));
        assert_eq!(micro_usd("12.5"), Some(12_500_000));
        for bad in ["", ".5", "5.", "-1", "1e3", "0.1234567", "4O"] {
            assert_eq!(micro_usd(bad), None, "{bad:?}");
        }
        assert_eq!(usd(12_500_000), "12.5");
        assert_eq!(usd(83_200), "0.0832");
        let limits = AccountLimits {
            per_namespace: None,
            total: Some(Caps {
                price_per_hour: Some("1".into()),
                ..Caps::default()
            }),
        };
        assert!(caps_price(&limits));
        let priced = |micro_usd| Use {
            clusters: 1,
            instances: 1,
            micro_usd,
            ..Use::default()
        };
        let others = vec![("a".to_string(), priced(832_000))];
        assert_eq!(
            check(&limits, &others, "b", priced(168_000), Use::default()),
            Ok(())
        );
        let over = check(&limits, &others, "b", priced(168_001), Use::default());
        assert_eq!(
            over.map_err(|e| e.to_string()),
            Err("limits.total.pricePerHour is $1: other clusters hold $0.832 and this one asks for $0.168".into())
        );
    }

    #[test]
    fn concurrent_admissions_never_overshoot() {
        let limits = AccountLimits {
            per_namespace: None,
            total: Some(caps(None, Some(7), None)),
        };
        let ledger = Arc::new(Ledger::default());
        let admitted: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..10)
                .map(|i| {
                    let ledger = ledger.clone();
                    let limits = limits.clone();
                    s.spawn(move || {
                        ledger
                            .admit(
                                "acct",
                                Some(&limits),
                                &format!("c{i}"),
                                "a",
                                asks(2, 2),
                                &[],
                            )
                            .is_ok()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(false))
                .collect()
        });
        assert_eq!(
            admitted.iter().filter(|a| **a).count(),
            3,
            "10 passes at once, 2 instances each, 7 allowed"
        );
        assert_eq!(ledger.usage("acct").instances, 6);
    }

    #[test]
    fn clusters_not_yet_admitted_count_what_they_run_and_release_frees() {
        let limits = AccountLimits {
            per_namespace: None,
            total: Some(caps(Some(2), Some(5), None)),
        };
        let ledger = Ledger::default();
        let running = Known {
            uid: "old".into(),
            namespace: "a".into(),
            running: asks(4, 8),
        };
        assert!(
            ledger
                .admit(
                    "acct",
                    Some(&limits),
                    "new",
                    "b",
                    asks(2, 2),
                    std::slice::from_ref(&running)
                )
                .is_err(),
            "after a restart, what the old cluster runs is still counted"
        );
        assert!(ledger
            .admit("acct", Some(&limits), "new", "b", asks(1, 2), &[running])
            .is_ok());
        // Its own reservation replaces what it ran; another account's is apart.
        assert!(ledger
            .admit("other", Some(&limits), "elsewhere", "b", asks(5, 2), &[])
            .is_ok());
        assert!(ledger
            .admit("acct", Some(&limits), "old", "a", asks(4, 8), &[])
            .is_ok());
        assert!(
            ledger
                .admit("acct", Some(&limits), "third", "a", asks(0, 0), &[])
                .is_err(),
            "a third cluster"
        );
        ledger.release("new");
        assert!(
            ledger
                .admit("acct", Some(&limits), "third", "a", asks(1, 1), &[])
                .is_ok(),
            "released"
        );
        assert_eq!(
            ledger.usage("acct"),
            Usage {
                clusters: 2,
                instances: 5,
                vcpus: 9,
                ..Usage::default()
            }
        );
    }
}
