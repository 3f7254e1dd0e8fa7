//! Initialization — the one place that documents how every weight starts.
//! Each layer declares its weights with one of the rules below
//! (`declare` in `layers/`), following DiT's `initialize_weights`
//! (facebookresearch/DiT `models.py`):
//!
//! | weight | init |
//! |---|---|
//! | every `nn.Linear` weight (`attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`) | Xavier-uniform, fan_in = in, fan_out = out |
//! | every bias except the patch embedding's | zero |
//! | `x_embedder.proj.weight` (D, C, p, p) | Xavier-uniform on its (D, C·p·p) view |
//! | `x_embedder.proj.bias` | PyTorch's Conv2d default U(±1/√(C·p·p)): DiT does not reset it |
//! | `y_embedder.embedding_table.weight` | Normal(0, 0.02²) |
//! | `t_embedder.mlp.{0,2}.weight` | Normal(0, 0.02²) |
//! | `blocks.*.adaLN_modulation.1.{weight,bias}` | zero (adaLN-Zero: every block starts as identity) |
//! | `final_layer.adaLN_modulation.1.*`, `final_layer.linear.*` | zero (the model starts predicting 0) |
//! | `stitch.weight` (D, D), `stitch.bias` (graphs with `stitch_after`) | identity, zero (a fresh stitch passes tokens through) |
//! | `pos_embed` | fixed 2-D sin-cos, not a parameter (see `layers::embed`) |

use fine_plugin_api::param::Init;

/// Xavier-uniform for a weight of PyTorch shape `shape`: a linear (out, in) or
/// a conv (out, C, p, p), fan_out = shape[0], fan_in = the rest.
pub fn xavier(shape: &[usize]) -> Init {
    let fan_out = shape.first().copied().unwrap_or(1);
    let fan_in = shape.iter().skip(1).product::<usize>().max(1);
    Init::XavierUniform { fan_in, fan_out }
}

/// Zero: biases, adaLN modulations, the final linear layer.
pub fn zero() -> Init {
    Init::Zeros
}

/// Normal(0, 0.02²): the timestep MLP's weights and the label table.
pub fn embedding() -> Init {
    Init::Normal { std: 0.02 }
}

/// PyTorch's Conv2d bias default U(±1/√fan_in), which DiT keeps for the patch embedding.
pub fn conv_bias(fan_in: usize) -> Init {
    let a = 1.0 / (fan_in as f32).sqrt();
    Init::Uniform { lo: -a, hi: a }
}

/// The identity matrix: a fresh stitching layer passes tokens through.
pub fn identity() -> Init {
    Init::Eye
}
