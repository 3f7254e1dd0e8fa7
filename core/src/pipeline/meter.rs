//! Progress of long loops (training, sampling, feature extraction).

use indicatif::{ProgressBar, ProgressStyle};
use std::time::Instant;

/// Progress of a long loop: on a terminal a bar with rate and ETA; otherwise
/// (a log file, CI) a plain line at every tenth of the way.
pub struct Meter {
    bar: ProgressBar,
    label: String,
    total: u64,
    t0: Instant,
    next_line: u64,
}

/// The bar's layout: label, elapsed<remaining, bar, count, rate, message.
pub const BAR_TEMPLATE: &str = "{prefix} [{elapsed_precise}<{eta_precise}] {bar:30} {pos}/{len} {per_sec} {msg}";

impl Meter {
    /// A meter of `total` units of `label`.
    pub fn new(label: &str, total: usize) -> Self {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(ProgressStyle::with_template(BAR_TEMPLATE).expect("a valid template"));
        bar.set_prefix(label.to_string());
        let total = total as u64;
        Meter { bar, label: label.to_string(), total, t0: Instant::now(), next_line: total.div_ceil(10).max(1) }
    }

    /// The text shown after the count (and in the plain lines).
    pub fn set_message(&mut self, msg: &str) {
        self.bar.set_message(msg.to_string());
    }

    /// `k` more units done.
    pub fn inc(&mut self, k: usize) {
        self.bar.inc(k as u64);
        let pos = self.bar.position();
        if self.bar.is_hidden() && pos >= self.next_line {
            let s = self.t0.elapsed().as_secs_f64();
            let rate = pos as f64 / s.max(1e-9);
            let eta = (self.total.saturating_sub(pos)) as f64 / rate.max(1e-9);
            let msg = self.bar.message();
            let sep = if msg.is_empty() { "" } else { ": " };
            eprintln!(
                "{}: {pos}/{}{sep}{msg} ({rate:.2}/s, {s:.0} s elapsed, about {eta:.0} s left)",
                self.label, self.total
            );
            self.next_line = pos + self.total.div_ceil(10).max(1);
        }
    }

    /// Runs `f` (which prints) with the bar out of the way.
    pub fn suspend(&self, f: impl FnOnce()) {
        self.bar.suspend(f)
    }

    /// Ends the bar (it disappears from a terminal).
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
