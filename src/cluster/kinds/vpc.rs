//! The VPC: adopted when one carries the cluster's tags, created otherwise,
//! DNS turned on before anything launches into it; or an existing
//! (bring-your-own) VPC checked, never changed. Deleted last of the network.

use futures::future::try_join_all;

use super::Pass;
use super::{got, put, Board, Layout, Managed, StepInput, StepResult};
use crate::aws::subnet::ObservedSubnet;
use crate::aws::vpc::{self, ExistingVpc, ObservedVpc};
use crate::aws::{AwsClients, AwsResult, OwnershipTags};
use crate::cluster::status::Progress;
use crate::{Brought, Error, MissingNetwork};

/// What to do about the cluster's VPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VpcAction {
    /// One of ours exists (when a crash left more than one, the one with the
    /// lowest ID: a choice every pass and replica makes the same way).
    Adopt(String),
    Create,
}

pub fn plan(observed: &[ObservedVpc]) -> VpcAction {
    // EC2 IDs are random, not ordered by creation: the lowest is merely a
    // choice that stays the same from pass to pass.
    observed
        .iter()
        .map(|v| v.id.as_str())
        .min()
        .map_or(VpcAction::Create, |id| VpcAction::Adopt(id.to_string()))
}

pub async fn ensure(p: Pass<'_>, cidr: &str) -> Result<String, Error> {
    if p.observed.vpcs.len() > 1 {
        let ids: Vec<&str> = p.observed.vpcs.iter().map(|v| v.id.as_str()).collect();
        tracing::warn!(vpcs = ?ids, "more than one VPC carries this cluster's tags; using the lowest ID");
    }
    match plan(&p.observed.vpcs) {
        VpcAction::Adopt(id) => Ok(id),
        VpcAction::Create => Ok(vpc::create(p.c, &p.spec.owner, cidr).await?),
    }
}

/// DNS attributes for a VPC the status does not know yet (`known`): one
/// created now, or adopted after a crash that may have come before they
/// were set. Status learns the VPC once they are.
pub async fn ensure_dns(p: Pass<'_>, vpc_id: &str, known: Option<&str>) -> Result<(), Error> {
    if known != Some(vpc_id) {
        vpc::enable_dns(p.c, vpc_id).await?;
    }
    Ok(())
}

/// The named subnets of an existing VPC, as the nodes see them; an error
/// naming what is missing, or what the operator made for another cluster
/// or installation (never launched into: it is theirs).
pub fn check_existing(
    owner: &OwnershipTags,
    vpc_id: &str,
    subnet_ids: &[String],
    found: Option<ExistingVpc>,
) -> Result<Vec<ObservedSubnet>, Error> {
    let found = found.ok_or_else(|| MissingNetwork::Vpc {
        vpc_id: vpc_id.to_string(),
    })?;
    let not_ours = |brought: Brought, claim| {
        owner
            .claim_of_another(claim)
            .map(|owner| Error::NotOursToUse { brought, owner })
    };
    if let Some(e) = found
        .claim
        .as_ref()
        .and_then(|c| not_ours(Brought::Vpc(vpc_id.to_string()), c))
    {
        return Err(e);
    }
    subnet_ids
        .iter()
        .map(|id| {
            let s = found.subnets.iter().find(|s| &s.id == id).ok_or_else(|| {
                MissingNetwork::Subnet {
                    id: id.clone(),
                    vpc_id: vpc_id.to_string(),
                }
            })?;
            if let Some(e) = s
                .claim
                .as_ref()
                .and_then(|c| not_ours(Brought::Subnet(id.clone()), c))
            {
                return Err(e);
            }
            Ok(ObservedSubnet {
                id: s.id.clone(),
                vpc_id: vpc_id.to_string(),
                zone: s.zone.clone(),
                cidr: String::new(),
                public: s.public,
                // Not ours to change: as the owner set it.
                map_public_ip: true,
            })
        })
        .collect()
}

pub async fn existing(
    p: Pass<'_>,
    vpc_id: &str,
    subnet_ids: &[String],
) -> Result<Vec<ObservedSubnet>, Error> {
    let found = vpc::existing_subnets(p.c, vpc_id).await?;
    check_existing(&p.spec.owner, vpc_id, subnet_ids, found)
}

pub async fn delete(c: &AwsClients, observed: &[ObservedVpc]) -> AwsResult<()> {
    try_join_all(observed.iter().map(|v| vpc::delete(c, &v.id))).await?;
    Ok(())
}

/// Step `Vpc`: the managed network's VPC; or a bring-your-own network
/// checked (never changed), its subnets what the nodes launch into.
pub fn step<'a>(i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move {
        match i.layout {
            Layout::Managed(m) => put(&b.vpc, ensure(i.pass, &m.cidr.to_string()).await?),
            Layout::Existing { vpc_id, subnet_ids } => {
                put(&b.subnets, existing(i.pass, vpc_id, subnet_ids).await?)?;
                // Its DNS is the owner's, as every other network step's
                // part (`Run::Managed`).
                put(&b.dns, ())?;
                put(&b.vpc, vpc_id.clone())
            }
        }
    })
}

/// Step `VpcDns`: the VPC's DNS attributes.
pub fn dns_step<'a>(_: &'a Managed, i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move {
        ensure_dns(i.pass, got(&b.vpc, "the VPC")?, i.known.vpc_id.as_deref()).await?;
        put(&b.dns, ())
    })
}

/// Row `VpcDns`'s learning: the VPC's ID goes into status once its DNS
/// is set (a VPC status knows is not checked again).
pub fn learn_dns(b: &Board, p: &mut Progress) -> bool {
    match (b.vpc.get(), b.dns.get()) {
        (Some(id), Some(())) => {
            p.network.vpc_id = Some(id.clone());
            true
        }
        _ => false,
    }
}

/// This kind's part of a deletion pass (its row's `delete`).
pub fn deletion<'a>(
    c: &'a AwsClients,
    _: &'a crate::aws::OwnershipTags,
    o: &'a super::Observed,
) -> super::DeleteResult<'a> {
    super::at_once(delete(c, &o.vpcs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::vpc::ExistingSubnet;

    fn vpc(id: &str) -> ObservedVpc {
        ObservedVpc {
            id: id.into(),
            cidr: "10.0.0.0/16".into(),
        }
    }

    #[test]
    fn plan_adopts_the_lowest_id_or_creates() {
        let rows: Vec<(Vec<ObservedVpc>, VpcAction, &str)> = vec![
            (vec![], VpcAction::Create, "nothing of ours"),
            (
                vec![vpc("vpc-2")],
                VpcAction::Adopt("vpc-2".into()),
                "status lost after a crash: adopted",
            ),
            (
                vec![vpc("vpc-9"), vpc("vpc-3")],
                VpcAction::Adopt("vpc-3".into()),
                "two after a crash between create and tag lookup: the lowest ID, every time",
            ),
        ];
        for (observed, want, why) in rows {
            assert_eq!(plan(&observed), want, "{why}");
        }
    }

    fn owner() -> OwnershipTags {
        OwnershipTags::of_test_cluster("u-1")
    }

    fn subnet(id: &str, zone: &str, public: bool) -> ExistingSubnet {
        ExistingSubnet {
            id: id.into(),
            zone: zone.into(),
            public,
            claim: None,
        }
    }

    #[test]
    fn existing_network_names_what_is_missing() {
        let found = Some(ExistingVpc {
            claim: None,
            subnets: vec![
                subnet("subnet-a", "us-east-1a", true),
                subnet("subnet-b", "us-east-1b", false),
            ],
        });
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let check =
            |subnets: &[&str], found| check_existing(&owner(), "vpc-1", &ids(subnets), found);
        let ok = check(&["subnet-b", "subnet-a"], found.clone()).expect("both exist");
        assert_eq!(
            ok.iter()
                .map(|s| (s.id.as_str(), s.public))
                .collect::<Vec<_>>(),
            vec![("subnet-b", false), ("subnet-a", true)],
            "in the spec's order, public as the owner set it"
        );
        let missing = check(&["subnet-c"], found).expect_err("missing subnet");
        assert!(
            missing
                .to_string()
                .contains("subnet-c was not found in VPC vpc-1"),
            "{missing}"
        );
        let gone = check(&["subnet-a"], None).expect_err("missing VPC");
        assert!(matches!(gone, Error::ExistingNetwork(_)), "{gone}");
    }

    #[test]
    fn another_clusters_or_installations_network_is_refused() {
        let claim = |uid: &str, installation: Option<&str>| {
            Some((uid.to_string(), installation.map(String::from)))
        };
        let ids = vec!["subnet-a".to_string()];
        // (VPC's claim, subnet's claim, refused)
        let rows = [
            (None, None, false),
            (claim("u-1", Some("inst-a")), None, false),
            (claim("u-2", Some("inst-a")), None, true),
            (claim("u-2", None), None, true),
            (None, claim("u-1", Some("inst-b")), true),
            (None, claim("u-3", Some("inst-a")), true),
        ];
        for (vpc_claim, subnet_claim, refused) in rows {
            let found = ExistingVpc {
                claim: vpc_claim.clone(),
                subnets: vec![ExistingSubnet {
                    claim: subnet_claim.clone(),
                    ..subnet("subnet-a", "us-east-1a", false)
                }],
            };
            let got = check_existing(&owner(), "vpc-1", &ids, Some(found));
            assert_eq!(
                matches!(got, Err(Error::NotOursToUse { .. })),
                refused,
                "{vpc_claim:?} {subnet_claim:?}: {got:?}"
            );
        }
    }
}
