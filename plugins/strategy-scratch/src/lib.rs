//! `scratch`: no learngene. The ancestry is a plain DiT, the learngene is
//! empty, and a descendant is a plain DiT with DiT's initialization — the
//! baseline row of every comparison.

use anyhow::Result;
use fine_plugin_api::tensors::Tensors;
use fine_plugin_api::{
    Descendant, Graph, Learngene, Options, Parameterization, PluginInfo, PluginKind, Strategy, WeightSpec,
};
use std::collections::BTreeMap;

/// The scratch strategy.
#[derive(Debug, Clone, Default)]
pub struct Scratch;

fine_plugin_api::builtin_plugin!(Strategy, Scratch::default);

fn plain(weights: &[WeightSpec]) -> Parameterization {
    let w: Vec<_> = weights.iter().map(|w| (w.name.clone(), w.shape.clone(), w.init.clone())).collect();
    Parameterization::plain(&w)
}

impl Strategy for Scratch {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "scratch".into(),
            kind: PluginKind::Strategy,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "direct initialization (DiT's init); inherits nothing".into(),
            options: vec![],
        }
    }

    fn ancestry(&self, _graph: &Graph, weights: &[WeightSpec], _opts: &Options) -> Result<Parameterization> {
        Ok(plain(weights))
    }

    fn extract(
        &self,
        graph: &Graph,
        _weights: &[WeightSpec],
        _spec: &Parameterization,
        _leaves: &Tensors,
        _opts: &Options,
    ) -> Result<Learngene> {
        let meta = BTreeMap::from([("source_graph".to_string(), graph.name.clone())]);
        Ok(Learngene {
            strategy: "scratch".into(),
            strategy_version: env!("CARGO_PKG_VERSION").into(),
            meta,
            tensors: Tensors::new(),
        })
    }

    fn descendant(
        &self,
        _lg: &Learngene,
        _target: &Graph,
        weights: &[WeightSpec],
        _opts: &Options,
    ) -> Result<Descendant> {
        Ok(Descendant { spec: plain(weights), values: Tensors::new(), init_steps: 0 })
    }
}
