//! Offerings: an instance type in a zone, bought on demand or as spot. A
//! launch tries a group's offerings in its order of preference (spot ones
//! first for `spotThenOnDemand`, then by `instanceTypes`), in the zone the
//! plan chose and then in the group's other zones; what AWS refuses (no
//! capacity, not offered there, spot limits) is remembered per account and
//! region for a while and skipped, then tried again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::{Market, NodeGroupSpec};
pub use crate::aws::error::is_refusal;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Offering {
    pub instance_type: String,
    pub zone: String,
    pub market: Market,
}

impl std::fmt::Display for Offering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} in {}",
            self.market.as_str(),
            self.instance_type,
            self.zone
        )
    }
}

/// A group's offerings in `zones` (the planned zone first), in the order
/// they are tried: zone by zone, and in each, market by market, type by
/// type.
pub fn offerings(group: &NodeGroupSpec, zones: &[&str]) -> Vec<Offering> {
    let mut out = Vec::new();
    for zone in zones {
        for market in group.markets() {
            for t in group.types() {
                out.push(Offering {
                    instance_type: t.to_string(),
                    zone: zone.to_string(),
                    market,
                });
            }
        }
    }
    out
}

/// AWS's code, when, and how many instances were asked for, by refused
/// offering.
type Refused = HashMap<Offering, (String, Instant, i32)>;

/// Refused offerings per `(AWS account, region)`, remembered for `ttl`:
/// capacity is the account's, whichever CloudAccount asked. A refusal
/// holds for launches of as many instances or more; a smaller one is
/// still tried (one tenant's oversized request does not close the
/// offering to the others' small ones).
pub struct Refusals {
    ttl: Duration,
    refused: Mutex<HashMap<(String, String), Refused>>,
}

impl Refusals {
    pub fn new(ttl: Duration) -> Self {
        Refusals {
            ttl,
            refused: Mutex::new(HashMap::new()),
        }
    }

    /// AWS's code and how long ago it refused `offering` for `count`
    /// instances or fewer, while that is within the window.
    pub fn refused(
        &self,
        key: &(String, String),
        offering: &Offering,
        count: i32,
    ) -> Option<(String, Duration)> {
        let map = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .and_then(|m| m.get(offering))
            .filter(|(_, _, refused)| count >= *refused)
            .map(|(code, at, _)| (code.clone(), at.elapsed()))
            .filter(|(_, age)| *age < self.ttl)
    }

    pub fn refuse(&self, key: &(String, String), offering: Offering, count: i32, code: &str) {
        let mut map = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.ttl;
        let refused = map.entry(key.clone()).or_default();
        refused.retain(|_, (_, at, _)| at.elapsed() < ttl);
        refused.insert(offering, (code.to_string(), Instant::now(), count));
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CapacityType;

    fn group(types: &[&str], capacity: Option<CapacityType>, spot: bool) -> NodeGroupSpec {
        NodeGroupSpec {
            name: "workers".into(),
            instance_types: types.iter().map(|t| t.to_string()).collect(),
            capacity_type: capacity,
            spot,
            count: 1,
            ..Default::default()
        }
    }

    fn names(o: &[Offering]) -> Vec<String> {
        o.iter().map(Offering::to_string).collect()
    }

    #[test]
    fn offerings_in_order_of_preference() {
        let rows: Vec<(NodeGroupSpec, Vec<&str>, Vec<&str>, &str)> = vec![
            (
                group(&["m6i.large", "m5.large"], None, false),
                vec!["a", "b"],
                vec![
                    "onDemand m6i.large in a",
                    "onDemand m5.large in a",
                    "onDemand m6i.large in b",
                    "onDemand m5.large in b",
                ],
                "types in order, the planned zone first",
            ),
            (
                group(
                    &["m6i.large", "m5.large"],
                    Some(CapacityType::SpotThenOnDemand),
                    false,
                ),
                vec!["a"],
                vec![
                    "spot m6i.large in a",
                    "spot m5.large in a",
                    "onDemand m6i.large in a",
                    "onDemand m5.large in a",
                ],
                "every spot offering before any on-demand one",
            ),
            (
                group(&["m6i.large"], None, true),
                vec!["a"],
                vec!["spot m6i.large in a"],
                "spot: true is capacityType: spot",
            ),
            (
                group(&["m6i.large"], Some(CapacityType::Spot), false),
                vec!["a"],
                vec!["spot m6i.large in a"],
                "spot only",
            ),
        ];
        for (g, zones, want, why) in rows {
            assert_eq!(names(&offerings(&g, &zones)), want, "{why}");
        }
        let single = NodeGroupSpec {
            instance_type: "t3.large".into(),
            ..group(&[], None, false)
        };
        assert_eq!(
            names(&offerings(&single, &["a"])),
            vec!["onDemand t3.large in a"],
            "instanceType alone"
        );
    }

    #[test]
    fn refusals_are_remembered_within_their_window_only() {
        let key = ("123456789012".to_string(), "us-east-1".to_string());
        let o = Offering {
            instance_type: "m6i.large".into(),
            zone: "us-east-1a".into(),
            market: Market::Spot,
        };
        let remembered = Refusals::new(Duration::from_secs(60));
        assert_eq!(remembered.refused(&key, &o, 1), None);
        remembered.refuse(&key, o.clone(), 20, "InsufficientInstanceCapacity");
        for count in [20, 500] {
            assert_eq!(
                remembered.refused(&key, &o, count).map(|r| r.0),
                Some("InsufficientInstanceCapacity".to_string()),
                "{count} after 20 refused"
            );
        }
        assert_eq!(
            remembered.refused(&key, &o, 3),
            None,
            "a smaller launch is still tried"
        );
        let other = ("210987654321".to_string(), "us-east-1".to_string());
        assert_eq!(remembered.refused(&other, &o, 20), None, "per AWS account");
        let forgotten = Refusals::new(Duration::ZERO);
        forgotten.refuse(&key, o.clone(), 1, "InsufficientInstanceCapacity");
        assert_eq!(forgotten.refused(&key, &o, 1), None, "past the window");
        assert!(is_refusal(Some("InsufficientInstanceCapacity")));
        assert!(
            !is_refusal(Some("VcpuLimitExceeded")),
            "a quota: the user's"
        );
    }
}
