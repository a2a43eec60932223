//! Sessions at scale, as Bay runs them: one cargo per session, through
//! create volume → create → start → destroy → delete volume, N times at a
//! chosen concurrency, through a `berth serve` process (the release binary,
//! the shipped plugin chain) and, in the same run, the same objects made
//! directly with kube-rs (the baseline). Then sessions kept alive, ramped in
//! batches, to show what Berth's memory and `start` latency do as live
//! sessions grow. Also counts the watches on Pods the API server holds.
//!
//! Run (control plane up, plugins built):
//!   BERTH_TEST_KUBECONFIG=/tmp/berth-cluster/kubeconfig cargo bench -p berth --bench sessions
//! BENCH_SESSIONS (default 1000), BENCH_CONCURRENCY (50), BENCH_LIVE (2000)
//! and BENCH_LIVE_BATCH (500) tune it.

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

mod common;
use common::{root, rss_mib};

const TOKEN: &str = "bench-token-0123456789abcdef";

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn plugin(name: &str, file: &str, settings: Value) -> Value {
    json!({ "name": name, "path": root().join(format!("target/wasm32-wasip2/plugin/{file}.wasm")), "settings": settings })
}

/// Per-call latencies of one path.
#[derive(Default)]
struct Timings {
    volume: Vec<Duration>,
    create: Vec<Duration>,
    start: Vec<Duration>,
    destroy: Vec<Duration>,
    delete_volume: Vec<Duration>,
    running_to_start: Vec<f64>,
    total: Duration,
}

struct Sample {
    calls: [Duration; 5],
    lag: Option<f64>,
}

impl Timings {
    async fn collect(tasks: Vec<tokio::task::JoinHandle<Sample>>) -> Timings {
        let mut t = Timings::default();
        for task in tasks {
            let s = task.await.unwrap();
            t.volume.push(s.calls[0]);
            t.create.push(s.calls[1]);
            t.start.push(s.calls[2]);
            t.destroy.push(s.calls[3]);
            t.delete_volume.push(s.calls[4]);
            t.running_to_start.extend(s.lag);
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
        "{name:<18} {:>6.1} sessions/s (p50/p99 ms) volume {:.1}/{:.1} | create {:.1}/{:.1} | start {:.1}/{:.1} | destroy {:.1}/{:.1} | delete volume {:.1}/{:.1} | Running→start returned {:.1}/{:.1}",
        n as f64 / t.total.as_secs_f64(),
        pct(&mut t.volume, 50),
        pct(&mut t.volume, 99),
        pct(&mut t.create, 50),
        pct(&mut t.create, 99),
        pct(&mut t.start, 50),
        pct(&mut t.start, 99),
        pct(&mut t.destroy, 50),
        pct(&mut t.destroy, 99),
        pct(&mut t.delete_volume, 50),
        pct(&mut t.delete_volume, 99),
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

/// Watches on Pods the API server holds right now (all clients).
async fn pod_watches(client: &kube::Client) -> u64 {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("apiserver_longrunning_requests{")
                && l.contains("resource=\"pods\"")
                && l.contains("verb=\"WATCH\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The most Pod watches seen while `sampling` holds.
fn sample_watches(
    client: kube::Client,
) -> (
    Arc<std::sync::atomic::AtomicU64>,
    tokio::task::JoinHandle<()>,
) {
    let max = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let m = max.clone();
    let task = tokio::spawn(async move {
        loop {
            let w = pod_watches(&client).await;
            m.fetch_max(w, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    (max, task)
}

struct Berth {
    url: String,
    http: reqwest::Client,
}

impl Berth {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Volume and session: the first half of Bay's session start.
    async fn up(
        &self,
        id: &str,
        seen: &Mutex<HashMap<String, Instant>>,
    ) -> ([Duration; 3], Option<f64>, String) {
        let t = Instant::now();
        self.call(
            reqwest::Method::POST,
            "/v1/volumes",
            Some(json!({ "name": format!("cargo-{id}"), "labels": { "bay.cargo_id": id } })),
        )
        .await;
        let volume = t.elapsed();
        let t = Instant::now();
        let r = self
            .call(reqwest::Method::POST, "/v1/sessions", Some(body(id)))
            .await;
        let create = t.elapsed();
        let pod = r["container_id"].as_str().expect("created").to_string();
        let t = Instant::now();
        self.call(
            reqwest::Method::POST,
            &format!("/v1/sessions/{pod}/start"),
            Some(json!({})),
        )
        .await;
        let returned = Instant::now();
        let start = t.elapsed();
        ([volume, create, start], lag_ms(seen, &pod, returned), pod)
    }

    async fn down(&self, id: &str, pod: &str) -> [Duration; 2] {
        let t = Instant::now();
        self.call(
            reqwest::Method::DELETE,
            &format!("/v1/sessions/{pod}"),
            None,
        )
        .await;
        let destroy = t.elapsed();
        let t = Instant::now();
        self.call(
            reqwest::Method::DELETE,
            &format!("/v1/volumes/cargo-{id}"),
            None,
        )
        .await;
        [destroy, t.elapsed()]
    }
}

/// What Bay sends for session `id` on cargo `cargo-<id>`.
fn body(id: &str) -> Value {
    json!({
        "session": { "id": id, "sandbox_id": id },
        "profile": { "id": "python", "image": "ship:bench", "resources": { "cpus": 1.0, "memory": "1g" } },
        "cargo": { "id": id, "driver_ref": format!("cargo-{id}"), "size_limit_mb": 1024 },
        "labels": { "bay.instance_id": "bench" }
    })
}

#[tokio::main]
async fn main() {
    let n = env_or("BENCH_SESSIONS", 1000);
    let conc = env_or("BENCH_CONCURRENCY", 50);
    let live = env_or("BENCH_LIVE", 2000);
    let batch = env_or("BENCH_LIVE_BATCH", 500).max(1);
    let kubeconfig = PathBuf::from(
        std::env::var("BERTH_TEST_KUBECONFIG")
            .expect("BERTH_TEST_KUBECONFIG: start the control plane first"),
    );
    let base = Config {
        kubeconfig: Some(kubeconfig.clone()),
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
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let seen = running_seen(pods.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let watches_before = pod_watches(&client).await;

    // `berth serve`, as operators run it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = json!({
        "listen": format!("127.0.0.1:{port}"),
        "tokens": [TOKEN],
        "namespace": ns,
        "kubeconfig": kubeconfig,
        "startup_timeout_s": 300,
        "plugin_cache_dir": root().join("target/berth-test-plugin-cache"),
        "plugins": [
            plugin("restricted", "berth_plugin_restricted", json!({})),
            plugin("scheduling", "berth_plugin_scheduling", json!({ "default": { "node_selector": { "berth.test/pool": "sandbox" } } })),
            plugin("resources", "berth_plugin_resources", json!({ "max": { "cpu": "4" } })),
        ],
    });
    let path = dir.path().join("berth.yaml");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("BERTH_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("berth serve");
    let pid = child.id().unwrap();
    let berth = Arc::new(Berth {
        url: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    });
    for _ in 0..600 {
        if berth
            .http
            .get(format!("{}/readyz", berth.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_idle = rss_mib(pid);
    println!(
        "{n} sessions (one cargo each), concurrency {conc}, namespace {ns}; berth serve pid {pid}"
    );
    let sem = Arc::new(tokio::sync::Semaphore::new(conc));

    // Berth: Bay's whole session life, N times.
    let (max_watches, sampler) = sample_watches(client.clone());
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let (berth, sem, seen) = (berth.clone(), sem.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let id = format!("b{i}");
            let (up, lag, pod) = berth.up(&id, &seen).await;
            let down = berth.down(&id, &pod).await;
            Sample {
                calls: [up[0], up[1], up[2], down[0], down[1]],
                lag,
            }
        }));
    }
    let mut tb = Timings::collect(tasks).await;
    tb.total = t0.elapsed();
    sampler.abort();
    let berth_watches = max_watches
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(watches_before);
    let rss_after = rss_mib(pid);

    // Baseline: the objects Berth renders, made and awaited directly.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let id = format!("k{i}");
        let pod: Pod = serde_json::from_value(
            berth
                .call(reqwest::Method::POST, "/v1/render/pod", Some(body(&id)))
                .await["object"]
                .clone(),
        )
        .unwrap();
        let pvc: PersistentVolumeClaim = serde_json::from_value(
            berth
                .call(
                    reqwest::Method::POST,
                    "/v1/render/pvc",
                    Some(
                        json!({ "name": format!("cargo-{id}"), "labels": { "bay.cargo_id": id } }),
                    ),
                )
                .await["object"]
                .clone(),
        )
        .unwrap();
        let (pods, pvcs, sem, seen) = (pods.clone(), pvcs.clone(), sem.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let name = pod.metadata.name.clone().unwrap();
            let claim = pvc.metadata.name.clone().unwrap();
            let t = Instant::now();
            pvcs.create(&PostParams::default(), &pvc).await.unwrap();
            let volume = t.elapsed();
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
            let dp = DeleteParams {
                grace_period_seconds: Some(10),
                ..Default::default()
            };
            pods.delete(&name, &dp).await.unwrap();
            await_condition(pods.clone(), &name, conditions::is_deleted(&uid))
                .await
                .unwrap();
            let destroy = t.elapsed();
            let t = Instant::now();
            pvcs.delete(&claim, &DeleteParams::default()).await.unwrap();
            Sample {
                calls: [volume, create, start, destroy, t.elapsed()],
                lag,
            }
        }));
    }
    let mut tk = Timings::collect(tasks).await;
    tk.total = t0.elapsed();

    report("berth (3 plugins)", n, &mut tb);
    report("kube-rs direct", n, &mut tk);
    println!(
        "ratio berth/direct: throughput {:.2}x, start p50 {:.2}x, start p99 {:.2}x",
        (n as f64 / tb.total.as_secs_f64()) / (n as f64 / tk.total.as_secs_f64()),
        pct(&mut tb.start, 50) / pct(&mut tk.start, 50),
        pct(&mut tb.start, 99) / pct(&mut tk.start, 99),
    );
    println!(
        "berth: RSS {rss_idle:.1} MiB idle, {rss_after:.1} MiB after {n} sessions came and went; at most {berth_watches} Pod watch(es) on the API server while {conc} sessions were in flight"
    );

    // Live sessions, ramped: start latency and memory as they accumulate.
    let mut up: Vec<(String, String)> = Vec::new();
    while up.len() < live {
        let from = up.len();
        let to = (from + batch).min(live);
        let mut tasks = Vec::new();
        for i in from..to {
            let (berth, sem, seen) = (berth.clone(), sem.clone(), seen.clone());
            tasks.push(tokio::spawn(async move {
                let _p = sem.acquire().await.unwrap();
                let id = format!("l{i}");
                let (calls, _, pod) = berth.up(&id, &seen).await;
                (id, pod, calls[2])
            }));
        }
        let mut starts = Vec::new();
        for t in tasks {
            let (id, pod, start) = t.await.unwrap();
            up.push((id, pod));
            starts.push(start);
        }
        println!(
            "live {:>5}: start p50 {:>7.1} ms p99 {:>7.1} ms (this batch of {}) | berth RSS {:.1} MiB | Pod watches on the API server (all clients) {}",
            up.len(),
            pct(&mut starts, 50),
            pct(&mut starts, 99),
            to - from,
            rss_mib(pid),
            pod_watches(&client).await,
        );
    }
    let mut tasks = Vec::new();
    for (id, pod) in up {
        let (berth, sem) = (berth.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            berth.down(&id, &pod).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "berth: RSS {:.1} MiB once every live session was gone",
        rss_mib(pid)
    );
    let _ = child.kill().await;
    let _ = Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await;
}
