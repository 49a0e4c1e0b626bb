//! VPC endpoints (`network.endpoints`): a gateway endpoint per gateway
//! service on every route table the cluster manages, an interface endpoint
//! per other service in the private subnets, with the endpoints' own
//! security group. The decision is pure (`plan`); `ensure` carries it out.

use std::collections::BTreeSet;

use futures::future::try_join_all;

use super::{busy, iam::iam_name, security_group, Deleted, Looks, Observed, Pass, PendingResult};
use super::{got, put, Board, Managed, StepInput, StepResult};
use crate::api::compute_cluster::NetworkStatus;
use crate::api::EndpointPolicy;
use crate::aws::endpoint::{self, is_gateway, Attachments, EndpointState, ObservedEndpoint};
use crate::aws::security_group::{GroupPart, Permission, Source};
use crate::aws::tags::{items, Scope};
use crate::aws::token::client_token;
use crate::aws::{AwsClients, AwsError, AwsResult, OwnershipTags};
use crate::cluster::catching_up::look_briefly;
use crate::cluster::status::Progress;
use crate::Error;
use serde_json::{json, Value};

/// Where the endpoints go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Every route table the cluster manages.
    pub route_table_ids: Vec<String>,
    /// The private subnets, one per zone.
    pub private_subnet_ids: Vec<String>,
    /// The endpoints' security group.
    pub security_group_id: String,
}

/// The policy document of `policy` for endpoints in `account_id`: only
/// that account's principals, or AWS's default full access.
pub fn policy_document(policy: EndpointPolicy, account_id: &str) -> Value {
    match policy {
        EndpointPolicy::Account => json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "ThisAccountOnly",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "*",
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:PrincipalAccount": account_id}}
            }]
        }),
        EndpointPolicy::Full => json!({
            "Version": "2008-10-17",
            "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]
        }),
    }
}

/// What the endpoints need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointActions {
    /// `(service, where)`.
    pub create: Vec<(String, Attachments)>,
    /// `(endpoint ID, gateway, add, remove)`.
    pub modify: Vec<(String, bool, Vec<String>, Vec<String>)>,
    /// Endpoints of services no longer asked for, and second ones of a
    /// service (kept: the lowest ID, the same choice every pass).
    pub delete: Vec<String>,
    /// The endpoint kept for each service asked for.
    pub kept: Vec<String>,
    /// Kept endpoints whose policy is not the one wanted.
    pub repolicy: Vec<String>,
}

/// `services`: what the spec asks for; `policy`: the document each is to
/// have; `observed`: the cluster's endpoints.
pub fn plan(
    services: &[String],
    at: &Placement,
    policy: &Value,
    observed: &[ObservedEndpoint],
) -> EndpointActions {
    let mut actions = EndpointActions::default();
    let mut live: Vec<&ObservedEndpoint> = observed.iter().filter(|e| e.state.is_live()).collect();
    live.sort_by(|a, b| a.id.cmp(&b.id));
    let mut served = BTreeSet::new();
    for e in live {
        let wanted = services.contains(&e.service) && is_gateway(&e.service) == e.gateway;
        if !wanted || !served.insert(e.service.clone()) {
            actions.delete.push(e.id.clone());
            continue;
        }
        actions.kept.push(e.id.clone());
        if e.policy.as_ref() != Some(policy) {
            actions.repolicy.push(e.id.clone());
        }
        let (have, want) = if e.gateway {
            (&e.route_table_ids, &at.route_table_ids)
        } else {
            (&e.subnet_ids, &at.private_subnet_ids)
        };
        let add: Vec<String> = want.iter().filter(|x| !have.contains(x)).cloned().collect();
        let remove: Vec<String> = have.iter().filter(|x| !want.contains(x)).cloned().collect();
        if !add.is_empty() || !remove.is_empty() {
            actions.modify.push((e.id.clone(), e.gateway, add, remove));
        }
    }
    for service in services.iter().filter(|s| !served.contains(*s)) {
        let attachments = if is_gateway(service) {
            Attachments::Gateway {
                route_table_ids: at.route_table_ids.clone(),
            }
        } else {
            Attachments::Interface {
                subnet_ids: at.private_subnet_ids.clone(),
                security_group_id: at.security_group_id.clone(),
            }
        };
        actions.create.push((service.clone(), attachments));
    }
    actions
}

/// The one rule of the endpoints' group: HTTPS from the VPC.
pub fn https_from(cidr: &str) -> Permission {
    Permission {
        protocol: "tcp".into(),
        from_port: Some(443),
        to_port: Some(443),
        source: Source::Cidr(cidr.into()),
    }
}

/// The endpoints' security group in `vpc_id`, made when missing, holding
/// exactly HTTPS from `cidr`.
pub async fn ensure_group(p: Pass<'_>, vpc_id: &str, cidr: &str) -> Result<String, Error> {
    let name = format!("{}-endpoints", iam_name(&p.spec.owner));
    security_group::ensure_group(p, vpc_id, GroupPart::Endpoints, &name, |_| {
        vec![https_from(cidr)]
    })
    .await
}

/// One create per service: the same token for a retry after a crash (it
/// returns the endpoint made then); a different one once the endpoints
/// known before (status) changed, so one deleted out of band is made anew.
pub fn endpoint_token(uid: &str, service: &str, known: &[String]) -> String {
    let mut parts = vec![uid, service];
    parts.extend(known.iter().map(String::as_str));
    client_token("byoc-vpce", &parts)
}

/// The endpoints in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointsDone {
    pub ids: Vec<String>,
    /// Every one is available.
    pub available: bool,
}

/// Brings the endpoints to `services` at `at`, usable as `policy` says;
/// `known`: the endpoint IDs status held before this pass.
pub async fn ensure(
    p: Pass<'_>,
    vpc_id: &str,
    services: &[String],
    policy: EndpointPolicy,
    at: &Placement,
    known: &[String],
) -> Result<EndpointsDone, Error> {
    let policy = policy_document(policy, p.account_id);
    let actions = plan(services, at, &policy, &p.observed.endpoints);
    endpoint::delete(p.c, &actions.delete).await?;
    try_join_all((actions.repolicy.iter()).map(|id| endpoint::set_policy(p.c, id, &policy)))
        .await?;
    try_join_all(
        actions
            .modify
            .iter()
            .map(|(id, gateway, add, remove)| endpoint::modify(p.c, id, *gateway, add, remove)),
    )
    .await?;
    let region = &p.spec.region;
    let created = try_join_all(actions.create.iter().map(|(service, where_)| {
        let token = endpoint_token(&p.spec.owner.uid, service, known);
        let policy = &policy;
        async move {
            let new = endpoint::NewEndpoint {
                at: where_,
                policy,
                token: &token,
            };
            endpoint::create(p.c, &p.spec.owner, vpc_id, region, service, new).await
        }
    }))
    .await?;
    let mut ids = actions.kept.clone();
    ids.extend(created.iter().cloned());
    ids.sort();
    let available_before = p
        .observed
        .endpoints
        .iter()
        .filter(|e| actions.kept.contains(&e.id))
        .all(|e| e.state == EndpointState::Available);
    // A gateway endpoint is available at once on AWS, an interface one
    // takes a minute or two: look again shortly for the quick ones.
    let available = look_briefly(
        || async {
            let now = items(endpoint::describe(p.c, Scope::Cluster(&p.spec.owner)).await?);
            let ready = created.iter().all(|id| {
                now.iter()
                    .any(|e| &e.id == id && e.state == EndpointState::Available)
            });
            Ok::<_, Error>((ready, ready))
        },
        !created.is_empty(),
    )
    .await?
    .unwrap_or(true);
    Ok(EndpointsDone {
        ids,
        available: available && available_before,
    })
}

/// Deletes every endpoint of the cluster's and, looking again briefly,
/// whether AWS has finished (an interface endpoint's network interfaces
/// hold its subnets and security group until it has).
pub async fn delete(
    c: &AwsClients,
    owner: &OwnershipTags,
    observed: &[ObservedEndpoint],
) -> AwsResult<Deleted> {
    let live: Vec<String> = observed
        .iter()
        .filter(|e| e.state.is_live())
        .map(|e| e.id.clone())
        .collect();
    if observed.iter().all(|e| e.state == EndpointState::Gone) {
        return Ok(Deleted::All);
    }
    endpoint::delete(c, &live).await?;
    let gone = look_briefly(
        || async {
            let now = items(endpoint::describe(c, Scope::Cluster(owner)).await?);
            let gone = now.iter().all(|e| e.state == EndpointState::Gone);
            Ok::<_, AwsError>((gone, gone))
        },
        true,
    )
    .await?;
    Ok(match gone {
        Some(true) => Deleted::All,
        _ => Deleted::Ending("VPC endpoints to be deleted"),
    })
}

/// Step `EndpointGroup`: the interface endpoints' security group (none
/// for gateway endpoints alone).
pub fn group_step<'a>(m: &'a Managed, i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move {
        let vpc_id = got(&b.vpc, "the VPC")?;
        if !m.endpoints.iter().any(|s| !is_gateway(s)) {
            return put(&b.endpoint_group, String::new());
        }
        put(
            &b.endpoint_group,
            ensure_group(i.pass, vpc_id, &m.cidr.to_string()).await?,
        )
    })
}

/// Step `Endpoints`: the VPC endpoints, in the private subnets and the
/// cluster's route tables.
pub fn step<'a>(m: &'a Managed, i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move {
        let vpc_id = got(&b.vpc, "the VPC")?;
        let tables = got(&b.tables, "the route tables")?;
        let subnets = got(&b.subnets, "the subnets")?;
        let at = Placement {
            route_table_ids: tables.iter().map(|t| t.id.clone()).collect(),
            private_subnet_ids: subnets
                .iter()
                .filter(|s| !s.public)
                .map(|s| s.id.clone())
                .collect(),
            security_group_id: got(&b.endpoint_group, "the endpoints' group")?.clone(),
        };
        let (services, policy) = (&m.endpoints, m.endpoint_policy);
        let done = ensure(i.pass, vpc_id, services, policy, &at, &i.known.endpoint_ids);
        put(&b.endpoints, done.await?)
    })
}

/// This kind's part of a deletion pass (its row's `delete`).
pub fn deletion<'a>(
    c: &'a AwsClients,
    owner: &'a crate::aws::OwnershipTags,
    o: &'a super::Observed,
) -> super::DeleteResult<'a> {
    Box::pin(async move { delete(c, owner, &o.endpoints).await })
}

/// AWS is still making the endpoint: what the shared wait goes by (the
/// pass's own look says whether every one it keeps is available).
pub fn making(state: EndpointState) -> bool {
    state == EndpointState::Pending
}

/// Rows `EndpointGroup` and `Endpoints` off their shape: endpoints an
/// older spec made, or that status still names.
pub fn leftover(o: &Observed, known: &NetworkStatus) -> bool {
    o.endpoints.iter().any(|e| e.state != EndpointState::Gone) || !known.endpoint_ids.is_empty()
}

/// Row `Endpoints`'s learning: their IDs, and whether every one is
/// available.
pub fn learn(b: &Board, p: &mut Progress) -> bool {
    let Some(e) = b.endpoints.get() else {
        return false;
    };
    p.network.endpoint_ids = e.ids.clone();
    if !e.available {
        p.waiting.push("VPC endpoints to become available".into());
        p.aws_creating = true;
    }
    e.available
}

/// Row `Endpoints`'s part of the shared wait, for clusters that have any.
pub fn pending<'a>(c: &'a AwsClients, scope: Scope<'a>, looks: Looks) -> PendingResult<'a> {
    let endpoints = endpoint::describe(c, scope);
    busy(looks.endpoints, endpoints, |e| making(e.state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Placement {
        Placement {
            route_table_ids: vec!["rtb-pub".into(), "rtb-a".into()],
            private_subnet_ids: vec!["subnet-a".into(), "subnet-b".into()],
            security_group_id: "sg-endpoints".into(),
        }
    }

    fn seen(id: &str, service: &str, attached: &[&str], state: EndpointState) -> ObservedEndpoint {
        let gateway = is_gateway(service);
        let attached: Vec<String> = attached.iter().map(|s| s.to_string()).collect();
        ObservedEndpoint {
            id: id.into(),
            service: service.into(),
            gateway,
            state,
            route_table_ids: if gateway { attached.clone() } else { vec![] },
            subnet_ids: if gateway { vec![] } else { attached },
            security_group_ids: vec![],
            policy: Some(policy_document(EndpointPolicy::Account, "123456789012")),
        }
    }

    fn account_only() -> Value {
        policy_document(EndpointPolicy::Account, "123456789012")
    }

    #[test]
    fn endpoints_plan() {
        use EndpointState::*;
        let s3_everywhere = seen("vpce-1", "s3", &["rtb-pub", "rtb-a"], Available);
        let ecr_everywhere = seen("vpce-2", "ecr.dkr", &["subnet-a", "subnet-b"], Pending);
        // (asked, observed, created, modified, deleted, why)
        type Row<'a> = (
            Vec<&'a str>,
            Vec<ObservedEndpoint>,
            Vec<&'a str>,
            Vec<&'a str>,
            Vec<&'a str>,
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (vec!["s3", "ecr.dkr"], vec![], vec!["s3", "ecr.dkr"], vec![], vec![], "a new cluster"),
            (
                vec!["s3", "ecr.dkr"],
                vec![s3_everywhere.clone(), ecr_everywhere.clone()],
                vec![],
                vec![],
                vec![],
                "in place, one still pending",
            ),
            (
                vec!["s3"],
                vec![seen("vpce-1", "s3", &["rtb-pub"], Available)],
                vec![],
                vec!["vpce-1"],
                vec![],
                "a route table added since",
            ),
            (
                vec!["s3"],
                vec![s3_everywhere.clone(), ecr_everywhere.clone()],
                vec![],
                vec![],
                vec!["vpce-2"],
                "a service no longer asked for",
            ),
            (
                vec!["s3"],
                vec![seen("vpce-9", "s3", &["rtb-pub", "rtb-a"], Available), s3_everywhere.clone()],
                vec![],
                vec![],
                vec!["vpce-9"],
                "a second endpoint of a service (a crash between create and status): the lowest ID kept",
            ),
            (
                vec!["s3"],
                vec![seen("vpce-1", "s3", &["rtb-pub", "rtb-a"], Gone)],
                vec!["s3"],
                vec![],
                vec![],
                "deleted out of band: made again",
            ),
        ];
        for (asked, observed, created, modified, deleted, why) in rows {
            let asked: Vec<String> = asked.into_iter().map(String::from).collect();
            let got = plan(&asked, &at(), &account_only(), &observed);
            assert!(got.repolicy.is_empty(), "{why}: {:?}", got.repolicy);
            let names = |v: Vec<&str>| v.into_iter().map(String::from).collect::<Vec<_>>();
            assert_eq!(
                (
                    got.create
                        .iter()
                        .map(|(s, _)| s.clone())
                        .collect::<Vec<_>>(),
                    got.modify
                        .iter()
                        .map(|(id, ..)| id.clone())
                        .collect::<Vec<_>>(),
                    got.delete,
                ),
                (names(created), names(modified), names(deleted)),
                "{why}"
            );
        }
        // An endpoint with another policy (made before the field, or
        // changed by hand; or `full` asked for): given the wanted one.
        let mut open = seen("vpce-3", "ecr.dkr", &["subnet-a", "subnet-b"], Available);
        open.policy = Some(policy_document(EndpointPolicy::Full, ""));
        let got = plan(
            &["ecr.dkr".to_string()],
            &at(),
            &account_only(),
            &[open.clone()],
        );
        assert_eq!(got.repolicy, vec!["vpce-3".to_string()]);
        let full = policy_document(EndpointPolicy::Full, "");
        let got = plan(&["ecr.dkr".to_string()], &at(), &full, &[open]);
        assert!(got.repolicy.is_empty(), "{got:?}");
        let created = plan(&["ecr.dkr".to_string()], &at(), &account_only(), &[]);
        assert_eq!(
            created.create,
            vec![(
                "ecr.dkr".to_string(),
                Attachments::Interface {
                    subnet_ids: vec!["subnet-a".into(), "subnet-b".into()],
                    security_group_id: "sg-endpoints".into(),
                }
            )],
            "an interface endpoint in the private subnets, with the endpoints' group"
        );
    }
}
