//! Pictures → square u8 images in CHW order, the form a [`Dataset`](super::Dataset) holds.
//!
//! * SVG (the Pokémon artworks): drawn with resvg at [`SUPERSAMPLE`]× the
//!   target side, the whole drawing fitted into the square with its aspect
//!   kept and centred, on a white background, then box-filtered down.
//! * PNG / JPEG (`folder:` data sets): decoded with `image`, composited on
//!   white when they have alpha, the shorter side resized to the target with a
//!   Lanczos-3 filter and the centre cropped (torchvision's `Resize` +
//!   `CenterCrop`, the ImageFolder habit).
//!
//! One channel is the ITU-R BT.601 luma `0.299 R + 0.587 G + 0.114 B` (what
//! `image` and PIL's `convert("L")` compute); three are R, G, B.

use anyhow::{anyhow, bail, Result};

/// Oversampling of an SVG drawing before it is box-filtered to the target side.
pub const SUPERSAMPLE: usize = 4;
/// Largest target side accepted (a guard against a typo like `pokemon:6400`).
pub const MAX_SIDE: usize = 1024;

/// Output form of a rasterized picture: `channels` (1 or 3) × `side` × `side`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Height and width in pixels.
    pub side: usize,
}

impl Target {
    /// Checks the channel count and side; `what` names the data set in errors.
    pub fn new(channels: usize, side: usize, what: &str) -> Result<Target> {
        if channels != 1 && channels != 3 {
            bail!("{what}: images can be made with 1 or 3 channels, not {channels}");
        }
        if side == 0 || side > MAX_SIDE {
            bail!("{what}: image side {side} is outside 1..={MAX_SIDE}");
        }
        Ok(Target { channels, side })
    }

    /// Bytes of one image.
    pub fn image_len(&self) -> usize {
        self.channels * self.side * self.side
    }
}

/// Draws SVG `bytes` (from `origin`, named in errors) as a `target` image: CHW u8.
pub fn svg(bytes: &[u8], origin: &str, target: Target) -> Result<Vec<u8>> {
    use resvg::{tiny_skia, usvg};
    let tree = usvg::Tree::from_data(bytes, &usvg::Options::default())
        .map_err(|e| anyhow!("{origin}: not a readable SVG: {e}"))?;
    let (w, h) = (tree.size().width(), tree.size().height());
    if !(w.is_finite() && h.is_finite() && w > 0.0 && h > 0.0) {
        bail!("{origin}: the SVG has an empty size {w}×{h}");
    }
    let big = target.side * SUPERSAMPLE;
    let mut pixmap = tiny_skia::Pixmap::new(big as u32, big as u32).ok_or_else(|| anyhow!("{origin}: empty canvas"))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    // Fit the longer side, centre the shorter one.
    let scale = big as f32 / w.max(h);
    let (dx, dy) = ((big as f32 - w * scale) / 2.0, (big as f32 - h * scale) / 2.0);
    let transform = tiny_skia::Transform::from_row(scale, 0.0, 0.0, scale, dx, dy);
    resvg::render(&tree, transform, &mut pixmap.as_mut());
    // On an opaque white canvas the premultiplied RGBA is plain RGB with alpha 255.
    let rgb: Vec<u8> = pixmap.data().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(); // (big, big, 3)
    Ok(to_chw(&box_down(&rgb, big, SUPERSAMPLE), target))
}

/// Decodes a PNG or JPEG `bytes` (from `origin`) as a `target` image: CHW u8.
pub fn picture(bytes: &[u8], origin: &str, target: Target) -> Result<Vec<u8>> {
    use image::imageops::{self, FilterType};
    let img = image::load_from_memory(bytes).map_err(|e| anyhow!("{origin}: not a readable PNG or JPEG: {e}"))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        bail!("{origin}: the picture is empty ({w}×{h})");
    }
    let rgba = img.to_rgba8();
    let mut rgb = image::RgbImage::new(w as u32, h as u32);
    for (dst, src) in rgb.pixels_mut().zip(rgba.pixels()) {
        let a = src[3] as u32;
        // Over white: c·a + 255·(1 − a), rounded.
        *dst = image::Rgb(std::array::from_fn(|k| ((src[k] as u32 * a + 255 * (255 - a) + 127) / 255) as u8));
    }
    // Shorter side to the target, then the centre.
    let s = target.side as f64 / w.min(h) as f64;
    let (rw, rh) = (
        ((w as f64 * s).round() as u32).max(target.side as u32),
        ((h as f64 * s).round() as u32).max(target.side as u32),
    );
    let resized = imageops::resize(&rgb, rw, rh, FilterType::Lanczos3);
    let (x0, y0) = ((rw - target.side as u32) / 2, (rh - target.side as u32) / 2);
    let crop = imageops::crop_imm(&resized, x0, y0, target.side as u32, target.side as u32).to_image();
    Ok(to_chw(crop.as_raw(), target))
}

/// Averages `f × f` cells of an interleaved RGB `(side, side, 3)` image → `(side/f, side/f, 3)`.
fn box_down(rgb: &[u8], side: usize, f: usize) -> Vec<u8> {
    let out = side / f;
    let mut small = vec![0u8; out * out * 3];
    for y in 0..out {
        for x in 0..out {
            for k in 0..3 {
                let mut sum = 0u32;
                for dy in 0..f {
                    for dx in 0..f {
                        sum += rgb[((y * f + dy) * side + x * f + dx) * 3 + k] as u32;
                    }
                }
                let n = (f * f) as u32;
                small[(y * out + x) * 3 + k] = ((sum + n / 2) / n) as u8;
            }
        }
    }
    small
}

/// Interleaved RGB `(side, side, 3)` → `target`'s CHW planes (luma for one channel).
fn to_chw(rgb: &[u8], target: Target) -> Vec<u8> {
    let n = target.side * target.side;
    debug_assert_eq!(rgb.len(), n * 3);
    if target.channels == 1 {
        return rgb.chunks_exact(3).map(|p| luma(p[0], p[1], p[2])).collect();
    }
    let mut chw = vec![0u8; 3 * n];
    for (i, p) in rgb.chunks_exact(3).enumerate() {
        for k in 0..3 {
            chw[k * n + i] = p[k];
        }
    }
    chw
}

/// BT.601 luma, rounded.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((299 * r as u32 + 587 * g as u32 + 114 * b as u32 + 500) / 1000) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 200×100 SVG: left half red, right half blue.
    const HALVES: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100">
        <rect x="0" y="0" width="100" height="100" fill="#ff0000"/>
        <rect x="100" y="0" width="100" height="100" fill="#0000ff"/></svg>"##;

    fn at(img: &[u8], t: Target, c: usize, y: usize, x: usize) -> u8 {
        img[(c * t.side + y) * t.side + x]
    }

    #[test]
    fn svg_keeps_the_aspect_on_white_and_centres_the_drawing() {
        let t = Target::new(3, 8, "test").unwrap();
        let img = svg(HALVES.as_bytes(), "halves.svg", t).unwrap();
        assert_eq!(img.len(), 3 * 64);
        // The 2:1 drawing fills rows 2..6; rows 0..2 and 6..8 are white.
        for x in 0..8 {
            for y in [0, 1, 6, 7] {
                assert_eq!([0, 1, 2].map(|c| at(&img, t, c, y, x)), [255; 3], "({y},{x})");
            }
        }
        assert_eq!([0, 1, 2].map(|c| at(&img, t, c, 3, 1)), [255, 0, 0]);
        assert_eq!([0, 1, 2].map(|c| at(&img, t, c, 4, 6)), [0, 0, 255]);
        let grey = svg(HALVES.as_bytes(), "halves.svg", Target::new(1, 8, "test").unwrap()).unwrap();
        assert_eq!((grey.len(), grey[3 * 8 + 1], grey[4 * 8 + 6], grey[0]), (64, 76, 29, 255));
    }

    #[test]
    fn picture_resizes_the_shorter_side_and_crops_the_centre() {
        // 40×20 PNG: a 10-pixel green band in the middle columns, white elsewhere.
        let mut im = image::RgbaImage::from_pixel(40, 20, image::Rgba([255, 255, 255, 255]));
        for y in 0..20 {
            for x in 15..25 {
                im.put_pixel(x, y, image::Rgba([0, 255, 0, 255]));
            }
        }
        let mut png = Vec::new();
        im.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let t = Target::new(3, 10, "test").unwrap();
        let img = picture(&png, "band.png", t).unwrap();
        // 40×20 → 20×10 → centre 10×10 = columns 5..15: the band is columns 2.5..7.5.
        // Lanczos-3 rings a little near the band's edges (measured: 5 of 255 at column 5).
        let near = |y, x, want: [u8; 3]| {
            let got = [0, 1, 2].map(|c| at(&img, t, c, y, x));
            assert!(got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 8), "({y},{x}): {got:?} vs {want:?}");
        };
        near(5, 5, [0, 255, 0]);
        near(5, 9, [255, 255, 255]);
        near(5, 1, [255, 255, 255]);
    }

    #[test]
    fn transparent_pixels_are_composited_on_white() {
        // Half-transparent black over white is mid grey; fully transparent is white.
        let mut im = image::RgbaImage::from_pixel(4, 4, image::Rgba([0, 0, 0, 0]));
        (0..4).for_each(|y| im.put_pixel(0, y, image::Rgba([0, 0, 0, 128])));
        let mut png = Vec::new();
        im.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let t = Target::new(1, 4, "test").unwrap();
        let img = picture(&png, "alpha.png", t).unwrap();
        assert_eq!(img[4 * 2 + 3], 255);
        assert!(img[4 * 2].abs_diff(127) <= 2, "{}", img[4 * 2]);
    }

    #[test]
    fn unreadable_input_names_the_file() {
        let t = Target::new(3, 8, "test").unwrap();
        let e = svg(b"<svg", "broken.svg", t).unwrap_err().to_string();
        assert!(e.contains("broken.svg") && e.contains("not a readable SVG"), "{e}");
        let e = picture(b"\x89PNG\r\n\x1a\nrubbish", "broken.png", t).unwrap_err().to_string();
        assert!(e.contains("broken.png") && e.contains("not a readable PNG or JPEG"), "{e}");
        assert!(Target::new(2, 8, "x").unwrap_err().to_string().contains("1 or 3 channels"));
        assert!(Target::new(3, 0, "x").is_err() && Target::new(3, MAX_SIDE + 1, "x").is_err());
    }
}
