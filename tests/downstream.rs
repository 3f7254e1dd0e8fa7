//! Other data than Fashion-MNIST through the `fine` binary: the Pokémon
//! artworks (RGB, unconditional) and a folder of PNG files (ImageFolder).
//!
//! The Pokémon test reads the artworks where `scripts/fetch-pokemon.sh` puts
//! them (the test command, `scripts/fetch-test-data.sh`, fetches them first);
//! without them it fails with the loader's message, which names the script.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fine(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fine"))
        .args(args)
        .current_dir(root())
        .env("FINE_CACHE_DIR", cache)
        .output()
        .expect("running fine")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ok(args: &[&str], cache: &Path) -> String {
    let o = fine(args, cache);
    assert!(o.status.success(), "fine {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn fails(args: &[&str], cache: &Path) -> String {
    let o = fine(args, cache);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "fine {args:?} should fail cleanly; stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn pokemon_trains_samples_and_scores_unconditionally_in_rgb() {
    let (tmp, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let c = cache.path();
    let run = tmp.path().join("run");
    let out = ok(
        &["train", "--graph", "graphs/pokemon-tiny.ron", "--data", "pokemon", "--steps", "40", "--batch", "8"]
            .into_iter()
            .chain(["--lr", "3e-3", "--heldout", "32", "--out", s(&run)])
            .collect::<Vec<_>>(),
        c,
    );
    assert!(out.contains("pokemon test, N = 32"), "{out}");
    // The artworks were drawn once, into the named cache: train and test sets.
    let cached: Vec<String> = std::fs::read_dir(c.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cached.len(), 4, "{cached:?}");
    assert!(cached.iter().any(|n| n.starts_with("pokemon-train-3x32x32-")), "{cached:?}");
    let heldout: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("heldout.json")).unwrap()).unwrap();
    let live = heldout["live"].as_f64().unwrap();
    assert!(live > 0.0 && live < 1.0, "{heldout}");
    // RGB samples as a PNG grid.
    let grid = tmp.path().join("grid.png");
    ok(&["sample", "--run", s(&run), "--n", "4", "--steps", "10", "--sampler", "ddim", "--out", s(&grid)], c);
    let img = image::open(&grid).unwrap();
    assert_eq!(img.color().channel_count(), 3);
    // Guidance and classes are refused: the graph has none.
    let e = fails(&["sample", "--run", s(&run), "--n", "2", "--cfg", "3", "--out", s(&grid)], c);
    assert!(e.contains("unconditional") && e.contains("pokemon-tiny"), "{e}");
    let e = fails(&["sample", "--run", s(&run), "--n", "2", "--class", "1", "--out", s(&grid)], c);
    assert!(e.contains("--class") && e.contains("unconditional"), "{e}");
    // eval's default metrics leave out cfid for an unlabelled reference, saying so.
    let o = fine(&["eval", "--run", s(&run), "--n", "4", "--steps", "5", "--sampler", "ddim"], c);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(err.contains("cfid (FID on classifier features) is left out"), "{err}");
    assert!(out.contains("FID (Inception pool3)") && !out.contains("classifier"), "{out}");
    // No DiT state dict for a model without a label table.
    let e = fails(&["export", "--run", s(&run), "--out", s(&tmp.path().join("dit.safetensors"))], c);
    assert!(e.contains("unconditional"), "{e}");
    // A look at the data: an RGB grid.
    let look = tmp.path().join("data.png");
    let out = ok(&["data", "show", "pokemon", "--split", "test", "--n", "4", "--out", s(&look)], c);
    assert!(out.contains("66 images of 3×32×32"), "{out}");
    assert_eq!(image::open(&look).unwrap().color().channel_count(), 3);
    // Inception FID on colour images: the real train and test artworks differ, a set
    // against itself scores 0.
    let json = tmp.path().join("fid.json");
    ok(
        &["eval", "--real", "pokemon:train", "--real", "pokemon:test", "--metric", "fid", "--n", "12"]
            .into_iter()
            .chain(["--json", s(&json)])
            .collect::<Vec<_>>(),
        c,
    );
    let fid = std::fs::read_to_string(&json).unwrap();
    let v: serde_json::Value = serde_json::from_str(&fid).unwrap();
    let value = v["scores"]["fid"].as_f64().or_else(|| v["fid"].as_f64()).unwrap_or_else(|| panic!("{fid}"));
    assert!(value > 10.0 && value.is_finite(), "{fid}");
}

#[test]
fn a_folder_of_pngs_trains_a_class_conditional_model() {
    let (tmp, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let c = cache.path();
    let data = tmp.path().join("shapes");
    // Two classes of 28×28 grey pictures (stored as RGB PNGs of other sizes).
    for (class, v) in [("dark", 40u8), ("light", 220u8)] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..20u32 {
            let im = image::RgbImage::from_fn(40 + i, 30, |x, _| image::Rgb([v, v, v.wrapping_add((x % 7) as u8)]));
            im.save(data.join(format!("{class}/{i:02}.png"))).unwrap();
        }
    }
    let spec = format!("folder:{}", data.display());
    let run = tmp.path().join("run");
    let out = ok(
        &["train", "--graph", "graphs/fmnist-tiny.ron", "--data", &spec, "--steps", "5", "--batch", "4"]
            .into_iter()
            .chain(["--heldout", "4", "--out", s(&run)])
            .collect::<Vec<_>>(),
        c,
    );
    assert!(out.contains(&format!("{spec} test, N = 4")), "{out}");
    // A picture that is not one names its file; a missing folder names the folder.
    std::fs::write(data.join("light/zz.png"), b"not a png").unwrap();
    let run2 = tmp.path().join("run2");
    let e =
        fails(&["train", "--graph", "graphs/fmnist-tiny.ron", "--data", &spec, "--steps", "1", "--out", s(&run2)], c);
    assert!(e.contains("zz.png") && e.contains("not a readable PNG or JPEG"), "{e}");
    assert!(!run2.join("checkpoint.safetensors").exists());
    let missing = format!("folder:{}", tmp.path().join("nope").display());
    let e = fails(
        &["train", "--graph", "graphs/fmnist-tiny.ron", "--data", &missing, "--steps", "1", "--out", s(&run2)],
        c,
    );
    assert!(e.contains("nope") && e.contains("not a folder"), "{e}");
}

/// A learngene made on grey 28×28 Fashion-MNIST initializes an RGB 32×32
/// Pokémon model: the shape-bound weights start fresh, the blocks transfer.
#[test]
fn a_grey_learngene_initializes_an_rgb_model_of_another_shape() {
    let (tmp, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let c = cache.path();
    let (anc, lg, d) = (tmp.path().join("anc"), tmp.path().join("lg.safetensors"), tmp.path().join("d"));
    ok(&["pretrain", "--strategy", "fine", "--graph", "graphs/fmnist-tiny.ron", "--steps", "5", "--out", s(&anc)], c);
    ok(&["learngene", "extract", "--run", s(&anc), "--out", s(&lg)], c);
    let o = fine(
        &["init", "--learngene", s(&lg), "--graph", "graphs/pokemon-tiny.ron", "--data", "pokemon"]
            .into_iter()
            .chain(["--init-steps", "3", "--out", s(&d)])
            .collect::<Vec<_>>(),
        c,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("x_embedder.proj.weight, final_layer.linear.weight, final_layer.linear.bias start fresh"),
        "{err}"
    );
    ok(&["train", "--from", s(&d), "--data", "pokemon", "--steps", "3", "--batch", "4"], c);
}
