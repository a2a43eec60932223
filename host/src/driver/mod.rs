//! Bay's driver primitives over the Kubernetes API. Every Pod and PVC goes
//! through the policy chain before it is submitted; readiness and deletion
//! are awaited with watches.

pub mod network;
pub mod state;
mod watch;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::labels::{self, LabelKeys};
use crate::metrics::Metrics;
use crate::objects::{self, SessionRequest};
use crate::plugin::runtime::SessionContext;
use crate::plugin::{PolicyEngine, PolicyError, Shapeable, Shaped};
use crate::quantity;
use state::{ContainerState, SessionStatus, StartOutcome};
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

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Created {
    /// Bay's container id: the Pod name.
    pub container_id: String,
    /// True when a live Pod of the same session already existed and was adopted.
    pub adopted: bool,
    /// What Berth could not do as asked but did not stop the session for
    /// (e.g. a cargo volume Kubernetes would not expand).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusInfo {
    pub container_id: String,
    pub status: SessionStatus,
    pub endpoint: Option<String>,
    pub exit_code: Option<i32>,
    pub containers: Vec<ContainerState>,
    /// Why the session is not running, in Kubernetes' word: what a starting
    /// Pod waits for (`Unschedulable`, `ErrImagePull`, …) or why it ended
    /// (`OOMKilled`, `Evicted`, …). Absent while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Kubernetes' message with `reason`, naming the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RuntimeInstance {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Lower-case phase, or `removing` while the Pod is terminating.
    pub state: String,
    pub created_at: Option<String>,
}

/// A container of a multi-container session as a caller hands it back.
/// Bay rebuilds these from its database with `name`, `container_id`,
/// `runtime_type` and `capabilities` only; `container_id` (the Pod) is all
/// that stop and destroy need.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MultiContainerRef {
    #[schema(pattern = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// The session's Pod name, the same for every container.
    #[schema(
        pattern = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$",
        max_length = 253
    )]
    pub container_id: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub status: Option<SessionStatus>,
    #[serde(default = "crate::model::default_runtime_type")]
    pub runtime_type: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The container's port; the Pod's declared port for it when absent.
    #[serde(default, deserialize_with = "crate::numbers::opt_port")]
    #[schema(minimum = 1, maximum = 65535)]
    pub runtime_port: Option<u16>,
}

/// The Pods a list of containers belongs to, each once, in order: one for
/// a multi-container session (every entry carries the session's Pod).
fn multi_pods(containers: &[MultiContainerRef]) -> Result<Vec<String>> {
    if containers.is_empty() {
        return Err(Error::InvalidRequest("containers must not be empty".into()));
    }
    let mut pods: Vec<String> = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        labels::validate_dns_label(&c.name)
            .map_err(|e| Error::InvalidRequest(format!("containers[{i}].name: {e}")))?;
        validate_id(&c.container_id)?;
        if !pods.contains(&c.container_id) {
            pods.push(c.container_id.clone());
        }
    }
    Ok(pods)
}

/// One container of a multi-container session (Bay's MultiContainerInfo).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MultiContainerInfo {
    pub name: String,
    pub container_id: String,
    pub endpoint: Option<String>,
    pub status: SessionStatus,
    pub runtime_type: String,
    pub capabilities: Vec<String>,
    pub runtime_port: u16,
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
            Err(kube::Error::Api(s)) => s.code == 404 || s.code == 409,
            Err(_) => false,
        };
        self.metrics.observe_kube(call, ok, started.elapsed());
        r
    }

    /// Runs the policy chain on a blocking thread (plugin calls are CPU
    /// work), recording per-plugin latency and failures.
    async fn shape<T>(&self, ctx: SessionContext, object: T) -> Result<Shaped<T>>
    where
        T: Shapeable + Send + 'static,
    {
        let slot = self.chain_slot().await?;
        let policy = self.policy.clone();
        let prefix = self.config.label_prefix.clone();
        let span = tracing::info_span!("policy_chain", kind = T::KIND, profile = %ctx.profile_id);
        let result = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let _g = span.enter();
            let chain = policy.chain();
            chain.shape(policy.runtime(), &ctx, object, &prefix)
        })
        .await
        .map_err(|e| Error::Internal(format!("policy task failed: {e}")))?;
        match &result {
            Ok(shaped) => {
                for s in &shaped.steps {
                    self.metrics.observe_plugin(&s.plugin, s.duration);
                }
            }
            Err(PolicyError::Denied { plugin, .. }) => self.metrics.denied(plugin),
            Err(PolicyError::Plugin(e)) => self
                .metrics
                .plugin_failed(e.plugin().unwrap_or("-"), e.reason()),
        }
        Ok(result?)
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

    /// The exact Pod `create` would submit, after all plugins.
    pub async fn render_pod(&self, req: &SessionRequest<'_>) -> Result<Shaped<Pod>> {
        let plan = objects::plan(&self.config, req)?;
        let pod = objects::session_pod(&self.config, req, &plan);
        self.shape(plan.context, pod).await
    }

    /// The exact PVC `create_volume` would submit, after all plugins.
    /// `size_mb` is the cargo's size; `None` means the configured default.
    pub async fn render_pvc(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        size_mb: Option<u64>,
    ) -> Result<Shaped<PersistentVolumeClaim>> {
        labels::validate_dns_subdomain(name)
            .map_err(|e| Error::InvalidRequest(format!("volume name: {e}")))?;
        labels::validate_labels(labels)
            .map_err(|e| Error::InvalidRequest(format!("labels: {e}")))?;
        let pvc = objects::cargo_pvc(&self.config, name, labels, size_mb);
        let size = size_mb.unwrap_or_else(|| objects::default_size_mb(&self.config));
        let ctx = objects::cargo_context(&self.config, name, labels, size);
        self.shape(ctx, pvc).await
    }

    /// Builds, shapes and submits the session Pod. Does not wait.
    pub async fn create(&self, req: &SessionRequest<'_>) -> Result<Created> {
        let shaped = self.render_pod(req).await?;
        self.ensure_isolation().await?;
        let name = shaped.object.metadata.name.clone().unwrap_or_default();
        let cargo = req.cargo;
        // A missing or dying cargo would leave the Pod Pending for the whole
        // start timeout; say so now.
        let claim = match self
            .kube("get_pvc", self.pvcs().get_opt(&cargo.driver_ref))
            .await?
        {
            None => {
                return Err(Error::NotFound(format!(
                    "cargo volume {:?} does not exist; create it first",
                    cargo.driver_ref
                )));
            }
            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                return Err(Error::Conflict(format!(
                    "cargo volume {:?} is being deleted",
                    cargo.driver_ref
                )));
            }
            Some(p) => p,
        };
        let warnings = self.grow_cargo(&claim, req).await?;
        match self
            .kube(
                "create_pod",
                self.pods().create(&PostParams::default(), &shaped.object),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %name, session = %req.session.id, "session pod created");
                Ok(Created {
                    container_id: name,
                    adopted: false,
                    warnings,
                })
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let mut created = self.adopt(&shaped.object, req).await?;
                created.warnings = warnings;
                Ok(created)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Bay's `create_volume` carries no size; its cargo does. When the claim
    /// asks for less than the policy chain gives this cargo, ask Kubernetes
    /// to expand it. A claim Kubernetes cannot expand (its StorageClass has no
    /// `allowVolumeExpansion`, or it is not bound yet) keeps its size: the
    /// session still starts, and the refusal comes back as a warning.
    async fn grow_cargo(
        &self,
        claim: &PersistentVolumeClaim,
        req: &SessionRequest<'_>,
    ) -> Result<Vec<String>> {
        let name = &req.cargo.driver_ref;
        let requested = |p: &PersistentVolumeClaim| {
            storage_request(p).and_then(|q| quantity::parse_bytes(&q.0))
        };
        let labels = claim.metadata.labels.clone().unwrap_or_default();
        let wanted = self
            .render_pvc(name, &labels, Some(req.cargo.size_limit_mb))
            .await?;
        let (Some(have), Some(want)) = (requested(claim), requested(&wanted.object)) else {
            return Ok(Vec::new());
        };
        if want <= have {
            return Ok(Vec::new());
        }
        let storage = storage_request(&wanted.object).cloned();
        // Kubernetes expands only bound claims. A claim made a moment ago
        // under an Immediate StorageClass binds within a second or two; one
        // under WaitForFirstConsumer binds only with its first Pod, and is
        // then expanded by the next session's `create`.
        if !bound(claim) {
            let deadline = Instant::now() + BIND_WAIT;
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = self.kube("get_pvc", self.pvcs().get_opt(name)).await?;
                if now.as_ref().is_some_and(bound) {
                    break;
                }
                if Instant::now() >= deadline {
                    let w = format!(
                        "cargo volume {name:?} is not bound yet, so it keeps its size, less than cargo {:?}'s {} MiB; it is expanded when a later session starts after it is bound",
                        req.cargo.id, req.cargo.size_limit_mb
                    );
                    tracing::warn!("{w}");
                    return Ok(vec![w]);
                }
            }
        }
        let patch = serde_json::json!({
            "spec": { "resources": { "requests": { "storage": storage } } }
        });
        match self
            .kube(
                "expand_pvc",
                self.pvcs()
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(pvc = %name, from = have, to = want, "cargo volume expanded to the cargo's size");
                Ok(Vec::new())
            }
            Err(kube::Error::Api(s)) if matches!(s.code, 403 | 422) => {
                let w = format!(
                    "cargo volume {name:?} asks for {have} bytes, less than cargo {:?}'s {} MiB; Kubernetes refused to expand it: {}",
                    req.cargo.id, req.cargo.size_limit_mb, s.message
                );
                tracing::warn!("{w}");
                Ok(vec![w])
            }
            Err(e) => Err(e.into()),
        }
    }

    /// An existing Pod with our name is adopted only when it is alive and
    /// is the session this request would make: same session, sandbox,
    /// profile and cargo, with the cargo's claim mounted. Anything else is a
    /// conflict: answering `adopted` would hand Bay a runtime over another
    /// sandbox's workspace.
    async fn adopt(&self, wanted: &Pod, req: &SessionRequest<'_>) -> Result<Created> {
        let name = wanted.metadata.name.as_deref().unwrap_or_default();
        let session_id = &req.session.id;
        let Some(existing) = self.kube("get_pod", self.pods().get_opt(name)).await? else {
            return Err(Error::Conflict(format!(
                "Pod {name} was deleted while being created; retry"
            )));
        };
        if existing.metadata.deletion_timestamp.is_some() {
            return Err(Error::Conflict(format!(
                "Pod {name} of an earlier incarnation is still terminating; retry once it is gone"
            )));
        }
        let label = |pod: &Pod, key: &str| {
            pod.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(&self.keys.key(key)))
                .cloned()
        };
        let owner = label(&existing, "session_id");
        if owner.as_deref() != Some(session_id.as_str()) {
            return Err(Error::Conflict(format!(
                "Pod {name} exists and belongs to session {:?}, not {session_id:?}",
                owner.as_deref().unwrap_or("(none)")
            )));
        }
        for key in ["sandbox_id", "profile_id", "cargo_id"] {
            let (have, want) = (label(&existing, key), label(wanted, key));
            if have != want {
                return Err(Error::Conflict(format!(
                    "Pod {name} of session {session_id:?} exists with {key} {:?}, but this request has {:?}; destroy it first to re-create the session differently",
                    have.as_deref().unwrap_or("(none)"),
                    want.as_deref().unwrap_or("(none)")
                )));
            }
        }
        let claim = &req.cargo.driver_ref;
        let mounts_cargo = existing
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| &c.claim_name == claim)
            });
        if !mounts_cargo {
            return Err(Error::Conflict(format!(
                "Pod {name} of session {session_id:?} exists but does not mount cargo volume {claim:?}; destroy it first"
            )));
        }
        tracing::info!(pod = %name, "adopted existing session pod");
        Ok(Created {
            container_id: name.to_string(),
            adopted: true,
            warnings: Vec::new(),
        })
    }

    /// Waits until the Pod is Running with an IP; fails fast with the
    /// Kubernetes reason when it cannot get there. An unschedulable Pod is
    /// waited for during `unschedulable_grace_s`, and on to the timeout while
    /// the cluster autoscaler brings a node for it.
    pub async fn wait_running(&self, container_id: &str) -> Result<Pod> {
        validate_id(container_id)?;
        let timeout = Duration::from_secs(self.config.startup_timeout_s);
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + timeout);
        let grace_end = started + Duration::from_secs(self.config.unschedulable_grace_s);
        let pods = self.pods();
        let Some(pod) = self.kube("get_pod", pods.get_opt(container_id)).await? else {
            return Err(Error::NotFound(format!(
                "session {container_id} does not exist"
            )));
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        // What the autoscaler said when it is bringing a node: wait on.
        let mut scaling_up: Option<String> = None;
        let mut pod = Some(pod);
        loop {
            let waits_for_nodes = |scaling: bool| scaling || Instant::now() < grace_end;
            match state::start_outcome(pod.as_ref()) {
                StartOutcome::Ready { .. } => {
                    self.metrics
                        .observe_kube("watch_pod_ready", true, started.elapsed());
                    return pod.ok_or_else(|| Error::Internal("ready implies present".into()));
                }
                StartOutcome::Failed(why) => return Err(start_failed(container_id, why)),
                StartOutcome::Unschedulable(why) if !waits_for_nodes(scaling_up.is_some()) => {
                    match self.autoscaler_says(&uid).await {
                        Autoscaler::ScalingUp(message) => {
                            tracing::info!(pod = container_id, %message, "unschedulable; the cluster autoscaler is adding a node");
                            scaling_up = Some(message);
                        }
                        verdict => {
                            let mut why = why;
                            if let Autoscaler::WillNot(message) = verdict {
                                why.message = format!(
                                    "{}; the cluster autoscaler will not add a node: {message}",
                                    why.message
                                );
                            }
                            return Err(start_failed(container_id, why));
                        }
                    }
                }
                StartOutcome::Unschedulable(_) | StartOutcome::Waiting(_) => {}
            }
            let scaling = scaling_up.is_some();
            let decided = |p: Option<&Pod>| {
                // A new Pod under the same name is another incarnation.
                let same = p.map(|p| p.metadata.uid.as_deref() == Some(uid.as_str()));
                if same == Some(false) {
                    return true;
                }
                match state::start_outcome(p) {
                    StartOutcome::Waiting(_) => false,
                    StartOutcome::Unschedulable(_) => !waits_for_nodes(scaling),
                    _ => true,
                }
            };
            let pod_watch = self.pod_watch().await;
            let waited = tokio::select! {
                w = tokio::time::timeout_at(deadline, pod_watch.until(container_id, &uid, decided)) => w,
                () = self.cut() => return Err(shutting_down("start", container_id)),
            };
            match waited {
                Ok(p) => pod = p,
                Err(_) => {
                    self.metrics
                        .observe_kube("watch_pod_ready", false, started.elapsed());
                    return Err(self
                        .start_timeout(container_id, timeout, scaling_up.as_deref())
                        .await);
                }
            }
            if pod
                .as_ref()
                .is_some_and(|p| p.metadata.uid.as_deref() != Some(uid.as_str()))
            {
                return Err(Error::NotFound(format!(
                    "session {container_id} was deleted and created again while starting; start the new one"
                )));
            }
        }
    }

    /// The 504 for a start that ran out of time, naming what the Pod still
    /// waits for, read once more from the API server. The watch's trouble,
    /// if any, is context, not the verdict: the wait ran out either way.
    async fn start_timeout(
        &self,
        container_id: &str,
        timeout: Duration,
        scaling_up: Option<&str>,
    ) -> Error {
        let detail = match self.pods().get_opt(container_id).await {
            Ok(Some(p)) => describe_pending(&p),
            Ok(None) => " (the Pod is gone)".into(),
            Err(e) => format!(" (reading it failed: {e})"),
        };
        let scaling = scaling_up
            .map(|m| format!("; the cluster autoscaler is adding a node: {m}"))
            .unwrap_or_default();
        let watch = match self.pod_watch.get().and_then(PodWatch::error) {
            Some(e) => format!("; the Pod watch is failing: {e}"),
            None => String::new(),
        };
        Error::Timeout(format!(
            "session {container_id} not running after {}s{detail}{scaling}{watch}",
            timeout.as_secs()
        ))
    }

    /// What the cluster autoscaler last said about the Pod `uid`, from its
    /// Events. A cluster without one, or Events Berth may not list, is
    /// `Silent`.
    async fn autoscaler_says(&self, uid: &str) -> Autoscaler {
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client.clone(), &self.config.namespace);
        let lp = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
        let list = match self.kube("list_events", events.list(&lp)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the Pod's events; assuming no autoscaler");
                return Autoscaler::Silent;
            }
        };
        let last = list
            .items
            .into_iter()
            .filter(|e| {
                matches!(
                    e.reason.as_deref(),
                    Some("TriggeredScaleUp" | "NotTriggerScaleUp")
                )
            })
            .max_by_key(|e| {
                e.last_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .or(e.event_time.as_ref().map(|t| t.0))
            });
        match last {
            Some(e) if e.reason.as_deref() == Some("TriggeredScaleUp") => {
                Autoscaler::ScalingUp(e.message.unwrap_or_default())
            }
            Some(e) => Autoscaler::WillNot(e.message.unwrap_or_default()),
            None => Autoscaler::Silent,
        }
    }

    pub async fn start(&self, container_id: &str, runtime_port: u16) -> Result<String> {
        let pod = self.wait_running(container_id).await?;
        Ok(endpoint(&pod, runtime_port))
    }

    /// Deletes the Pod and waits until it is gone (so the cargo PVC can be
    /// deleted next). Missing is success.
    pub async fn destroy(&self, container_id: &str) -> Result<()> {
        self.delete_pod(container_id, Some(10), true).await
    }

    /// Kubernetes has no stop: delete the Pod, and wait until it is gone as
    /// `destroy` does, so a restart cannot race the old Pod for the cargo's
    /// ReadWriteOnce claim (Multi-Attach).
    pub async fn stop(&self, container_id: &str) -> Result<()> {
        self.delete_pod(container_id, Some(10), true).await
    }

    async fn delete_pod(&self, name: &str, grace: Option<u32>, wait: bool) -> Result<()> {
        validate_id(name)?;
        let dp = DeleteParams {
            grace_period_seconds: grace,
            ..DeleteParams::default()
        };
        let pods = self.pods();
        let uid = match self.kube("delete_pod", pods.delete(name, &dp)).await {
            Ok(either) => either.left().and_then(|p| p.metadata.uid),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if !wait {
            return Ok(());
        }
        let Some(uid) = uid else { return Ok(()) };
        let timeout = Duration::from_secs(self.config.destroy_timeout_s);
        let started = Instant::now();
        let pod_watch = self.pod_watch().await;
        // Gone, or replaced by another Pod of the same name.
        let deleted = |p: Option<&Pod>| p.is_none_or(|p| p.metadata.uid.as_deref() != Some(&uid));
        let gone = tokio::select! {
            g = tokio::time::timeout(timeout, pod_watch.until(name, &uid, deleted)) => g,
            () = self.cut() => return Err(shutting_down("the deletion wait", name)),
        };
        self.metrics
            .observe_kube("watch_pod_deleted", gone.is_ok(), started.elapsed());
        if gone.is_ok() {
            return Ok(());
        }
        let still = match pods.get_opt(name).await {
            Ok(Some(p)) if p.metadata.uid.as_deref() == Some(uid.as_str()) => p,
            // Gone (or replaced) just as the wait ran out.
            Ok(_) => return Ok(()),
            Err(e) => {
                return Err(Error::Timeout(format!(
                    "Pod {name} was not seen gone {}s after deletion, and reading it failed: {e}",
                    timeout.as_secs()
                )));
            }
        };
        let finalizers = still.metadata.finalizers.unwrap_or_default();
        let held = if finalizers.is_empty() {
            "no finalizers; its containers have not stopped".to_string()
        } else {
            format!("held by finalizers {}", finalizers.join(", "))
        };
        Err(Error::Timeout(format!(
            "Pod {name} still exists {}s after deletion ({held}); Kubernetes removes it once that clears",
            timeout.as_secs()
        )))
    }

    pub async fn status(
        &self,
        container_id: &str,
        runtime_port: Option<u16>,
    ) -> Result<StatusInfo> {
        validate_id(container_id)?;
        if runtime_port == Some(0) {
            return Err(Error::InvalidRequest(
                "runtime_port must be within 1..=65535".into(),
            ));
        }
        let Some(pod) = self
            .kube("get_pod", self.pods().get_opt(container_id))
            .await?
        else {
            return Ok(StatusInfo {
                container_id: container_id.into(),
                status: SessionStatus::NotFound,
                endpoint: None,
                exit_code: None,
                containers: vec![],
                reason: None,
                message: None,
            });
        };
        let status = state::session_status(&pod);
        let endpoint = match (status, runtime_port) {
            (SessionStatus::Running, Some(port))
                if pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_ref())
                    .is_some() =>
            {
                Some(endpoint(&pod, port))
            }
            _ => None,
        };
        let why = match status {
            SessionStatus::Running => None,
            _ => state::not_running_why(&pod),
        };
        Ok(StatusInfo {
            container_id: container_id.into(),
            status,
            endpoint,
            exit_code: state::exit_code(&pod),
            containers: state::container_states(&pod),
            reason: why.as_ref().map(|w| w.reason.clone()),
            message: why.map(|w| w.message),
        })
    }

    /// Last `tail` lines of a container (the primary one by default);
    /// a missing Pod gives "".
    pub async fn logs(
        &self,
        container_id: &str,
        tail: i64,
        container: Option<String>,
    ) -> Result<String> {
        validate_id(container_id)?;
        if let Some(c) = &container {
            labels::validate_dns_label(c)
                .map_err(|e| Error::InvalidRequest(format!("container: {e}")))?;
        }
        if !(1..=100_000).contains(&tail) {
            return Err(Error::InvalidRequest(
                "tail must be within 1..=100000".into(),
            ));
        }
        let Some(pod) = self
            .kube("get_pod", self.pods().get_opt(container_id))
            .await?
        else {
            return Ok(String::new());
        };
        let primary = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone());
        let container = container.or(primary);
        let lp = LogParams {
            container,
            tail_lines: Some(tail),
            ..LogParams::default()
        };
        match self
            .kube("pod_logs", self.pods().logs(container_id, &lp))
            .await
        {
            Ok(text) => Ok(text),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(String::new()),
            // A Pod that has not started has no logs yet.
            Err(kube::Error::Api(s)) if s.code == 400 && s.message.contains("waiting to start") => {
                Ok(String::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        size_mb: Option<u64>,
    ) -> Result<String> {
        let shaped = self.render_pvc(name, labels, size_mb).await?;
        match self
            .kube(
                "create_pvc",
                self.pvcs().create(&PostParams::default(), &shaped.object),
            )
            .await
        {
            Ok(_) => Ok(name.to_string()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // The same name still being deleted would vanish right
                // after this "success".
                match self.kube("get_pvc", self.pvcs().get_opt(name)).await? {
                    Some(p) if p.metadata.deletion_timestamp.is_some() => {
                        Err(Error::Conflict(format!(
                            "cargo volume {name:?} is still being deleted; retry once it is gone"
                        )))
                    }
                    Some(_) => Ok(name.to_string()),
                    None => Err(Error::Conflict(format!(
                        "cargo volume {name:?} was deleted while being created; retry"
                    ))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_volume(&self, name: &str) -> Result<()> {
        labels::validate_dns_subdomain(name)
            .map_err(|e| Error::InvalidRequest(format!("volume name: {e}")))?;
        match self
            .kube(
                "delete_pvc",
                self.pvcs().delete(name, &DeleteParams::default()),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn volume_exists(&self, name: &str) -> Result<bool> {
        labels::validate_dns_subdomain(name)
            .map_err(|e| Error::InvalidRequest(format!("volume name: {e}")))?;
        Ok(self
            .kube("get_pvc", self.pvcs().get_opt(name))
            .await?
            .is_some())
    }

    /// Pods matching ALL the labels. Errors are errors: an empty answer to a
    /// failed list would make Bay's GC delete cargos still in use.
    pub async fn list_runtime_instances(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<RuntimeInstance>> {
        if labels.is_empty() {
            return Err(Error::InvalidRequest(
                "labels must not be empty: listing every Pod is never what GC wants".into(),
            ));
        }
        let selector =
            labels::selector(labels).map_err(|e| Error::InvalidRequest(format!("labels: {e}")))?;
        let list = self
            .kube(
                "list_pods",
                self.pods().list(&ListParams::default().labels(&selector)),
            )
            .await?;
        Ok(list
            .items
            .into_iter()
            .map(|p| {
                let name = p.metadata.name.clone().unwrap_or_default();
                let state = state::instance_state(&p);
                RuntimeInstance {
                    id: name.clone(),
                    name,
                    labels: p.metadata.labels.clone().unwrap_or_default(),
                    state,
                    created_at: p
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.to_string()),
                }
            })
            .collect())
    }

    /// Force-deletes (grace 0); missing is success.
    pub async fn destroy_runtime_instance(&self, id: &str) -> Result<()> {
        self.delete_pod(id, Some(0), false).await
    }

    pub async fn create_multi(&self, req: &SessionRequest<'_>) -> Result<Vec<MultiContainerInfo>> {
        let specs = req
            .profile
            .container_specs()
            .map_err(Error::InvalidRequest)?;
        let created = self.create(req).await?;
        Ok(specs
            .into_iter()
            .map(|c| MultiContainerInfo {
                name: c.name,
                container_id: created.container_id.clone(),
                endpoint: None,
                status: SessionStatus::Created,
                runtime_type: c.runtime_type,
                capabilities: c.capabilities,
                runtime_port: c.runtime_port,
            })
            .collect())
    }

    /// Waits for the one Pod; each container's endpoint is the Pod IP and
    /// that container's port (the one given, else the port the Pod declares
    /// for the container of that name).
    pub async fn start_multi(
        &self,
        containers: Vec<MultiContainerRef>,
    ) -> Result<Vec<MultiContainerInfo>> {
        let mut pods = BTreeMap::new();
        for id in multi_pods(&containers)? {
            let pod = self.wait_running(&id).await?;
            pods.insert(id, pod);
        }
        containers
            .into_iter()
            .map(|c| {
                let pod = &pods[&c.container_id];
                let declared = pod
                    .spec
                    .iter()
                    .flat_map(|s| &s.containers)
                    .find(|k| k.name == c.name)
                    .and_then(|k| k.ports.as_ref()?.first())
                    .and_then(|p| u16::try_from(p.container_port).ok());
                let Some(port) = c.runtime_port.or(declared) else {
                    return Err(Error::InvalidRequest(format!(
                        "container {:?} is not in session {} and has no runtime_port",
                        c.name, c.container_id
                    )));
                };
                let status = match state::container_states(pod)
                    .iter()
                    .find(|s| s.name == c.name)
                {
                    Some(s) if s.state == "running" => SessionStatus::Running,
                    Some(s) if s.state == "terminated" => SessionStatus::Exited,
                    _ => SessionStatus::Created,
                };
                Ok(MultiContainerInfo {
                    endpoint: Some(endpoint(pod, port)),
                    status,
                    name: c.name,
                    container_id: c.container_id,
                    runtime_type: c.runtime_type,
                    capabilities: c.capabilities,
                    runtime_port: port,
                })
            })
            .collect()
    }

    /// Stops a multi-container session: its one Pod.
    pub async fn stop_multi(&self, containers: &[MultiContainerRef]) -> Result<()> {
        for id in multi_pods(containers)? {
            self.stop(&id).await?;
        }
        Ok(())
    }

    /// Destroys a multi-container session: its one Pod.
    pub async fn destroy_multi(&self, containers: &[MultiContainerRef]) -> Result<()> {
        for id in multi_pods(containers)? {
            self.destroy(&id).await?;
        }
        Ok(())
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

fn shutting_down(what: &str, pod: &str) -> Error {
    Error::ShuttingDown(format!(
        "this Berth replica is shutting down and ended {what} of {pod} early; retry (another replica takes it)"
    ))
}

/// What the cluster autoscaler's Events say about an unschedulable Pod.
enum Autoscaler {
    /// `TriggeredScaleUp`: a node is on its way.
    ScalingUp(String),
    /// `NotTriggerScaleUp`: no node group would fit it.
    WillNot(String),
    /// No autoscaler Events (or none readable).
    Silent,
}

/// A start that cannot succeed. A Pod deleted (or being deleted) while it
/// starts is a session that no longer exists: 404, however the deletion
/// happened to be seen.
fn start_failed(pod: &str, why: state::Why) -> Error {
    match why.reason.as_str() {
        "NotFound" | "Terminating" => Error::NotFound(format!(
            "session {pod} was deleted while starting ({})",
            why.message
        )),
        _ => Error::StartFailed {
            pod: pod.into(),
            reason: why.reason,
            message: why.message,
        },
    }
}

/// How long `create` waits for a just-made cargo claim to bind before it
/// gives up growing it for this session.
const BIND_WAIT: Duration = Duration::from_secs(5);

/// The storage a claim asks for.
fn storage_request(
    claim: &PersistentVolumeClaim,
) -> Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
}

fn bound(claim: &PersistentVolumeClaim) -> bool {
    claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
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

/// What a still-pending Pod is waiting for, for the timeout message: its
/// phase, what Kubernetes last said (an image pull the kubelet retries, the
/// scheduler's message), and its unmet conditions.
fn describe_pending(pod: &Pod) -> String {
    let Some(status) = &pod.status else {
        return String::new();
    };
    let phase = status.phase.clone().unwrap_or_default();
    let mut parts = vec![format!("phase {phase}")];
    let why = state::not_running_why(pod);
    if let Some(why) = &why {
        parts.push(format!("{}: {}", why.reason, why.message));
    }
    // Every container's last word too: an image pull the kubelet keeps
    // retrying is what the person has to fix, whatever else the Pod says.
    for w in state::waiting_containers(pod) {
        if why.as_ref() != Some(&w) {
            parts.push(format!("{}: {}", w.reason, w.message));
        }
    }
    parts.extend(
        status
            .conditions
            .iter()
            .flatten()
            .filter(|c| c.status != "True")
            // The scheduler's message is already there as the reason.
            .filter(|c| {
                why.as_ref()
                    .is_none_or(|w| c.message.as_ref() != Some(&w.message))
            })
            .map(|c| {
                format!(
                    "{}={} {}",
                    c.type_,
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default()
                )
            }),
    );
    format!(" ({})", parts.join("; "))
}
