//! How long `berth serve` takes to be ready, and what it keeps resident,
//! with 1, 3 and 5 plugin entries: from an empty plugin cache (every new Pod
//! of `deploy/`, whose cache is an emptyDir) and from a warm one. The cold
//! start runs twice in the same run: compiling in a child process (the
//! default) and in the server itself (`plugin_compile_in_child: false`, how
//! Berth compiled before), so the figures are ratios within one run.
//!
//!   BERTH_TEST_KUBECONFIG=… cargo bench -p berth --bench startup
//!
//! Needs the shipped plugins (`tests/build-plugins.sh`) and a control plane
//! (`tests/cluster/cluster.sh up`): ready means the API server answers.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

mod common;
use common::status_kib;

fn wasm(name: &str) -> PathBuf {
    common::wasm(&format!("berth_plugin_{name}"))
}

/// `n` plugin entries: the three shipped plugins, then two of them again
/// under other names (the same component, so its second load hits the
/// cache the first one wrote).
fn plugins(n: usize) -> serde_json::Value {
    let all = [
        ("restricted", "restricted", json!({ "level": "baseline" })),
        ("scheduling", "scheduling", json!({})),
        (
            "resources",
            "resources",
            json!({ "max": { "cpu": "8", "memory": "16Gi" } }),
        ),
        ("restricted-2", "restricted", json!({ "level": "baseline" })),
        ("scheduling-2", "scheduling", json!({})),
    ];
    all[..n]
        .iter()
        .map(|(name, file, settings)| json!({ "name": name, "path": wasm(file), "settings": settings }))
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status code of `GET /readyz`, if the server answers.
fn readyz(port: u16) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// `pid` and every process below it.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let children =
                    std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                all.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    all
}

struct Start {
    ready: Duration,
    /// The server's resident memory once ready, MiB.
    rss: f64,
    /// The most the server and its compiler children held at once while
    /// starting (sampled every 5 ms), MiB: what the container limit meets.
    peak: f64,
}

fn start(dir: &Path, cache: &Path, n: usize, in_child: bool, kubeconfig: &str) -> Start {
    let port = free_port();
    let config = dir.join(format!("berth-{n}-{in_child}.yaml"));
    std::fs::write(
        &config,
        json!({
            "listen": format!("127.0.0.1:{port}"),
            "tokens": ["bench-token-0123456789abcdef"],
            "namespace": "default",
            "kubeconfig": kubeconfig,
            "network_policy": { "enabled": false },
            "plugin_cache_dir": cache,
            "plugin_compile_in_child": in_child,
            "plugins": plugins(n),
        })
        .to_string(),
    )
    .unwrap();
    let started = Instant::now();
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("BERTH_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth serve");
    let pid = child.id();
    let mut peak_kib = 0;
    loop {
        let held: u64 = tree(pid)
            .iter()
            .filter_map(|p| status_kib(*p, "VmRSS:"))
            .sum();
        peak_kib = peak_kib.max(held);
        if readyz(port) == Some(200) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "berth serve not ready after 300 s"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("berth serve exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let ready = started.elapsed();
    let rss = status_kib(pid, "VmRSS:").unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    Start {
        ready,
        rss: rss as f64 / 1024.0,
        peak: peak_kib.max(rss) as f64 / 1024.0,
    }
}

fn main() {
    let Ok(kubeconfig) = std::env::var("BERTH_TEST_KUBECONFIG") else {
        eprintln!("set BERTH_TEST_KUBECONFIG (tests/cluster/cluster.sh up prints it)");
        std::process::exit(2);
    };
    let dir = std::env::temp_dir().join(format!("berth-startup-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "{:<9} {:<26} {:>10} {:>16} {:>16}",
        "plugins", "start", "ready (s)", "RSS ready (MiB)", "peak (MiB)"
    );
    for n in [1, 3, 5] {
        let row = |what: &str, s: &Start| {
            println!(
                "{n:<9} {what:<26} {:>10.2} {:>16.1} {:>16.1}",
                s.ready.as_secs_f64(),
                s.rss,
                s.peak
            )
        };
        let cache = dir.join(format!("cache-{n}"));
        let old = start(
            &dir,
            &dir.join(format!("cache-{n}-in-process")),
            n,
            false,
            &kubeconfig,
        );
        row("cold, compiled in-process", &old);
        let cold = start(&dir, &cache, n, true, &kubeconfig);
        row("cold, compiled in a child", &cold);
        let warm = start(&dir, &cache, n, true, &kubeconfig);
        row("warm cache", &warm);
        println!(
            "{n:<9} RSS once ready: child/warm {:.2}x, +{:.1} MiB; in-process/warm {:.2}x, +{:.1} MiB; cold ready / warm ready {:.0}x",
            cold.rss / warm.rss,
            cold.rss - warm.rss,
            old.rss / warm.rss,
            old.rss - warm.rss,
            cold.ready.as_secs_f64() / warm.ready.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
