//! Training: run configuration, AdamW with clipping and LR schedule, EMA, the
//! loop, the loss, the held-out loss, distillation from a teacher, and a run's provenance.

pub mod config;
pub mod distill;
pub mod ema;
pub mod heldout;
pub mod loss;
pub mod optim;
pub mod provenance;
pub mod trainer;

pub use config::{LrSchedule, TrainConfig};
pub use distill::Teacher;
pub use provenance::Provenance;
pub use trainer::{StepStats, Trainer};
