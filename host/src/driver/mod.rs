//! Bay's driver primitives over the Kubernetes API. Every Pod and PVC goes
//! through the policy chain before it is submitted; readiness and deletion
//! are awaited with one shared watch.
//!
//! One module per Bay primitive: `sessions` (create, start, stop, destroy,
//! status, logs), `multi` (multi-container sessions), `volumes` (cargo
//! volumes), `instances` (GC's runtime instances). This one holds the
//! `Driver` they share: the Kubernetes client, the policy chain and its
//! slots, the shared Pod watch, the isolation gate and the shutdown cut.

mod instances;
mod multi;
pub mod network;
mod sessions;
pub mod state;
mod volumes;
mod watch;

pub use instances::RuntimeInstance;
pub use multi::{MultiContainerInfo, MultiContainerRef};
pub use sessions::{Created, StatusInfo};

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::labels::{self, LabelKeys};
use crate::metrics::Metrics;
use crate::plugin::{PolicyEngine, PolicyError, SessionContext, Shapeable, Shaped};
use watch::PodWatch;

/// Builds the Kubernetes client from Berth's config: the given kubeconfig,
/// or the environment's (KUBECONFIG, ~/.kube/config, in-cluster).
pub async fn kube_client(config: &Config) -> anyhow::Result<Client> {
    let mut kc = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    // An unreachable API server must fail a request in seconds, not minutes.
    kc.connect_timeout = Some(Duration::from_secs(5));
    kc.read_timeout = Some(Duration::from_secs(30));
    kc.write_timeout = Some(Duration::from_secs(30));
    Ok(Client::try_from(kc)?)
}

pub struct Driver {
    client: Client,
    config: Arc<Config>,
    policy: Arc<PolicyEngine>,
    metrics: Arc<Metrics>,
    keys: LabelKeys,
    /// Started by the first waiter, shared by all after it.
    pod_watch: tokio::sync::OnceCell<PodWatch>,
    /// One permit per policy chain that may run at once (`plugin_slots`).
    chain_slots: Arc<tokio::sync::Semaphore>,
    /// Plugin reloads, one at a time.
    reloads: tokio::sync::Mutex<()>,
    /// Set once the session isolation NetworkPolicy is applied; no session
    /// Pod is created before.
    isolated: std::sync::OnceLock<()>,
    /// Turned true when a draining Berth cuts the waits still running.
    cut: tokio::sync::watch::Sender<bool>,
}

impl Driver {
    pub fn new(
        client: Client,
        config: Arc<Config>,
        policy: Arc<PolicyEngine>,
        metrics: Arc<Metrics>,
    ) -> Driver {
        let keys = LabelKeys::new(&config.label_prefix);
        let chain_slots = Arc::new(tokio::sync::Semaphore::new(config.plugin_slots()));
        Driver {
            client,
            config,
            policy,
            metrics,
            keys,
            pod_watch: tokio::sync::OnceCell::new(),
            chain_slots,
            reloads: tokio::sync::Mutex::new(()),
            isolated: std::sync::OnceLock::new(),
            cut: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Applies the session isolation NetworkPolicy unless that already
    /// happened. Until it has, no session may be created: a Pod without it
    /// is reachable by every other sandbox.
    pub async fn ensure_isolation(&self) -> Result<()> {
        if self.isolated.get().is_some() {
            return Ok(());
        }
        match network::ensure(&self.client, &self.config).await {
            Ok(()) => {
                if self.isolated.set(()).is_ok() {
                    tracing::info!("session isolation NetworkPolicy applied");
                }
                Ok(())
            }
            Err(e) => Err(Error::KubernetesUnavailable(format!(
                "the session isolation NetworkPolicy is not applied yet, so no session can be created: {e}"
            ))),
        }
    }

    /// Whether Berth made this object: its `<prefix>.managed=true` label.
    /// Berth starts, reports and deletes only those; a Pod or claim of the
    /// same namespace that is not a session's or a cargo's is not Berth's
    /// to touch.
    fn manages(&self, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(&self.keys.managed()))
            .is_some_and(|v| v == "true")
    }

    fn not_managed(&self, kind: &str, name: &str) -> Error {
        Error::NotFound(format!(
            "{kind} {name} exists but Berth does not manage it (it has no {}=true label), so Berth leaves it alone",
            self.keys.managed()
        ))
    }

    /// Ends every wait still running (and every later one) with
    /// `ShuttingDown`, so its caller can retry on another replica before
    /// this one closes its connections.
    pub fn cut_waits(&self) {
        self.cut.send_replace(true);
    }

    /// Resolves once `cut_waits` has been called.
    async fn cut(&self) {
        let mut cut = self.cut.subscribe();
        let _ = cut.wait_for(|c| *c).await;
    }

    async fn pod_watch(&self) -> &PodWatch {
        self.pod_watch
            .get_or_init(|| async {
                let selector = format!("{}=true", self.keys.managed());
                PodWatch::start(
                    self.pods(),
                    &self.config.namespace,
                    &selector,
                    self.metrics.clone(),
                )
            })
            .await
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn policy(&self) -> &Arc<PolicyEngine> {
        &self.policy
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    /// Times one Kubernetes call for the metrics.
    async fn kube<T>(
        &self,
        call: &str,
        f: impl Future<Output = kube::Result<T>>,
    ) -> kube::Result<T> {
        let started = Instant::now();
        let r = f.await;
        // A 404 is an answer, not a failed call.
        let ok = match &r {
            Ok(_) => true,
            Err(kube::Error::Api(s)) => {
                s.is_not_found() || s.is_already_exists() || s.is_conflict()
            }
            Err(_) => false,
        };
        self.metrics.observe_kube(call, ok, started.elapsed());
        r
    }

    /// Runs the policy chain on a blocking thread (plugin calls are CPU
    /// work), recording per-plugin latency and failures. When the request
    /// is dropped (its client hung up) the chain is cancelled: the plugin
    /// stops at its next tick and the chain slot is free again.
    async fn shape<T>(&self, ctx: SessionContext, object: T) -> Result<Shaped<T>>
    where
        T: Shapeable + Send + 'static,
    {
        self.plugins_ready()?;
        let slot = self.chain_slot().await?;
        let policy = self.policy.clone();
        let metrics = self.metrics.clone();
        let cancel = CancellationToken::new();
        let _cancel_on_drop = cancel.clone().drop_guard();
        let span = tracing::info_span!("policy_chain", kind = T::KIND, profile = %ctx.profile_id);
        let result = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let _g = span.enter();
            let result = policy.shape_cancellable(&ctx, object, cancel);
            // Recorded here, not after the await: a cancelled request's
            // future is gone by the time its chain ends.
            match &result {
                Ok(shaped) => {
                    for s in &shaped.steps {
                        metrics.observe_plugin(&s.plugin, s.duration);
                    }
                }
                Err(PolicyError::Denied { plugin, .. }) => metrics.denied(plugin),
                Err(PolicyError::Plugin(e)) => {
                    metrics.plugin_failed(e.plugin().unwrap_or("-"), e.reason())
                }
            }
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("policy task failed: {e}")))?;
        Ok(result?)
    }

    /// Loads `plugins` as the next generation (see `PolicyEngine::reload`;
    /// last-known-good: a failure leaves the serving one). `trigger` names what asked, for metrics.
    /// Compiling is CPU work like a chain, so a reload holds one chain slot
    /// while it compiles (not while it fetches): it cannot take the CPUs
    /// from the requests being served, and waits its turn like them. The
    /// first generation, before any request can be served, takes none.
    pub async fn reload_plugins(
        &self,
        plugins: Vec<crate::plugin::PluginConfig>,
        trigger: &'static str,
    ) -> Result<u64> {
        // One at a time, in order: a slow load finishing after a newer one
        // would swap in the older list. Waiting here holds no chain slot.
        let _in_order = self.reloads.lock().await;
        let first = self.policy.chain().generation == 0;
        let base = self.config.base_dir.clone();
        let started = Instant::now();
        // Fetching waits on registries (bounded by registry.fetch_timeout_s)
        // and holds nothing requests need.
        let fetched = {
            let policy = self.policy.clone();
            tokio::task::spawn_blocking(move || policy.fetch(&plugins, &base))
                .await
                .map_err(|e| Error::Internal(format!("reload task failed: {e}")))?
        };
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                self.metrics.reload(trigger, false);
                return Err(Error::PluginFailed(e));
            }
        };
        // Compiling takes a chain slot, so it does not starve the chains.
        let slot = if first {
            None
        } else {
            Some(self.chain_slot().await?)
        };
        let (policy, metrics) = (self.policy.clone(), self.metrics.clone());
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let loaded = policy.reload_fetched(fetched);
            metrics.reload(trigger, loaded.is_ok());
            let generation = loaded?;
            let chain = policy.chain();
            metrics.plugins_loaded(&chain);
            tracing::info!(
                generation,
                trigger,
                plugins = chain.summaries().len(),
                ms = started.elapsed().as_secs_f64() * 1e3,
                "plugins loaded"
            );
            Ok(generation)
        })
        .await
        .map_err(|e| Error::Internal(format!("reload task failed: {e}")))?
        .map_err(Error::PluginFailed)
    }

    /// `overloaded` (retry shortly) until the first plugin generation is in:
    /// a replica that is still compiling its plugins shapes nothing.
    pub fn plugins_ready(&self) -> Result<()> {
        match self.policy.waiting_for() {
            None => Ok(()),
            Some(what) => Err(Error::Overloaded(format!("not ready: {what}"))),
        }
    }

    /// Waits for a free chain slot, up to `plugin_queue_timeout_ms`. Chains
    /// beyond the CPUs would only slow each other past their deadlines, and
    /// a plugin that missed its deadline because the machine was busy would
    /// be blamed for it; a full queue is answered `overloaded` instead.
    async fn chain_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        let wait = Duration::from_millis(self.config.plugin_queue_timeout_ms);
        let started = Instant::now();
        self.metrics.plugin_queue_waiting.inc();
        let got = tokio::time::timeout(wait, self.chain_slots.clone().acquire_owned()).await;
        self.metrics.plugin_queue_waiting.dec();
        self.metrics
            .plugin_queue_wait_seconds
            .observe(started.elapsed().as_secs_f64());
        match got {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Error::Internal("the chain slots are closed".into())),
            Err(_) => {
                self.metrics.plugin_queue_rejections.inc();
                Err(Error::Overloaded(format!(
                    "all {} policy chain slots stayed busy for {} ms; retry shortly",
                    self.config.plugin_slots(),
                    wait.as_millis()
                )))
            }
        }
    }

    /// Checks the API server answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        self.kube("version", self.client.apiserver_version())
            .await?;
        Ok(())
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn validate_id(id: &str) -> Result<()> {
    labels::validate_dns_subdomain(id)
        .map_err(|e| Error::InvalidRequest(format!("container_id: {e}")))
}

fn endpoint(pod: &Pod, port: u16) -> String {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    if ip.contains(':') {
        format!("http://[{ip}]:{port}")
    } else {
        format!("http://{ip}:{port}")
    }
}
