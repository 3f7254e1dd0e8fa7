//! Diffusion: the DDPM forward process and its noise schedules.

pub mod schedule;

pub use schedule::{BetaSchedule, NoiseSchedule};
