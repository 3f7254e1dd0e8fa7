//! Utilities: atomic file writes, PNG image grids, SVG line plots.

pub mod fsx;
pub mod image;
pub mod plot;
