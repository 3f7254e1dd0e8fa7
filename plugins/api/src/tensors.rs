//! Named f32 tensors and their safetensors encoding (what crosses the C ABI).

use anyhow::{anyhow, bail, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};

/// A named f32 tensor: shape (row-major) and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, `product(shape)` of them.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor; errors if the sizes disagree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        if shape.iter().product::<usize>() != data.len() {
            bail!("shape {shape:?} needs {} values, got {}", shape.iter().product::<usize>(), data.len());
        }
        Ok(Self { shape, data })
    }
}

/// Tensors by name.
pub type Tensors = BTreeMap<String, Tensor>;

/// Encodes tensors and string metadata as safetensors bytes.
pub fn to_safetensors(t: &Tensors, meta: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = t
        .iter()
        .map(|(n, t)| (n.clone(), t.shape.clone(), t.data.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let meta: HashMap<String, String> = meta.clone().into_iter().collect();
    // safetensors 0.4.5 writes `{},"__metadata__":{}}` (not JSON) for no tensors and
    // empty metadata: leave empty metadata out.
    Ok(safetensors::serialize(views, &(!meta.is_empty()).then_some(meta))?)
}

/// What a safetensors decoding error means, in words (the crate's own
/// `Display` is its variant name, e.g. `HeaderTooSmall`).
pub fn explain(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => "shorter than the 8 bytes of its header length (truncated)".into(),
        E::InvalidHeaderLength => "its header length points past the end of the file (truncated or corrupt)".into(),
        E::HeaderTooLarge => "its header length is over 100 MB (corrupt)".into(),
        E::InvalidHeader => "its header is not UTF-8 text (corrupt)".into(),
        E::InvalidHeaderStart => "its header does not start with `{` (not a safetensors file)".into(),
        E::InvalidHeaderDeserialization => "its header is not valid JSON (corrupt)".into(),
        E::JsonError(j) => format!("its header is not valid JSON ({j})"),
        E::MetadataIncompleteBuffer => {
            "its tensor data does not end where the header says (truncated or corrupt)".into()
        }
        E::TensorInvalidInfo => "a tensor's dtype, shape and byte range disagree (corrupt)".into(),
        E::InvalidOffset(n) => format!("the byte range of tensor `{n}` is invalid (corrupt)"),
        E::ValidationOverflow => "a tensor's shape overflows (corrupt)".into(),
        E::TensorNotFound(n) => format!("it has no tensor `{n}`"),
        E::InvalidTensorView(dtype, shape, len) => {
            format!("a {dtype:?} tensor of shape {shape:?} does not fit in {len} bytes")
        }
        E::IoError(io) => format!("it cannot be read ({io})"),
    }
}

/// Decodes safetensors bytes (f32 tensors only) and their metadata.
pub fn from_safetensors(bytes: &[u8]) -> Result<(Tensors, BTreeMap<String, String>)> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("not a usable safetensors file: {}", explain(&e)))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("not a usable safetensors file: {}", explain(&e)))?;
    let mut out = Tensors::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!("tensor `{name}` has dtype {:?}, expected F32", view.dtype());
        }
        let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(name, Tensor::new(view.shape().to_vec(), data)?);
    }
    let meta = header.metadata().clone().unwrap_or_default().into_iter().collect();
    Ok((out, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No tensors and no metadata still make a file that reads back (an empty reply).
    #[test]
    fn an_empty_set_round_trips() {
        let b = to_safetensors(&Tensors::new(), &BTreeMap::new()).unwrap();
        let (t, m) = from_safetensors(&b).unwrap_or_else(|e| panic!("{e:#}: {:?}", String::from_utf8_lossy(&b)));
        assert!(t.is_empty() && m.is_empty());
        let meta = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let b = to_safetensors(&Tensors::new(), &meta).unwrap();
        let (t, m) = from_safetensors(&b).unwrap_or_else(|e| panic!("{e:#}: {:?}", String::from_utf8_lossy(&b)));
        assert!(t.is_empty() && m == meta);
    }
}
