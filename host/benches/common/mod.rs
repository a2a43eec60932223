//! What the benchmarks share: where the repository and the built plugins
//! are, and what a process holds in memory.

#![allow(dead_code)] // each bench uses its own subset

use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A component built by `tests/build-plugins.sh`, e.g. `berth_plugin_restricted`.
pub fn wasm(name: &str) -> PathBuf {
    let p = root()
        .join("target/wasm32-wasip2/plugin")
        .join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} missing: run tests/build-plugins.sh",
        p.display()
    );
    p
}

/// The bytes of a component built by `tests/build-plugins.sh`.
pub fn component(name: &str) -> Vec<u8> {
    std::fs::read(wasm(name)).expect("component")
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in KiB; `None`
/// once the process is gone.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resident memory of a process, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:").map_or(f64::NAN, |kib| kib as f64 / 1024.0)
}
