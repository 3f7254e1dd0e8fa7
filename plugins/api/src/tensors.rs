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
    Ok(safetensors::serialize(views, &Some(meta))?)
}

/// Decodes safetensors bytes (f32 tensors only) and their metadata.
pub fn from_safetensors(bytes: &[u8]) -> Result<(Tensors, BTreeMap<String, String>)> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("not a complete safetensors file: {e}"))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("not a complete safetensors file: {e}"))?;
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
