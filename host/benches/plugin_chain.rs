//! The shipped plugin chain (restricted → scheduling → resources) on a
//! realistic session Pod, with a fresh instance per plugin call, against the
//! same three policies compiled natively and called on the typed Pod in the
//! same run. Also: compile time, cached load time, memory per instance.
//!
//! Run: `tests/build-plugins.sh && cargo bench -p berth --bench plugin_chain`
//! (BENCH_N sets the number of measured calls, default 5000).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth::config::Config;
use berth::model::{Cargo, Profile, Session};
use berth::objects::{self, SessionRequest};
use berth::plugin::runtime::{Hook, Limits};
use berth::plugin::{PluginConfig, PolicyEngine, Runtime, RuntimeOptions};
use berth_plugin_sdk::{Context, Pod, Policy, parse_settings};
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn wasm(name: &str) -> PathBuf {
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

fn settings() -> [(&'static str, &'static str, serde_json::Value); 3] {
    [
        (
            "restricted",
            "berth_plugin_restricted",
            json!({ "run_as_user": 1000, "fs_group": 1000 }),
        ),
        (
            "scheduling",
            "berth_plugin_scheduling",
            json!({ "default": {
                "node_selector": { "berth.test/pool": "sandbox" },
                "tolerations": [{ "key": "berth.test/dedicated", "operator": "Equal", "value": "sandbox", "effect": "NoSchedule" }],
                "topology_spread_constraints": [{ "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway" }]
            }}),
        ),
        (
            "resources",
            "berth_plugin_resources",
            json!({
                "default_requests": { "ephemeral-storage": "1Gi" }, "default_limits": { "ephemeral-storage": "4Gi" },
                "max": { "cpu": "8", "memory": "16Gi" }
            }),
        ),
    ]
}

fn configs() -> Vec<PluginConfig> {
    settings()
        .into_iter()
        .map(|(name, file, s)| {
            serde_json::from_value(json!({ "name": name, "path": wasm(file), "settings": s }))
                .unwrap()
        })
        .collect()
}

/// A realistic session Pod: Ship plus a browser sidecar, env, resources.
fn realistic() -> (Pod, berth::plugin::runtime::SessionContext, Context) {
    let config = Config {
        namespace: "bay".into(),
        ..Config::default()
    };
    let profile: Profile = serde_json::from_value(json!({
        "id": "python-browser",
        "containers": [
            { "name": "ship", "image": "ghcr.io/example/ship:1.4.2", "runtime_port": 8123, "primary": true,
              "resources": { "cpus": 2.0, "memory": "4g" }, "capabilities": ["shell", "python", "filesystem"],
              "env": { "LANG": "C.UTF-8", "PIP_INDEX_URL": "https://pypi.internal/simple", "TZ": "UTC" } },
            { "name": "browser", "image": "ghcr.io/example/gull:0.9.0", "runtime_type": "browser", "runtime_port": 8124,
              "resources": { "cpus": 1.0, "memory": "2g" }, "capabilities": ["browser"] }
        ],
        "proxy": { "http": "http://proxy:3128", "https": "http://proxy:3128", "no_proxy": "localhost,.svc" }
    }))
    .unwrap();
    let session = Session {
        id: "sess-8f2c1a".into(),
        sandbox_id: "sbx-41d7".into(),
    };
    let cargo = Cargo {
        id: "cargo-41d7".into(),
        driver_ref: "cargo-41d7".into(),
        size_limit_mb: 2048,
    };
    let labels = [
        ("bay.owner".to_string(), "alice".to_string()),
        ("bay.instance_id".to_string(), "bay-prod-1".to_string()),
    ]
    .into();
    let req = SessionRequest {
        session: &session,
        profile: &profile,
        cargo: &cargo,
        labels: &labels,
    };
    let plan = objects::plan(&config, &req).unwrap();
    let pod = objects::session_pod(&config, &req, &plan);
    let ctx = Context {
        profile_id: plan.context.profile_id.clone(),
        namespace: "bay".into(),
        runtime_port: 8123,
        ..Default::default()
    };
    (pod, plan.context, ctx)
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[(v.len() * 99) / 100])
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let (pod, wctx, nctx) = realistic();
    println!(
        "pod: {} bytes of JSON, {} containers",
        serde_json::to_string(&pod).unwrap().len(),
        2
    );

    // Compile (no cache) and cached load.
    let cache = tempfile_dir();
    let opts = |cache: Option<PathBuf>| RuntimeOptions {
        cache_dir: cache,
        max_instances: 16,
        max_memory_bytes: 256 << 20,
    };
    let rt = Runtime::new(opts(Some(cache.clone()))).unwrap();
    for (name, file, s) in settings() {
        let t = Instant::now();
        let c = rt
            .load(name, &wasm(file), None, s.to_string(), Limits::default())
            .unwrap();
        let compile = t.elapsed();
        let rt2 = Runtime::new(opts(Some(cache.clone()))).unwrap();
        let t = Instant::now();
        let cached = rt2
            .load(name, &wasm(file), None, s.to_string(), Limits::default())
            .unwrap();
        let load = t.elapsed();
        assert!(!c.load.from_cache && cached.load.from_cache);
        let (_, stats) = rt2
            .shape(
                &cached,
                Hook::Pod,
                &wctx,
                &serde_json::to_string(&pod).unwrap(),
            )
            .unwrap();
        let size = std::fs::metadata(wasm(file)).unwrap().len();
        println!(
            "{name:>10}: component {:>4} KiB | compile+load {:>7.1} ms | cached load {:>6.2} ms (ratio {:>5.1}x faster) | linear memory per instance {:>5} KiB",
            size / 1024,
            compile.as_secs_f64() * 1e3,
            load.as_secs_f64() * 1e3,
            compile.as_secs_f64() / load.as_secs_f64(),
            stats.peak_memory_bytes / 1024
        );
    }

    // The chain, fresh instance per call.
    let engine = PolicyEngine::new(
        Runtime::new(opts(Some(cache))).unwrap(),
        &configs(),
        Path::new("/"),
    )
    .unwrap();
    let chain = engine.chain();
    for _ in 0..200 {
        chain
            .shape(engine.runtime(), &wctx, pod.clone(), "bay")
            .unwrap();
    }
    let mut wasm_times = Vec::with_capacity(n);
    let mut wasm_out = None;
    for _ in 0..n {
        let p = pod.clone();
        let t = Instant::now();
        let shaped = chain.shape(engine.runtime(), &wctx, p, "bay").unwrap();
        wasm_times.push(t.elapsed());
        wasm_out = Some(shaped.object);
    }

    // The plugin calls alone: three fresh instances passing the JSON text
    // along, without the host's per-step validation, identity check and diff.
    let raw: Vec<_> = settings()
        .into_iter()
        .map(|(name, file, s)| {
            engine
                .runtime()
                .load(name, &wasm(file), None, s.to_string(), Limits::default())
                .unwrap()
        })
        .collect();
    let text = serde_json::to_string(&pod).unwrap();
    let mut raw_times = Vec::with_capacity(n);
    for i in 0..(n + 200) {
        let t = Instant::now();
        let mut cur = text.clone();
        for c in &raw {
            cur = engine
                .runtime()
                .shape(c, Hook::Pod, &wctx, &cur)
                .unwrap()
                .0
                .unwrap();
        }
        if i >= 200 {
            raw_times.push(t.elapsed());
        }
    }

    // Where the time goes: each plugin alone, and a pass-through plugin that
    // neither parses nor serialises (instantiation plus copying the text in
    // and out: the floor of any call).
    let floor = engine
        .runtime()
        .load(
            "pass-through",
            &wasm("berth_fixture_hostile"),
            None,
            json!({ "mode": "pass" }).to_string(),
            Limits::default(),
        )
        .unwrap();
    for c in raw.iter().chain(std::iter::once(&floor)) {
        let mut times = Vec::with_capacity(n);
        for i in 0..(n + 200) {
            let t = Instant::now();
            let (out, _) = engine.runtime().shape(c, Hook::Pod, &wctx, &text).unwrap();
            std::hint::black_box(out.unwrap());
            if i >= 200 {
                times.push(t.elapsed());
            }
        }
        let (p50, p99) = percentiles(times);
        println!(
            "  one call of {:<12} p50 {:>8.1} µs  p99 {:>8.1} µs",
            c.name,
            us(p50),
            us(p99)
        );
    }

    // The same policies, native, on the typed Pod.
    let [(_, _, rs), (_, _, ss), (_, _, qs)] = settings();
    let rs: <berth_plugin_restricted::Restricted as Policy>::Settings =
        parse_settings(&rs.to_string()).unwrap();
    let ss: <berth_plugin_scheduling::Scheduling as Policy>::Settings =
        parse_settings(&ss.to_string()).unwrap();
    let qs: <berth_plugin_resources::Resources as Policy>::Settings =
        parse_settings(&qs.to_string()).unwrap();
    let native = |mut p: Pod| {
        berth_plugin_restricted::Restricted::shape_pod(&rs, &nctx, &mut p).unwrap();
        berth_plugin_scheduling::Scheduling::shape_pod(&ss, &nctx, &mut p).unwrap();
        berth_plugin_resources::Resources::shape_pod(&qs, &nctx, &mut p).unwrap();
        p
    };
    let mut native_times = Vec::with_capacity(n);
    let mut native_out = None;
    for _ in 0..200 {
        std::hint::black_box(native(pod.clone()));
    }
    for _ in 0..n {
        let p = pod.clone();
        let t = Instant::now();
        let out = native(p);
        native_times.push(t.elapsed());
        native_out = Some(out);
    }
    // Same transformation, or the comparison means nothing.
    assert_eq!(
        serde_json::to_value(wasm_out.unwrap()).unwrap(),
        serde_json::to_value(native_out.unwrap()).unwrap()
    );

    // Native with the JSON round trip the host boundary needs (serialise,
    // parse, shape, serialise, parse) per plugin: the honest floor for any
    // design that passes full-fidelity objects.
    let json_native = |p: Pod| {
        let mut v = p;
        for step in 0..3 {
            let text = serde_json::to_string(&v).unwrap();
            let mut q: Pod = serde_json::from_str(&text).unwrap();
            match step {
                0 => berth_plugin_restricted::Restricted::shape_pod(&rs, &nctx, &mut q).unwrap(),
                1 => berth_plugin_scheduling::Scheduling::shape_pod(&ss, &nctx, &mut q).unwrap(),
                _ => berth_plugin_resources::Resources::shape_pod(&qs, &nctx, &mut q).unwrap(),
            }
            let back = serde_json::to_string(&q).unwrap();
            v = serde_json::from_str(&back).unwrap();
        }
        v
    };
    let mut json_times = Vec::with_capacity(n);
    for _ in 0..n {
        let p = pod.clone();
        let t = Instant::now();
        std::hint::black_box(json_native(p));
        json_times.push(t.elapsed());
    }

    let (wp50, wp99) = percentiles(wasm_times);
    let (np50, np99) = percentiles(native_times);
    let (jp50, jp99) = percentiles(json_times);
    let (rp50, rp99) = percentiles(raw_times);
    println!("calls per variant: {n}");
    println!(
        "native typed (baseline)     p50 {:>8.1} µs  p99 {:>8.1} µs",
        us(np50),
        us(np99)
    );
    println!(
        "native + JSON boundary      p50 {:>8.1} µs  p99 {:>8.1} µs  ({:.1}x / {:.1}x baseline)",
        us(jp50),
        us(jp99),
        us(jp50) / us(np50),
        us(jp99) / us(np99)
    );
    println!(
        "wasm chain, fresh instances p50 {:>8.1} µs  p99 {:>8.1} µs  ({:.1}x / {:.1}x baseline; {:.2}x / {:.2}x native+JSON)",
        us(wp50),
        us(wp99),
        us(wp50) / us(np50),
        us(wp99) / us(np99),
        us(wp50) / us(jp50),
        us(wp99) / us(jp99)
    );
    println!(
        "wasm calls only (no checks) p50 {:>8.1} µs  p99 {:>8.1} µs",
        us(rp50),
        us(rp99)
    );
    println!(
        "wasm chain throughput: {:.0} Pods/s on one thread",
        1e6 / us(wp50)
    );
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("berth-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
