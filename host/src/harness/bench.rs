//! `berth plugin bench`: a suite case's chain, measured the way the server
//! runs it (fresh instance per call).

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};

use super::{HarnessError, build, load_suite};
use crate::config::Config;
use crate::plugin::{Hook, PolicyEngine, Runtime, RuntimeOptions, Shapeable};
use crate::plugin::{PluginError, SessionContext};

#[derive(Debug, serde::Serialize)]
pub struct PluginLoad {
    pub name: String,
    pub compile_ms: f64,
    pub cached_load_ms: f64,
    pub peak_memory_kib: usize,
    /// Medians of the plugin called alone on the case's input, split into
    /// the sandbox's cost per call (instantiate, teardown) and the run:
    /// arguments in, the plugin's code, the result out.
    pub call_p50_us: f64,
    pub instantiate_p50_us: f64,
    pub run_p50_us: f64,
    pub teardown_p50_us: f64,
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

/// Times the chain exactly as the server runs it: from the typed object the
/// server builds to the typed object it submits. Cloning the input stays
/// outside the timing; so do the harness's own conversions and diffs.
fn time_chain<T: Shapeable + Clone>(
    engine: &PolicyEngine,
    ctx: &SessionContext,
    input: &serde_json::Value,
    calls: usize,
) -> Result<(Vec<Duration>, Duration), String> {
    let object: T = serde_json::from_value(input.clone()).map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(calls);
    let mut total = Duration::ZERO;
    for i in 0..calls + calls.min(100) {
        let o = object.clone();
        let t = Instant::now();
        let shaped = engine.shape(ctx, o).map_err(|e| e.to_string())?;
        let d = t.elapsed();
        drop(std::hint::black_box(shaped));
        // The first calls warm caches and the pool's slots.
        if i >= calls.min(100) {
            times.push(d);
            total += d;
        }
    }
    Ok((times, total))
}

/// The `pct`th percentile of sorted samples, in microseconds (0 if none).
fn percentile_us(sorted: &[Duration], pct: usize) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    sorted[(sorted.len() * pct / 100).min(last)].as_secs_f64() * 1e6
}

fn p50_us(mut v: Vec<Duration>) -> f64 {
    v.sort();
    percentile_us(&v, 50)
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
        ..RuntimeOptions::default()
    };

    let text = input.to_string();
    let mut plugins = Vec::new();
    for p in &suite.plugins {
        let Some(path) = &p.path else {
            return Err(HarnessError::from(PluginError::Config(format!(
                "plugin {:?}: the bench runs plugins from files; pull it first (berth plugin pull)",
                p.name
            ))));
        };
        let bytes = crate::plugin::source::read_component(&base.join(path)).map_err(|m| {
            PluginError::Load {
                plugin: p.name.clone(),
                kind: crate::plugin::LoadErrorKind::Read(m),
            }
        })?;
        let settings = serde_json::to_string(&p.settings).unwrap_or_default();
        let t = Instant::now();
        Runtime::new(opts())?.load(&p.name, bytes.clone(), None, settings.clone(), p.limits())?;
        let compile = t.elapsed();
        let rt = Runtime::new(opts())?;
        let t = Instant::now();
        let loaded = rt.load(&p.name, bytes, None, settings, p.limits())?;
        let cached = t.elapsed();
        let (mut peak, mut whole, mut inst, mut run, mut down) =
            (0, vec![], vec![], vec![], vec![]);
        for _ in 0..calls {
            let t = Instant::now();
            // A plugin that fails on this input has no figures to give.
            let Ok((_, stats)) = rt.shape(&loaded, c.hook, &ctx, &text) else {
                break;
            };
            whole.push(t.elapsed());
            peak = peak.max(stats.peak_memory_bytes / 1024);
            inst.push(stats.instantiate);
            run.push(stats.run);
            down.push(stats.teardown);
        }
        plugins.push(PluginLoad {
            name: p.name.clone(),
            compile_ms: ms(compile),
            cached_load_ms: ms(cached),
            peak_memory_kib: peak,
            call_p50_us: p50_us(whole),
            instantiate_p50_us: p50_us(inst),
            run_p50_us: p50_us(run),
            teardown_p50_us: p50_us(down),
        });
    }

    let engine = PolicyEngine::new(Runtime::new(opts())?, &suite.plugins, &base)?
        .with_guards(config.guards());
    let (mut times, total) = match c.hook {
        Hook::Pod => time_chain::<Pod>(&engine, &ctx, &input, calls),
        Hook::Pvc => time_chain::<PersistentVolumeClaim>(&engine, &ctx, &input, calls),
    }
    .map_err(|e| err(format!("case {:?}: {e}", c.name)))?;
    times.sort();
    let _ = std::fs::remove_dir_all(&cache);
    Ok(BenchReport {
        case: c.name.clone(),
        calls,
        // Chain time only: what one thread could sustain shaping objects.
        calls_per_second: calls as f64 / total.as_secs_f64(),
        p50_us: percentile_us(&times, 50),
        p99_us: percentile_us(&times, 99),
        plugins,
    })
}
