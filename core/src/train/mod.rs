//! Training: run configuration, AdamW with clipping and LR schedule, EMA, the
//! loop, and the loss.

pub mod config;
pub mod ema;
pub mod loss;
pub mod optim;
pub mod trainer;

pub use config::{LrSchedule, TrainConfig};
pub use trainer::{StepStats, Trainer};
