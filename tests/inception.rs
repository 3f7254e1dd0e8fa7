//! The FID Inception port against PyTorch, and its weight-file checks.
//!
//! These tests need the converted weights (`scripts/fetch-inception.sh`, which
//! CI runs first); without them they FAIL with "run scripts/fetch-inception.sh".
//!
//! Reference vectors (`tests/data/`):
//! * `inception_pool3_fashion_mnist_test_0_3.npy` — (4, 2048) f32, pool3 of
//!   Fashion-MNIST test images 0..3 by the TorchScript `default_1.pt` in
//!   PyTorch 1.13.1 (copied from the project's shared reference, sha256
//!   985499638cee28b52dd3e3e1116aeb21e6ea2a8c07ebbb2c747029425ac499ea).
//! * `inception_mixed6conv7_fashion_mnist_test_0_3.npy` — (4, 17, 17, 7) f32,
//!   the sFID features of the same images, by the same .pt in PyTorch 2.x:
//!
//! ```python
//! import gzip, numpy as np, torch, torch.nn.functional as F
//! raw = gzip.open("data/fashion-mnist-test/t10k-images-idx3-ubyte.gz").read()
//! imgs = np.frombuffer(raw[16:], dtype=np.uint8).reshape(-1, 28, 28)[:4]
//! x = torch.from_numpy(imgs.astype(np.float32) / 255.0)[:, None].repeat(1, 3, 1, 1)
//! x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
//! L = torch.jit.load("default_1.pt", map_location="cpu").eval().net.layers
//! with torch.no_grad():
//!     for name in ["conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1", "mixed",
//!                  "mixed_1", "mixed_2", "mixed_3", "mixed_4", "mixed_5"]:
//!         x = getattr(L, name)(x)
//!     s = L.mixed_6.conv(x)[:, :7].permute(0, 2, 3, 1).contiguous()
//! np.save("inception_mixed6conv7_fashion_mnist_test_0_3.npy", s.numpy())
//! ```

use fine_core::data::{self, Split};
use fine_core::eval::inception::{Inception, POOL_DIM, SPATIAL_DIM};
use std::path::{Path, PathBuf};

fn data_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data").join(name)
}

/// Reads a little-endian f32 C-order `.npy` file: (shape, values).
fn read_npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}: not a .npy file", path.display());
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"), "{header}");
    let dims = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> =
        dims.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
    let values: Vec<f32> =
        bytes[start + hlen..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(values.len(), shape.iter().product::<usize>(), "{}", path.display());
    (shape, values)
}

/// The converted weights; fails (never skips) with the loader's message,
/// which says "run scripts/fetch-inception.sh" when the file is missing.
fn weights() -> PathBuf {
    let path = Inception::default_path();
    if !path.exists() {
        panic!("{}: FID Inception weights not found; run scripts/fetch-inception.sh", path.display());
    }
    path
}

fn load() -> Inception {
    Inception::load(&weights()).unwrap_or_else(|e| panic!("{e:#}"))
}

/// ‖a − b‖ / ‖b‖ and max |a − b| / max |b|.
fn rel_errs(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let (mut d2, mut b2, mut dmax, mut bmax) = (0f64, 0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let d = (x - y) as f64;
        d2 += d * d;
        b2 += (y as f64) * (y as f64);
        dmax = dmax.max(d.abs());
        bmax = bmax.max((y as f64).abs());
    }
    ((d2 / b2).sqrt(), dmax / bmax)
}

#[test]
fn features_match_pytorch_on_four_fashion_mnist_images() {
    let net = load();
    // Bundled train split = Fashion-MNIST test images 0..9000: images 0..3 are t10k 0..3.
    let ds = data::load("bundled", Split::Train).unwrap();
    let n = 4;
    let images = &ds.images[..n * ds.image_len()];
    let calls = std::cell::Cell::new(0);
    let feats = net.features_u8(images, n, ds.height, ds.width, true, &|k| calls.set(calls.get() + k)).unwrap();
    assert_eq!(calls.get(), n, "progress must count every image");

    let (shape, want) = read_npy_f32(&data_path("inception_pool3_fashion_mnist_test_0_3.npy"));
    assert_eq!(shape, [n, POOL_DIM]);
    assert_eq!(feats.pool.len(), n * POOL_DIM);
    for i in 0..n {
        let (l2, max) =
            rel_errs(&feats.pool[i * POOL_DIM..(i + 1) * POOL_DIM], &want[i * POOL_DIM..(i + 1) * POOL_DIM]);
        println!("image {i}: pool3 relative error l2 {l2:.2e}, max {max:.2e}");
        // Measured: l2 2.3e-6…4.8e-6, max 1.5e-6…4.3e-6 (f32 sums in another order).
        assert!(l2 <= 3e-5 && max <= 3e-5, "image {i}: pool3 relative error l2 {l2:.2e}, max {max:.2e}");
    }

    let (shape, want) = read_npy_f32(&data_path("inception_mixed6conv7_fashion_mnist_test_0_3.npy"));
    assert_eq!(shape, [n, 17, 17, 7]);
    let spatial = feats.spatial.expect("spatial features were asked for");
    assert_eq!(spatial.len(), n * SPATIAL_DIM);
    let (l2, max) = rel_errs(&spatial, &want);
    println!("sFID features: relative error l2 {l2:.2e}, max {max:.2e}");
    // Measured: l2 5.5e-6, max 6.4e-6.
    assert!(l2 <= 3e-5 && max <= 3e-5, "sFID features: relative error l2 {l2:.2e}, max {max:.2e}");

    // Without spatial features, the same pool3 (batching does not matter).
    let one_by_one = net.with_batch_size(1).with_threads(1);
    let again = one_by_one.features_u8(&images[..2 * 784], 2, 28, 28, false, &|_| {}).unwrap();
    assert!(again.spatial.is_none());
    let (l2, _) = rel_errs(&again.pool, &feats.pool[..2 * POOL_DIM]);
    assert!(l2 < 1e-5, "batch size / threads change the features: {l2:.2e}");
}

#[test]
fn bad_image_buffers_are_errors() {
    let net = load();
    let msg = format!("{:#}", net.features_u8(&[0u8; 100], 1, 28, 28, false, &|_| {}).unwrap_err());
    assert!(msg.contains("784"), "{msg}");
    let empty = net.features_u8(&[], 0, 28, 28, true, &|_| {}).unwrap();
    assert!(empty.pool.is_empty() && empty.spatial.unwrap().is_empty());
}

#[test]
fn missing_weight_file_says_how_to_fetch_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fid-inception-2015-12-05.safetensors");
    let msg = format!("{:#}", Inception::load(&path).err().expect("a missing file must be an error"));
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("run scripts/fetch-inception.sh"), "{msg}");
}

/// Loads `bytes` written to a temporary file; returns the error message.
fn load_error(bytes: &[u8]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let msg = format!("{:#}", Inception::load(&path).err().expect("a broken weight file must be an error"));
    assert!(msg.contains(&path.display().to_string()), "the error must name the file: {msg}");
    (msg, path.display().to_string())
}

/// The real file with the first `from` after `anchor` replaced by `to` (same
/// length) in its JSON header.
fn edit_header(bytes: &[u8], anchor: &str, from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    let a = header.find(anchor).unwrap_or_else(|| panic!("{anchor} not in the header"));
    let at = a + header[a..].find(from).unwrap_or_else(|| panic!("{from} not after {anchor}"));
    let mut out = bytes.to_vec();
    out[8 + at..8 + at + from.len()].copy_from_slice(to.as_bytes());
    out
}

#[test]
fn wrong_weight_files_are_clear_errors() {
    let good = std::fs::read(weights()).unwrap();

    // Truncated (an interrupted copy).
    let (msg, _) = load_error(&good[..good.len() / 3]);
    assert!(msg.contains("not a usable safetensors file") && msg.contains("run scripts/fetch-inception.sh"), "{msg}");

    // Not a safetensors file at all.
    let (msg, _) = load_error(b"PK\x03\x04 a zip, e.g. the .pt itself");
    assert!(msg.contains("not a usable safetensors file"), "{msg}");

    // A tensor renamed: the missing one is named.
    let name = "\"net.layers.mixed_6.conv.weight\"";
    let renamed = edit_header(&good, name, name, "\"net.layers.mixed_6.conv.weigth\"");
    let (msg, _) = load_error(&renamed);
    assert!(msg.contains("net.layers.mixed_6.conv.weight") && msg.contains("missing"), "{msg}");

    // A tensor with the wrong shape (same byte size).
    let reshaped = edit_header(&good, name, "[192,768,1,1]", "[768,192,1,1]");
    let (msg, _) = load_error(&reshaped);
    assert!(msg.contains("[768, 192, 1, 1]") && msg.contains("expected F32 [192, 768, 1, 1]"), "{msg}");

    // Padding metadata that disagrees with the architecture.
    let key = "\"net.layers.mixed_6.tower.conv_1.padding\":\"[0, 3]\"";
    let repadded = edit_header(&good, key, key, &key.replace("[0, 3]", "[3, 0]"));
    let (msg, _) = load_error(&repadded);
    assert!(msg.contains("mixed_6.tower.conv_1 has padding (3, 0)"), "{msg}");
}

/// CPU seconds (user + system) used by this process so far (Linux; 0 elsewhere).
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Throughput on this machine (`THREADS`, default 2):
/// `cargo test --release -p fine-cli --test inception -- --ignored --nocapture`.
/// Prints images/s of wall time and images per CPU-second (the latter is what
/// an idle machine would give per core when the cores are shared).
#[test]
#[ignore]
fn inception_throughput() {
    let ds = data::load("bundled", Split::Train).unwrap();
    let threads: usize = std::env::var("THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    for batch in [8, 16, 32] {
        let net = load().with_threads(threads).with_batch_size(batch);
        let n = 2 * batch;
        let (t, c) = (std::time::Instant::now(), cpu_secs());
        net.features_u8(&ds.images[..n * 784], n, 28, 28, true, &|_| {}).unwrap();
        let (s, cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - c);
        println!(
            "batch {batch}, {threads} threads: {n} images in {s:.2} s = {:.2} images/s; {cpu:.1} CPU-s = {:.2} images per CPU-s",
            n as f64 / s,
            n as f64 / cpu
        );
    }
}
