//! Single-container sessions, Bay's core primitives: create (with
//! adoption of the same session's Pod), start (waiting for the Pod to run),
//! stop and destroy (waiting for it to be gone), status and logs.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::wait::{Condition, conditions};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::state::{self, ContainerState, SessionStatus, StartOutcome};
use super::{Driver, PodWatch, endpoint, validate_id};
use crate::error::{Error, Result};
use crate::labels;
use crate::objects::{self, SessionRequest};
use crate::plugin::Shaped;

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

impl Driver {
    /// The exact Pod `create` would submit, after all plugins.
    pub async fn render_pod(&self, req: &SessionRequest<'_>) -> Result<Shaped<Pod>> {
        let plan = objects::plan(&self.config, req)?;
        let pod = objects::session_pod(&self.config, req, &plan);
        self.shape(plan.context, pod).await
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
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                let mut created = self.adopt(&shaped.object, req).await?;
                created.warnings = warnings;
                Ok(created)
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
        if !self.manages(&pod.metadata) {
            return Err(self.not_managed("Pod", container_id));
        }
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

    pub(super) async fn delete_pod(
        &self,
        name: &str,
        grace: Option<u32>,
        wait: bool,
    ) -> Result<()> {
        validate_id(name)?;
        let pods = self.pods();
        let Some(pod) = self.kube("get_pod", pods.get_opt(name)).await? else {
            return Ok(());
        };
        if !self.manages(&pod.metadata) {
            return Err(self.not_managed("Pod", name));
        }
        let Some(uid) = pod.metadata.uid.clone() else {
            return Ok(());
        };
        // Exactly the Pod read above: not one created under its name since.
        let dp = DeleteParams {
            grace_period_seconds: grace,
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.kube("delete_pod", pods.delete(name, &dp)).await {
            Ok(_) => {}
            // Gone, or already replaced: the Pod read above is no more.
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if !wait {
            return Ok(());
        }
        let timeout = Duration::from_secs(self.config.destroy_timeout_s);
        let started = Instant::now();
        let pod_watch = self.pod_watch().await;
        // Gone, or replaced by another Pod of the same name.
        let is_deleted = conditions::is_deleted(&uid);
        let deleted = |p: Option<&Pod>| is_deleted.matches_object(p);
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
        // A Pod Berth does not manage is no session of Bay's.
        let Some(pod) = self
            .kube("get_pod", self.pods().get_opt(container_id))
            .await?
            .filter(|p| self.manages(&p.metadata))
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
            .filter(|p| self.manages(&p.metadata))
        else {
            return Ok(String::new());
        };
        let primary = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone());
        let names: Vec<&str> = pod
            .spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .chain(s.init_containers.iter().flatten().map(|c| c.name.as_str()))
            })
            .collect();
        if let Some(c) = &container
            && !names.contains(&c.as_str())
        {
            return Err(Error::NotFound(format!(
                "session {container_id} has no container {c:?}; its containers: {}",
                names.join(", ")
            )));
        }
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
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(String::new()),
            // A Pod that has not started has no logs yet.
            Err(kube::Error::Api(s)) if s.code == 400 && s.message.contains("waiting to start") => {
                Ok(String::new())
            }
            Err(e) => Err(e.into()),
        }
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
