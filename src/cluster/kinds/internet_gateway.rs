//! The internet gateway of the managed network: the one attached to the VPC,
//! else a free one of ours attached, else a new one. Detached and deleted
//! before the subnets.

use futures::future::try_join_all;

use super::Pass;
use super::{got, put, Board, Managed, StepInput, StepResult};
use crate::aws::internet_gateway::{self, ObservedInternetGateway};
use crate::aws::{AwsClients, AwsResult};
use crate::cluster::status::Progress;
use crate::Error;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayAction {
    Keep(String),
    /// Ours but detached (a crash between create and attach): attach it.
    Attach(String),
    Create,
}

pub fn plan(observed: &[ObservedInternetGateway], vpc_id: &str) -> GatewayAction {
    if let Some(g) = observed
        .iter()
        .find(|g| g.attached_to.iter().any(|v| v == vpc_id))
    {
        return GatewayAction::Keep(g.id.clone());
    }
    match observed.iter().find(|g| g.attached_to.is_empty()) {
        Some(g) => GatewayAction::Attach(g.id.clone()),
        None => GatewayAction::Create,
    }
}

pub async fn ensure(p: Pass<'_>, vpc_id: &str) -> Result<String, Error> {
    let id = match plan(&p.observed.internet_gateways, vpc_id) {
        GatewayAction::Keep(id) => return Ok(id),
        GatewayAction::Attach(id) => id,
        GatewayAction::Create => internet_gateway::create(p.c, &p.spec.owner).await?,
    };
    internet_gateway::attach(p.c, &id, vpc_id).await?;
    Ok(id)
}

pub async fn delete(c: &AwsClients, observed: &[ObservedInternetGateway]) -> AwsResult<()> {
    try_join_all(observed.iter().map(|g| internet_gateway::delete(c, g))).await?;
    Ok(())
}

/// Step `InternetGateway`: none without internet.
pub fn step<'a>(m: &'a Managed, i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move {
        if !m.internet {
            return Ok(());
        }
        put(&b.igw, ensure(i.pass, got(&b.vpc, "the VPC")?).await?)
    })
}

/// This kind's part of a deletion pass (its row's `delete`).
pub fn deletion<'a>(
    c: &'a AwsClients,
    _: &'a crate::aws::OwnershipTags,
    o: &'a super::Observed,
) -> super::DeleteResult<'a> {
    super::at_once(delete(c, &o.internet_gateways))
}

/// Row `InternetGateway`'s learning: its ID.
pub fn learn(b: &Board, p: &mut Progress) -> bool {
    let id = b.igw.get();
    id.map(|id| p.network.internet_gateway_id = Some(id.clone()))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn igw(id: &str, attached: &[&str]) -> ObservedInternetGateway {
        ObservedInternetGateway {
            id: id.into(),
            attached_to: attached.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn plan_keeps_attaches_or_creates() {
        let rows = vec![
            (vec![], GatewayAction::Create, "none of ours"),
            (
                vec![igw("igw-1", &["vpc-1"])],
                GatewayAction::Keep("igw-1".into()),
                "attached",
            ),
            (
                vec![igw("igw-1", &[])],
                GatewayAction::Attach("igw-1".into()),
                "a crash between create and attach",
            ),
            (
                vec![igw("igw-old", &["vpc-old"])],
                GatewayAction::Create,
                "ours, attached to another VPC: left for deletion",
            ),
            (
                vec![igw("igw-free", &[]), igw("igw-1", &["vpc-1"])],
                GatewayAction::Keep("igw-1".into()),
                "the attached one wins over a free one",
            ),
        ];
        for (observed, want, why) in rows {
            assert_eq!(plan(&observed, "vpc-1"), want, "{why}");
        }
    }
}
