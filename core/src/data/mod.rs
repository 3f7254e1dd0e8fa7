//! Data loading: the IDX file format, labelled image datasets, and picture
//! files (SVG, PNG, JPEG) drawn into them through an on-disk cache.

pub mod cache;
pub mod dataset;
pub mod idx;
pub mod pictures;
pub mod raster;

pub use dataset::{load, load_as, Dataset, Split};
pub use idx::{encode_idx, parse_idx, read_idx, IdxArray};
