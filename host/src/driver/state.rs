//! Reading a Pod the way Bay needs it: its status word, per-container state,
//! and whether `start` should keep waiting, succeed, or fail now.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use serde::Serialize;
use utoipa::ToSchema;

/// Container waiting reasons that will not fix themselves: `start` fails at
/// once with the reason instead of waiting out the timeout.
const FATAL_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
];

#[derive(Debug, Clone, PartialEq)]
pub enum StartOutcome {
    Ready { pod_ip: String },
    Failed { reason: String, message: String },
    Waiting,
}

pub fn start_outcome(pod: Option<&Pod>) -> StartOutcome {
    let Some(pod) = pod else {
        return StartOutcome::Failed {
            reason: "NotFound".into(),
            message: "the Pod was deleted while starting".into(),
        };
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return StartOutcome::Failed {
            reason: "Terminating".into(),
            message: "the Pod is being deleted".into(),
        };
    }
    let Some(status) = &pod.status else {
        return StartOutcome::Waiting;
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if phase == "Failed" || phase == "Succeeded" {
        let (reason, message) =
            terminated_reason(status.container_statuses.as_deref().unwrap_or_default())
                .unwrap_or_else(|| {
                    (
                        status.reason.clone().unwrap_or_else(|| phase.into()),
                        status.message.clone().unwrap_or_default(),
                    )
                });
        return StartOutcome::Failed {
            reason: format!("{phase}: {reason}"),
            message,
        };
    }
    let all = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for cs in all {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            if FATAL_WAITING.contains(&reason.as_str()) {
                return StartOutcome::Failed {
                    reason,
                    message: format!(
                        "container {}: {}",
                        cs.name,
                        w.message.clone().unwrap_or_default()
                    ),
                };
            }
        }
    }
    for c in status.conditions.iter().flatten() {
        if c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
        {
            let message = c.message.clone().unwrap_or_default();
            // Immediate-binding claims are bound by the PV controller in a
            // moment and the scheduler retries; everything else is final
            // until someone changes the cluster.
            if !message.contains("unbound immediate PersistentVolumeClaims") {
                return StartOutcome::Failed {
                    reason: "Unschedulable".into(),
                    message,
                };
            }
        }
    }
    match (phase, status.pod_ip.as_deref()) {
        ("Running", Some(ip)) if !ip.is_empty() => StartOutcome::Ready {
            pod_ip: ip.to_string(),
        },
        _ => StartOutcome::Waiting,
    }
}

fn terminated_reason(statuses: &[ContainerStatus]) -> Option<(String, String)> {
    statuses.iter().find_map(|cs| {
        let t = cs.state.as_ref()?.terminated.as_ref()?;
        Some((
            t.reason.clone().unwrap_or_else(|| "Terminated".into()),
            format!(
                "container {} exited with code {}{}",
                cs.name,
                t.exit_code,
                t.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        ))
    })
}

/// Bay's status words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Created,
    Running,
    Exited,
    Removing,
    NotFound,
}

pub fn session_status(pod: &Pod) -> SessionStatus {
    if pod.metadata.deletion_timestamp.is_some() {
        return SessionStatus::Removing;
    }
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") => SessionStatus::Running,
        Some("Succeeded") | Some("Failed") => SessionStatus::Exited,
        _ => SessionStatus::Created,
    }
}

/// State of one container of a session Pod (sidecars included), so a crashed
/// sidecar in a running Pod is visible.
#[derive(Clone, Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ContainerState {
    pub name: String,
    /// waiting | running | terminated | unknown
    pub state: String,
    pub ready: bool,
    pub restart_count: i32,
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
}

pub fn container_states(pod: &Pod) -> Vec<ContainerState> {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let names: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    names
        .into_iter()
        .map(|name| {
            let cs = statuses.iter().find(|c| c.name == name);
            let st = cs.and_then(|c| c.state.as_ref());
            let (state, reason, exit_code) = match st {
                Some(s) if s.running.is_some() => ("running", None, None),
                Some(s) if s.terminated.is_some() => {
                    let t = s.terminated.as_ref().expect("checked");
                    ("terminated", t.reason.clone(), Some(t.exit_code))
                }
                Some(s) if s.waiting.is_some() => (
                    "waiting",
                    s.waiting.as_ref().and_then(|w| w.reason.clone()),
                    None,
                ),
                _ => ("unknown", None, None),
            };
            ContainerState {
                name,
                state: state.into(),
                ready: cs.is_some_and(|c| c.ready),
                restart_count: cs.map(|c| c.restart_count).unwrap_or(0),
                reason,
                exit_code,
            }
        })
        .collect()
}

/// Exit code of the first container, when it has terminated.
pub fn exit_code(pod: &Pod) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn outcomes() {
        let running =
            pod(json!({"metadata":{"name":"p"},"status":{"phase":"Running","podIP":"10.0.0.1"}}));
        assert_eq!(
            start_outcome(Some(&running)),
            StartOutcome::Ready {
                pod_ip: "10.0.0.1".into()
            }
        );
        let pulling = pod(
            json!({"metadata":{"name":"p"},"status":{"phase":"Pending","containerStatuses":[
            {"name":"ship","image":"x","imageID":"","ready":false,"restartCount":0,"state":{"waiting":{"reason":"ImagePullBackOff","message":"back-off"}}}]}}),
        );
        assert!(
            matches!(start_outcome(Some(&pulling)), StartOutcome::Failed { reason, .. } if reason == "ImagePullBackOff")
        );
        let unsched = pod(
            json!({"metadata":{"name":"p"},"status":{"phase":"Pending","conditions":[
            {"type":"PodScheduled","status":"False","reason":"Unschedulable","message":"0/3 nodes are available"}]}}),
        );
        assert!(
            matches!(start_outcome(Some(&unsched)), StartOutcome::Failed { reason, .. } if reason == "Unschedulable")
        );
        let binding = pod(
            json!({"metadata":{"name":"p"},"status":{"phase":"Pending","conditions":[
            {"type":"PodScheduled","status":"False","reason":"Unschedulable","message":"pod has unbound immediate PersistentVolumeClaims"}]}}),
        );
        assert_eq!(start_outcome(Some(&binding)), StartOutcome::Waiting);
        let dying = pod(
            json!({"metadata":{"name":"p","deletionTimestamp":"2026-01-01T00:00:00Z"},"status":{"phase":"Running","podIP":"10.0.0.1"}}),
        );
        assert!(
            matches!(start_outcome(Some(&dying)), StartOutcome::Failed { reason, .. } if reason == "Terminating")
        );
        assert_eq!(session_status(&dying), SessionStatus::Removing);
        assert!(matches!(start_outcome(None), StartOutcome::Failed { .. }));
    }
}
