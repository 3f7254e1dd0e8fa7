//! Test helpers for the strategy plugins that need the host: `fine-core`, a
//! dev-dependency of the strategy crates (never a runtime one). Not a crate:
//! a strategy's `tests.rs` includes this file with
//! `#[path = "../../testing/host.rs"] mod host;`. Helpers that need only the
//! plugin API are in `fine_plugin_api::strategy::testing`.

use fine_core::model::store::CpuDevice;
use fine_core::model::{Dit, ParamStore};
use fine_core::strategy::materialize;
use fine_plugin_api::tensors::Tensors;
use fine_plugin_api::{Graph, Parameterization};
use std::collections::BTreeMap;

/// Every weight of the model `spec` + `leaves` describe, evaluated by the host.
pub fn materialized(g: &Graph, spec: &Parameterization, leaves: &Tensors) -> BTreeMap<String, Vec<f32>> {
    let values = leaves.iter().map(|(n, t)| (n.clone(), t.data.clone())).collect();
    let store = ParamStore::from_values(CpuDevice::default(), spec.clone(), values).unwrap();
    materialize(&Dit::new(g), &store).unwrap().host_values()
}
