//! `fine data show`: a PNG grid of a data set's first images, to look at what
//! a model will be trained on (the picture sets are drawn and cached on the way).

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use fine_core::data::{self, Split};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DataCmd {
    /// Write a PNG grid of the first images of a data set, with its size and classes.
    Show(ShowArgs),
}

#[derive(Args)]
pub struct ShowArgs {
    /// Data set: bundled | fashion-mnist | mnist | idx:IMAGES[,LABELS] | pokemon[:SIDE] | folder:DIR.
    pub data: String,
    /// Split: train | test.
    #[arg(long, default_value = "train")]
    pub split: Split,
    /// Number of images in the grid.
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Output PNG grid.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(cmd: DataCmd) -> Result<()> {
    let DataCmd::Show(a) = cmd;
    if a.n == 0 || a.n > 4096 {
        bail!("--n {} is not within 1..=4096", a.n);
    }
    let ds = data::load(&a.data, a.split)?;
    let n = a.n.min(ds.len);
    let mut x = Vec::new();
    ds.fill_batch(&(0..n).collect::<Vec<_>>(), &mut x);
    let (c, h, w) = (ds.channels, ds.height, ds.width);
    let nrow = (n as f64).sqrt().ceil() as usize;
    fine_core::util::image::save_grid_png_scaled(
        &a.out,
        &x,
        n,
        c,
        h,
        w,
        nrow,
        fine_core::util::image::display_scale(h, w),
    )?;
    println!(
        "{} ({}): {} images of {c}×{h}×{w}, {} class{}; wrote the first {n} to {}",
        ds.name,
        a.split,
        ds.len,
        ds.num_classes,
        if ds.num_classes == 1 { "" } else { "es" },
        a.out.display()
    );
    Ok(())
}
