//! Line plots and bar charts written as SVG or PNG (loss curves, benchmark
//! curves and tables). Named series get a legend in a panel beside the chart,
//! never over the data.

use super::fsx::write_atomic;
use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;
use std::path::Path;

/// Canvas size in pixels.
const SIZE: (u32, u32) = (900, 560);
/// Width of the legend panel to the right of the chart.
const LEGEND_W: u32 = 250;
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
    /// Mark every point (evaluated points of a curve; off for dense curves
    /// such as a per-step loss).
    pub marked: bool,
}

/// Whether a y axis over these series should be logarithmic: every finite
/// value positive and the largest at least 10× the smallest.
pub fn spans_decades(series: &[Series]) -> bool {
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|y| y.is_finite());
    match bounds(ys) {
        Some((lo, hi)) => lo > 0.0 && hi / lo >= 10.0,
        None => false,
    }
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
        root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
        let root = match series.iter().any(|s| !s.name.is_empty()) {
            true => {
                let (chart, panel) = root.split_horizontally(SIZE.0 - LEGEND_W);
                draw_legend(&panel, series.iter().map(|s| s.name.as_str()))?;
                chart
            }
            false => root,
        };
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
    for (i, (s, pts)) in series.iter().zip(clean).enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2))).map_err(err)?;
        if s.marked {
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(err)?;
        }
    }
    Ok(())
}

/// The legend: one colored line and name per entry (empty names skipped), top down.
fn draw_legend<'a>(panel: &DrawingArea<SVGBackend, Shift>, names: impl Iterator<Item = &'a str>) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("{e:?}");
    let font = ("sans-serif", 15).into_font();
    for (row, (i, name)) in names.enumerate().filter(|(_, n)| !n.is_empty()).enumerate() {
        let (color, y) = (COLORS[i % COLORS.len()], 50 + 24 * row as i32);
        panel.draw(&PathElement::new(vec![(8, y), (34, y)], color.stroke_width(3))).map_err(err)?;
        panel.draw(&Circle::new((21, y), 4, color.filled())).map_err(err)?;
        panel.draw(&Text::new(name.to_string(), (42, y - 8), font.clone())).map_err(err)?;
    }
    Ok(())
}

/// One bar of a [`bar_chart_svg`]: a label, a value and its error (± half-width).
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Category name, written beside the bar.
    pub label: String,
    /// Bar length.
    pub value: f64,
    /// Error whisker half-width (0: none).
    pub err: f64,
}

/// Horizontal bars (one per category, top down, error whiskers) written
/// atomically to `path` as SVG; non-finite bars are left out.
pub fn bar_chart_svg(path: &Path, title: &str, x_label: &str, bars: &[Bar]) -> Result<()> {
    let bars: Vec<&Bar> = bars.iter().filter(|b| b.value.is_finite() && b.err.is_finite()).collect();
    let hi = bars.iter().map(|b| b.value + b.err).fold(0.0f64, f64::max);
    let lo = bars.iter().map(|b| b.value - b.err).fold(0.0f64, f64::min);
    let n = bars.len().max(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (SIZE.0, 80 + 34 * bars.len().max(1) as u32)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| anyhow!("{e:?}");
        root.fill(&WHITE).map_err(err)?;
        // Room right of the longest bar for its label and value.
        let span = (hi - lo).max(f64::MIN_POSITIVE);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(10)
            .build_cartesian_2d(lo..hi + 0.6 * span, 0.0..n)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(x_label)
            .x_label_formatter(&|v| fmt_num(*v))
            .draw()
            .map_err(err)?;
        let font = TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for (i, b) in bars.iter().enumerate() {
            let y = n - i as f64 - 0.5; // top down
            let color = COLORS[i % COLORS.len()];
            chart.draw_series([Rectangle::new([(0.0, y - 0.35), (b.value, y + 0.35)], color.filled())]).map_err(err)?;
            if b.err > 0.0 {
                let (a, z) = (b.value - b.err, b.value + b.err);
                let whisker = vec![(a, y), (z, y)];
                chart.draw_series([PathElement::new(whisker, BLACK.stroke_width(2))]).map_err(err)?;
            }
            let text = match b.err > 0.0 {
                true => format!("{}  {} ± {}", b.label, fmt_num(b.value), fmt_num(b.err)),
                false => format!("{}  {}", b.label, fmt_num(b.value)),
            };
            let at = b.value.max(0.0) + b.err + 0.02 * span;
            chart.draw_series([Text::new(text, (at, y), font.clone())]).map_err(err)?;
        }
        root.present().map_err(|e| anyhow!("{e:?}"))?;
    }
    write_atomic(path, svg.as_bytes())
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
        Series { name: name.into(), points: pts.to_vec(), marked: true }
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
    fn decades_choose_a_log_axis_and_bars_are_drawn() {
        assert!(spans_decades(&[series("a", &[(0.0, 1.0), (1.0, 0.05)])]));
        assert!(!spans_decades(&[series("a", &[(0.0, 1.0), (1.0, 0.2)])]));
        assert!(!spans_decades(&[series("a", &[(0.0, 1.0), (1.0, -0.5)])]));
        assert!(!spans_decades(&[]));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.svg");
        let bars = [
            Bar { label: "scratch".into(), value: 0.08, err: 0.002 },
            Bar { label: "fine".into(), value: 0.05, err: 0.0 },
            Bar { label: "nan".into(), value: f64::NAN, err: 0.0 },
        ];
        bar_chart_svg(&path, "depth 4", "held-out ε-MSE", &bars).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("scratch") && svg.contains("fine") && !svg.contains(">nan<"), "{svg}");
        bar_chart_svg(&path, "empty", "x", &[]).unwrap();
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
