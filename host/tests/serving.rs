//! Berth as a server among failing neighbours: clients that stall, an API
//! server that goes away and comes back, and a SIGTERM with work in flight.
//! The API server's outages are played by a loopback TCP gate in front of
//! the real one, so other tests keep their cluster.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP forwarder to the test API server that can be shut: while shut it
/// closes every connection it has and refuses new ones, as a restarting
/// API server does.
struct Gate {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Gate {
    async fn new(upstream: String) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (is_open, tracked) = (open.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                if !is_open.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                tracked.lock().unwrap().push(task.abort_handle());
            }
        });
        Gate { addr, open, conns }
    }

    fn shut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn reopen(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// Reads until the peer closes the connection; how long that took, or
/// `None` if it stayed open for `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn stalled_and_idle_connections_are_closed() {
    let client = kube_client().await;
    let ns = namespace(&client, "conn", &[]).await;
    let b = berth(&ns, vec![]).await;
    let addr = b.base.trim_start_matches("http://").to_string();
    let limit = Duration::from_secs(30);

    // Headers that never end.
    let mut half_headers = TcpStream::connect(&addr).await.unwrap();
    half_headers
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: berth\r\n")
        .await
        .unwrap();
    // A body that never arrives in full.
    let mut half_body = TcpStream::connect(&addr).await.unwrap();
    half_body
        .write_all(
            format!(
                "POST /v1/volumes HTTP/1.1\r\nHost: berth\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    // A kept-alive connection that goes quiet after one request.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: berth\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    let (a, b2, c, d) = tokio::join!(
        closed_within(&mut half_headers, limit),
        closed_within(&mut half_body, limit),
        closed_within(&mut idle, limit),
        closed_within(&mut silent, limit),
    );
    assert!(
        d.is_some(),
        "a connection that never sent a byte stayed open"
    );
    assert!(a.is_some(), "half-sent headers kept the connection open");
    assert!(b2.is_some(), "a half-sent body kept the connection open");
    assert!(c.is_some(), "an idle connection stayed open");
    // The server still serves.
    let (s, _) = b.get_json("/v1/plugins").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let client = kube_client().await;
    let ns = namespace(&client, "bearer", &[]).await;
    let b = berth(&ns, vec![]).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let resp = b
            .http
            .get(b.url("/v1/plugins"))
            .header("Authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{scheme}");
    }
    let resp = b
        .http
        .get(b.url("/v1/plugins"))
        .header("Authorization", format!("Basic {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn berth_starts_during_an_api_outage_and_recovers() {
    let client = kube_client().await;
    let ns = namespace(&client, "outage", &[]).await;
    let gate = Gate::new(api_server_addr()).await;
    gate.shut();
    let dir = tempfile::tempdir().unwrap();
    let via = kubeconfig_via(&format!("https://{}", gate.addr), dir.path());
    // The isolation policy is on (the default): no session may be created
    // before it is applied.
    let b = berth_with(&ns, vec![], |c| c.kubeconfig = Some(via)).await;
    let resp = b.get("/readyz").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = problem(
        b.post("/v1/sessions")
            .json(&create_body("outage", &profile()))
            .send()
            .await
            .unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "kubernetes_unavailable",
    )
    .await;
    assert_detail(&body, "isolation NetworkPolicy is not applied yet");
    gate.reopen();
    let mut ready = false;
    for _ in 0..60 {
        if b.get("/readyz").send().await.unwrap().status() == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(ready, "never ready after the API server came back");
    create_volume(&b, "cargo-outage").await;
}

#[tokio::test]
async fn a_start_waiting_through_an_api_outage_returns_once_the_pod_runs() {
    let client = kube_client().await;
    let ns = namespace(&client, "restart", &[]).await;
    let gate = Gate::new(api_server_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let via = kubeconfig_via(&format!("https://{}", gate.addr), dir.path());
    let b = berth_with(&ns, nowhere(), |c| {
        c.kubeconfig = Some(via);
        c.startup_timeout_s = 90;
        c.unschedulable_grace_s = 600;
    })
    .await;
    let name = unschedulable_session(&b, &ns).await;
    let start = start_later(&b, &name);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The API server goes away under Berth; meanwhile the Pod starts.
    gate.shut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    kubelet_reports(
        &Api::<Pod>::namespaced(client.clone(), &ns),
        &name,
        running_status("127.1.251.1"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!start.is_finished(), "start ended during the outage");
    let back = Instant::now();
    gate.reopen();
    let resp = start.await.unwrap();
    let after = back.elapsed();
    let (s, body) = status_and_json(resp).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["endpoint"], "http://127.1.251.1:8123");
    println!("start returned {after:?} after the API server came back");
}

#[tokio::test]
async fn sigterm_drains_within_the_grace_and_cuts_long_waits() {
    let client = kube_client().await;
    let ns = namespace(&client, "drain", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, base) = serve_config(
        dir.path(),
        &ns,
        json!({
            "plugins": nowhere(),
            "startup_timeout_s": 300,
            "unschedulable_grace_s": 600,
            "shutdown_grace_s": 6,
        }),
    );
    let mut child = serve(&path);
    let b = TestServer::at(&base, &ns).await;
    let addr = base.trim_start_matches("http://").to_string();
    let name = unschedulable_session(&b, &ns).await;
    let start = start_later(&b, &name);
    // Clients that stall in their headers, or never send a byte, must not
    // hold the drain.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let pid = child.id().expect("pid") as i32;
    let signalled = Instant::now();
    assert_eq!(send_signal(pid, 15), 0);
    let body = problem(
        start.await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
    )
    .await;
    assert_detail(&body, "retry");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("berth exited")
        .unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "{status}");
    // Within the 6 s grace (plus start-up slack), not the 300 s start timeout.
    assert!(took < Duration::from_secs(12), "{took:?}");
    println!("drained and exited {took:?} after SIGTERM");
}

/// SIGTERM through the `kill` command, as an orchestrator would send it.
fn send_signal(pid: i32, signal: i32) -> i32 {
    std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.code().unwrap_or(-1))
        .unwrap_or(-1)
}

async fn metrics_of(base: &str) -> String {
    reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Resident memory of process `pid`, bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Starts `berth serve` on `config` and polls /readyz until it is ready;
/// every not-ready detail seen on the way, the child, and its RSS once ready.
async fn serve_until_ready(
    config: &std::path::Path,
    base: &str,
) -> (Vec<String>, tokio::process::Child, u64) {
    let child = serve(config);
    let http = reqwest::Client::new();
    let mut details = Vec::new();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not ready after 120 s: {details:?}"
        );
        if let Ok(resp) = http.get(format!("{base}/readyz")).send().await {
            if resp.status() == StatusCode::OK {
                break;
            }
            let body: serde_json::Value = resp.json().await.unwrap();
            details.push(body["detail"].as_str().unwrap_or_default().to_string());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss = rss_of(child.id().unwrap());
    (details, child, rss)
}

#[tokio::test]
async fn a_cold_start_compiles_in_a_child_and_keeps_no_compiler_memory() {
    let client = kube_client().await;
    let ns = namespace(&client, "cold", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("plugin-cache");
    let (config, base) = serve_config(
        dir.path(),
        &ns,
        json!({ "plugin_cache_dir": cache, "plugins": shipped_chain() }),
    );

    let (details, mut cold, cold_rss) = serve_until_ready(&config, &base).await;
    // Unready while compiling, saying what it compiles.
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("not ready: loading plugin \"") && d.ends_with(" of 3)")),
        "{details:?}"
    );
    let artifacts = std::fs::read_dir(&cache)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("cwasm".as_ref()))
        .count();
    assert_eq!(artifacts, 3, "the child wrote the cache");
    let metrics = metrics_of(&base).await;
    for plugin in ["restricted", "scheduling", "resources"] {
        assert!(
            metrics.contains(&format!(
                "berth_plugin_load_seconds{{plugin=\"{plugin}\",source=\"compiled\"}}"
            )),
            "{metrics}"
        );
    }
    assert!(metrics.contains("berth_plugin_generation 1"), "{metrics}");
    cold.kill().await.unwrap();

    let (_, mut warm, warm_rss) = serve_until_ready(&config, &base).await;
    let metrics = metrics_of(&base).await;
    assert!(
        metrics.contains("berth_plugin_load_seconds{plugin=\"restricted\",source=\"cache\"}"),
        "{metrics}"
    );
    warm.kill().await.unwrap();
    eprintln!(
        "RSS once ready: cold {:.1} MiB, warm {:.1} MiB",
        cold_rss as f64 / 1048576.0,
        warm_rss as f64 / 1048576.0
    );
    // Compiling in this process kept hundreds of MB (406 MB release, 525 MB
    // debug, against about 41 MB warm); in a child, none of it stays.
    assert!(
        cold_rss < warm_rss + (20 << 20),
        "cold {} MiB vs warm {} MiB",
        cold_rss >> 20,
        warm_rss >> 20
    );
}

#[tokio::test]
async fn a_replica_whose_plugins_fail_to_load_exits_saying_why() {
    let client = kube_client().await;
    let ns = namespace(&client, "badload", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut bad = hostile("bad-settings");
    bad.name = "refused".into();
    let (config, _) = serve_config(dir.path(), &ns, json!({ "plugins": [bad] }));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("BERTH_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plugin \"refused\" rejected its settings"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_cache_that_cannot_be_written_costs_a_compile_not_the_start() {
    let client = kube_client().await;
    let ns = namespace(&client, "nocache", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    // A file where the cache directory should be: nothing can be written.
    let cache = dir.path().join("not-a-dir");
    std::fs::write(&cache, b"").unwrap();
    let (config, base) = serve_config(
        dir.path(),
        &ns,
        json!({ "plugin_cache_dir": cache, "plugins": [shipped_chain()[0]] }),
    );
    let (_, mut child, _) = serve_until_ready(&config, &base).await;
    let b = TestServer::at(&base, &ns).await;
    let (s, r) = b
        .post_json("/v1/render/pod", &create_body("nocache", &profile()))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["steps"][0]["plugin"], "restricted");
    child.kill().await.unwrap();
}

/// The pids of `pid`'s children.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[tokio::test]
async fn sigterm_during_the_first_compile_exits_at_once_and_takes_the_compiler() {
    let client = kube_client().await;
    let ns = namespace(&client, "termload", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    // A Python component: about ten seconds of compiling in a debug build.
    let (config, base) = serve_config(
        dir.path(),
        &ns,
        json!({
            "plugin_cache_dir": dir.path().join("cache"),
            "plugins": [plugin("image-policy", "berth_plugin_image_policy", json!({}))],
        }),
    );
    let mut child = serve(&config);
    let pid = child.id().unwrap();
    let http = reqwest::Client::new();
    let mut compiler = None;
    for _ in 0..200 {
        compiler = children_of(pid).first().copied();
        if compiler.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let compiler = compiler.expect("a compiling child");
    let resp = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let signalled = Instant::now();
    assert_eq!(send_signal(pid as i32, 15), 0);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("berth exited")
        .unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "{status}");
    // Not after the compile: the load is abandoned.
    assert!(took < Duration::from_secs(4), "{took:?}");
    let mut gone = false;
    for _ in 0..40 {
        if !std::path::Path::new(&format!("/proc/{compiler}")).exists() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the compiling child {compiler} outlived the server");
}

/// Starts `berth serve` with the first shipped plugin, reloads it to all
/// three through the API; the server's RSS after the reload, and the
/// metrics then.
async fn reload_to_the_shipped_chain(
    dir: &std::path::Path,
    ns: &str,
    cache: &std::path::Path,
) -> (u64, String) {
    let (config, base) = serve_config(
        dir,
        ns,
        json!({ "plugin_cache_dir": cache, "plugins": [shipped_chain()[0]] }),
    );
    let (_, mut child, _) = serve_until_ready(&config, &base).await;
    let b = TestServer::at(&base, ns).await;
    // The operator adds two plugins to the file and reloads.
    let (extended, _) = serve_config(
        dir,
        ns,
        json!({
            "listen": base.trim_start_matches("http://"),
            "plugin_cache_dir": cache,
            "plugins": shipped_chain(),
        }),
    );
    assert_eq!(extended, config);
    let (s, r) = b.post_json("/v1/plugins/reload", &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["generation"], 2, "{r}");
    let rss = rss_of(child.id().unwrap());
    let metrics = metrics_of(&base).await;
    assert!(metrics.contains("berth_plugin_generation 2"), "{metrics}");
    child.kill().await.unwrap();
    (rss, metrics)
}

#[tokio::test]
async fn a_reload_that_compiles_keeps_no_compiler_memory_and_says_so_in_the_metrics() {
    let client = kube_client().await;
    let ns = namespace(&client, "reload", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    // Its own cache: the first reload compiles the two plugins it adds, the
    // second finds them cached.
    let cache = dir.path().join("cache");
    let (cold, metrics) = reload_to_the_shipped_chain(dir.path(), &ns, &cache).await;
    assert!(
        metrics.contains("berth_plugin_load_seconds{plugin=\"resources\",source=\"compiled\"}"),
        "{metrics}"
    );
    // Generation 1 compiled restricted; generation 2 found it cached, and
    // the metrics say only what the serving generation did.
    assert!(
        metrics.contains("berth_plugin_load_seconds{plugin=\"restricted\",source=\"cache\"}")
            && !metrics
                .contains("berth_plugin_load_seconds{plugin=\"restricted\",source=\"compiled\"}"),
        "{metrics}"
    );
    let (warm, metrics) = reload_to_the_shipped_chain(dir.path(), &ns, &cache).await;
    assert!(
        metrics.contains("berth_plugin_load_seconds{plugin=\"resources\",source=\"cache\"}"),
        "{metrics}"
    );
    eprintln!(
        "RSS after a reload that compiled {:.1} MiB, after the same reload from the cache {:.1} MiB",
        cold as f64 / 1048576.0,
        warm as f64 / 1048576.0
    );
    // Compiling in the server kept hundreds of MB; in a child, none stays.
    assert!(cold < warm + (20 << 20), "compiled {cold}, cached {warm}");
}
