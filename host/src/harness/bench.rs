//! `berth plugin bench`: a suite case's chain, measured the way the server
//! runs it (fresh instance per call).

use std::path::Path;
use std::time::{Duration, Instant};

use super::{HarnessError, build, load_suite};
use crate::config::Config;
use crate::plugin::{PolicyEngine, Runtime, RuntimeOptions};

#[derive(Debug, serde::Serialize)]
pub struct PluginLoad {
    pub name: String,
    pub compile_ms: f64,
    pub cached_load_ms: f64,
    pub peak_memory_kib: usize,
}

#[derive(Debug, serde::Serialize)]
pub struct BenchReport {
    pub case: String,
    pub calls: usize,
    pub calls_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub plugins: Vec<PluginLoad>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn bench_case(
    suite_path: &Path,
    case: Option<&str>,
    calls: usize,
) -> Result<BenchReport, HarnessError> {
    let err = |m: String| HarnessError::Suite {
        path: suite_path.display().to_string(),
        message: m,
    };
    let suite = load_suite(suite_path)?;
    let base = suite_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let c = match case {
        Some(n) => suite
            .cases
            .iter()
            .find(|c| c.name == n)
            .ok_or_else(|| err(format!("no case named {n:?}")))?,
        None => suite
            .cases
            .iter()
            .find(|c| c.request.is_some())
            .ok_or_else(|| err("no case with a request".into()))?,
    };
    let req = c
        .request
        .as_ref()
        .ok_or_else(|| err(format!("case {:?} has no request", c.name)))?;
    let config = Config {
        namespace: suite.namespace.clone().unwrap_or_else(|| "bay".into()),
        ..Config::default()
    };
    let (input, ctx) = build(&config, c.hook, req).map_err(err)?;
    let cache = std::env::temp_dir().join(format!("berth-plugin-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let opts = || RuntimeOptions {
        cache_dir: Some(cache.clone()),
        max_instances: 8,
        max_memory_bytes: 1 << 30,
    };

    let mut plugins = Vec::new();
    for p in &suite.plugins {
        let path = if p.path.is_absolute() {
            p.path.clone()
        } else {
            base.join(&p.path)
        };
        let settings = serde_json::to_string(&p.settings).unwrap_or_default();
        let t = Instant::now();
        Runtime::new(opts())?.load(&p.name, &path, None, settings.clone(), p.limits())?;
        let compile = t.elapsed();
        let rt = Runtime::new(opts())?;
        let t = Instant::now();
        let loaded = rt.load(&p.name, &path, None, settings, p.limits())?;
        let cached = t.elapsed();
        let peak = match rt.shape(&loaded, c.hook, &ctx, &input.to_string()) {
            Ok((_, stats)) => stats.peak_memory_bytes / 1024,
            Err(_) => 0,
        };
        plugins.push(PluginLoad {
            name: p.name.clone(),
            compile_ms: ms(compile),
            cached_load_ms: ms(cached),
            peak_memory_kib: peak,
        });
    }

    let engine = PolicyEngine::new(Runtime::new(opts())?, &suite.plugins, &base)?;
    let run = || -> Result<(), HarnessError> {
        super::run_chain(&engine, c.hook, &ctx, &input, &config.label_prefix)
            .map(|_| ())
            .map_err(|e| err(format!("case {:?}: {e}", c.name)))
    };
    for _ in 0..calls.min(100) {
        run()?;
    }
    let mut times = Vec::with_capacity(calls);
    let started = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed());
    }
    let total = started.elapsed();
    times.sort();
    let _ = std::fs::remove_dir_all(&cache);
    Ok(BenchReport {
        case: c.name.clone(),
        calls,
        calls_per_second: calls as f64 / total.as_secs_f64(),
        p50_us: times[times.len() / 2].as_secs_f64() * 1e6,
        p99_us: times[(times.len() * 99 / 100).min(times.len() - 1)].as_secs_f64() * 1e6,
        plugins,
    })
}
