//! Initialization — the one place that documents how every weight starts.
//!
//! Follows DiT's `initialize_weights` (facebookresearch/DiT `models.py`):
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

use crate::graph::Graph;
use fine_plugin_api::param::Init;

/// DiT's initialization for the weight `name` of `shape` (PyTorch (out, in) order) in graph `g`.
pub fn dit_init(name: &str, shape: &[usize], g: &Graph) -> Init {
    if name == "x_embedder.proj.bias" {
        let a = 1.0 / (g.patch_dim() as f32).sqrt();
        return Init::Uniform { lo: -a, hi: a };
    }
    if name == "stitch.weight" {
        return Init::Eye;
    }
    let is_bias = name.ends_with(".bias");
    if name.contains("adaLN_modulation") || name.starts_with("final_layer.linear") || is_bias {
        return Init::Zeros;
    }
    if name.starts_with("y_embedder.") || name.starts_with("t_embedder.") {
        return Init::Normal { std: 0.02 };
    }
    // Linear (out, in) or conv (out, C, p, p): fan_out = shape[0]·receptive, fan_in = rest.
    let fan_out = shape.first().copied().unwrap_or(1);
    let fan_in = shape.iter().skip(1).product::<usize>().max(1);
    Init::XavierUniform { fan_in, fan_out }
}
