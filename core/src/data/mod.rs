//! Data loading: the IDX file format and labelled image datasets.

pub mod dataset;
pub mod idx;

pub use dataset::{load, Dataset, Split};
pub use idx::{parse_idx, read_idx, IdxArray};
