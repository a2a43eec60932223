//! Shared pieces of Berth's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth::config::Config;
use berth::model::{Cargo, ContainerSpec, Profile, Resources, Session};
use berth::plugin::PluginConfig;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// A plugin built by `tests/build-plugins.sh`. Missing plugins fail loudly.
pub fn wasm(name: &str) -> PathBuf {
    let p = repo_root()
        .join("target/wasm32-wasip2/plugin")
        .join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run tests/build-plugins.sh first",
        p.display()
    );
    p
}

pub fn plugin(name: &str, file: &str, settings: serde_json::Value) -> PluginConfig {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "path": wasm(file),
        "settings": settings,
    }))
    .expect("plugin config")
}

pub fn hostile(mode: &str) -> PluginConfig {
    plugin(
        &format!("hostile-{mode}"),
        "berth_fixture_hostile",
        serde_json::json!({ "mode": mode }),
    )
}

/// The three shipped plugins with settings a platform team would write.
pub fn shipped_chain() -> Vec<PluginConfig> {
    let mut chain = vec![
        plugin(
            "restricted",
            "berth_plugin_restricted",
            serde_json::json!({ "run_as_user": 1000, "fs_group": 1000 }),
        ),
        plugin(
            "scheduling",
            "berth_plugin_scheduling",
            serde_json::json!({
                "default": {
                    "node_selector": { "berth.test/pool": "sandbox" },
                    "tolerations": [{ "key": "berth.test/dedicated", "operator": "Equal", "value": "sandbox", "effect": "NoSchedule" }]
                },
                "profiles": { "gpu": { "node_selector": { "berth.test/pool": "dedicated" } } }
            }),
        ),
        plugin(
            "resources",
            "berth_plugin_resources",
            serde_json::json!({
                "default_limits": { "ephemeral-storage": "2Gi" },
                "default_requests": { "ephemeral-storage": "1Gi" },
                "max": { "cpu": "4", "memory": "8Gi" },
                "pvc": { "min_size": "1Gi", "max_size": "20Gi" }
            }),
        ),
    ];
    // Each held to the fields it is for, as deploy/ configures them.
    for (p, scope) in chain.iter_mut().zip([
        RESTRICTED_SCOPE.as_slice(),
        SCHEDULING_SCOPE.as_slice(),
        RESOURCES_SCOPE.as_slice(),
    ]) {
        p.mutation_scope = Some(scope.iter().map(|s| s.to_string()).collect());
    }
    chain
}

/// The `mutation_scope` of each shipped plugin, as in `deploy/`.
pub const RESTRICTED_SCOPE: [&str; 5] = [
    "/spec/securityContext",
    "/spec/containers/*/securityContext",
    "/spec/initContainers/*/securityContext",
    "/spec/ephemeralContainers/*/securityContext",
    "/spec/runtimeClassName",
];
pub const SCHEDULING_SCOPE: [&str; 6] = [
    "/spec/nodeSelector",
    "/spec/tolerations",
    "/spec/affinity",
    "/spec/topologySpreadConstraints",
    "/spec/priorityClassName",
    "/spec/runtimeClassName",
];
pub const RESOURCES_SCOPE: [&str; 3] = [
    "/spec/containers/*/resources",
    "/spec/initContainers/*/resources",
    "/spec/resources",
];

pub fn test_config(namespace: &str) -> Config {
    Config {
        namespace: namespace.into(),
        tokens: vec!["test-token-0123456789abcdef".into()],
        ..Config::default()
    }
}

pub fn session(id: &str) -> Session {
    Session {
        id: id.into(),
        sandbox_id: format!("sandbox-{id}"),
        owner: None,
    }
}

pub fn profile() -> Profile {
    serde_json::from_value(serde_json::json!({
        "id": "python",
        "image": "ghcr.io/example/ship:1.0",
        "runtime_port": 8123,
        "resources": { "cpus": 1.0, "memory": "1g" },
        "env": { "LANG": "C.UTF-8" }
    }))
    .expect("profile")
}

pub fn sidecar_profile() -> Profile {
    Profile {
        id: "browser".into(),
        image: None,
        containers: vec![
            ContainerSpec {
                name: "ship".into(),
                image: "ghcr.io/example/ship:1.0".into(),
                runtime_type: "ship".into(),
                runtime_port: 8123,
                resources: Some(Resources {
                    cpus: 1.0,
                    memory: "1g".into(),
                }),
                capabilities: vec!["shell".into()],
                primary_for: vec![],
                env: BTreeMap::new(),
                proxy: None,
                health_check_path: Some("/health".into()),
                primary: false,
                security_context: None,
            },
            ContainerSpec {
                name: "browser".into(),
                image: "ghcr.io/example/gull:1.0".into(),
                runtime_type: "browser".into(),
                runtime_port: 8124,
                resources: Some(Resources {
                    cpus: 2.0,
                    memory: "2g".into(),
                }),
                capabilities: vec!["browser".into()],
                primary_for: vec![],
                env: BTreeMap::new(),
                proxy: None,
                health_check_path: None,
                primary: false,
                security_context: None,
            },
        ],
        ..profile()
    }
}

pub fn cargo(id: &str) -> Cargo {
    Cargo {
        id: id.into(),
        driver_ref: format!("cargo-{id}"),
        size_limit_mb: 2048,
    }
}

pub fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("bay.owner".to_string(), "alice".to_string()),
        ("bay.instance_id".to_string(), "bay-1".to_string()),
    ])
}

// ---- end-to-end helpers: a real control plane, started by tests/cluster ----

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;

/// The kubeconfig of the test cluster. Tests that need it fail loudly when
/// it is missing: run them through tests/run.sh (the README's test command).
pub fn kubeconfig() -> PathBuf {
    let path = std::env::var("BERTH_TEST_KUBECONFIG").unwrap_or_else(|_| {
        panic!("BERTH_TEST_KUBECONFIG is not set: start the control plane with tests/run.sh (or tests/cluster/cluster.sh up)")
    });
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "BERTH_TEST_KUBECONFIG points to {} which does not exist",
        p.display()
    );
    p
}

/// The test kubeconfig split around its API server URL (written quoted).
fn split_server(text: &str) -> (&str, &str, &str) {
    let start = text.find("server: \"").expect("server in kubeconfig") + "server: \"".len();
    let end = start + text[start..].find('"').expect("closing quote");
    (&text[..start], &text[start..end], &text[end..])
}

/// The test cluster's API server, `host:port`.
pub fn api_server_addr() -> String {
    let text = std::fs::read_to_string(kubeconfig()).expect("kubeconfig");
    let (_, url, _) = split_server(&text);
    url.trim_start_matches("https://").to_string()
}

/// A copy of the test kubeconfig, written into `dir`, that names `server`
/// as the API server (same credentials).
pub fn kubeconfig_via(server: &str, dir: &std::path::Path) -> PathBuf {
    let text = std::fs::read_to_string(kubeconfig()).expect("kubeconfig");
    let (head, _, tail) = split_server(&text);
    let path = dir.join("via.kubeconfig");
    std::fs::write(&path, format!("{head}{server}{tail}")).unwrap();
    path
}

pub async fn kube_client() -> kube::Client {
    let config = Config {
        kubeconfig: Some(kubeconfig()),
        ..test_config("default")
    };
    berth::driver::kube_client(&config)
        .await
        .expect("kube client for the test cluster")
}

/// A unique, lower-case name for this test run.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
        % 1_000_000_000;
    format!("{prefix}-{t:x}{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A fresh namespace with the given labels, ready for Pods (its default
/// ServiceAccount exists).
pub async fn namespace(client: &kube::Client, prefix: &str, labels: &[(&str, &str)]) -> String {
    let name = unique(prefix);
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>() }
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(sas, "default", |sa: Option<&ServiceAccount>| sa.is_some()),
    )
    .await
    .expect("default service account in time")
    .expect("watch service account");
    name
}

/// A fresh namespace where PodSecurity enforces `restricted:latest`.
pub async fn restricted_namespace(client: &kube::Client, prefix: &str) -> String {
    pss_namespace(client, prefix, "restricted").await
}

/// A namespace whose PodSecurity admission enforces `level`.
pub async fn pss_namespace(client: &kube::Client, prefix: &str, level: &str) -> String {
    namespace(
        client,
        prefix,
        &[
            ("pod-security.kubernetes.io/enforce", level),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
        ],
    )
    .await
}

pub const TOKEN: &str = "test-token-0123456789abcdef";

pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub namespace: String,
    /// The in-process server, when the test started one.
    pub running: Option<berth::server::Running>,
}

impl TestServer {
    /// A client for a Berth already serving at `base` (e.g. a `berth serve`
    /// process), once its `/healthz` answers.
    /// The server at `base`, once ready (plugins loaded, API server
    /// answering, isolation applied).
    pub async fn at(base: &str, ns: &str) -> TestServer {
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return TestServer {
                    base: base.to_string(),
                    http,
                    namespace: ns.to_string(),
                    running: None,
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("berth at {base} was not ready in 60 s");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(TOKEN)
    }
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(TOKEN)
    }
    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(TOKEN)
    }
    /// GET with the token; status and JSON body.
    pub async fn get_json(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        status_and_json(self.get(path).send().await.expect("request")).await
    }
    /// POST a JSON body with the token; status and JSON body.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        status_and_json(self.post(path).json(body).send().await.expect("request")).await
    }
    /// DELETE with the token; the status.
    pub async fn delete_status(&self, path: &str) -> reqwest::StatusCode {
        self.delete(path).send().await.expect("request").status()
    }

    /// The Prometheus text at `/metrics`.
    pub async fn metrics(&self) -> String {
        let resp = self.get("/metrics").send().await.expect("request");
        resp.text().await.expect("metrics text")
    }
}

/// Status and body (JSON, or the text as a JSON string when it is not JSON).
pub async fn status_and_json(resp: reqwest::Response) -> (reqwest::StatusCode, serde_json::Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Starts Berth in-process on a loopback port, against the test cluster,
/// serving namespace `ns` with the given plugins.
pub async fn berth_with(
    ns: &str,
    plugins: Vec<PluginConfig>,
    tweak: impl FnOnce(&mut Config),
) -> TestServer {
    let cache = repo_root().join("target/berth-test-plugin-cache");
    let mut config = Config {
        kubeconfig: Some(kubeconfig()),
        plugins,
        plugin_cache_dir: Some(cache),
        startup_timeout_s: 20,
        destroy_timeout_s: 30,
        ..test_config(ns)
    };
    tweak(&mut config);
    config.validate().expect("valid test config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut running = berth::server::start(config, None, listener)
        .await
        .expect("berth starts");
    running.plugins_loaded().await.expect("plugins load");
    TestServer {
        base: format!("http://{}", running.addr),
        http: reqwest::Client::new(),
        namespace: ns.to_string(),
        running: Some(running),
    }
}

pub async fn berth(ns: &str, plugins: Vec<PluginConfig>) -> TestServer {
    berth_with(ns, plugins, |_| {}).await
}

/// The JSON body of a Bay create request.
pub fn create_body(session_id: &str, profile: &Profile) -> serde_json::Value {
    serde_json::json!({
        "session": session(session_id),
        "profile": profile,
        "cargo": cargo(session_id),
        "labels": labels(),
    })
}

/// Asserts the response is a problem document with `status` and `code`;
/// its body.
pub async fn problem(
    resp: reqwest::Response,
    status: reqwest::StatusCode,
    code: &str,
) -> serde_json::Value {
    assert_eq!(
        resp.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .as_deref(),
        Some("application/problem+json")
    );
    let (s, body) = status_and_json(resp).await;
    assert_eq!(s, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    body
}

/// The problem's detail mentions `needle`.
pub fn assert_detail(body: &serde_json::Value, needle: &str) {
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(needle), "{needle:?} not in {body}");
}

/// Creates the cargo volume `cargo-ID` of cargo `id`, as Bay does.
pub async fn create_cargo(b: &TestServer, id: &str) {
    let (s, v) = b
        .post_json(
            "/v1/volumes",
            &serde_json::json!({ "name": format!("cargo-{id}"), "labels": { "bay.cargo_id": id } }),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v}");
}

/// Creates a cargo volume through the API.
pub async fn create_volume(b: &TestServer, name: &str) {
    let (s, v) = b
        .post_json(
            "/v1/volumes",
            &serde_json::json!({ "name": name, "labels": { "bay.cargo_id": name }, "size_limit_mb": 2048 }),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v}");
}

/// Creates a session whose Pod cannot be scheduled (no node has the pool),
/// so tests can play kubelet on its status; its Pod name.
pub async fn unschedulable_session(b: &TestServer, ns: &str) -> String {
    let id = unique("f");
    create_volume(b, &format!("cargo-{id}")).await;
    let (s, v) = b
        .post_json("/v1/sessions", &create_body(&id, &profile()))
        .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v} in {ns}");
    format!("bay-session-{id}")
}

/// The scheduling plugin with a node selector no node matches.
pub fn nowhere() -> Vec<PluginConfig> {
    vec![plugin(
        "scheduling",
        "berth_plugin_scheduling",
        serde_json::json!({ "default": { "node_selector": { "berth.test/pool": "nowhere" } } }),
    )]
}

/// `POST /v1/sessions/{name}/start` running in the background.
pub fn start_later(b: &TestServer, name: &str) -> tokio::task::JoinHandle<reqwest::Response> {
    let req = b
        .post(&format!("/v1/sessions/{name}/start"))
        .json(&serde_json::json!({}));
    tokio::spawn(async move { req.send().await.expect("start request") })
}

/// The status a kubelet reports once the session's `ship` container runs
/// with Pod IP `ip`.
pub fn running_status(ip: &str) -> serde_json::Value {
    serde_json::json!({ "phase": "Running", "podIP": ip,
        "conditions": [{ "type": "PodScheduled", "status": "True" }, { "type": "Ready", "status": "True" }],
        "containerStatuses": [{ "name": "ship", "image": "x", "imageID": "", "ready": true, "restartCount": 0, "state": { "running": {} } }] })
}

/// Plays kubelet: writes `status` into Pod `name`'s status subresource.
pub async fn kubelet_reports(
    pods: &Api<k8s_openapi::api::core::v1::Pod>,
    name: &str,
    status: serde_json::Value,
) {
    pods.patch_status(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await
    .expect("patch Pod status");
}

/// Writes a config for a `berth serve` process on a free loopback port into
/// `dir`: the test token, namespace `ns`, the test cluster, the shared
/// plugin cache, and `extra` keys on top. Its path and base URL.
pub fn serve_config(
    dir: &std::path::Path,
    ns: &str,
    extra: serde_json::Value,
) -> (PathBuf, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = serde_json::json!({
        "listen": format!("127.0.0.1:{port}"),
        "tokens": [TOKEN],
        "namespace": ns,
        "kubeconfig": kubeconfig(),
        "plugin_cache_dir": repo_root().join("target/berth-test-plugin-cache"),
    });
    for (k, v) in extra.as_object().expect("extra keys").clone() {
        config[k] = v;
    }
    let path = dir.join("berth.yaml");
    std::fs::write(&path, config.to_string()).unwrap();
    (path, format!("http://127.0.0.1:{port}"))
}

/// `berth serve --config CONFIG`, the binary as operators run it.
pub fn serve(config: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--config"])
        .arg(config)
        .env("BERTH_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("berth serve")
}

/// A CNCF distribution registry (Debian's `docker-registry`) on a loopback
/// port of its own, removed when dropped. With `auth`, every repository
/// needs the user `berth` (password in `PASSWORD`), through htpasswd.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// A Docker config file holding the credentials (with `auth`).
    pub auth_file: PathBuf,
    pub dir: tempfile::TempDir,
    child: std::process::Child,
}

impl TestRegistry {
    pub const PASSWORD: &'static str = "registry-s3cret";

    pub fn start(auth: bool) -> TestRegistry {
        use std::process::Command;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog: {{ level: error }}\nstorage:\n  filesystem: {{ rootdirectory: {} }}\n  delete: {{ enabled: true }}\nhttp:\n  addr: {addr}\n  secret: berth-tests\n",
            dir.path().join("data").display()
        );
        let auth_file = dir.path().join("docker-config.json");
        if auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", "berth", Self::PASSWORD])
                .output()
                .expect("htpasswd (Debian apache2-utils) is missing: .ci/run installs it");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
            config += &format!(
                "auth:\n  htpasswd: {{ realm: berth, path: {} }}\n",
                dir.path().join("htpasswd").display()
            );
            use base64::Engine as _;
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("berth:{}", Self::PASSWORD));
            std::fs::write(
                &auth_file,
                serde_json::json!({ "auths": { &addr: { "auth": token } } }).to_string(),
            )
            .unwrap();
        } else {
            std::fs::write(&auth_file, r#"{"auths": {}}"#).unwrap();
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry (Debian's docker-registry package) is missing: .ci/run installs it");
        let registry = TestRegistry {
            addr,
            auth_file,
            dir,
            child,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(&registry.addr).is_ok() {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not listen on {}: {}",
            registry.addr,
            std::fs::read_to_string(registry.dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    /// `oci://127.0.0.1:PORT/` + `repo`.
    pub fn reference(&self, repo: &str) -> String {
        format!("oci://{}/{repo}", self.addr)
    }

    /// Stops the registry (as an outage would).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs `berth plugin ARGS… --plain-http --auth-file F`; status, stdout,
    /// stderr.
    pub fn berth(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("plugin")
            .args(args)
            .arg("--plain-http")
            .arg("--auth-file")
            .arg(&self.auth_file)
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .output()
            .expect("run berth");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Pushes a shipped plugin's component as `repo:TAG` with the CLI; the
    /// digest-pinned reference it prints.
    pub fn push(&self, file: &str, repo_tag: &str) -> String {
        let (ok, out, err) = self.berth(&[
            "push",
            wasm(file).to_str().unwrap(),
            &self.reference(repo_tag),
        ]);
        assert!(ok, "push failed: {err}");
        out.trim()
            .strip_prefix("pushed ")
            .unwrap_or_else(|| panic!("push printed {out:?}"))
            .to_string()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A P-256 key pair as PEM files `NAME.key` (PKCS#8) and `NAME.pub` in
/// `dir`, made with the same crate Berth verifies with.
pub fn key_pair(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
    use sigstore::crypto::signing_key::SigStoreKeyPair;
    use sigstore::crypto::signing_key::ecdsa::{ECDSAKeys, EllipticCurve};
    let pair = SigStoreKeyPair::ECDSA(ECDSAKeys::new(EllipticCurve::P256).expect("key"));
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    std::fs::write(&private, pair.private_key_to_pem().unwrap().as_bytes()).unwrap();
    std::fs::write(&public, pair.public_key_to_pem().unwrap()).unwrap();
    (private, public)
}

/// A plugin runtime for tests. Compiled plugins are shared across tests
/// through the on-disk cache; Cranelift is the slow part of the suites.
pub fn test_runtime() -> berth::plugin::Runtime {
    berth::plugin::Runtime::new(berth::plugin::RuntimeOptions {
        cache_dir: Some(repo_root().join("target/berth-test-plugin-cache")),
        max_instances: 16,
        max_memory_bytes: 256 << 20,
        ..berth::plugin::RuntimeOptions::default()
    })
    .expect("runtime")
}

/// Runs a command to its end; its stdout, or a panic with its stderr.
pub fn stdout_of(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}
