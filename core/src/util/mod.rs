//! Utilities: atomic file writes, matrix products, PNG image grids, SVG line plots.

pub mod fsx;
pub mod gemm;
pub mod image;
pub mod plot;
