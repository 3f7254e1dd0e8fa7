//! # fine-core
//!
//! The runtime behind the `fine` CLI, organised as the pipeline it runs:
//!
//! `graph` (RON architecture files) → `model` (a DiT built at run time over a
//! named parameter store) → `diffusion` (noise schedules, loss) → `train`
//! (AdamW, EMA, the loop, checkpoints) → `sample` (reverse-diffusion solvers)
//! → `eval` (FID, sFID, precision/recall) → `data`/`util` (IDX data, images, plots).
//! `strategy` is the host side of learngene strategies, and `pipeline` runs
//! them end to end: pretrain → extract → initialize → train, in run folders.

pub mod checkpoint;
pub mod data;
pub mod diffusion;
pub mod eval;
pub mod graph;
pub mod model;
pub mod pipeline;
pub mod plugin;
pub mod sample;
pub mod strategy;
pub mod train;
pub mod util;
