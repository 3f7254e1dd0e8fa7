//! `fine export --run DIR --out MODEL.safetensors`: a run's weights as a plain
//! DiT state dict — the key names and shapes of facebookresearch DiT's
//! `models.py` (`DiT(input_size, patch_size, in_channels, hidden_size, depth,
//! num_heads, mlp_ratio, class_dropout_prob, num_classes, learn_sigma=False)`),
//! `pos_embed` included, no internal prefixes; a factorized or tied run is
//! materialized first. Loads there with `load_state_dict(strict=True)`.

use anyhow::{bail, Context, Result};
use clap::Args;
use fine_core::checkpoint::Checkpoint;
use fine_core::model::{Dit, ParamStore};
use fine_plugin_api::tensors::{to_safetensors, Tensor, Tensors};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Options of `fine export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Run folder (its checkpoint.safetensors).
    #[arg(long)]
    pub run: PathBuf,
    /// Output file (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Export the live weights instead of the EMA weights.
    #[arg(long)]
    pub live: bool,
}

/// Runs `fine export`.
pub fn run(a: ExportArgs) -> Result<()> {
    fine_core::util::fsx::refuse_run_file(&a.out, &a.run, "--out")?;
    let ck = Checkpoint::load(&a.run.join("checkpoint.safetensors"))?;
    let g = &ck.graph;
    if g.stitch_after.is_some() {
        bail!(
            "{}: the graph has a stitching layer (`stitch_after`), which a DiT state dict cannot hold",
            a.run.display()
        );
    }
    let dit = Dit::new(g);
    let weights = if a.live { ck.params.clone() } else { ck.ema.clone() };
    let store = ParamStore::from_values(fine_core::model::store::CpuDevice::default(), ck.spec.clone(), weights)?;
    let plain = fine_core::strategy::materialize(&dit, &store)?.host_values();
    if g.input.height != g.input.width {
        bail!(
            "{}: DiT takes square inputs (input_size); this graph's are {}×{}",
            a.run.display(),
            g.input.height,
            g.input.width
        );
    }
    if g.conditioning.num_classes == 0 {
        bail!(
            "{}: the graph `{}` is unconditional (num_classes: 0); facebookresearch DiT always has a label \
             table, so there is no DiT state dict to write",
            a.run.display(),
            g.name
        );
    }
    let shapes: BTreeMap<String, Vec<usize>> = dit.weight_shapes().into_iter().collect();
    let mut t = Tensors::new();
    for (name, v) in plain {
        let shape = shapes.get(&name).cloned().with_context(|| format!("weight `{name}` has no shape"))?;
        t.insert(name, Tensor::new(shape, v)?);
    }
    // DiT keeps its fixed sin-cos table as a (1, T, D) parameter, so it is in the state dict.
    let (grid, d) = (g.input.height / g.patch_size, g.hidden);
    let pos = fine_core::model::layers::embed::sincos_2d(d, grid, grid);
    t.insert("pos_embed".into(), Tensor::new(vec![1, grid * grid, d], pos)?);
    let meta = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        ("source".to_string(), format!("fine export of {} (step {})", a.run.display(), ck.step)),
        ("weights".to_string(), if a.live { "live" } else { "ema" }.to_string()),
        ("graph".to_string(), fine_core::graph::load::to_ron(g)),
        ("learn_sigma".to_string(), "false".to_string()),
    ]);
    fine_core::util::fsx::write_atomic(&a.out, &to_safetensors(&t, &meta)?)?;
    println!(
        "wrote {} ({} tensors, {} values, {} weights of step {}): DiT(input_size={}, patch_size={}, in_channels={}, \
         hidden_size={d}, depth={}, num_heads={}, mlp_ratio={}, class_dropout_prob={}, num_classes={}, learn_sigma=False)",
        a.out.display(),
        t.len(),
        t.values().map(|x| x.data.len()).sum::<usize>(),
        if a.live { "live" } else { "EMA" },
        ck.step,
        g.input.height,
        g.patch_size,
        g.input.channels,
        g.depth,
        g.heads,
        g.mlp_ratio,
        g.conditioning.label_dropout,
        g.conditioning.num_classes
    );
    Ok(())
}
