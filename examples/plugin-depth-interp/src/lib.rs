//! `depth-interp`: a third-party strategy plugin. The ancestry is a plain DiT;
//! the learngene is all of its weights; a descendant of depth L takes block l
//! from ancestry block round(l·(L_a−1)/(L−1)) (nearest by relative depth) and
//! every other weight (embeddings, final layer) as is. No initialization phase.
//! Width must match the ancestry's.

use anyhow::{anyhow, bail, Result};
use fine_plugin_api::tensors::{Tensor, Tensors};
use fine_plugin_api::{
    Descendant, Graph, Learngene, Options, Parameterization, PluginInfo, PluginKind, Strategy, WeightSpec,
};
use std::collections::BTreeMap;

/// The depth-interpolation strategy.
#[derive(Default)]
pub struct DepthInterp;

fine_plugin_api::export_plugin!(Strategy, DepthInterp::default);

fn plain(weights: &[WeightSpec]) -> Parameterization {
    let w: Vec<_> = weights.iter().map(|w| (w.name.clone(), w.shape.clone(), w.init.clone())).collect();
    Parameterization::plain(&w)
}

/// `blocks.{i}.rest` → (i, rest).
fn block_of(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blocks.")?;
    let (i, rest) = rest.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

impl Strategy for DepthInterp {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "depth-interp".into(),
            kind: PluginKind::Strategy,
            version: "0.1.0".into(),
            description: "copies ancestry blocks by relative depth (third-party example)".into(),
            options: vec![],
        }
    }

    fn ancestry(&self, _g: &Graph, weights: &[WeightSpec], _o: &Options) -> Result<Parameterization> {
        Ok(plain(weights))
    }

    fn extract(
        &self,
        g: &Graph,
        _weights: &[WeightSpec],
        _spec: &Parameterization,
        leaves: &Tensors,
        _o: &Options,
    ) -> Result<Learngene> {
        let meta =
            BTreeMap::from([("depth".to_string(), g.depth.to_string()), ("hidden".to_string(), g.hidden.to_string())]);
        Ok(Learngene {
            strategy: "depth-interp".into(),
            strategy_version: "0.1.0".into(),
            meta,
            tensors: leaves.clone(),
        })
    }

    fn descendant(&self, lg: &Learngene, target: &Graph, weights: &[WeightSpec], _o: &Options) -> Result<Descendant> {
        let depth: usize =
            lg.meta.get("depth").and_then(|d| d.parse().ok()).ok_or_else(|| anyhow!("learngene has no `depth`"))?;
        let hidden: usize =
            lg.meta.get("hidden").and_then(|d| d.parse().ok()).ok_or_else(|| anyhow!("learngene has no `hidden`"))?;
        if hidden != target.hidden {
            bail!(
                "depth-interp learngene has width {hidden}, the target graph `{}` has {}",
                target.name,
                target.hidden
            );
        }
        let mut values = Tensors::new();
        for w in weights {
            let src = match block_of(&w.name) {
                Some((l, rest)) => {
                    let a = if target.depth <= 1 {
                        0
                    } else {
                        (l * (depth - 1) + (target.depth - 1) / 2) / (target.depth - 1)
                    };
                    format!("blocks.{a}.{rest}")
                }
                None => w.name.clone(),
            };
            let t: &Tensor = lg.tensors.get(&src).ok_or_else(|| anyhow!("learngene lacks `{src}`"))?;
            if t.shape != w.shape {
                bail!("`{src}` has shape {:?}, `{}` needs {:?}", t.shape, w.name, w.shape);
            }
            values.insert(w.name.clone(), t.clone());
        }
        Ok(Descendant { spec: plain(weights), values, init_steps: 0 })
    }
}
