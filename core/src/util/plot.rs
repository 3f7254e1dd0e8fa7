//! Line plots written as SVG or PNG (loss curves, benchmark curves).

use super::fsx::write_atomic;
use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::ops::Range;
use std::path::Path;

/// Canvas size in pixels.
const SIZE: (u32, u32) = (900, 560);
/// Series colors (Tableau 10), cycled.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A named sequence of `(x, y)` points drawn as one line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Legend label; series with an empty name get no legend entry.
    pub name: String,
    /// Points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// Draws `series` as lines in one chart and writes it atomically to `path` as
/// SVG. With `log_y` the y axis is logarithmic.
///
/// Points with a non-finite coordinate (and, with `log_y`, a non-positive y)
/// are skipped. With no drawable point at all the file still holds a valid SVG
/// with the title and empty axes. Each series gets its own color and a legend
/// entry.
pub fn line_plot_svg(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<()> {
    let svg = line_plot_svg_text(title, x_label, y_label, series, log_y)
        .map_err(|e| anyhow!("{}: drawing plot: {e}", path.display()))?;
    write_atomic(path, svg.as_bytes())
}

/// [`line_plot_svg`] rasterized to PNG (resvg; text in the system's fonts —
/// without any font installed the lines and axes are drawn, the text is not).
pub fn line_plot_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<()> {
    let fail = |e: String| anyhow!("{}: drawing plot: {e}", path.display());
    let svg = line_plot_svg_text(title, x_label, y_label, series, log_y).map_err(|e| fail(e.to_string()))?;
    let mut opt = resvg::usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_system_fonts();
    // plotters asks for the generic `sans-serif`: map it to a font that exists.
    let families: Vec<String> = db.faces().flat_map(|f| f.families.iter().map(|(n, _)| n.clone())).collect();
    let pick = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial", "Helvetica"]
        .iter()
        .map(|s| s.to_string())
        .find(|want| families.contains(want))
        .or_else(|| families.first().cloned());
    if let Some(f) = pick {
        db.set_sans_serif_family(f);
    }
    let tree = resvg::usvg::Tree::from_str(&svg, &opt).map_err(|e| fail(e.to_string()))?;
    let mut pixmap = resvg::tiny_skia::Pixmap::new(SIZE.0, SIZE.1).ok_or_else(|| fail("empty canvas".into()))?;
    resvg::render(&tree, resvg::tiny_skia::Transform::default(), &mut pixmap.as_mut());
    let png = pixmap.encode_png().map_err(|e| fail(e.to_string()))?;
    write_atomic(path, &png)
}

/// The SVG text of a line plot (see [`line_plot_svg`]).
fn line_plot_svg_text(title: &str, x_label: &str, y_label: &str, series: &[Series], log_y: bool) -> Result<String> {
    let clean: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points.iter().copied().filter(|&(x, y)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0)).collect()
        })
        .collect();
    let all = || clean.iter().flatten();
    let xr = pad_linear(bounds(all().map(|p| p.0)));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        let labels = Labels { title, x: x_label, y: y_label };
        let res = if log_y {
            let yr = pad_log(bounds(all().map(|p| p.1)));
            draw(&root, &labels, series, &clean, xr, yr.log_scale())
        } else {
            draw(&root, &labels, series, &clean, xr, pad_linear(bounds(all().map(|p| p.1))))
        };
        res.and_then(|_| root.present().map_err(|e| anyhow!("{e:?}")))?;
    }
    Ok(svg)
}

/// Chart title and axis descriptions.
struct Labels<'a> {
    title: &'a str,
    x: &'a str,
    y: &'a str,
}

/// Draws the chart on `root` with the given y coordinate spec.
fn draw<Y>(
    root: &DrawingArea<SVGBackend, Shift>,
    labels: &Labels,
    series: &[Series],
    clean: &[Vec<(f64, f64)>],
    xr: Range<f64>,
    yr: Y,
) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(root)
        .caption(labels.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(xr, yr)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(labels.x)
        .y_desc(labels.y)
        .x_label_formatter(&|v| fmt_num(*v))
        .y_label_formatter(&|v| fmt_num(*v))
        .draw()
        .map_err(err)?;
    let mut legend = false;
    for (i, (s, pts)) in series.iter().zip(clean).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let style = color.stroke_width(2);
        let drawn = chart.draw_series(LineSeries::new(pts.iter().copied(), style)).map_err(err)?;
        if !s.name.is_empty() {
            legend = true;
            drawn.label(s.name.as_str()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    if legend {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// Min and max of `values`, or `None` when empty.
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A linear axis range around `b` with 5% margins; `0..1` when empty.
fn pad_linear(b: Option<(f64, f64)>) -> Range<f64> {
    match b {
        None => 0.0..1.0,
        Some((lo, hi)) if hi - lo <= f64::EPSILON * hi.abs().max(1.0) => {
            let d = (lo.abs() * 0.1).max(1e-9).max(if lo == 0.0 { 1.0 } else { 0.0 });
            lo - d..hi + d
        }
        Some((lo, hi)) => {
            let d = (hi - lo) * 0.05;
            lo - d..hi + d
        }
    }
}

/// A positive log axis range around `b` with margins; `1..10` when empty.
fn pad_log(b: Option<(f64, f64)>) -> Range<f64> {
    match b {
        None => 1.0..10.0,
        Some((lo, hi)) if hi / lo < 1.01 => lo / 2.0..hi * 2.0,
        Some((lo, hi)) => {
            let f = (hi / lo).powf(0.05);
            lo / f..hi * f
        }
    }
}

/// Compact tick label: scientific notation for very large or small values.
fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".into()
        } else {
            s.to_string()
        }
    }
}

/// Exponential moving average of the y values: `s = alpha * y + (1 - alpha) * s`,
/// starting from the first point. `alpha` is clamped to `(0, 1]` (1 = no
/// smoothing). Points with a non-finite coordinate are dropped.
pub fn smooth_ema(points: &[(f64, f64)], alpha: f64) -> Vec<(f64, f64)> {
    let alpha = if alpha.is_nan() { 1.0 } else { alpha.clamp(1e-6, 1.0) };
    let mut s: Option<f64> = None;
    points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|&(x, y)| {
            let v = s.map_or(y, |prev| alpha * y + (1.0 - alpha) * prev);
            s = Some(v);
            (x, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, pts: &[(f64, f64)]) -> Series {
        Series { name: name.into(), points: pts.to_vec() }
    }

    fn render(series: &[Series], log_y: bool) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.svg");
        line_plot_svg(&path, "Loss <curve>", "step", "loss", series, log_y).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(svg.contains("Loss &lt;curve&gt;") || svg.contains("Loss <curve>"));
        svg
    }

    #[test]
    fn draws_series_with_legend() {
        let a = series("train", &[(0.0, 1.0), (1.0, 0.5), (2.0, 0.25)]);
        let b = series("eval", &[(0.0, 2.0), (2.0, f64::NAN), (3.0, 0.1)]);
        for log_y in [false, true] {
            let svg = render(&[a.clone(), b.clone()], log_y);
            assert!(svg.contains("train") && svg.contains("eval"));
            assert!(svg.contains("#1F77B4") || svg.contains("31,119,180") || svg.contains("#1f77b4"), "{svg}");
        }
    }

    #[test]
    fn degenerate_inputs_still_write_svg() {
        render(&[], false);
        render(&[], true);
        render(&[series("", &[])], false);
        render(&[series("neg", &[(0.0, -1.0), (1.0, 0.0)])], true);
        render(&[series("flat", &[(5.0, 3.0), (5.0, 3.0)])], false);
        render(&[series("one", &[(0.0, 0.0)])], false);
        render(&[series("inf", &[(f64::INFINITY, 1.0), (1.0, f64::NEG_INFINITY)])], true);
    }

    #[test]
    fn ema_smooths_and_skips_nan() {
        let pts = [(0.0, 0.0), (1.0, f64::NAN), (2.0, 10.0), (3.0, 10.0)];
        assert_eq!(smooth_ema(&pts, 0.5), vec![(0.0, 0.0), (2.0, 5.0), (3.0, 7.5)]);
        assert_eq!(smooth_ema(&pts, 1.0).len(), 3);
        assert!(smooth_ema(&[], 0.1).is_empty());
    }
}
