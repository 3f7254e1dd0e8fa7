//! Step 1 of the pipeline: an ancestry model parameterized by a strategy
//! (FINE: every block's weights U·diag(σ_l)·Vᵀ over shared U, V).

use crate::graph::Graph;
use crate::model::{Backend, Dit};
use crate::strategy as st;
use crate::train::{Provenance, TrainConfig, Trainer};
use anyhow::{Context, Result};
use fine_plugin_api::{Options, Strategy};

/// A fresh ancestry run of `g` in `strategy`'s parameterization (with `opts`),
/// the strategy, its version and options recorded in the checkpoint so that
/// [`super::extract`] finds them again.
pub fn ancestry_trainer<D: Backend>(
    dev: D,
    strategy: &dyn Strategy,
    g: &Graph,
    cfg: TrainConfig,
    opts: &Options,
) -> Result<Trainer<D>> {
    let info = strategy.info();
    let spec = strategy.ancestry(g, &st::weights_of(&Dit::new(g)), opts)?;
    let mut t = Trainer::new(dev, g, cfg, Some(spec)).with_context(|| format!("the ancestry of {}", g.name))?;
    t.provenance = Provenance::ancestry(&info.name, &info.version, opts.to_ron());
    Ok(t)
}
