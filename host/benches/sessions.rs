//! Drives N sessions through create → start → destroy at a chosen
//! concurrency through Berth's HTTP API (with the shipped plugin chain), and
//! the same calls made directly with kube-rs (same Pod, no Berth) in the same
//! run, against the test control plane.
//!
//! Run (control plane up, plugins built):
//!   BERTH_TEST_KUBECONFIG=/tmp/berth-cluster/kubeconfig cargo bench -p berth --bench sessions
//! BENCH_SESSIONS (default 40) and BENCH_CONCURRENCY (default 8) tune it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth::config::Config;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

const TOKEN: &str = "bench-token-0123456789abcdef";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn plugin(name: &str, file: &str, settings: Value) -> Value {
    json!({ "name": name, "path": root().join(format!("target/wasm32-wasip2/plugin/{file}.wasm")), "settings": settings })
}

#[derive(Default)]
struct Timings {
    create: Vec<Duration>,
    start: Vec<Duration>,
    destroy: Vec<Duration>,
    running_to_start: Vec<f64>,
    total: Duration,
}

type Sample = (Duration, Duration, Duration, Option<f64>);

impl Timings {
    async fn collect(tasks: Vec<tokio::task::JoinHandle<Sample>>) -> Timings {
        let mut t = Timings::default();
        for task in tasks {
            let (c, s, d, lag) = task.await.unwrap();
            t.create.push(c);
            t.start.push(s);
            t.destroy.push(d);
            t.running_to_start.extend(lag);
        }
        t
    }
}

fn pct(v: &mut [Duration], p: usize) -> f64 {
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)].as_secs_f64() * 1e3
}

fn pct_f(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn report(name: &str, n: usize, t: &mut Timings) {
    println!(
        "{name:<22} {:>6.1} sessions/s | create p50 {:>6.1} p99 {:>6.1} | start p50 {:>6.1} p99 {:>6.1} | destroy p50 {:>6.1} p99 {:>6.1} | Running→start returned p50 {:>6.1} p99 {:>6.1} (ms)",
        n as f64 / t.total.as_secs_f64(),
        pct(&mut t.create, 50),
        pct(&mut t.create, 99),
        pct(&mut t.start, 50),
        pct(&mut t.start, 99),
        pct(&mut t.destroy, 50),
        pct(&mut t.destroy, 99),
        pct_f(&mut t.running_to_start, 50),
        pct_f(&mut t.running_to_start, 99),
    );
}

/// Signed milliseconds from the Pod first seen Running to `returned`
/// (negative when the call returned before the independent watch saw it).
fn lag_ms(seen: &Mutex<HashMap<String, Instant>>, name: &str, returned: Instant) -> Option<f64> {
    let s = *seen.lock().unwrap().get(name)?;
    Some(
        returned.saturating_duration_since(s).as_secs_f64() * 1e3
            - s.saturating_duration_since(returned).as_secs_f64() * 1e3,
    )
}

/// Records when each Pod was first seen Running, from one independent watch.
fn running_seen(pods: Api<Pod>) -> Arc<Mutex<HashMap<String, Instant>>> {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher(pods, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Ok(Some(p)) = stream.try_next().await {
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                s.lock()
                    .unwrap()
                    .entry(p.metadata.name.clone().unwrap_or_default())
                    .or_insert_with(Instant::now);
            }
        }
    });
    seen
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let conc: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let kubeconfig = PathBuf::from(
        std::env::var("BERTH_TEST_KUBECONFIG")
            .expect("BERTH_TEST_KUBECONFIG: start the control plane first"),
    );

    let base = Config {
        kubeconfig: Some(kubeconfig.clone()),
        tokens: vec![TOKEN.into()],
        ..Config::default()
    };
    let client = berth::driver::kube_client(&base).await.unwrap();
    let ns = format!("bench-{}", std::process::id());
    let nsobj: Namespace = serde_json::from_value(json!({ "metadata": { "name": ns } })).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &nsobj)
        .await
        .unwrap();
    await_condition(
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &ns),
        "default",
        |s: Option<&_>| s.is_some(),
    )
    .await
    .unwrap();
    // One cargo for every session: RWO does not stop Pods on one node from sharing it.
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({ "metadata": { "name": "cargo-bench" },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } } })).unwrap();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &pvc)
        .await
        .unwrap();

    let plugins: Vec<berth::plugin::PluginConfig> = serde_json::from_value(json!([
        plugin("restricted", "berth_plugin_restricted", json!({})),
        plugin(
            "scheduling",
            "berth_plugin_scheduling",
            json!({ "default": { "node_selector": { "berth.test/pool": "sandbox" } } })
        ),
        plugin(
            "resources",
            "berth_plugin_resources",
            json!({ "max": { "cpu": "4" } })
        ),
    ]))
    .unwrap();
    let config = Config {
        namespace: ns.clone(),
        plugins,
        plugin_cache_dir: Some(root().join("target/berth-test-plugin-cache")),
        ..base
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = berth::server::start(config, None, listener).await.unwrap();
    let url = format!("http://{}", running.addr);
    let http = reqwest::Client::new();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let seen = running_seen(pods.clone());
    let body = |id: &str| {
        json!({
            "session": { "id": id, "sandbox_id": id },
            "profile": { "id": "python", "image": "ship:bench", "resources": { "cpus": 1.0, "memory": "1g" } },
            "cargo": { "id": "bench", "driver_ref": "cargo-bench" },
            "labels": { "bay.instance_id": "bench" }
        })
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(conc));
    println!("{n} sessions, concurrency {conc}, namespace {ns}");

    // Berth.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let (http, url, sem, seen, body) = (
            http.clone(),
            url.clone(),
            sem.clone(),
            seen.clone(),
            body(&format!("b{i}")),
        );
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let t = Instant::now();
            let r: Value = http
                .post(format!("{url}/v1/sessions"))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let create = t.elapsed();
            let id = r["container_id"].as_str().expect("created").to_string();
            let t = Instant::now();
            let r = http
                .post(format!("{url}/v1/sessions/{id}/start"))
                .bearer_auth(TOKEN)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
            let returned = Instant::now();
            let start = t.elapsed();
            let lag = lag_ms(&seen, &id, returned);
            let t = Instant::now();
            let r = http
                .delete(format!("{url}/v1/sessions/{id}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            (create, start, t.elapsed(), lag)
        }));
    }
    let mut tb = Timings::collect(tasks).await;
    tb.total = t0.elapsed();

    // Baseline: the Pod Berth renders, submitted and awaited directly.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let rendered: Value = http
            .post(format!("{url}/v1/render/pod"))
            .bearer_auth(TOKEN)
            .json(&body(&format!("k{i}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let pod: Pod = serde_json::from_value(rendered["object"].clone()).unwrap();
        let (pods, sem, seen) = (pods.clone(), sem.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let name = pod.metadata.name.clone().unwrap();
            let t = Instant::now();
            pods.create(&PostParams::default(), &pod).await.unwrap();
            let create = t.elapsed();
            let t = Instant::now();
            await_condition(pods.clone(), &name, conditions::is_pod_running())
                .await
                .unwrap();
            let returned = Instant::now();
            let start = t.elapsed();
            let lag = lag_ms(&seen, &name, returned);
            let t = Instant::now();
            let uid = pods.get(&name).await.unwrap().metadata.uid.unwrap();
            pods.delete(
                &name,
                &DeleteParams {
                    grace_period_seconds: Some(10),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            await_condition(pods.clone(), &name, conditions::is_deleted(&uid))
                .await
                .unwrap();
            (create, start, t.elapsed(), lag)
        }));
    }
    let mut tk = Timings::collect(tasks).await;
    tk.total = t0.elapsed();

    report("berth (3 plugins)", n, &mut tb);
    report("kube-rs direct", n, &mut tk);
    println!(
        "ratio berth/direct: throughput {:.2}x, create p50 {:.2}x, start p50 {:.2}x, destroy p50 {:.2}x",
        (n as f64 / tb.total.as_secs_f64()) / (n as f64 / tk.total.as_secs_f64()),
        pct(&mut tb.create, 50) / pct(&mut tk.create, 50),
        pct(&mut tb.start, 50) / pct(&mut tk.start, 50),
        pct(&mut tb.destroy, 50) / pct(&mut tk.destroy, 50),
    );
    let _ = Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await;
}
