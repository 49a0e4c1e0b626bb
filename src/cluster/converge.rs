//! Apply: runs the steps of `graph::STEPS`, each as soon as the steps it
//! needs are done (a dataflow of shared futures), so independent kinds run
//! concurrently and the pass takes as long as its longest chain of
//! dependent calls. Each step is its kind's (`kinds/<kind>.rs`, named by
//! its row); steps hand what they learn to the steps after them on a
//! board (`kinds::Board`); what was learned goes into `Progress` even when
//! another step fails.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::future::{join_all, BoxFuture, FutureExt, Shared};

use super::catalog::Catalog;
use super::graph::{self, Shape, Step, STEPS};
use super::kinds::{node_groups, Board, Layout, Pass, StepInput};
use super::learned;
use super::spec::{NetworkPlan, ValidatedSpec};
use super::status::Progress;
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
        known_vpc: progress.network.vpc_id.clone(),
        known_nats: progress.network.nat_gateway_ids.clone(),
        known_endpoints: progress.network.endpoint_ids.clone(),
    };
    let board = Board::default();
    let failure = run_steps(&input, &board).await;
    learned::learn(&board, pass.recorded, progress);
    failure.map_or(Ok(()), Err)
}

/// Starts every step at once, each waiting for the steps it needs; a
/// failed step records its error and the steps waiting on it stop, the
/// others run to the end. Returns the first error.
async fn run_steps<'a>(input: &'a StepInput<'a>, board: &'a Board) -> Option<Error> {
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let shape = shape(input.pass.spec);
    let mut done: BTreeMap<Step, Shared<BoxFuture<'_, bool>>> = BTreeMap::new();
    for def in STEPS {
        let needs: Vec<_> = graph::needs(def, shape)
            .filter_map(|s| done.get(&s).cloned())
            .collect();
        let failure = &failure;
        let step = async move {
            for need in needs {
                if !need.await {
                    return false;
                }
            }
            match def.run.start(input, board).await {
                Ok(()) => true,
                Err(e) => {
                    let mut slot = failure.lock().unwrap_or_else(|e| e.into_inner());
                    slot.get_or_insert(e);
                    false
                }
            }
        };
        done.insert(def.step, step.boxed().shared());
    }
    join_all(done.into_values()).await;
    failure.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// What of the graph `spec` uses.
pub fn shape(spec: &ValidatedSpec) -> Shape {
    let public_nodes = spec
        .node_groups
        .iter()
        .any(|g| node_groups::wants_public(g));
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
        },
        NetworkPlan::Existing { .. } => Shape {
            public_nodes,
            internet: true,
            nat: false,
            endpoints: false,
            peering: false,
        },
    }
}
