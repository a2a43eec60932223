//! The shipped plugin chain (restricted → scheduling → resources) on a
//! realistic session Pod, with a fresh instance per plugin call, against the
//! same three policies compiled natively, in the same run: applied to the
//! typed Pod, and as plugins through the same chain code. Also: compile time,
//! cached load time, memory per instance, and where a call's time goes.
//!
//! Run: `tests/build-plugins.sh && cargo bench -p berth --bench plugin_chain`
//! (BENCH_N sets the number of measured calls, default 5000).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth::config::Config;
use berth::model::{Cargo, Profile, Session};
use berth::objects::{self, SessionRequest};
use berth::plugin::Hook;
use berth::plugin::runtime::Limits;
use berth::plugin::{
    Guards, PluginConfig, PolicyEngine, Runtime, RuntimeOptions, Scope, run_steps,
};
use berth_plugin_sdk::{Context, Pod, Policy, parse_settings};
use serde_json::json;

mod common;
use common::wasm;

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
fn realistic() -> (Pod, berth::plugin::SessionContext, Context) {
    let config = Config {
        namespace: "bay".into(),
        ..Config::default()
    };
    let profile: Profile = serde_json::from_value(json!({
        "id": "python-browser",
        "containers": [
            { "name": "ship", "image": "ghcr.io/example/ship:1.4.2", "runtime_port": 8123,
              "resources": { "cpus": 2.0, "memory": "4g" }, "capabilities": ["shell", "python", "filesystem"],
              "env": { "LANG": "C.UTF-8", "PIP_INDEX_URL": "https://pypi.internal/simple", "TZ": "UTC" } },
            { "name": "browser", "image": "ghcr.io/example/gull:0.9.0", "runtime_type": "browser", "runtime_port": 8124,
              "resources": { "cpus": 1.0, "memory": "2g" }, "capabilities": ["browser"] }
        ],
        "proxy": { "enabled": true, "http_proxy": "http://proxy:3128", "https_proxy": "http://proxy:3128", "no_proxy": ".corp" }
    }))
    .unwrap();
    let session = Session {
        id: "sess-8f2c1a".into(),
        sandbox_id: "sbx-41d7".into(),
        owner: Some("alice".into()),
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
        instance_id: Some("bay-prod-1"),
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

/// Latency percentiles of one variant, in microseconds.
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
}

impl Percentiles {
    fn of(mut v: Vec<Duration>) -> Percentiles {
        v.sort();
        let at = |q: usize| v[(v.len() * q) / 100].as_secs_f64() * 1e6;
        Percentiles {
            p50: at(50),
            p90: at(90),
            p99: at(99),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "p50 {:>7.1} µs  p90 {:>7.1} µs  p99 {:>7.1} µs",
            self.p50, self.p90, self.p99
        )
    }
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
        ..RuntimeOptions::default()
    };
    let rt = Runtime::new(opts(Some(cache.clone()))).unwrap();
    for (name, file, s) in settings() {
        let t = Instant::now();
        let c = rt
            .load(
                name,
                common::component(file),
                None,
                s.to_string(),
                Limits::default(),
            )
            .unwrap();
        let compile = t.elapsed();
        let rt2 = Runtime::new(opts(Some(cache.clone()))).unwrap();
        let t = Instant::now();
        let cached = rt2
            .load(
                name,
                common::component(file),
                None,
                s.to_string(),
                Limits::default(),
            )
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

    host_memory_per_call(&cache);
    languages();

    // The chain, fresh instance per call.
    let engine = PolicyEngine::new(
        Runtime::new(opts(Some(cache))).unwrap(),
        &configs(),
        Path::new("/"),
    )
    .unwrap();
    let rt = engine.runtime();
    // What the server holds a chain to: identity, guarded fields, baseline.
    let guards = Guards::default();
    let unscoped = Scope::default();

    // The same three policies, native: settings parsed once, as a native
    // host would.
    let [(_, _, rs), (_, _, ss), (_, _, qs)] = settings();
    let rs: <berth_plugin_restricted::Restricted as Policy>::Settings =
        parse_settings(&rs.to_string()).unwrap();
    let ss: <berth_plugin_scheduling::Scheduling as Policy>::Settings =
        parse_settings(&ss.to_string()).unwrap();
    let qs: <berth_plugin_resources::Resources as Policy>::Settings =
        parse_settings(&qs.to_string()).unwrap();
    let shape_native = |step: usize, p: &mut Pod| match step {
        0 => berth_plugin_restricted::Restricted::shape_pod(&rs, &nctx, p),
        1 => berth_plugin_scheduling::Scheduling::shape_pod(&ss, &nctx, p),
        _ => berth_plugin_resources::Resources::shape_pod(&qs, &nctx, p),
    };
    // (a) On the typed Pod, no boundary at all: the floor of the work itself.
    let native_typed = |mut p: Pod| {
        for step in 0..3 {
            shape_native(step, &mut p).unwrap();
        }
        p
    };
    // (b) As plugins behind the same contract, through the very same chain
    // code and checks, with only the sandbox taken away: JSON text in, typed
    // Pod, JSON text out, per plugin, exactly what the SDK does in the guest.
    let native_chain = |p: Pod| {
        let steps = (0..3).map(|step| {
            let run = move |text: &str| {
                let mut q: Pod = serde_json::from_str(text).unwrap();
                shape_native(step, &mut q).unwrap();
                Ok(Ok(serde_json::to_string(&q).unwrap()))
            };
            (format!("native-{step}"), &unscoped, run)
        });
        run_steps(p, &guards, steps).unwrap()
    };
    // (c) The wasm calls alone: three fresh instances passing the JSON text
    // along, without the chain's checks.
    let raw: Vec<_> = settings()
        .into_iter()
        .map(|(name, file, s)| {
            rt.load(
                name,
                common::component(file),
                None,
                s.to_string(),
                Limits::default(),
            )
            .unwrap()
        })
        .collect();
    let text = serde_json::to_string(&pod).unwrap();
    let raw_calls = || {
        let mut cur = text.clone();
        for c in &raw {
            cur = rt.shape(c, Hook::Pod, &wctx, &cur).unwrap().0.unwrap();
        }
        cur
    };

    // Same transformation, or the comparison means nothing.
    let wasm_out = engine.shape(&wctx, pod.clone()).unwrap();
    let typed_out = native_typed(pod.clone());
    assert_eq!(
        serde_json::to_value(&wasm_out.object).unwrap(),
        serde_json::to_value(&typed_out).unwrap()
    );
    assert_eq!(
        serde_json::to_value(&native_chain(pod.clone()).object).unwrap(),
        serde_json::to_value(&typed_out).unwrap()
    );

    // Variants take turns in blocks of 50 runs, so a noisy neighbour or a
    // frequency change over the run hits all of them alike and the ratios
    // stay honest. Each block starts with two unmeasured runs: a variant's
    // caches are warm in a steady stream of sessions, and alternating run by
    // run would measure each one cold after the others.
    // (d) The host's guards alone, on the texts the chain passes along: each
    // output read as JSON and checked against the one before it (guarded
    // fields), then the final Pod's Pod Security posture. This is what the
    // guards add to every chain run, wasm or native.
    let snapshots: Vec<String> = {
        let mut texts = vec![serde_json::to_string(&pod).unwrap()];
        let mut cur = pod.clone();
        for step in 0..3 {
            shape_native(step, &mut cur).unwrap();
            texts.push(serde_json::to_string(&cur).unwrap());
        }
        texts
    };
    let final_pod: Pod = serde_json::from_str(snapshots.last().unwrap()).unwrap();
    let guards_alone = || {
        let values: Vec<serde_json::Value> = snapshots
            .iter()
            .map(|t| berth::plugin::guard::guarded_fields(t).unwrap())
            .collect();
        for pair in values.windows(2) {
            assert!(
                berth::plugin::guard::check_step("Pod", &pair[0], &pair[1], &unscoped, &guards)
                    .is_none()
            );
        }
        guards.pod_security.violation(&final_pod)
    };
    let variants: [&dyn Fn(Pod) -> Box<dyn std::any::Any>; 5] = [
        &|p| Box::new(engine.shape(&wctx, p).unwrap()),
        &|p| Box::new(native_typed(p)),
        &|p| Box::new(native_chain(p)),
        &|_| Box::new(raw_calls()),
        &|_| Box::new(guards_alone()),
    ];
    let mut times: [Vec<Duration>; 5] = Default::default();
    const BLOCK: usize = 50;
    for _ in 0..n.div_ceil(BLOCK) {
        for (v, run) in variants.iter().enumerate() {
            for i in 0..BLOCK + 2 {
                let input = pod.clone();
                let t = Instant::now();
                let out = run(input);
                let d = t.elapsed();
                drop(std::hint::black_box(out));
                if i >= 2 {
                    times[v].push(d);
                }
            }
        }
    }
    let [t_wasm, t_typed, t_native, t_raw, t_guards] = times;

    // Where the time goes: each plugin alone, its calls split into the
    // sandbox's cost (a fresh store and instance; teardown, which resets the
    // pool slot) and the run (arguments in, the plugin's code, result out).
    for c in &raw {
        let mut phases: [Vec<Duration>; 4] = Default::default();
        for i in 0..(n + 200) {
            let t = Instant::now();
            let (out, stats) = rt.shape(c, Hook::Pod, &wctx, &text).unwrap();
            let d = t.elapsed();
            drop(std::hint::black_box(out.unwrap()));
            if i >= 200 {
                for (v, x) in
                    phases
                        .iter_mut()
                        .zip([d, stats.instantiate, stats.run, stats.teardown])
                {
                    v.push(x);
                }
            }
        }
        let [whole, inst, run, down] = phases.map(|v| Percentiles::of(v).p50);
        println!(
            "  one call of {:<10} p50 {whole:>5.1} µs = instantiate {inst:.1} + run {run:.1} + teardown {down:.1} (medians of each phase)",
            c.name
        );
    }

    let wasm = Percentiles::of(t_wasm);
    let typed = Percentiles::of(t_typed);
    let native = Percentiles::of(t_native);
    let raw = Percentiles::of(t_raw);
    let guarded = Percentiles::of(t_guards);
    println!("calls per variant: {n}, interleaved");
    println!("native policies on the typed Pod      {typed}");
    println!("native plugins through the same chain {native}");
    println!("wasm plugins, fresh instance per call {wasm}");
    println!("  of which the wasm calls alone       {raw}");
    println!("  of which the host's guards          {guarded}");
    println!(
        "guards / native chain: p50 {:.0}%  (what the guarded fields and the posture check add to every chain)",
        100.0 * guarded.p50 / native.p50
    );
    println!(
        "wasm chain / native chain:  p50 {:.2}x  p99 {:.2}x   (the cost of the sandbox)",
        wasm.p50 / native.p50,
        wasm.p99 / native.p99
    );
    println!(
        "wasm chain / native typed:  p50 {:.0}x  p99 {:.0}x   (the cost of sandbox plus JSON boundary)",
        wasm.p50 / typed.p50,
        wasm.p99 / typed.p99
    );
    println!(
        "wasm chain throughput: {:.0} Pods/s on one thread",
        1e6 / wasm.p50
    );
}

/// Resident set size of this process, bytes.
fn rss() -> u64 {
    common::status_kib(std::process::id(), "VmRSS:").unwrap_or(0) * 1024
}

/// The most this process's RSS rose above where it started while `f` ran,
/// sampled every millisecond, in MiB.
fn rss_rise_mib(f: impl FnOnce()) -> f64 {
    let base = rss();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss());
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            peak.max(rss())
        })
    };
    f();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    peak.saturating_sub(base) as f64 / f64::from(1 << 20)
}

/// Host memory a call costs outside the plugin's linear memory: 16 calls at
/// once of a plugin that takes WASI handles and never drops them, with the
/// host's cap and with wasmtime's default table size (the "before").
fn host_memory_per_call(cache: &std::path::Path) {
    const CALLS: usize = 16;
    let (pod, ctx, _) = realistic();
    let text = serde_json::to_string(&pod).unwrap();
    let run = |max_handles: usize| {
        let rt = Runtime::new(RuntimeOptions {
            cache_dir: Some(cache.to_path_buf()),
            max_instances: CALLS as u32,
            max_memory_bytes: 64 << 20,
            max_handles,
            ..RuntimeOptions::default()
        })
        .unwrap();
        let limits = Limits {
            deadline: std::time::Duration::from_millis(100),
            ..Limits::default()
        };
        let plugin = rt
            .load(
                "handles",
                common::component("berth_fixture_hostile"),
                None,
                json!({ "mode": "handles" }).to_string(),
                limits,
            )
            .unwrap();
        let mut outcome = String::new();
        let rise = rss_rise_mib(|| {
            std::thread::scope(|s| {
                let calls: Vec<_> = (0..CALLS)
                    .map(|_| s.spawn(|| rt.shape(&plugin, Hook::Pod, &ctx, &text).err()))
                    .collect();
                for c in calls {
                    outcome = c
                        .join()
                        .unwrap()
                        .map(|e| e.reason().to_string())
                        .unwrap_or_default();
                }
            })
        });
        (rise / CALLS as f64, outcome)
    };
    let (capped, why_capped) = run(berth::plugin::runtime::DEFAULT_MAX_HANDLES);
    let (uncapped, why_uncapped) = run(1_000_000);
    println!(
        "host memory per call, {CALLS} at once, a plugin hoarding WASI handles: {capped:.2} MiB with max_handles {} (ends: {why_capped}) vs {uncapped:.2} MiB with wasmtime's default (ends: {why_uncapped}); ratio {:.3}",
        berth::plugin::runtime::DEFAULT_MAX_HANDLES,
        capped / uncapped
    );
}

/// The image policy in Python (componentize-py) and in Rust (the SDK), on
/// the same Pod with the same settings: size, compile, cached load, calls
/// with a fresh instance, memory per instance.
fn languages() {
    let (pod, ctx, _) = realistic();
    let text = serde_json::to_string(&pod).unwrap();
    let settings = json!({ "allowed_registries": ["ghcr.io/example", "docker.io"], "pull_policy": "IfNotPresent" }).to_string();
    let calls = 500;
    let mut p50s = Vec::new();
    for (lang, file) in [
        ("Rust", "berth_fixture_image_policy_rs"),
        ("Python", "berth_plugin_image_policy"),
    ] {
        let cache = tempfile_dir();
        let opts = || RuntimeOptions {
            cache_dir: Some(cache.clone()),
            max_instances: 4,
            max_memory_bytes: 256 << 20,
            ..RuntimeOptions::default()
        };
        let limits = Limits {
            deadline: std::time::Duration::from_secs(1),
            ..Limits::default()
        };
        let t = Instant::now();
        Runtime::new(opts())
            .unwrap()
            .load(
                lang,
                common::component(file),
                None,
                settings.clone(),
                limits,
            )
            .unwrap();
        let compile = t.elapsed();
        let rt = Runtime::new(opts()).unwrap();
        let t = Instant::now();
        let plugin = rt
            .load(
                lang,
                common::component(file),
                None,
                settings.clone(),
                limits,
            )
            .unwrap();
        let cached = t.elapsed();
        let mut times = Vec::with_capacity(calls);
        let mut peak = 0;
        for _ in 0..calls {
            let t = Instant::now();
            let (out, stats) = rt.shape(&plugin, Hook::Pod, &ctx, &text).unwrap();
            times.push(t.elapsed());
            assert!(out.is_ok(), "{lang}: {out:?}");
            peak = peak.max(stats.peak_memory_bytes);
        }
        let p = Percentiles::of(times);
        p50s.push(p.p50);
        println!(
            "image policy in {lang:<6}: component {:>6} KiB | compile+load {:>7.0} ms | cached load {:>6.1} ms | call {p} | linear memory per instance {:>6} KiB",
            std::fs::metadata(wasm(file)).unwrap().len() / 1024,
            compile.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3,
            peak / 1024
        );
        let _ = std::fs::remove_dir_all(&cache);
    }
    println!(
        "image policy, Python / Rust per call: p50 {:.0}x",
        p50s[1] / p50s[0]
    );
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("berth-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
