//! The process's resident memory and threads, from /proc (Linux); `None` elsewhere.

/// Current resident set size, in MiB.
pub fn current_mib() -> Option<f64> {
    status_kib("VmRSS:").map(kib_to_mib)
}

/// Peak resident set size since the process started, in MiB.
pub fn peak_mib() -> Option<f64> {
    status_kib("VmHWM:").map(kib_to_mib)
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The OS threads of this process.
pub fn threads() -> Option<u64> {
    status_field("Threads:")?.parse().ok()
}

/// A `kB` line of /proc/self/status.
fn status_kib(key: &str) -> Option<u64> {
    status_field(key)?.strip_suffix("kB")?.trim().parse().ok()
}

/// The value of one /proc/self/status line, trimmed.
fn status_field(key: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix(key))?;
    Some(value.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_a_plausible_resident_size_that_the_peak_bounds() {
        let now = current_mib().expect("VmRSS");
        let peak = peak_mib().expect("VmHWM");
        assert!(now > 1.0 && now < 64.0 * 1024.0, "{now}");
        assert!(peak >= now, "{peak} < {now}");
    }
}
