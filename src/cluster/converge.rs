//! Apply: runs the steps of `graph::STEPS`, each as soon as the steps it
//! needs are done (a dataflow of shared futures), so independent kinds run
//! concurrently and the pass takes as long as its longest chain of
//! dependent calls. Each step is its kind's (`kinds/<kind>.rs`, named by
//! its row). A row runs when the spec's shape holds its `runs`, or when its
//! `leftover` finds something of an older spec's to remove; else it is in
//! place with no call. Steps hand what they make to the steps after them on
//! a board (`kinds::Board`); each row's `learn` puts it into `Progress`,
//! even when another step fails.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::future::{join_all, BoxFuture, FutureExt, Shared};

use super::catalog::Catalog;
use super::graph::{self, Shape, Step, StepDef, STEPS};
use super::kinds::{node_groups, Board, Layout, Observed, Pass, Ran, StepInput};
use super::learned;
use super::spec::{NetworkPlan, ValidatedSpec};
use super::status::Progress;
use crate::api::compute_cluster::NetworkStatus;
use crate::api::NatGateways;
use crate::Error;

/// Brings AWS to `spec`. `Ok` when every step ran (readiness is in `progress`).
pub async fn converge(
    catalog: &Catalog,
    pass: Pass<'_>,
    progress: &mut Progress,
) -> Result<(), Error> {
    let layout = Layout::of(catalog, pass.c, pass.spec).await?;
    let input = StepInput {
        pass,
        catalog,
        layout: &layout,
        known: progress.network.clone(),
    };
    let board = Board::default();
    let (ran, failure) = run_steps(&input, &board).await;
    learned::learn(&board, &ran, progress);
    failure.map_or(Ok(()), Err)
}

/// Starts every step at once, each waiting for the steps it needs; a
/// failed step records its error and the steps waiting on it stop, the
/// others run to the end. Returns how each came out, and the first error.
async fn run_steps<'a>(
    input: &'a StepInput<'a>,
    board: &'a Board,
) -> (BTreeMap<Step, Ran>, Option<Error>) {
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let shape = shape(input.pass.spec);
    let mut done: BTreeMap<Step, Shared<BoxFuture<'_, Ran>>> = BTreeMap::new();
    for def in STEPS {
        let needs: Vec<_> = graph::needs(def, shape)
            .filter_map(|s| done.get(&s).cloned())
            .collect();
        let failure = &failure;
        let step = async move {
            let started = match called(def, shape, input.pass.observed, &input.known) {
                true => def.run.start(input, board),
                false => None,
            };
            let Some(started) = started else {
                return Ran::InPlace;
            };
            for need in needs {
                if need.await == Ran::Failed {
                    return Ran::Failed;
                }
            }
            match started.await {
                Ok(()) => Ran::Done,
                Err(e) => {
                    let mut slot = failure.lock().unwrap_or_else(|e| e.into_inner());
                    slot.get_or_insert(e);
                    Ran::Failed
                }
            }
        };
        done.insert(def.step, step.boxed().shared());
    }
    let steps: Vec<Step> = done.keys().copied().collect();
    let ran = join_all(done.into_values()).await;
    let ran = steps.into_iter().zip(ran).collect();
    (ran, failure.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// Whether a row's step is called this pass: when the spec's shape holds
/// its `runs`, or something of an older spec's is left to remove.
fn called(def: &StepDef, shape: Shape, observed: &Observed, known: &NetworkStatus) -> bool {
    shape.holds(def.runs) || def.leftover.is_some_and(|left| left(observed, known))
}

/// What of the graph `spec` uses.
pub fn shape(spec: &ValidatedSpec) -> Shape {
    let public_nodes = spec
        .node_groups
        .iter()
        .any(|g| node_groups::wants_public(g));
    let logging = spec.logging.is_some();
    let storage = spec.key.is_some();
    match &spec.network {
        NetworkPlan::Managed {
            nat,
            internet,
            endpoints,
            peering,
            ..
        } => Shape {
            public_nodes,
            internet: *internet,
            nat: *nat != NatGateways::None,
            endpoints: !endpoints.is_empty(),
            peering: !peering.is_empty(),
            logging,
            storage,
        },
        NetworkPlan::Existing { .. } => Shape {
            public_nodes,
            internet: true,
            nat: false,
            endpoints: false,
            peering: false,
            logging,
            storage,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::nat_gateway::ObservedAddress;

    /// The steps called in a pass of `shape`.
    fn called_in(shape: Shape, observed: &Observed, known: &NetworkStatus) -> Vec<Step> {
        (STEPS.iter())
            .filter(|d| called(d, shape, observed, known))
            .map(|d| d.step)
            .collect()
    }

    #[test]
    fn a_step_off_its_shape_is_called_only_for_what_an_older_spec_left() {
        let none = (Observed::default(), NetworkStatus::default());
        let private = Shape {
            internet: false,
            nat: false,
            ..Shape::BASIC
        };
        // Nothing left: exactly the steps whose `runs` the shape holds.
        for shape in [Shape::BASIC, private] {
            let want: Vec<Step> = (STEPS.iter())
                .filter(|d| shape.holds(d.runs))
                .map(|d| d.step)
                .collect();
            assert_eq!(called_in(shape, &none.0, &none.1), want);
        }
        let uncalled = called_in(private, &none.0, &none.1);
        for off in [Step::NatGateways, Step::Endpoints, Step::Peering] {
            assert!(!uncalled.contains(&off), "{off:?}");
        }
        // An Elastic IP of an older spec's NAT gateway: its steps run.
        let eip = Observed {
            addresses: vec![ObservedAddress {
                allocation_id: "eipalloc-1".into(),
                zone: Some("us-east-1a".into()),
                association_id: None,
            }],
            ..Observed::default()
        };
        let steps = called_in(private, &eip, &none.1);
        assert!(steps.contains(&Step::Addresses) && steps.contains(&Step::NatGateways));
        assert!(!steps.contains(&Step::PrivateRoutes) && !steps.contains(&Step::Endpoints));
        // Endpoints and connections status still names.
        let known = NetworkStatus {
            endpoint_ids: vec!["vpce-1".into()],
            peering_connection_ids: vec!["pcx-1".into()],
            ..NetworkStatus::default()
        };
        let steps = called_in(private, &none.0, &known);
        for on in [
            Step::EndpointGroup,
            Step::Endpoints,
            Step::Peering,
            Step::PeeringRoutes,
        ] {
            assert!(steps.contains(&on), "{on:?}");
        }
    }

    #[test]
    fn a_step_called_for_leftovers_has_every_step_it_needs_called() {
        let eip = ObservedAddress {
            allocation_id: "eipalloc-1".into(),
            zone: None,
            association_id: None,
        };
        let observed = Observed {
            addresses: vec![eip],
            ..Observed::default()
        };
        let known = NetworkStatus {
            endpoint_ids: vec!["vpce-1".into()],
            peering_connection_ids: vec!["pcx-1".into()],
            ..NetworkStatus::default()
        };
        let nothing = Shape {
            public_nodes: false,
            internet: false,
            nat: false,
            endpoints: false,
            peering: false,
            logging: false,
            storage: false,
        };
        let steps = called_in(nothing, &observed, &known);
        for def in STEPS.iter().filter(|d| steps.contains(&d.step)) {
            for need in graph::needs(def, nothing) {
                assert!(
                    steps.contains(&need),
                    "{:?} is called and reads {need:?}, which is not",
                    def.step
                );
            }
        }
    }
}
