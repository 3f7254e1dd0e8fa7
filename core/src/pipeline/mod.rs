//! # The learngene pipeline
//!
//! ```text
//! pretrain ──► extract ──► initialize ──► train
//! ancestry     learngene   descendant     a plain run
//! (factorized) (+ pool)    (σ phase)      from its weights
//! ```
//!
//! One implementation of each step, called by the `fine pretrain`,
//! `learngene extract`, `init` and `train --from` commands and by
//! `fine bench learngene`. Every step trains in a run folder ([`RunDir`]) through
//! [`train_loop`], which checkpoints, resumes, locks the folder and stops
//! cleanly on [`request_stop`]. The device is a parameter of each step.

pub mod descendant;
pub mod extract;
pub mod meter;
pub mod pretrain;
pub mod run_dir;
pub mod train_loop;

pub use descendant::{initialize, seeded_options, trainer_from, InitPhase, Initialized};
pub use extract::{extract, extract_with};
pub use meter::Meter;
pub use pretrain::ancestry_trainer;
pub use run_dir::{has_run, truncate_metrics, write_run_ron, RunDir, RunLock};
pub use train_loop::{request_stop, train_loop, train_loop_watched, Interrupted, Watch};
