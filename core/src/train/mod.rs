//! Training: run configuration, AdamW with clipping and LR schedule, EMA, the
//! loop, the loss, and the held-out loss.

pub mod config;
pub mod ema;
pub mod heldout;
pub mod loss;
pub mod optim;
pub mod trainer;

pub use config::{LrSchedule, TrainConfig};
pub use trainer::{StepStats, Trainer};
