//! The RON graph schema: one file describes one diffusion transformer.
//!
//! Every field is documented here; `graphs/README` examples follow this file.
//! Unknown fields are rejected (`deny_unknown_fields`) so a typo never silently
//! falls back to a default.

use serde::{Deserialize, Serialize};

/// A diffusion-transformer architecture (the DiT family).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Graph {
    /// Human-readable name, e.g. `"fmnist-d4-w128-p4"` or `"DiT-S/2"`.
    pub name: String,
    /// Shape of one input image (pixel space) or latent.
    pub input: InputSpec,
    /// Side of the square patches cut by the patch embedding (DiT's `p`).
    pub patch_size: usize,
    /// Transformer width `D` (token dimension).
    pub hidden: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Number of attention heads; must divide `hidden`.
    pub heads: usize,
    /// MLP hidden width as a multiple of `hidden` (DiT: 4.0).
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Class conditioning (label embedding with a null class for classifier-free guidance).
    pub conditioning: Conditioning,
    /// Structure of every block.
    #[serde(default)]
    pub block: BlockSpec,
    /// Sinusoidal timestep embedding.
    #[serde(default)]
    pub timestep: TimestepSpec,
    /// A linear stitching layer (Learngene Pool, arXiv 2312.05743) on the token
    /// stream between block `k` and block `k + 1` (0-based): weights
    /// `stitch.weight` (D, D) and `stitch.bias` (D), starting as the identity.
    /// Absent (the default): a plain DiT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stitch_after: Option<usize>,
}

/// Input tensor shape `(C, H, W)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Channels `C` (1 for grayscale pixels, 4 for SD-VAE latents).
    pub channels: usize,
    /// Height `H`; must be divisible by `patch_size`.
    pub height: usize,
    /// Width `W`; must be divisible by `patch_size`.
    pub width: usize,
}

/// Class conditioning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditioning {
    /// Number of real classes; the label table has one more row (the null class)
    /// when `label_dropout > 0`. 0: an unconditional model, with no label table
    /// (labels are not read, guidance is refused).
    pub num_classes: usize,
    /// Probability of replacing a label by the null class during training (DiT: 0.1);
    /// unused when `num_classes` is 0.
    #[serde(default = "default_label_dropout")]
    pub label_dropout: f64,
}

/// What one transformer block is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockSpec {
    /// Conditioning mechanism. Only `AdaLnZero` (DiT's best variant) is implemented.
    #[serde(default)]
    pub kind: BlockKind,
    /// Whether the qkv projection has a bias (DiT: true).
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    /// LayerNorm epsilon (DiT: 1e-6). The norms have no affine parameters.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    /// MLP activation.
    #[serde(default)]
    pub mlp_act: Activation,
}

/// Block conditioning mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BlockKind {
    /// adaLN-Zero: shift/scale/gate from the conditioning vector, gates start at zero.
    #[default]
    AdaLnZero,
}

/// MLP activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Activation {
    /// GELU, tanh approximation (DiT's `approx_gelu`).
    #[default]
    GeluTanh,
}

/// Sinusoidal timestep embedding followed by a 2-layer MLP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestepSpec {
    /// Size of the sinusoidal frequency embedding (DiT: 256); must be even.
    #[serde(default = "default_freq_dim")]
    pub freq_dim: usize,
    /// Max period of the sinusoids (DiT: 10000).
    #[serde(default = "default_max_period")]
    pub max_period: f64,
}

impl Default for BlockSpec {
    fn default() -> Self {
        Self { kind: BlockKind::AdaLnZero, qkv_bias: true, norm_eps: 1e-6, mlp_act: Activation::GeluTanh }
    }
}

impl Default for TimestepSpec {
    fn default() -> Self {
        Self { freq_dim: 256, max_period: 10000.0 }
    }
}

fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_label_dropout() -> f64 {
    0.1
}
fn default_true() -> bool {
    true
}
fn default_norm_eps() -> f64 {
    1e-6
}
fn default_freq_dim() -> usize {
    256
}
fn default_max_period() -> f64 {
    10000.0
}

impl InputSpec {
    /// `[C, H, W]`.
    pub fn chw(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }
}

impl Graph {
    /// Patch grid `(H/p, W/p)`.
    pub fn grid(&self) -> (usize, usize) {
        (self.input.height / self.patch_size, self.input.width / self.patch_size)
    }
    /// Number of tokens `T = (H/p)·(W/p)`.
    pub fn tokens(&self) -> usize {
        let (h, w) = self.grid();
        h * w
    }
    /// Width of the per-token patch vector, `C·p·p`.
    pub fn patch_dim(&self) -> usize {
        self.input.channels * self.patch_size * self.patch_size
    }
    /// MLP hidden width, `int(hidden · mlp_ratio)` as in DiT.
    pub fn mlp_hidden(&self) -> usize {
        (self.hidden as f64 * self.mlp_ratio) as usize
    }
    /// Output channels (ε prediction only: `C`).
    pub fn out_channels(&self) -> usize {
        self.input.channels
    }
    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}
