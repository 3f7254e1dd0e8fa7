//! The benchmark's report: markdown table, JSON, curves.

use super::config::BenchConfig;
use super::RunResult;
use anyhow::Result;
use fine_core::graph::Graph;
use fine_core::util::fsx::write_atomic;
use fine_core::util::plot::{line_plot_png, line_plot_svg, Series};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// Mean and sample standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = if v.len() > 1 { (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    (m, s)
}

/// Writes table.md, results.json and curve-SIZE.{png,svg} into `out`; prints the table.
pub fn write(
    out: &Path,
    cfg: &BenchConfig,
    sizes: &[Graph],
    storage: &BTreeMap<String, usize>,
    results: &[RunResult],
) -> Result<()> {
    let labels: Vec<String> = cfg.rows.iter().map(|r| r.label()).collect();
    let runs = |row: &str, size: &str| -> Vec<&RunResult> {
        results.iter().filter(|r| r.row == row && r.size == size).collect()
    };
    let metric = cfg.eval.metric.title();
    let mut md = String::new();
    writeln!(
        md,
        "## {}: {metric} after {} training steps (mean ± std over seeds {:?}; N = {})\n",
        cfg.name,
        cfg.train.steps.unwrap_or(0),
        cfg.seeds,
        cfg.eval.n
    )?;
    let head: Vec<String> =
        sizes.iter().map(|g| format!("{} ({} params)", g.name, fine_core::graph::param_count(g))).collect();
    writeln!(md, "| strategy | learngene (values) | {} |", head.join(" | "))?;
    writeln!(md, "|---|---:|{}", "---:|".repeat(sizes.len()))?;
    for l in &labels {
        let cells: Vec<String> = sizes
            .iter()
            .map(|g| {
                let v: Vec<f64> = runs(l, &g.name).iter().map(|r| r.last).collect();
                if v.is_empty() {
                    return "—".into();
                }
                let (m, s) = mean_std(&v);
                format!("{m:.4} ± {s:.4}")
            })
            .collect();
        writeln!(md, "| {l} | {} | {} |", storage.get(l).copied().unwrap_or(0), cells.join(" | "))?;
    }
    writeln!(md, "\nInitialization cost per size: values trained during the initialization phase / its steps / wall time (mean, s).\n")?;
    writeln!(md, "| strategy | {} |", sizes.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(" | "))?;
    writeln!(md, "|---|{}", "---:|".repeat(sizes.len()))?;
    for l in &labels {
        let cells: Vec<String> = sizes
            .iter()
            .map(|g| {
                let rs = runs(l, &g.name);
                match rs.first() {
                    None => "—".into(),
                    Some(r) => {
                        let secs = rs.iter().map(|r| r.init_seconds).sum::<f64>() / rs.len() as f64;
                        format!("{} / {} / {secs:.1}", r.init_trainable, r.init_steps)
                    }
                }
            })
            .collect();
        writeln!(md, "| {l} | {} |", cells.join(" | "))?;
    }
    print!("{md}");
    write_atomic(&out.join("table.md"), md.as_bytes())?;
    let json = serde_json::json!({ "config": cfg, "storage": storage, "runs": results });
    write_atomic(&out.join("results.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    for g in sizes {
        let series: Vec<Series> = labels
            .iter()
            .map(|l| {
                let rs = runs(l, &g.name);
                let steps: Vec<usize> = rs.first().map(|r| r.curve.iter().map(|c| c.0).collect()).unwrap_or_default();
                let points = steps
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &s)| {
                        let v: Vec<f64> = rs.iter().filter_map(|r| r.curve.get(i).map(|c| c.1)).collect();
                        (!v.is_empty()).then(|| (s as f64, mean_std(&v).0))
                    })
                    .collect();
                Series { name: l.clone(), points }
            })
            .collect();
        let title = format!("{}: {} ({metric}, mean over seeds)", cfg.name, g.name);
        line_plot_svg(&out.join(format!("curve-{}.svg", g.name)), &title, "training step", metric, &series, false)?;
        if let Err(e) =
            line_plot_png(&out.join(format!("curve-{}.png", g.name)), &title, "training step", metric, &series, false)
        {
            eprintln!("warning: {e:#}");
        }
    }
    println!("\nwrote {}/table.md, results.json, curve-*.png", out.display());
    Ok(())
}
