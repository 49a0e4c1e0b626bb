//! NAT gateways and their Elastic IPs: one per zone that needs one (none,
//! the first zone, or every zone), each with an address of ours; gateways of
//! zones that no longer need one deleted, addresses nobody holds released.
//! On deletion the gateways go first and the addresses once AWS lets go.

use std::collections::BTreeMap;

use futures::future::try_join_all;

use super::{busy, Deleted, Looks, Observed, Pass, PendingResult};
use super::{got, put, Board, Managed, StepInput, StepResult};
use crate::api::compute_cluster::NetworkStatus;
use crate::api::NatGateways;
use crate::aws::nat_gateway::{self, NatState, ObservedAddress, ObservedNatGateway};
use crate::aws::subnet::ObservedSubnet;
use crate::aws::tags::{items, Scope};
use crate::aws::token::client_token;
use crate::aws::{AwsClients, AwsError, AwsResult, OwnershipTags};
use crate::cluster::catching_up::look_briefly;
use crate::cluster::status::Progress;
use crate::Error;

/// Zones that get a NAT gateway.
pub fn nat_zones(nat: NatGateways, zones: &[String]) -> Vec<String> {
    match nat {
        NatGateways::None => vec![],
        NatGateways::Single => zones.iter().take(1).cloned().collect(),
        NatGateways::PerZone => zones.to_vec(),
    }
}

/// Which Elastic IP each NAT zone uses, which to allocate and which to release.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressActions {
    /// Zone → allocation ID of an address of ours that is kept.
    pub keep: BTreeMap<String, String>,
    pub allocate: Vec<String>,
    pub release: Vec<String>,
}

/// One Elastic IP per NAT zone: the one a live NAT gateway of ours holds, or
/// a free one. An address still held by a gateway that is gone is not waited
/// for: a new one is allocated, and the stale one released once AWS lets go
/// (never while a gateway, live or deleting, holds it).
pub fn plan_addresses(
    nat_zones: &[String],
    addresses: &[ObservedAddress],
    gateways: &[ObservedNatGateway],
) -> AddressActions {
    let held_by = |states: &[NatState]| -> Vec<&str> {
        gateways
            .iter()
            .filter(|n| states.contains(&n.state))
            .flat_map(|n| n.allocation_ids.iter().map(String::as_str))
            .collect()
    };
    let live = held_by(&[NatState::Pending, NatState::Available]);
    let deleting = held_by(&[NatState::Deleting]);
    let mut actions = AddressActions::default();
    for zone in nat_zones {
        let in_zone: Vec<_> = addresses
            .iter()
            .filter(|a| a.zone.as_deref() == Some(zone.as_str()))
            .collect();
        let usable = in_zone
            .iter()
            .find(|a| live.contains(&a.allocation_id.as_str()))
            .or_else(|| in_zone.iter().find(|a| a.association_id.is_none()));
        match usable {
            Some(a) => {
                actions.keep.insert(zone.clone(), a.allocation_id.clone());
            }
            None => actions.allocate.push(zone.clone()),
        }
    }
    for a in addresses {
        let id = a.allocation_id.as_str();
        let kept = actions.keep.values().any(|k| k == id);
        if !kept && !live.contains(&id) && !deleting.contains(&id) {
            actions.release.push(a.allocation_id.clone());
        }
    }
    actions
}

/// Which gateways are kept (zone → (ID, state)), created and deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayActions {
    pub keep: BTreeMap<String, (String, NatState)>,
    pub create: Vec<String>,
    pub delete: Vec<String>,
}

pub fn plan_gateways(nat_zones: &[String], gateways: &[ObservedNatGateway]) -> GatewayActions {
    let live = |n: &&ObservedNatGateway| matches!(n.state, NatState::Pending | NatState::Available);
    let mut actions = GatewayActions::default();
    for zone in nat_zones {
        match gateways
            .iter()
            .filter(live)
            .find(|n| n.zone.as_deref() == Some(zone.as_str()))
        {
            Some(n) => {
                actions.keep.insert(zone.clone(), (n.id.clone(), n.state));
            }
            None => actions.create.push(zone.clone()),
        }
    }
    actions.delete = gateways
        .iter()
        .filter(live)
        .filter(|n| n.zone.as_ref().is_none_or(|z| !nat_zones.contains(z)))
        .map(|n| n.id.clone())
        .collect();
    actions
}

/// The idempotency token of a gateway's create. The same inputs, including
/// the gateways known before (status), give the same token: a retry after a
/// crash returns the gateway created then, while replacing one deleted out
/// of band gets a new token.
pub fn gateway_token(uid: &str, zone: &str, allocation: &str, known: &[String]) -> String {
    let mut parts = vec![uid, zone, allocation];
    parts.extend(known.iter().map(String::as_str));
    client_token("byoc-nat", &parts)
}

/// Zone → allocation ID of each NAT zone's Elastic IP.
pub async fn ensure_addresses(
    p: Pass<'_>,
    nat_zones: &[String],
) -> Result<BTreeMap<String, String>, Error> {
    let actions = plan_addresses(nat_zones, &p.observed.addresses, &p.observed.nat_gateways);
    let created = try_join_all(
        actions
            .allocate
            .iter()
            .map(|z| nat_gateway::allocate_address(p.c, &p.spec.owner, z)),
    )
    .await?;
    let mut by_zone = actions.keep;
    by_zone.extend(actions.allocate.into_iter().zip(created));
    for id in &actions.release {
        if let Err(e) = nat_gateway::release_address(p.c, id).await {
            tracing::info!(allocation = %id, error = %e, "stale Elastic IP not released yet");
        }
    }
    Ok(by_zone)
}

/// NAT gateways per zone: `zone → (id, state)`. `known` are the gateway IDs
/// in status (part of the client token).
pub async fn ensure_gateways(
    p: Pass<'_>,
    nat_zones: &[String],
    public_subnets: &[&ObservedSubnet],
    addresses: &BTreeMap<String, String>,
    known: &[String],
) -> Result<BTreeMap<String, (String, NatState)>, Error> {
    let actions = plan_gateways(nat_zones, &p.observed.nat_gateways);
    for id in &actions.delete {
        nat_gateway::delete(p.c, id).await?;
    }
    let created = try_join_all(actions.create.iter().map(|zone| async move {
        let subnet = public_subnets
            .iter()
            .find(|s| &s.zone == zone)
            .ok_or_else(|| {
                Error::Internal(format!("no public subnet in {zone} for its NAT gateway"))
            })?;
        let allocation = addresses.get(zone).ok_or_else(|| {
            Error::Internal(format!("no Elastic IP for the NAT gateway in {zone}"))
        })?;
        let token = gateway_token(&p.spec.owner.uid, zone, allocation, known);
        let id =
            nat_gateway::create(p.c, &p.spec.owner, zone, &subnet.id, allocation, &token).await?;
        Ok::<_, Error>((zone.clone(), id))
    }))
    .await?;
    let new: Vec<String> = created.iter().map(|(_, id)| id.clone()).collect();
    let mut out = actions.keep;
    out.extend(
        created
            .into_iter()
            .map(|(zone, id)| (zone, (id, NatState::Pending))),
    );
    // Usually a minute or two on AWS; look again shortly in case it is
    // quicker, so the private routes need not wait for the next pass.
    let states = look_briefly(
        || async {
            let now = items(nat_gateway::describe(p.c, Scope::Cluster(&p.spec.owner)).await?);
            let states: Vec<(String, NatState)> = now
                .into_iter()
                .filter(|n| new.contains(&n.id))
                .map(|n| (n.id, n.state))
                .collect();
            let available = states
                .iter()
                .filter(|(_, s)| *s == NatState::Available)
                .count();
            Ok::<_, Error>((states, available == new.len()))
        },
        !new.is_empty(),
    )
    .await?;
    for (id, state) in states.unwrap_or_default() {
        if let Some(entry) = out.values_mut().find(|(known, _)| *known == id) {
            entry.1 = state;
        }
    }
    Ok(out)
}

/// Deletes the gateways, and once AWS has (looking again briefly), releases
/// the addresses.
pub async fn delete(
    c: &AwsClients,
    owner: &OwnershipTags,
    gateways: &[ObservedNatGateway],
    addresses: &[ObservedAddress],
) -> AwsResult<Deleted> {
    let live = gateways
        .iter()
        .filter(|n| matches!(n.state, NatState::Pending | NatState::Available));
    try_join_all(live.map(|n| nat_gateway::delete(c, &n.id))).await?;
    if gateways.iter().any(|n| n.state != NatState::Gone) {
        let gone = look_briefly(
            || async {
                let now = items(nat_gateway::describe(c, Scope::Cluster(owner)).await?);
                let gone = now.iter().all(|n| n.state == NatState::Gone);
                Ok::<_, AwsError>((gone, gone))
            },
            true,
        )
        .await?;
        if gone != Some(true) {
            return Ok(Deleted::Ending("NAT gateways to be deleted"));
        }
    }
    try_join_all(
        addresses
            .iter()
            .map(|a| nat_gateway::release_address(c, &a.allocation_id)),
    )
    .await?;
    Ok(Deleted::All)
}

/// Step `Addresses`: an Elastic IP per NAT gateway.
pub fn addresses_step<'a>(m: &'a Managed, i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move { put(&b.addresses, ensure_addresses(i.pass, &m.nat_zones).await?) })
}

/// Step `NatGateways`: the NAT gateways, in the public subnets, with the
/// Elastic IPs.
pub fn step<'a>(m: &'a Managed, i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move {
        let subnets = got(&b.subnets, "the subnets")?;
        let public: Vec<&ObservedSubnet> = subnets.iter().filter(|s| s.public).collect();
        let addresses = got(&b.addresses, "the Elastic IPs")?;
        let nats = ensure_gateways(
            i.pass,
            &m.nat_zones,
            &public,
            addresses,
            &i.known.nat_gateway_ids,
        );
        put(&b.nats, nats.await?)
    })
}

/// This kind's part of a deletion pass (its row's `delete`).
pub fn deletion<'a>(
    c: &'a AwsClients,
    owner: &'a crate::aws::OwnershipTags,
    o: &'a super::Observed,
) -> super::DeleteResult<'a> {
    Box::pin(async move { delete(c, owner, &o.nat_gateways, &o.addresses).await })
}

/// AWS is still making the gateway: what the pass and the shared wait
/// both go by.
pub fn making(state: NatState) -> bool {
    state == NatState::Pending
}

/// Rows `Addresses` and `NatGateways` off their shape: gateways or
/// addresses an older spec made, or gateways status still names.
pub fn leftover(o: &Observed, known: &NetworkStatus) -> bool {
    !o.addresses.is_empty()
        || o.nat_gateways.iter().any(|n| n.state != NatState::Gone)
        || !known.nat_gateway_ids.is_empty()
}

/// Row `NatGateways`'s learning: the gateways, and whether every one is
/// available.
pub fn learn(b: &Board, p: &mut Progress) -> bool {
    let Some(nats) = b.nats.get() else {
        return false;
    };
    p.network.nat_gateway_ids = nats.values().map(|(id, _)| id.clone()).collect();
    let ready = nats.values().all(|(_, s)| *s == NatState::Available);
    if !ready {
        p.waiting.push("NAT gateways to become available".into());
        p.aws_creating |= nats.values().any(|(_, s)| making(*s));
    }
    ready
}

/// Row `NatGateways`'s part of the shared wait.
pub fn pending<'a>(c: &'a AwsClients, scope: Scope<'a>, _: Looks) -> PendingResult<'a> {
    busy(true, nat_gateway::describe(c, scope), |n| making(n.state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones(z: &[&str]) -> Vec<String> {
        z.iter().map(|s| s.to_string()).collect()
    }

    fn eip(id: &str, zone: &str, associated: bool) -> ObservedAddress {
        ObservedAddress {
            allocation_id: id.into(),
            zone: Some(zone.into()),
            association_id: associated.then(|| format!("eipassoc-{id}")),
        }
    }

    fn nat(id: &str, zone: &str, state: NatState, eip: &str) -> ObservedNatGateway {
        ObservedNatGateway {
            id: id.into(),
            zone: Some(zone.into()),
            subnet_id: format!("subnet-{zone}"),
            state,
            allocation_ids: vec![eip.into()],
        }
    }

    #[test]
    fn layouts() {
        let z = zones(&["a", "b", "c"]);
        assert!(nat_zones(NatGateways::None, &z).is_empty());
        assert_eq!(nat_zones(NatGateways::Single, &z), vec!["a"]);
        assert_eq!(nat_zones(NatGateways::PerZone, &z), z);
    }

    #[test]
    fn plan_addresses_table() {
        use NatState::*;
        // (NAT zones, addresses, gateways, keep, allocate, release, why)
        type Row<'a> = (
            Vec<String>,
            Vec<ObservedAddress>,
            Vec<ObservedNatGateway>,
            Vec<(&'a str, &'a str)>,
            Vec<&'a str>,
            Vec<&'a str>,
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (zones(&["a"]), vec![], vec![], vec![], vec!["a"], vec![], "a new cluster allocates"),
            (
                zones(&["a"]),
                vec![eip("eip-1", "a", false)],
                vec![],
                vec![("a", "eip-1")],
                vec![],
                vec![],
                "a crash after the allocation: the free address is used, none allocated twice",
            ),
            (
                zones(&["a"]),
                vec![eip("eip-1", "a", true)],
                vec![nat("nat-1", "a", Available, "eip-1")],
                vec![("a", "eip-1")],
                vec![],
                vec![],
                "converged: the gateway's address",
            ),
            (
                zones(&["a"]),
                vec![eip("eip-1", "a", true)],
                vec![nat("nat-1", "a", Deleting, "eip-1")],
                vec![],
                vec!["a"],
                vec![],
                "a gateway deleted out of band still holds its address: a new one, the old kept until AWS lets go",
            ),
            (
                zones(&["a"]),
                vec![eip("eip-1", "a", true), eip("eip-2", "a", true)],
                vec![nat("nat-2", "a", Pending, "eip-2")],
                vec![("a", "eip-2")],
                vec![],
                vec!["eip-1"],
                "a stale address, no longer held by anything, is released",
            ),
            (
                zones(&[]),
                vec![eip("eip-1", "a", false)],
                vec![],
                vec![],
                vec![],
                vec!["eip-1"],
                "NAT turned off: the free address is released",
            ),
            (
                zones(&["a", "b"]),
                vec![eip("eip-1", "a", true)],
                vec![nat("nat-1", "a", Available, "eip-1")],
                vec![("a", "eip-1")],
                vec!["b"],
                vec![],
                "single to per-zone: the second zone allocates",
            ),
        ];
        for (nat_zones, addresses, gateways, keep, allocate, release, why) in rows {
            let got = plan_addresses(&nat_zones, &addresses, &gateways);
            let want = AddressActions {
                keep: keep
                    .iter()
                    .map(|(z, id)| (z.to_string(), id.to_string()))
                    .collect(),
                allocate: allocate.iter().map(|s| s.to_string()).collect(),
                release: release.iter().map(|s| s.to_string()).collect(),
            };
            assert_eq!(got, want, "{why}");
        }
    }

    #[test]
    fn plan_gateways_table() {
        use NatState::*;
        // (NAT zones, gateways, kept zones, create, delete, why)
        type Row<'a> = (
            Vec<String>,
            Vec<ObservedNatGateway>,
            Vec<&'a str>,
            Vec<&'a str>,
            Vec<&'a str>,
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (
                zones(&["a", "b"]),
                vec![],
                vec![],
                vec!["a", "b"],
                vec![],
                "a new cluster",
            ),
            (
                zones(&["a", "b"]),
                vec![nat("nat-1", "a", Pending, "eip-1")],
                vec!["a"],
                vec!["b"],
                vec![],
                "half created (a crash after the first): the pending one is kept",
            ),
            (
                zones(&["a"]),
                vec![
                    nat("nat-1", "a", Deleting, "eip-1"),
                    nat("nat-0", "a", Gone, "eip-0"),
                ],
                vec![],
                vec!["a"],
                vec![],
                "deleted out of band: replaced",
            ),
            (
                zones(&["a"]),
                vec![
                    nat("nat-1", "a", Available, "eip-1"),
                    nat("nat-2", "b", Available, "eip-2"),
                ],
                vec!["a"],
                vec![],
                vec!["nat-2"],
                "per-zone to single: the other zone's gateway goes",
            ),
            (
                zones(&[]),
                vec![
                    nat("nat-1", "a", Available, "eip-1"),
                    nat("nat-2", "b", Deleting, "eip-2"),
                ],
                vec![],
                vec![],
                vec!["nat-1"],
                "NAT turned off: live ones deleted, a deleting one left to AWS",
            ),
        ];
        for (nat_zones, gateways, keep, create, delete, why) in rows {
            let got = plan_gateways(&nat_zones, &gateways);
            let kept: Vec<&str> = got.keep.keys().map(String::as_str).collect();
            assert_eq!(kept, keep, "{why}: kept");
            assert_eq!(got.create, create, "{why}: created");
            assert_eq!(got.delete, delete, "{why}: deleted");
        }
    }

    #[test]
    fn gateway_tokens_are_stable_and_change_with_what_was_known() {
        let first = gateway_token("uid-1", "us-east-1a", "eipalloc-1", &[]);
        assert_eq!(
            first,
            gateway_token("uid-1", "us-east-1a", "eipalloc-1", &[])
        );
        assert_eq!(first, "byoc-nat-8fa6693f7ce80e39");
        let replacing = gateway_token("uid-1", "us-east-1a", "eipalloc-1", &["nat-gone".into()]);
        assert_ne!(first, replacing, "a replacement is a new create");
        assert!(first.len() <= 64);
    }
}
