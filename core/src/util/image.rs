//! Saving batches of images in `[-1, 1]` as PNG grids.

use super::fsx::write_atomic;
use anyhow::{bail, Context, Result};
use image::{codecs::png::PngEncoder, ExtendedColorType, ImageEncoder};
use std::path::Path;

/// Pixels between tiles and around the grid border.
const PAD: usize = 2;

/// Maps a value in `[-1, 1]` to a byte: `((x + 1) * 127.5)` rounded and
/// clamped to `0..=255`. NaN maps to 0.
pub fn to_u8(x: f32) -> u8 {
    ((x + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

/// Saves `n` images of shape `(c, h, w)` (NCHW, values in `[-1, 1]`) as one
/// PNG grid with `nrow` images per row and a 2-pixel black (byte 0) padding.
///
/// `c == 1` gives a grayscale PNG, `c == 3` an RGB PNG; any other channel
/// count is drawn as grayscale from its first channel. Errors (naming `path`)
/// when a size is zero, `images.len() != n * c * h * w`, the grid is too large,
/// or the file cannot be written. The file is written atomically.
pub fn save_grid_png(path: &Path, images: &[f32], n: usize, c: usize, h: usize, w: usize, nrow: usize) -> Result<()> {
    save_grid_png_scaled(path, images, n, c, h, w, nrow, 1)
}

/// The integer factor that shows an `h`×`w` image at about 96 pixels (28-px
/// Fashion-MNIST tiles: 3×), 1 for images that large already.
pub fn display_scale(h: usize, w: usize) -> usize {
    (96 / h.max(w).max(1)).max(1)
}

/// [`save_grid_png`] with every pixel drawn as a `scale`×`scale` block
/// (nearest neighbour; the padding stays 2 pixels).
#[allow(clippy::too_many_arguments)]
pub fn save_grid_png_scaled(
    path: &Path,
    images: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    nrow: usize,
    scale: usize,
) -> Result<()> {
    let p = path.display();
    if scale == 0 || scale > 64 {
        bail!("{p}: display scale {scale} is not within 1..=64");
    }
    if n == 0 || c == 0 || h == 0 || w == 0 || nrow == 0 {
        bail!("{p}: cannot save image grid with a zero size (n={n}, c={c}, h={h}, w={w}, nrow={nrow})");
    }
    let expected = n.checked_mul(c).and_then(|v| v.checked_mul(h)).and_then(|v| v.checked_mul(w));
    if expected != Some(images.len()) {
        bail!("{p}: image buffer has {} values, expected n*c*h*w = {n}*{c}*{h}*{w}", images.len());
    }
    let cols = nrow.min(n);
    let rows = n.div_ceil(cols);
    let (sh, sw) = (h * scale, w * scale);
    let (gw, gh) = (PAD + cols * (sw + PAD), PAD + rows * (sh + PAD));
    if gw > u32::MAX as usize || gh > u32::MAX as usize || gw.saturating_mul(gh) > 1 << 30 {
        bail!("{p}: image grid of {gw}x{gh} pixels is too large");
    }
    let out_c = if c == 3 { 3 } else { 1 };
    let mut grid = vec![0u8; gw * gh * out_c];
    for i in 0..n {
        let (x0, y0) = (PAD + (i % cols) * (sw + PAD), PAD + (i / cols) * (sh + PAD));
        let img = &images[i * c * h * w..(i + 1) * c * h * w];
        for ch in 0..out_c {
            let plane = &img[ch * h * w..(ch + 1) * h * w];
            for y in 0..sh {
                for x in 0..sw {
                    grid[((y0 + y) * gw + x0 + x) * out_c + ch] = to_u8(plane[(y / scale) * w + x / scale]);
                }
            }
        }
    }
    let color = if out_c == 3 { ExtendedColorType::Rgb8 } else { ExtendedColorType::L8 };
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&grid, gw as u32, gh as u32, color)
        .with_context(|| format!("{p}: encoding PNG"))?;
    write_atomic(path, &png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_u8_maps_range() {
        assert_eq!((to_u8(-1.0), to_u8(0.0), to_u8(1.0)), (0, 128, 255));
        assert_eq!((to_u8(-7.0), to_u8(9.0), to_u8(f32::NAN)), (0, 255, 0));
    }

    #[test]
    fn gray_grid_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/grid.png");
        let imgs: Vec<f32> = (0..3 * 4 * 5).map(|i| 1.0 - (i / 20) as f32).collect();
        save_grid_png(&path, &imgs, 3, 1, 4, 5, 2).unwrap();
        let img = image::open(&path).unwrap();
        assert_eq!((img.width(), img.height()), (2 + 2 * 7, 2 + 2 * 6));
        let g = img.as_luma8().expect("grayscale");
        assert_eq!(g.get_pixel(2, 2)[0], 255);
        assert_eq!(g.get_pixel(1, 1)[0], 0);
        assert_eq!(g.get_pixel(7, 2)[0], 0);
        assert_eq!(g.get_pixel(9, 2)[0], 128);
        assert_eq!(g.get_pixel(2, 8)[0], 0);
        assert_eq!(g.get_pixel(9, 8)[0], 0);
    }

    #[test]
    fn rgb_and_other_channel_counts() {
        let dir = tempfile::tempdir().unwrap();
        let rgb = dir.path().join("rgb.png");
        let mut px = vec![-1.0f32; 3];
        px[1] = 1.0;
        save_grid_png(&rgb, &px, 1, 3, 1, 1, 8).unwrap();
        let img = image::open(&rgb).unwrap();
        assert_eq!(img.as_rgb8().expect("rgb").get_pixel(2, 2).0, [0, 255, 0]);
        let two = dir.path().join("two.png");
        save_grid_png(&two, &[1.0, -1.0], 1, 2, 1, 1, 1).unwrap();
        assert_eq!(image::open(&two).unwrap().as_luma8().unwrap().get_pixel(2, 2)[0], 255);
    }

    #[test]
    fn scaled_grid_repeats_each_pixel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.png");
        let imgs = [1.0f32, -1.0, -1.0, 1.0]; // one 2×2 checkerboard
        save_grid_png_scaled(&path, &imgs, 1, 1, 2, 2, 1, 3).unwrap();
        let g = image::open(&path).unwrap().into_luma8();
        assert_eq!((g.width(), g.height()), (2 + 6 + 2, 2 + 6 + 2));
        for (x, y, want) in [(2, 2, 255), (4, 4, 255), (5, 2, 0), (7, 4, 0), (2, 5, 0), (5, 5, 255), (7, 7, 255)] {
            assert_eq!(g.get_pixel(x, y)[0], want, "({x}, {y})");
        }
        assert_eq!((display_scale(28, 28), display_scale(32, 32), display_scale(256, 256)), (3, 3, 1));
        assert!(save_grid_png_scaled(&path, &imgs, 1, 1, 2, 2, 1, 0).is_err());
    }

    #[test]
    fn bad_sizes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.png");
        let msg = format!("{:#}", save_grid_png(&path, &[0.0; 5], 1, 1, 2, 2, 1).unwrap_err());
        assert!(msg.contains("bad.png") && msg.contains("5 values"), "{msg}");
        assert!(save_grid_png(&path, &[], 0, 1, 2, 2, 1).is_err());
        assert!(save_grid_png(&path, &[0.0; 4], 1, 1, 2, 2, 0).is_err());
        assert!(!path.exists());
    }
}
