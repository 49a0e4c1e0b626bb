//! Subnets of the managed network: a public and a private one per zone,
//! carved from the VPC's CIDR deterministically; public ones launch with a
//! public IPv4 address. Deleted after what lives in them.

use futures::future::try_join_all;
use ipnet::Ipv4Net;

use super::Pass;
use super::{got, put, Board, Managed, StepInput, StepResult};
use crate::api::compute_cluster::SubnetStatus;
use crate::aws::subnet::{self, ObservedSubnet};
use crate::aws::{AwsClients, AwsResult};
use crate::cluster::spec::SpecError;
use crate::cluster::status::Progress;
use crate::Error;

/// Extra prefix bits of each subnet: 16 slots, public in 0..8, private in 8..16.
const SUBNET_BITS: u8 = 4;
const PRIVATE_SLOT_OFFSET: u32 = 8;

/// One subnet the managed network needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredSubnet {
    pub zone: String,
    pub public: bool,
    pub cidr: Ipv4Net,
}

/// A public and a private subnet per zone, carved deterministically: zone i
/// gets slot i (public) and slot 8+i (private) of the VPC split 16 ways.
/// Without `internet`, the private ones alone (the same slots).
pub fn carve(
    cidr: Ipv4Net,
    zones: &[String],
    internet: bool,
) -> Result<Vec<DesiredSubnet>, SpecError> {
    let prefix = cidr.prefix_len() + SUBNET_BITS;
    let too_small = SpecError::CidrTooSmall { cidr, prefix };
    if prefix > 28 {
        return Err(too_small);
    }
    let too_many = SpecError::TooManyZones {
        max: PRIVATE_SLOT_OFFSET,
    };
    if zones.len() > PRIVATE_SLOT_OFFSET as usize {
        return Err(too_many);
    }
    let slots: Vec<Ipv4Net> = cidr.subnets(prefix).map_err(|_| too_small)?.collect();
    let mut out = Vec::new();
    for (i, zone) in zones.iter().enumerate() {
        for (public, slot) in [(true, i), (false, i + PRIVATE_SLOT_OFFSET as usize)] {
            let cidr = *slots.get(slot).ok_or_else(|| too_many.clone())?;
            if public && !internet {
                continue;
            }
            out.push(DesiredSubnet {
                zone: zone.clone(),
                public,
                cidr,
            });
        }
    }
    Ok(out)
}

/// The subnets to keep (ours, in the VPC, in a wanted place) and the ones to create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubnetActions {
    pub keep: Vec<ObservedSubnet>,
    pub create: Vec<DesiredSubnet>,
}

pub fn plan(desired: &[DesiredSubnet], observed: &[ObservedSubnet], vpc_id: &str) -> SubnetActions {
    let mut actions = SubnetActions::default();
    for d in desired {
        match observed
            .iter()
            .find(|s| s.vpc_id == vpc_id && s.zone == d.zone && s.public == d.public)
        {
            Some(s) => actions.keep.push(s.clone()),
            None => actions.create.push(d.clone()),
        }
    }
    actions
}

/// Public subnets that do not give launches a public IPv4 address yet (just
/// created, or changed out of band).
pub fn lacking_public_ip(subnets: &[ObservedSubnet]) -> Vec<&str> {
    subnets
        .iter()
        .filter(|s| s.public && !s.map_public_ip)
        .map(|s| s.id.as_str())
        .collect()
}

/// The subnets, in the desired order (zone order, public first).
pub async fn ensure(
    p: Pass<'_>,
    vpc_id: &str,
    desired: &[DesiredSubnet],
) -> Result<Vec<ObservedSubnet>, Error> {
    let SubnetActions { mut keep, create } = plan(desired, &p.observed.subnets, vpc_id);
    let cidrs: Vec<String> = create.iter().map(|d| d.cidr.to_string()).collect();
    let created = try_join_all(
        create
            .iter()
            .zip(&cidrs)
            .map(|(d, cidr)| subnet::create(p.c, &p.spec.owner, vpc_id, &d.zone, cidr, d.public)),
    )
    .await?;
    keep.extend(created);
    keep.sort_by_key(|s| {
        (
            desired
                .iter()
                .position(|d| d.zone == s.zone && d.public == s.public)
                .unwrap_or(usize::MAX),
            s.id.clone(),
        )
    });
    Ok(keep)
}

pub async fn ensure_public_ips(p: Pass<'_>, subnets: &[ObservedSubnet]) -> Result<(), Error> {
    try_join_all(
        lacking_public_ip(subnets)
            .into_iter()
            .map(|id| subnet::map_public_ip(p.c, id)),
    )
    .await?;
    Ok(())
}

pub fn status(subnets: &[ObservedSubnet]) -> Vec<SubnetStatus> {
    subnets
        .iter()
        .map(|s| SubnetStatus {
            id: s.id.clone(),
            zone: s.zone.clone(),
            public: s.public,
            cidr: (!s.cidr.is_empty()).then(|| s.cidr.clone()),
        })
        .collect()
}

pub async fn delete(c: &AwsClients, observed: &[ObservedSubnet]) -> AwsResult<()> {
    try_join_all(observed.iter().map(|s| subnet::delete(c, &s.id))).await?;
    Ok(())
}

/// Step `Subnets`: a public and a private subnet per zone (public only
/// with internet).
pub fn step<'a>(m: &'a Managed, i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move {
        let vpc_id = got(&b.vpc, "the VPC")?;
        put(
            &b.subnets,
            ensure(i.pass, vpc_id, &m.desired_subnets).await?,
        )
    })
}

/// Step `PublicIps`: public addresses for what launches into the public
/// subnets.
pub fn public_ips_step<'a>(_: &'a Managed, i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move {
        ensure_public_ips(i.pass, got(&b.subnets, "the subnets")?).await?;
        put(&b.public_ips, ())
    })
}

/// This kind's part of a deletion pass (its row's `delete`).
pub fn deletion<'a>(
    c: &'a AwsClients,
    _: &'a crate::aws::OwnershipTags,
    o: &'a super::Observed,
) -> super::DeleteResult<'a> {
    super::at_once(delete(c, &o.subnets))
}

/// Row `Subnets`'s learning: the subnets, as status shows them.
pub fn learn(b: &Board, p: &mut Progress) -> bool {
    b.subnets
        .get()
        .map(|s| p.network.subnets = status(s))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones() -> Vec<String> {
        vec!["us-east-1a".to_string(), "us-east-1b".to_string()]
    }

    fn seen(id: &str, vpc: &str, zone: &str, public: bool, map_public_ip: bool) -> ObservedSubnet {
        ObservedSubnet {
            id: id.into(),
            vpc_id: vpc.into(),
            zone: zone.into(),
            cidr: "10.0.0.0/20".into(),
            public,
            map_public_ip,
        }
    }

    #[test]
    fn carves_deterministic_non_overlapping_subnets() {
        let s = carve("10.0.0.0/16".parse().expect("cidr"), &zones(), true).expect("carve");
        let cidrs: Vec<String> = s
            .iter()
            .map(|d| format!("{}:{}:{}", d.zone, d.public, d.cidr))
            .collect();
        assert_eq!(
            cidrs,
            vec![
                "us-east-1a:true:10.0.0.0/20",
                "us-east-1a:false:10.0.128.0/20",
                "us-east-1b:true:10.0.16.0/20",
                "us-east-1b:false:10.0.144.0/20"
            ]
        );
        let small = carve("10.0.0.0/24".parse().expect("cidr"), &zones(), true).expect("carve /24");
        assert!(small.iter().all(|d| d.cidr.prefix_len() == 28));
        assert!(carve("10.0.0.0/25".parse().expect("cidr"), &zones(), true).is_err());
        let private = carve("10.0.0.0/16".parse().expect("cidr"), &zones(), false).expect("carve");
        let private: Vec<String> = private
            .iter()
            .map(|d| format!("{}:{}:{}", d.zone, d.public, d.cidr))
            .collect();
        assert_eq!(
            private,
            vec![
                "us-east-1a:false:10.0.128.0/20",
                "us-east-1b:false:10.0.144.0/20"
            ],
            "without internet: the private subnets alone, in the same slots"
        );
    }

    #[test]
    fn plan_keeps_what_exists_and_creates_the_rest() {
        let desired = carve("10.0.0.0/16".parse().expect("cidr"), &zones(), true).expect("carve");
        // (observed, kept IDs, created (zone, public), why)
        type Row<'a> = (
            Vec<ObservedSubnet>,
            Vec<&'a str>,
            Vec<(&'a str, bool)>,
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (
                vec![],
                vec![],
                vec![
                    ("us-east-1a", true),
                    ("us-east-1a", false),
                    ("us-east-1b", true),
                    ("us-east-1b", false),
                ],
                "a new cluster",
            ),
            (
                vec![seen("subnet-1", "vpc-1", "us-east-1a", true, false)],
                vec!["subnet-1"],
                vec![
                    ("us-east-1a", false),
                    ("us-east-1b", true),
                    ("us-east-1b", false),
                ],
                "a crash after the first create: adopted, not created twice",
            ),
            (
                vec![seen("subnet-9", "vpc-old", "us-east-1a", true, true)],
                vec![],
                vec![
                    ("us-east-1a", true),
                    ("us-east-1a", false),
                    ("us-east-1b", true),
                    ("us-east-1b", false),
                ],
                "a subnet of ours in another VPC is not this VPC's",
            ),
            (
                vec![
                    seen("subnet-1", "vpc-1", "us-east-1a", true, true),
                    seen("subnet-2", "vpc-1", "us-east-1a", false, false),
                    seen("subnet-3", "vpc-1", "us-east-1b", true, true),
                    seen("subnet-4", "vpc-1", "us-east-1b", false, false),
                ],
                vec!["subnet-1", "subnet-2", "subnet-3", "subnet-4"],
                vec![],
                "converged: nothing to do",
            ),
        ];
        for (observed, keep, create, why) in rows {
            let got = plan(&desired, &observed, "vpc-1");
            let kept: Vec<&str> = got.keep.iter().map(|s| s.id.as_str()).collect();
            let created: Vec<(&str, bool)> = got
                .create
                .iter()
                .map(|d| (d.zone.as_str(), d.public))
                .collect();
            assert_eq!((kept, created), (keep, create), "{why}");
        }
    }

    #[test]
    fn public_ip_is_set_where_a_public_subnet_lacks_it() {
        let subnets = vec![
            seen("subnet-new", "vpc-1", "us-east-1a", true, false),
            seen("subnet-set", "vpc-1", "us-east-1b", true, true),
            seen("subnet-private", "vpc-1", "us-east-1a", false, false),
        ];
        assert_eq!(lacking_public_ip(&subnets), vec!["subnet-new"]);
    }
}
