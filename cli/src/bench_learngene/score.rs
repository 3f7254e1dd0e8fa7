//! Scoring descendants with the benchmark's metric.

use super::config::{BenchConfig, Metric};
use anyhow::{bail, Result};
use fine_core::data::{self, Split};
use fine_core::graph::Graph;
use fine_core::model::Backend;
use fine_core::plugin::Registry;
use fine_core::train::heldout::HeldOut;
use fine_core::train::Trainer;
use std::collections::BTreeMap;

/// Checks that the metric can be computed for these sizes (before any training).
pub fn check(cfg: &BenchConfig, sizes: &[Graph]) -> Result<()> {
    match cfg.eval.metric {
        Metric::Heldout => Ok(()),
        Metric::Cfid | Metric::Fid => {
            let _ = sizes;
            bail!("metric {:?} is not wired into the benchmark yet", cfg.eval.metric)
        }
    }
}

/// Scores models; keeps the per-dataset evaluation sets between calls.
pub struct Scorer {
    metric: Metric,
    n: usize,
    heldout: BTreeMap<String, HeldOut>,
}

impl Scorer {
    /// A scorer for the benchmark's `eval` settings.
    pub fn new(cfg: &BenchConfig, _reg: &Registry) -> Result<Self> {
        Ok(Self { metric: cfg.eval.metric, n: cfg.eval.n, heldout: BTreeMap::new() })
    }

    /// The metric of the live weights of `t` on data set `data`.
    pub fn score<D: Backend>(&mut self, t: &Trainer<D>, data: &str) -> Result<f64> {
        match self.metric {
            Metric::Heldout => {
                if !self.heldout.contains_key(data) {
                    let set = data::load(data, Split::Test)?;
                    self.heldout.insert(data.to_string(), HeldOut::new(&set, self.n, t.schedule(), 0)?);
                }
                self.heldout[data].loss(&t.dit, &t.store, 64)
            }
            Metric::Cfid | Metric::Fid => bail!("metric {:?} is not wired into the benchmark yet", self.metric),
        }
    }
}
