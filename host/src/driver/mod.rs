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
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::labels::{self, LabelKeys};
use crate::metrics::Metrics;
use crate::model::{Cargo, Profile, Session};
use crate::objects::{self, SessionRequest};
use crate::plugin::runtime::SessionContext;
use crate::plugin::{PolicyEngine, PolicyError, Shapeable, Shaped};
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
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusInfo {
    pub container_id: String,
    pub status: SessionStatus,
    pub endpoint: Option<String>,
    pub exit_code: Option<i32>,
    pub containers: Vec<ContainerState>,
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
}

impl Driver {
    pub fn new(
        client: Client,
        config: Arc<Config>,
        policy: Arc<PolicyEngine>,
        metrics: Arc<Metrics>,
    ) -> Driver {
        let keys = LabelKeys::new(&config.label_prefix);
        Driver {
            client,
            config,
            policy,
            metrics,
            keys,
            pod_watch: tokio::sync::OnceCell::new(),
        }
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
        let policy = self.policy.clone();
        let prefix = self.config.label_prefix.clone();
        let span = tracing::info_span!("policy_chain", kind = T::KIND, profile = %ctx.profile_id);
        let result = tokio::task::spawn_blocking(move || {
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

    /// The exact Pod `create` would submit, after all plugins.
    pub async fn render_pod(
        &self,
        session: &Session,
        profile: &Profile,
        cargo: &Cargo,
        labels: &BTreeMap<String, String>,
    ) -> Result<Shaped<Pod>> {
        let req = SessionRequest {
            session,
            profile,
            cargo,
            labels,
        };
        let plan = objects::plan(&self.config, &req)?;
        let pod = objects::session_pod(&self.config, &req, &plan);
        self.shape(plan.context, pod).await
    }

    /// The exact PVC `create_volume` would submit, after all plugins.
    pub async fn render_pvc(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        size_limit_mb: u64,
    ) -> Result<Shaped<PersistentVolumeClaim>> {
        labels::validate_dns_subdomain(name)
            .map_err(|e| Error::InvalidRequest(format!("volume name: {e}")))?;
        labels::validate_labels(labels)
            .map_err(|e| Error::InvalidRequest(format!("labels: {e}")))?;
        let pvc = objects::cargo_pvc(&self.config, name, labels);
        let ctx = objects::cargo_context(&self.config, name, labels, size_limit_mb);
        self.shape(ctx, pvc).await
    }

    /// Builds, shapes and submits the session Pod. Does not wait.
    pub async fn create(
        &self,
        session: &Session,
        profile: &Profile,
        cargo: &Cargo,
        labels: &BTreeMap<String, String>,
    ) -> Result<Created> {
        let shaped = self.render_pod(session, profile, cargo, labels).await?;
        let name = shaped.object.metadata.name.clone().unwrap_or_default();
        // A missing or dying cargo would leave the Pod Pending for the whole
        // start timeout; say so now.
        match self
            .kube("get_pvc", self.pvcs().get_opt(&cargo.driver_ref))
            .await?
        {
            None => {
                return Err(Error::InvalidRequest(format!(
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
            Some(_) => {}
        }
        match self
            .kube(
                "create_pod",
                self.pods().create(&PostParams::default(), &shaped.object),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %name, session = %session.id, "session pod created");
                Ok(Created {
                    container_id: name,
                    adopted: false,
                })
            }
            Err(kube::Error::Api(s)) if s.code == 409 => self.adopt(&name, &session.id).await,
            Err(e) => Err(e.into()),
        }
    }

    /// An existing Pod with our name is adopted only when it is alive and
    /// belongs to the same session.
    async fn adopt(&self, name: &str, session_id: &str) -> Result<Created> {
        let Some(existing) = self.kube("get_pod", self.pods().get_opt(name)).await? else {
            return Err(Error::Conflict(format!(
                "Pod {name} was deleted while being created; retry"
            )));
        };
        if existing.metadata.deletion_timestamp.is_some() {
            return Err(Error::Conflict(format!(
                "Pod {name} of an earlier incarnation is still terminating"
            )));
        }
        let owner = existing
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(&self.keys.key("session_id")));
        if owner.map(String::as_str) != Some(session_id) {
            return Err(Error::Conflict(format!(
                "Pod {name} exists and belongs to session {:?}, not {session_id:?}",
                owner.map(String::as_str).unwrap_or("(none)")
            )));
        }
        tracing::info!(pod = %name, "adopted existing session pod");
        Ok(Created {
            container_id: name.to_string(),
            adopted: true,
        })
    }

    /// Waits until the Pod is Running with an IP; fails fast with the
    /// Kubernetes reason when it cannot get there.
    pub async fn wait_running(&self, container_id: &str) -> Result<Pod> {
        let timeout = Duration::from_secs(self.config.startup_timeout_s);
        let pods = self.pods();
        let Some(pod) = self.kube("get_pod", pods.get_opt(container_id)).await? else {
            return Err(Error::NotFound(format!(
                "session {container_id} does not exist"
            )));
        };
        match state::start_outcome(Some(&pod)) {
            StartOutcome::Ready { .. } => return Ok(pod),
            StartOutcome::Failed { reason, message } => {
                return Err(Error::StartFailed {
                    pod: container_id.into(),
                    reason,
                    message,
                });
            }
            StartOutcome::Waiting => {}
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let started = Instant::now();
        let decided = |p: Option<&Pod>| {
            // A new Pod under the same name is another incarnation.
            let same = p.map(|p| p.metadata.uid.as_deref() == Some(uid.as_str()));
            same == Some(false) || state::start_outcome(p) != StartOutcome::Waiting
        };
        let pod_watch = self.pod_watch().await;
        let watched =
            tokio::time::timeout(timeout, pod_watch.until(container_id, &uid, decided)).await;
        self.metrics.observe_kube(
            "watch_pod_ready",
            watched.as_ref().is_ok_and(|r| r.is_ok()),
            started.elapsed(),
        );
        let pod = match watched {
            Err(_) => {
                if let Some(e) = pod_watch.error() {
                    return Err(Error::KubernetesUnavailable(format!(
                        "watching {container_id}: {e}"
                    )));
                }
                let last = pods.get_opt(container_id).await.ok().flatten();
                let detail = last.as_ref().map(describe_pending).unwrap_or_default();
                return Err(Error::Timeout(format!(
                    "session {container_id} not running after {}s{detail}",
                    timeout.as_secs()
                )));
            }
            Ok(Err(e)) => {
                return Err(Error::KubernetesUnavailable(format!(
                    "watching {container_id}: {e}"
                )));
            }
            Ok(Ok(p)) => p,
        };
        if pod
            .as_ref()
            .is_some_and(|p| p.metadata.uid.as_deref() != Some(uid.as_str()))
        {
            return Err(Error::StartFailed {
                pod: container_id.into(),
                reason: "Replaced".into(),
                message: "the Pod was replaced while starting".into(),
            });
        }
        match state::start_outcome(pod.as_ref()) {
            StartOutcome::Ready { .. } => Ok(pod.expect("ready implies present")),
            StartOutcome::Failed { reason, message } => Err(Error::StartFailed {
                pod: container_id.into(),
                reason,
                message,
            }),
            StartOutcome::Waiting => Err(Error::Internal("watch ended undecided".into())),
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

    /// Kubernetes has no stop: delete the Pod; do not wait.
    pub async fn stop(&self, container_id: &str) -> Result<()> {
        self.delete_pod(container_id, Some(10), false).await
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
        let gone = tokio::time::timeout(timeout, pod_watch.until(name, &uid, deleted)).await;
        self.metrics.observe_kube(
            "watch_pod_deleted",
            gone.as_ref().is_ok_and(|r| r.is_ok()),
            started.elapsed(),
        );
        match gone {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::KubernetesUnavailable(format!(
                "watching deletion of {name}: {e}"
            ))),
            Err(_) => {
                if let Some(e) = pod_watch.error() {
                    return Err(Error::KubernetesUnavailable(format!(
                        "watching deletion of {name}: {e}"
                    )));
                }
                let still = pods.get_opt(name).await.ok().flatten();
                let finalizers = still
                    .and_then(|p| p.metadata.finalizers)
                    .unwrap_or_default();
                Err(Error::Timeout(format!(
                    "Pod {name} still exists {}s after deletion (finalizers: {finalizers:?})",
                    timeout.as_secs()
                )))
            }
        }
    }

    pub async fn status(
        &self,
        container_id: &str,
        runtime_port: Option<u16>,
    ) -> Result<StatusInfo> {
        validate_id(container_id)?;
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
        Ok(StatusInfo {
            container_id: container_id.into(),
            status,
            endpoint,
            exit_code: state::exit_code(&pod),
            containers: state::container_states(&pod),
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
        size_limit_mb: u64,
    ) -> Result<String> {
        let shaped = self.render_pvc(name, labels, size_limit_mb).await?;
        match self
            .kube(
                "create_pvc",
                self.pvcs().create(&PostParams::default(), &shaped.object),
            )
            .await
        {
            Ok(_) => Ok(name.to_string()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(name.to_string()),
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
                let state = if p.metadata.deletion_timestamp.is_some() {
                    "removing".to_string()
                } else {
                    p.status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_else(|| "Pending".into())
                        .to_lowercase()
                };
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

    pub async fn create_multi(
        &self,
        session: &Session,
        profile: &Profile,
        cargo: &Cargo,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<MultiContainerInfo>> {
        let specs = profile.container_specs().map_err(Error::InvalidRequest)?;
        let created = self.create(session, profile, cargo, labels).await?;
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
    /// that container's port.
    pub async fn start_multi(
        &self,
        containers: Vec<MultiContainerInfo>,
    ) -> Result<Vec<MultiContainerInfo>> {
        let Some(first) = containers.first() else {
            return Err(Error::InvalidRequest("containers must not be empty".into()));
        };
        let id = first.container_id.clone();
        if containers.iter().any(|c| c.container_id != id) {
            return Err(Error::InvalidRequest(
                "all containers of a multi-container session share one container_id (the Pod)"
                    .into(),
            ));
        }
        let pod = self.wait_running(&id).await?;
        let states = state::container_states(&pod);
        Ok(containers
            .into_iter()
            .map(|mut c| {
                c.endpoint = Some(endpoint(&pod, c.runtime_port));
                c.status = match states
                    .iter()
                    .find(|s| s.name == c.name)
                    .map(|s| s.state.as_str())
                {
                    Some("terminated") => SessionStatus::Exited,
                    _ => SessionStatus::Running,
                };
                c
            })
            .collect())
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

/// What a still-pending Pod is waiting for, for the timeout message.
fn describe_pending(pod: &Pod) -> String {
    let Some(status) = &pod.status else {
        return String::new();
    };
    let phase = status.phase.clone().unwrap_or_default();
    let cond = status
        .conditions
        .iter()
        .flatten()
        .filter(|c| c.status != "True")
        .map(|c| {
            format!(
                "{}={} {}",
                c.type_,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        " (phase {phase}{})",
        if cond.is_empty() {
            String::new()
        } else {
            format!(", {cond}")
        }
    )
}
