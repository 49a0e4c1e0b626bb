//! The VPC: adopted when one carries the cluster's tags, created otherwise,
//! DNS turned on before anything launches into it; or an existing
//! (bring-your-own) VPC checked, never changed. Deleted last of the network.

use futures::future::try_join_all;

use super::Pass;
use crate::aws::subnet::ObservedSubnet;
use crate::aws::vpc::{self, ExistingSubnet, ObservedVpc};
use crate::aws::{AwsClients, AwsResult};
use crate::Error;

/// What to do about the cluster's VPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VpcAction {
    /// One of ours exists (the oldest, when a crash left more than one).
    Adopt(String),
    Create,
}

pub fn plan(observed: &[ObservedVpc]) -> VpcAction {
    // IDs sort by creation within a region well enough to be stable.
    observed
        .iter()
        .map(|v| v.id.as_str())
        .min()
        .map_or(VpcAction::Create, |id| VpcAction::Adopt(id.to_string()))
}

pub async fn ensure(p: Pass<'_>, cidr: &str) -> Result<String, Error> {
    if p.observed.vpcs.len() > 1 {
        let ids: Vec<&str> = p.observed.vpcs.iter().map(|v| v.id.as_str()).collect();
        tracing::warn!(vpcs = ?ids, "more than one VPC carries this cluster's tags; using the oldest");
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
/// naming what is missing.
pub fn check_existing(
    vpc_id: &str,
    subnet_ids: &[String],
    found: Option<Vec<ExistingSubnet>>,
) -> Result<Vec<ObservedSubnet>, Error> {
    let found = found
        .ok_or_else(|| Error::ExistingNetwork(format!("existing VPC {vpc_id} was not found")))?;
    subnet_ids
        .iter()
        .map(|id| {
            let s = found.iter().find(|s| &s.id == id).ok_or_else(|| {
                Error::ExistingNetwork(format!(
                    "existing subnet {id} was not found in VPC {vpc_id}"
                ))
            })?;
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
    check_existing(vpc_id, subnet_ids, found)
}

pub async fn delete(c: &AwsClients, observed: &[ObservedVpc]) -> AwsResult<()> {
    try_join_all(observed.iter().map(|v| vpc::delete(c, &v.id))).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vpc(id: &str) -> ObservedVpc {
        ObservedVpc {
            id: id.into(),
            cidr: "10.0.0.0/16".into(),
        }
    }

    #[test]
    fn plan_adopts_the_oldest_or_creates() {
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
                "two after a crash between create and tag lookup: the oldest",
            ),
        ];
        for (observed, want, why) in rows {
            assert_eq!(plan(&observed), want, "{why}");
        }
    }

    #[test]
    fn existing_network_names_what_is_missing() {
        let subnet = |id: &str, zone: &str, public| ExistingSubnet {
            id: id.into(),
            zone: zone.into(),
            public,
        };
        let found = Some(vec![
            subnet("subnet-a", "us-east-1a", true),
            subnet("subnet-b", "us-east-1b", false),
        ]);
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = check_existing("vpc-1", &ids(&["subnet-b", "subnet-a"]), found.clone())
            .expect("both exist");
        assert_eq!(
            ok.iter()
                .map(|s| (s.id.as_str(), s.public))
                .collect::<Vec<_>>(),
            vec![("subnet-b", false), ("subnet-a", true)],
            "in the spec's order, public as the owner set it"
        );
        let missing =
            check_existing("vpc-1", &ids(&["subnet-c"]), found).expect_err("missing subnet");
        assert!(
            missing
                .to_string()
                .contains("subnet-c was not found in VPC vpc-1"),
            "{missing}"
        );
        let gone = check_existing("vpc-1", &ids(&["subnet-a"]), None).expect_err("missing VPC");
        assert!(matches!(gone, Error::ExistingNetwork(_)), "{gone}");
    }
}
