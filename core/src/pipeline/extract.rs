//! Step 2 of the pipeline: the learngene of a pretrained ancestry run, by the
//! strategy that made it — with the strategy's pool members (if it has any)
//! distilled from the ancestry first, each in its own resumable run folder.

use super::run_dir::{self, RunDir};
use super::train_loop::train_loop;
use crate::checkpoint::Checkpoint;
use crate::model::Backend;
use crate::plugin::Registry;
use crate::strategy as st;
use crate::train::{TrainConfig, Trainer};
use anyhow::{anyhow, bail, Result};
use fine_plugin_api::{Learngene, Options, Strategy, Tensors};
use std::path::Path;

/// The learngene of the ancestry run `run` (checkpoint `ck`) by the strategy
/// that made it (named in the checkpoint's provenance), with its stored options.
/// Pool members are distilled on `dev`.
pub fn extract<D: Backend>(dev: D, ck: &Checkpoint, run: &Path, no_ema: bool, reg: &Registry) -> Result<Learngene> {
    let p = &ck.provenance;
    let name = p.strategy.as_deref().ok_or_else(|| {
        anyhow!("{} was not made by `fine pretrain` (its checkpoint names no strategy)", run.display())
    })?;
    let strategy = reg.strategy(name)?;
    let info = strategy.info();
    if p.strategy_version.as_ref() != Some(&info.version) {
        eprintln!(
            "warning: the run was made by `{name}` {}, this is {}",
            p.strategy_version.as_deref().unwrap_or("?"),
            info.version
        );
    }
    let opts = Options::from_ron(&info, p.strategy_opts.as_deref().unwrap_or(""))?;
    extract_with(dev, ck, run, no_ema, strategy, &opts)
}

/// The learngene of the ancestry run `run` (checkpoint `ck`) by `strategy` with
/// `opts` (the run's parameterization must be the one the strategy makes),
/// from its EMA weights unless `no_ema`.
pub fn extract_with<D: Backend>(
    dev: D,
    ck: &Checkpoint,
    run: &Path,
    no_ema: bool,
    strategy: &dyn Strategy,
    opts: &Options,
) -> Result<Learngene> {
    let init_share = ck.train.ema_init_share(ck.step as u64);
    if !no_ema && init_share > 0.05 {
        eprintln!(
            "warning: the EMA (decay {}) of {} steps still holds {:.0} % of the initial weights; \
             the learngene of an ancestry this short wants --no-ema (or a lower --ema-decay when training)",
            ck.train.ema_decay,
            ck.step,
            100.0 * init_share
        );
    }
    let values = if no_ema { &ck.params } else { &ck.ema };
    let mut leaves = st::values_as_tensors(&ck.spec, values)?;
    let pool = distill_pool(dev, strategy, ck, &leaves, opts, run)?;
    leaves.extend(pool);
    let weights = st::weights_of(&crate::model::Dit::new(&ck.graph));
    let mut lg = strategy.extract(&ck.graph, &weights, &ck.spec, &leaves, opts)?;
    lg.meta.insert("source_graph".into(), crate::graph::load::to_ron(&ck.graph));
    lg.meta.insert("source_run".into(), run.display().to_string());
    lg.meta.insert("data".into(), format!("{} {}", ck.train.data, ck.train.split));
    lg.meta.insert("steps".into(), ck.step.to_string());
    lg.meta.insert("weights".into(), if no_ema { "live" } else { "ema" }.into());
    Ok(lg)
}

/// The strategy's pool members (if any), each distilled from the ancestry
/// `leaves` in `RUN/pool-NAME` (resumed when interrupted), as `pool.NAME.*` leaves.
fn distill_pool<D: Backend>(
    dev: D,
    strategy: &dyn Strategy,
    ck: &Checkpoint,
    leaves: &Tensors,
    opts: &Options,
    run: &Path,
) -> Result<Tensors> {
    let members = strategy.pool(&ck.graph, &ck.spec, leaves, opts)?;
    for m in &members {
        st::pool::check_member(&ck.graph, m)?;
    }
    let mut out = Tensors::new();
    for (i, m) in members.iter().enumerate() {
        let teacher = st::pool::teacher(dev.clone(), &ck.graph, &ck.spec, leaves, m.alpha)?;
        let dir = RunDir(run.join(format!("pool-{}", m.name)));
        let mut t = if run_dir::has_run(&dir.0) {
            let mut t = Trainer::from_checkpoint(dev.clone(), Checkpoint::load(&dir.checkpoint())?)?;
            if t.provenance.pool_member.as_ref() != Some(&m.name) || t.dit.graph != m.graph {
                bail!("{} holds another run than pool member `{}`; delete it", dir.0.display(), m.name);
            }
            t.teacher = Some(teacher);
            t
        } else {
            let cfg = TrainConfig { seed: ck.train.seed.wrapping_add(1 + i as u64), ..ck.train.clone() };
            let t = st::pool::member_trainer(dev.clone(), m, teacher, cfg)?;
            run_dir::create(&dir)?;
            run_dir::write_run_ron(&dir, &t)?;
            t
        };
        eprintln!(
            "distilling pool member `{}` ({}) from the ancestry: {} steps, α = {} → {}",
            m.name,
            m.graph.name,
            m.steps,
            m.alpha,
            dir.0.display()
        );
        train_loop(&mut t, &dir, m.steps, &format!("pool {}", m.name))?;
        out.extend(st::pool::member_leaves(m, &t.ema_store()?)?);
    }
    Ok(out)
}
