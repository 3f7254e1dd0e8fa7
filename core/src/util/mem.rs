//! Memory guards: a request whose size is known up front is compared with the
//! memory the machine has free before anything is allocated, so a huge `--n`,
//! `--batch` or graph is an error naming it instead of an abort.

use anyhow::{bail, Result};

/// Bytes this process can still be handed: the least of the machine's
/// `MemAvailable` (`/proc/meminfo`), what its address-space limit (`ulimit -v`)
/// leaves above its current size, and what its cgroup's `memory.max` leaves
/// above `memory.current`. `None` where none of them can be read.
pub fn available() -> Option<u64> {
    let field = |file: &str, key: &str| -> Option<u64> {
        let text = std::fs::read_to_string(file).ok()?;
        let line = text.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse().ok()
    };
    let machine = field("/proc/meminfo", "MemAvailable:").map(|kib| kib * 1024);
    // `Max address space  <soft> <hard> bytes`; "unlimited" does not parse.
    let rlimit = field("/proc/self/limits", "Max address space")
        .map(|lim| lim.saturating_sub(field("/proc/self/status", "VmSize:").unwrap_or(0) * 1024));
    let cgroup = (|| {
        let max: u64 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?.trim().parse().ok()?;
        let cur: u64 = std::fs::read_to_string("/sys/fs/cgroup/memory.current").ok()?.trim().parse().ok()?;
        Some(max.saturating_sub(cur))
    })();
    [machine, rlimit, cgroup].into_iter().flatten().min()
}

/// Refuses `bytes` (an estimate, f64 so that it cannot overflow) when it exceeds
/// the available memory; `what` names the request (e.g. `--n 100000000`).
pub fn check_fits(bytes: f64, what: &str) -> Result<()> {
    let Some(avail) = available() else { return Ok(()) };
    if !bytes.is_finite() || bytes > avail as f64 {
        bail!(
            "{what} needs about {:.1} GiB of memory, {:.1} GiB is available",
            bytes / (1u64 << 30) as f64,
            avail as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_requests_are_refused() {
        if available().is_none() {
            return; // no /proc/meminfo: the guard is off, nothing to check
        }
        let e = check_fits(1e18, "--n 1000000000000").unwrap_err().to_string();
        assert!(e.contains("--n 1000000000000") && e.contains("GiB"), "{e}");
        check_fits(1024.0, "a kibibyte").unwrap();
        assert!(check_fits(f64::INFINITY, "x").is_err());
    }
}
