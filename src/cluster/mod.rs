//! The ComputeCluster controller.

use std::sync::Arc;

use crate::context::Context;

pub const CONTROLLER: &str = "computecluster";

/// Runs the ComputeCluster controller until shutdown.
pub async fn run(_ctx: Arc<Context>) {}
