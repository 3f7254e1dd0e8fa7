//! The benchmark's report: markdown tables, JSON, curves.
//!
//! `table.md` holds, in order: the budget of every phase; each ancestry's own
//! score; the full table (rows × sizes) of every metric; the config's
//! sub-tables (`tables`); the paired per-seed differences (`paired`); the
//! initialization cost. Every cell is mean ± sample std over the seeds that
//! have finished, with their count when it is not every seed.

use super::config::{BenchConfig, Metric};
use super::{AncestryScore, RunResult};
use anyhow::Result;
use fine_core::graph::Graph;
use fine_core::util::fsx::write_atomic;
use fine_core::util::plot::{bar_chart_svg, line_plot_png, line_plot_svg, spans_decades, Bar, Series};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// Mean and sample standard deviation (n − 1; 0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = if v.len() > 1 { (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    (m, s)
}

/// A metric of the report: the curve's metric after the last step, or one of `eval.end`.
#[derive(Debug, Clone)]
struct Column {
    title: String,
    /// Digits after the point.
    digits: usize,
    /// Key in `RunResult::end`; `None`: `RunResult::last`.
    end: Option<String>,
}

impl Column {
    fn of(&self, r: &RunResult) -> Option<f64> {
        match &self.end {
            None => Some(r.last),
            Some(k) => r.end.get(k).copied(),
        }
    }
}

fn columns(cfg: &BenchConfig) -> Vec<Column> {
    let mut c = vec![Column { title: cfg.eval.metric.title().into(), digits: 4, end: None }];
    for m in &cfg.eval.end {
        c.push(Column {
            title: format!("{} (N = {})", m.title(), cfg.eval.end_n),
            digits: 2,
            end: Some(m.title().into()),
        });
    }
    c
}

/// "mean ± std", with "(n)" when fewer than `seeds` values.
fn cell(v: &[f64], seeds: usize, digits: usize) -> String {
    if v.is_empty() {
        return "—".into();
    }
    let (m, s) = mean_std(v);
    let n = if v.len() < seeds { format!(" (n={})", v.len()) } else { String::new() };
    format!("{m:.digits$} ± {s:.digits$}{n}")
}

/// Per-seed differences `a − b` (seeds both have), as a markdown cell:
/// mean ± std, how many are negative (a lower), and each difference.
pub fn paired_cell(
    a: &[&RunResult],
    b: &[&RunResult],
    col_of: impl Fn(&RunResult) -> Option<f64>,
    digits: usize,
) -> String {
    let mut d = Vec::new();
    for ra in a {
        if let Some(rb) = b.iter().find(|rb| rb.seed == ra.seed) {
            if let (Some(x), Some(y)) = (col_of(ra), col_of(rb)) {
                d.push((ra.seed, x - y));
            }
        }
    }
    if d.is_empty() {
        return "—".into();
    }
    let v: Vec<f64> = d.iter().map(|x| x.1).collect();
    let (m, s) = mean_std(&v);
    let lower = v.iter().filter(|x| **x < 0.0).count();
    let each: Vec<String> = d.iter().map(|(seed, x)| format!("s{seed} {x:+.digits$}")).collect();
    format!("{m:+.digits$} ± {s:.digits$}; lower {lower}/{} ({})", v.len(), each.join(", "))
}

/// Writes table.md, results.json and curve-SIZE.{png,svg} into `out`; prints the tables.
pub fn write(
    out: &Path,
    cfg: &BenchConfig,
    sizes: &[Graph],
    storage: &BTreeMap<String, usize>,
    ancestries: &BTreeMap<String, AncestryScore>,
    results: &[RunResult],
    partial: Option<(usize, usize)>,
) -> Result<()> {
    let mut md = String::new();
    if let Some((done, all)) = partial {
        writeln!(md, "**PARTIAL**: {done} of {all} descendant runs have finished; cells give their seed count.\n")?;
    }
    md += &markdown(cfg, sizes, storage, ancestries, results)?;
    print!("{md}");
    write_atomic(&out.join("table.md"), md.as_bytes())?;
    let json = serde_json::json!({
        "config": cfg, "storage": storage, "ancestries": ancestries, "runs": results,
        "finished": results.len(), "partial": partial.is_some(),
    });
    write_atomic(&out.join("results.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    write_atomic(&out.join("summary.md"), summary(cfg, sizes, results, partial).as_bytes())?;
    curves(out, cfg, sizes, results)?;
    println!("\nwrote {}/table.md, summary.md, results.json, curve-*.png, bars-*.svg", out.display());
    Ok(())
}

/// One short table for a README: per row with results, the table metric's mean
/// at every size and the Inception FID at `eval.fid_sizes` (mean over the
/// seeds finished; their count where it is not every seed).
pub fn summary(cfg: &BenchConfig, sizes: &[Graph], results: &[RunResult], partial: Option<(usize, usize)>) -> String {
    let metric = cfg.eval.metric.title();
    let fid = Metric::Fid.title();
    let fid_sizes: Vec<&Graph> = match cfg.eval.end.contains(&Metric::Fid) {
        true => {
            sizes.iter().filter(|g| cfg.eval.fid_sizes.is_empty() || cfg.eval.fid_sizes.contains(&g.name)).collect()
        }
        false => Vec::new(),
    };
    let mut md = String::new();
    let state = match partial {
        Some((done, all)) => format!("PARTIAL, {done} of {all} runs"),
        None => "complete".into(),
    };
    md += &format!("`{}` ({state}): {metric} after training, mean over seeds", cfg.name);
    md += "; generated from results.json by `fine bench learngene --report-only`.\n\n| strategy |";
    for g in sizes {
        md += &format!(" {} |", g.name);
    }
    for g in &fid_sizes {
        md += &format!(" {fid}, {} |", g.name);
    }
    md += "\n|---|";
    md += &"---:|".repeat(sizes.len() + fid_sizes.len());
    md += "\n";
    let seeds = cfg.seeds.len();
    let value = |v: Vec<f64>, digits: usize| match v.len() {
        0 => "—".to_string(),
        n if n < seeds => format!("{:.digits$} (n={n})", mean_std(&v).0),
        _ => format!("{:.digits$}", mean_std(&v).0),
    };
    for r in &cfg.rows {
        let label = r.label();
        let of =
            |g: &Graph| -> Vec<&RunResult> { results.iter().filter(|x| x.row == label && x.size == g.name).collect() };
        if sizes.iter().all(|g| of(g).is_empty()) {
            continue;
        }
        md += &format!("| {label} |");
        for g in sizes {
            md += &format!(" {} |", value(of(g).iter().map(|x| x.last).collect(), 4));
        }
        for g in &fid_sizes {
            md += &format!(" {} |", value(of(g).iter().filter_map(|x| x.end.get(fid).copied()).collect(), 1));
        }
        md += "\n";
    }
    md
}

/// The whole markdown report.
pub fn markdown(
    cfg: &BenchConfig,
    sizes: &[Graph],
    storage: &BTreeMap<String, usize>,
    ancestries: &BTreeMap<String, AncestryScore>,
    results: &[RunResult],
) -> Result<String> {
    let labels: Vec<String> = cfg.rows.iter().map(|r| r.label()).collect();
    let runs = |row: &str, size: &str| -> Vec<&RunResult> {
        results.iter().filter(|r| r.row == row && r.size == size).collect()
    };
    let seeds = cfg.seeds.len();
    let cols = columns(cfg);
    let mut md = String::new();
    let a = &cfg.ancestry;
    writeln!(md, "## {}: budget\n", cfg.name)?;
    writeln!(
        md,
        "- ancestry: {} steps × batch {} (lr {}, warmup {}, EMA {}), learngene from the {:?} weights",
        a.steps, a.batch, a.lr, a.warmup, a.ema_decay, a.weights
    )?;
    writeln!(
        md,
        "- initialization phase (where a strategy has one): {} steps × batch {} (lr {}, warmup {}{})",
        cfg.init.steps.map_or("the strategy's".to_string(), |s| s.to_string()),
        cfg.init.batch,
        cfg.init.lr,
        cfg.init.warmup,
        cfg.init.subset.map_or(String::new(), |n| format!(", first {n} images"))
    )?;
    writeln!(
        md,
        "- descendants: {} ordinary steps × batch {} (lr {}, warmup {}), seeds {:?}",
        cfg.train.steps.unwrap_or(0),
        cfg.train.batch,
        cfg.train.lr,
        cfg.train.warmup,
        cfg.seeds
    )?;
    for r in cfg.rows.iter().filter(|r| r.train_steps.is_some()) {
        writeln!(md, "- row `{}`: {} ordinary steps", r.label(), r.train_steps.unwrap_or(0))?;
    }
    for r in cfg.rows.iter().filter(|r| r.ancestry_lr.is_some()) {
        writeln!(md, "- row `{}`: ancestry lr {}", r.label(), r.ancestry_lr.unwrap_or(0.0))?;
    }
    writeln!(md, "- scores: {} (N = {}) every {} steps", cfg.eval.metric.title(), cfg.eval.n, cfg.eval.every)?;
    if !cfg.eval.end.is_empty() {
        let m: Vec<&str> = cfg.eval.end.iter().map(|m| m.title()).collect();
        writeln!(
            md,
            "- final models: {} of {} samples ({} {} steps, guidance {}) against {} training images",
            m.join(", "),
            cfg.eval.end_n,
            cfg.eval.sampler,
            cfg.eval.sampling_steps,
            cfg.eval.cfg_scale,
            cfg.eval.end_n
        )?;
    }
    if !ancestries.is_empty() {
        writeln!(md, "\n### Ancestries: held-out ε-MSE of the ancestry itself (N = {})\n", cfg.eval.n)?;
        writeln!(md, "| row | live | EMA |\n|---|---:|---:|")?;
        for l in labels.iter().filter(|l| ancestries.contains_key(*l)) {
            let s = ancestries[l];
            writeln!(md, "| {l} | {:.4} | {:.4} |", s.live, s.ema)?;
        }
    }
    let table = |md: &mut String, title: &str, rows: &[String], sz: &[&Graph], col: &Column| -> Result<()> {
        writeln!(md, "\n### {title}: {}\n", col.title)?;
        let head: Vec<String> =
            sz.iter().map(|g| format!("{} ({} params)", g.name, fine_core::model::summary::param_count(g))).collect();
        writeln!(md, "| strategy | learngene (values) | {} |", head.join(" | "))?;
        writeln!(md, "|---|---:|{}", "---:|".repeat(sz.len()))?;
        for l in rows {
            let cells: Vec<String> = sz
                .iter()
                .map(|g| {
                    let v: Vec<f64> = runs(l, &g.name).iter().filter_map(|r| col.of(r)).collect();
                    cell(&v, seeds, col.digits)
                })
                .collect();
            writeln!(md, "| {l} | {} | {} |", storage.get(l).copied().unwrap_or(0), cells.join(" | "))?;
        }
        Ok(())
    };
    let all: Vec<&Graph> = sizes.iter().collect();
    for col in &cols {
        table(&mut md, "All rows", &labels, &all, col)?;
    }
    for t in &cfg.tables {
        let sz: Vec<&Graph> = sizes.iter().filter(|g| t.sizes.is_empty() || t.sizes.contains(&g.name)).collect();
        for col in &cols {
            table(&mut md, &t.title, &t.rows, &sz, col)?;
        }
    }
    if !cfg.paired.is_empty() {
        for col in &cols {
            writeln!(md, "\n### Paired differences per seed (a − b; negative: a is lower): {}\n", col.title)?;
            writeln!(md, "| a − b | {} |", sizes.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(" | "))?;
            writeln!(md, "|---|{}", "---|".repeat(sizes.len()))?;
            for (a, b) in &cfg.paired {
                let cells: Vec<String> = sizes
                    .iter()
                    .map(|g| paired_cell(&runs(a, &g.name), &runs(b, &g.name), |r| col.of(r), col.digits))
                    .collect();
                writeln!(md, "| {a} − {b} | {} |", cells.join(" | "))?;
            }
        }
    }
    writeln!(md, "\n### Initialization cost per size: values trained during the initialization phase / its steps / wall time (mean, s)\n")?;
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
    Ok(md)
}

/// curve-SIZE.{svg,png}: the curve's metric against the training step, mean over seeds.
fn curves(out: &Path, cfg: &BenchConfig, sizes: &[Graph], results: &[RunResult]) -> Result<()> {
    let metric = cfg.eval.metric.title();
    for g in sizes {
        let series: Vec<Series> = cfg
            .rows
            .iter()
            .map(|r| r.label())
            .filter_map(|l| {
                let rs: Vec<&RunResult> = results.iter().filter(|r| r.row == l && r.size == g.name).collect();
                let steps: Vec<usize> = rs.first()?.curve.iter().map(|c| c.0).collect();
                let points = steps
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &s)| {
                        let v: Vec<f64> = rs.iter().filter_map(|r| r.curve.get(i).map(|c| c.1)).collect();
                        (!v.is_empty()).then(|| (s as f64, mean_std(&v).0))
                    })
                    .collect();
                Some(Series { name: l, points, marked: true })
            })
            .collect();
        let title = format!("{}: {} ({metric}, mean over seeds)", cfg.name, g.name);
        let file = super::sanitize(&g.name);
        // Scratch starts near 1.0 and every row ends near 0.05: a log axis keeps them apart.
        let log = spans_decades(&series);
        line_plot_svg(&out.join(format!("curve-{file}.svg")), &title, "training step", metric, &series, log)?;
        if let Err(e) =
            line_plot_png(&out.join(format!("curve-{file}.png")), &title, "training step", metric, &series, log)
        {
            eprintln!("warning: {e:#}");
        }
        // The table's column for this size as bars: mean ± std over seeds of the last score.
        let bars: Vec<Bar> = cfg
            .rows
            .iter()
            .filter_map(|r| {
                let v: Vec<f64> =
                    results.iter().filter(|x| x.row == r.label() && x.size == g.name).map(|x| x.last).collect();
                (!v.is_empty()).then(|| {
                    let (m, s) = mean_std(&v);
                    Bar { label: r.label(), value: m, err: s }
                })
            })
            .collect();
        let title = format!("{}: {} after training ({metric}, mean ± std over seeds)", cfg.name, g.name);
        bar_chart_svg(&out.join(format!("bars-{file}.svg")), &title, metric, &bars)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(row: &str, seed: u64, last: f64) -> RunResult {
        RunResult {
            row: row.into(),
            size: "s".into(),
            seed,
            init_steps: 0,
            init_trainable: 0,
            init_seconds: 0.0,
            train_seconds: 0.0,
            curve: vec![(0, 1.0), (10, last)],
            last,
            train_steps: 10,
            end: BTreeMap::from([("FID".to_string(), last * 100.0)]),
        }
    }

    /// Hand-computed: mean 2, sample std 1 (not the first value, not the population std 0.816).
    #[test]
    fn mean_and_sample_std() {
        assert_eq!(mean_std(&[1.0, 2.0, 3.0]), (2.0, 1.0));
        assert_eq!(mean_std(&[5.0]), (5.0, 0.0));
        assert_eq!(cell(&[1.0, 2.0, 3.0], 3, 2), "2.00 ± 1.00");
        assert_eq!(cell(&[1.0, 3.0], 3, 1), "2.0 ± 1.4 (n=2)");
        assert_eq!(cell(&[], 3, 1), "—");
    }

    /// Paired by seed (seed 2 of `a` has no partner), signs kept, end metrics read by key.
    #[test]
    fn paired_differences() {
        let a = [run("a", 0, 0.5), run("a", 1, 0.7), run("a", 2, 0.1)];
        let b = [run("b", 1, 0.4), run("b", 0, 0.6)];
        let (ra, rb): (Vec<&RunResult>, Vec<&RunResult>) = (a.iter().collect(), b.iter().collect());
        // s0: 0.5 − 0.6 = −0.1, s1: 0.7 − 0.4 = +0.3; mean +0.1, std √0.08 = 0.283.
        assert_eq!(paired_cell(&ra, &rb, |r| Some(r.last), 2), "+0.10 ± 0.28; lower 1/2 (s0 -0.10, s1 +0.30)");
        let fid = Column { title: "FID".into(), digits: 1, end: Some("FID".into()) };
        assert_eq!(paired_cell(&ra, &rb, |r| fid.of(r), 1), "+10.0 ± 28.3; lower 1/2 (s0 -10.0, s1 +30.0)");
        assert_eq!(paired_cell(&ra, &[], |r| Some(r.last), 2), "—");
    }

    /// "lower" counts the strictly negative differences: a tie is not lower,
    /// and the count is not that of the positive ones.
    #[test]
    fn paired_lower_counts_strictly_negative_differences() {
        let a = [run("a", 0, 0.25), run("a", 1, 0.5), run("a", 2, 0.5), run("a", 3, 0.75)];
        let b = [run("b", 0, 0.5), run("b", 1, 0.75), run("b", 2, 0.5), run("b", 3, 0.5)];
        let (ra, rb): (Vec<&RunResult>, Vec<&RunResult>) = (a.iter().collect(), b.iter().collect());
        // Differences −0.25, −0.25, 0, +0.25: two lower, one tie, one higher.
        let cell = paired_cell(&ra, &rb, |r| Some(r.last), 2);
        assert!(cell.contains("lower 2/4"), "{cell}");
    }
}
