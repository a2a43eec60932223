//! Reading a Pod the way Bay needs it: its status word, per-container state,
//! and whether `start` should keep waiting, succeed, or fail now.
//!
//! Containers are always looked up by name: the kubelet orders
//! `containerStatuses` by name, not in spec order. Berth's Pods run with
//! `restartPolicy: Never`, so a container that has terminated stays so.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use serde::Serialize;
use utoipa::ToSchema;

/// Container waiting reasons that will not fix themselves whatever the
/// message: `start` fails at once with the reason instead of waiting out the
/// timeout. (A missing Secret key behind `CreateContainerConfigError` could
/// be created later, but nothing tells Berth it will be; the person who can
/// create it needs the message now.)
const FATAL_WAITING: &[&str] = &[
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
];

/// Image pull reasons the kubelet retries with back-off. Whether waiting can
/// help depends on the registry's answer, which only the message carries.
const PULL_WAITING: &[&str] = &["ErrImagePull", "ImagePullBackOff"];

/// Registry answers that retrying will not change (matched in lower case
/// against the kubelet's message): the image or tag is missing, or the
/// credentials are refused. Anything else — 429, 5xx, timeouts, refused
/// connections — the kubelet retries, and `start` waits with it.
const PULL_PERMANENT: &[&str] = &[
    "not found",
    "manifest unknown",
    "name unknown",
    "repository does not exist",
    "pull access denied",
    "access denied",
    "requested access to the resource is denied",
    "unauthorized",
    "authentication required",
    "403 forbidden",
    "invalid reference format",
];

/// The kubelet's message without what it quotes (the image reference, a
/// URL): a tag `2401` or a repository `denied-team/ship` says nothing about
/// whether the pull can succeed.
fn unquoted(message: &str) -> String {
    message
        .split('"')
        .step_by(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// What Kubernetes said about a Pod that is not running: its own word for
/// it, and a message naming the container a person has to look at.
#[derive(Debug, Clone, PartialEq)]
pub struct Why {
    pub reason: String,
    pub message: String,
}

impl Why {
    fn new(reason: impl Into<String>, message: impl Into<String>) -> Why {
        Why {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum StartOutcome {
    Ready {
        pod_ip: String,
    },
    /// It will not run without someone changing something.
    Failed(Why),
    /// No node fits it now. Whether to wait is the caller's decision: on a
    /// cluster with an autoscaler this is every new node's first state.
    Unschedulable(Why),
    /// On its way; what it waits for, when Kubernetes said.
    Waiting(Option<Why>),
}

pub fn start_outcome(pod: Option<&Pod>) -> StartOutcome {
    let Some(pod) = pod else {
        return StartOutcome::Failed(Why::new("NotFound", "the Pod was deleted while starting"));
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return StartOutcome::Failed(Why::new("Terminating", "the Pod is being deleted"));
    }
    let Some(status) = &pod.status else {
        return StartOutcome::Waiting(None);
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if phase == "Failed" || phase == "Succeeded" {
        return StartOutcome::Failed(ended(pod));
    }
    if let Some(why) = broken_container(pod) {
        return StartOutcome::Failed(why);
    }
    let mut waiting = None;
    for (kind, cs) in statuses(pod) {
        let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = w.reason.clone().unwrap_or_default();
        let message = w.message.clone().unwrap_or_default();
        let said = format!("{kind} {}: {}", cs.name, with_last_exit(&message, cs));
        if FATAL_WAITING.contains(&reason.as_str()) {
            return StartOutcome::Failed(Why::new(reason, said));
        }
        if PULL_WAITING.contains(&reason.as_str()) {
            let answer = unquoted(&message);
            if PULL_PERMANENT.iter().any(|p| answer.contains(p)) {
                return StartOutcome::Failed(Why::new(reason, said));
            }
        }
        if waiting.is_none() && !reason.is_empty() {
            waiting = Some(Why::new(reason, said));
        }
    }
    for c in status.conditions.iter().flatten() {
        if c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
        {
            let message = c.message.clone().unwrap_or_default();
            let why = Why::new("Unschedulable", message.clone());
            // Immediate-binding claims are bound by the PV controller in a
            // moment and the scheduler retries: that is waiting, not a lack
            // of nodes.
            if message.contains("unbound immediate PersistentVolumeClaims") {
                return StartOutcome::Waiting(Some(why));
            }
            return StartOutcome::Unschedulable(why);
        }
    }
    match (phase, status.pod_ip.as_deref()) {
        ("Running", Some(ip)) if !ip.is_empty() => StartOutcome::Ready {
            pod_ip: ip.to_string(),
        },
        _ => StartOutcome::Waiting(waiting),
    }
}

/// What each waiting container waits for (`ErrImagePull`, `ContainerCreating`,
/// …), in the words `start` uses.
pub fn waiting_containers(pod: &Pod) -> Vec<Why> {
    statuses(pod)
        .filter_map(|(kind, cs)| {
            let w = cs.state.as_ref()?.waiting.as_ref()?;
            let reason = w.reason.clone().filter(|r| !r.is_empty())?;
            let message = w.message.clone().unwrap_or_default();
            Some(Why::new(
                reason,
                format!("{kind} {}: {}", cs.name, with_last_exit(&message, cs)),
            ))
        })
        .collect()
}

/// Init containers first, then the others, each with its kind for messages.
fn statuses(pod: &Pod) -> impl Iterator<Item = (&'static str, &ContainerStatus)> {
    let status = pod.status.as_ref();
    let init = status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|c| ("init container", c));
    let main = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|c| ("container", c));
    init.chain(main)
}

/// A CrashLoopBackOff message says only that the kubelet backs off; the
/// exit before it is what the person needs.
fn with_last_exit(message: &str, cs: &ContainerStatus) -> String {
    match cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
        Some(t) => format!(
            "{message}{}last exit code {}{}",
            if message.is_empty() { "" } else { "; " },
            t.exit_code,
            t.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        None => message.to_string(),
    }
}

/// A terminated container in a Pod that has not ended: an init container
/// that failed, or any regular container (with `restartPolicy: Never` it
/// never comes back, so the session's container group is broken).
fn broken_container(pod: &Pod) -> Option<Why> {
    statuses(pod).find_map(|(kind, cs)| {
        let t = cs.state.as_ref()?.terminated.as_ref()?;
        if kind == "init container" && t.exit_code == 0 {
            return None;
        }
        Some(terminated_why(kind, &cs.name, t))
    })
}

fn terminated_why(
    kind: &str,
    name: &str,
    t: &k8s_openapi::api::core::v1::ContainerStateTerminated,
) -> Why {
    let reason = t.reason.clone().unwrap_or_else(|| {
        if t.exit_code == 0 {
            "Completed".into()
        } else {
            "Error".into()
        }
    });
    let mut message = format!("{kind} {name} exited with code {}", t.exit_code);
    if reason == "OOMKilled" {
        message.push_str(" (OOMKilled: it used more memory than its limit)");
    } else {
        message.push_str(&format!(" ({reason})"));
    }
    if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
        message.push_str(&format!(": {m}"));
    }
    Why::new(reason, message)
}

/// Why a Pod in phase Failed or Succeeded ended. The Pod's own reason
/// (Evicted, DeadlineExceeded, NodeLost…) comes first: it is why its
/// containers stopped. Then the first container that ended badly, then any.
fn ended(pod: &Pod) -> Why {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Failed");
    let container = statuses(pod)
        .filter_map(|(kind, cs)| {
            let t = cs.state.as_ref()?.terminated.as_ref()?;
            Some((kind, cs, t))
        })
        .filter(|(kind, _, t)| !(*kind == "init container" && t.exit_code == 0))
        .min_by_key(|(_, _, t)| t.exit_code == 0)
        .map(|(kind, cs, t)| terminated_why(kind, &cs.name, t));
    let pod_reason = status
        .and_then(|s| s.reason.clone())
        .filter(|r| !r.is_empty());
    let pod_message = status.and_then(|s| s.message.clone()).unwrap_or_default();
    match (pod_reason, container) {
        (Some(reason), Some(c)) => Why::new(
            reason,
            format!(
                "{pod_message}{}{}",
                if pod_message.is_empty() { "" } else { "; " },
                c.message
            ),
        ),
        (Some(reason), None) => Why::new(
            reason,
            if pod_message.is_empty() {
                format!("the Pod {}", phase.to_lowercase())
            } else {
                pod_message
            },
        ),
        (None, Some(c)) => c,
        (None, None) if phase == "Succeeded" => {
            Why::new("Completed", "every container exited with code 0")
        }
        (None, None) => Why::new(
            "Failed",
            "the Pod failed and Kubernetes recorded no reason for it or its containers",
        ),
    }
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

/// A Pod whose phase is Running but one of whose containers has terminated
/// is `exited`: the group Bay's probe talks to is broken and will not heal.
pub fn session_status(pod: &Pod) -> SessionStatus {
    if pod.metadata.deletion_timestamp.is_some() {
        return SessionStatus::Removing;
    }
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") if broken_container(pod).is_some() => SessionStatus::Exited,
        Some("Running") => SessionStatus::Running,
        Some("Succeeded") | Some("Failed") => SessionStatus::Exited,
        _ => SessionStatus::Created,
    }
}

/// The state word `list_runtime_instances` reports: the lower-case phase,
/// `removing` while terminating, and `failed` for a running Pod whose
/// container group is broken.
pub fn instance_state(pod: &Pod) -> String {
    if pod.metadata.deletion_timestamp.is_some() {
        return "removing".into();
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    if phase == "Running" && broken_container(pod).is_some() {
        return "failed".into();
    }
    phase.to_lowercase()
}

/// Why a session is not running, in Kubernetes' words: what a starting Pod
/// waits for (the scheduler's message, an image pull), or why it ended.
/// `None` for a running session, or when Kubernetes has said nothing yet.
pub fn not_running_why(pod: &Pod) -> Option<Why> {
    match start_outcome(Some(pod)) {
        StartOutcome::Ready { .. } => None,
        StartOutcome::Failed(w) | StartOutcome::Unschedulable(w) => Some(w),
        StartOutcome::Waiting(w) => w,
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
    /// Kubernetes' reason for a waiting or terminated container
    /// (`ImagePullBackOff`, `OOMKilled`, …).
    pub reason: Option<String>,
    /// Kubernetes' message with it, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub exit_code: Option<i32>,
}

/// Every container of the spec, in spec order, each matched to its status
/// by name.
pub fn container_states(pod: &Pod) -> Vec<ContainerState> {
    let names: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    names
        .into_iter()
        .map(|name| {
            let cs = container_status(pod, &name);
            let st = cs.and_then(|c| c.state.as_ref());
            let (state, reason, message, exit_code) = match (
                st.and_then(|s| s.running.as_ref()),
                st.and_then(|s| s.terminated.as_ref()),
                st.and_then(|s| s.waiting.as_ref()),
            ) {
                (Some(_), _, _) => ("running", None, None, None),
                (_, Some(t), _) => (
                    "terminated",
                    t.reason.clone(),
                    t.message.clone(),
                    Some(t.exit_code),
                ),
                (_, _, Some(w)) => ("waiting", w.reason.clone(), w.message.clone(), None),
                _ => ("unknown", None, None, None),
            };
            ContainerState {
                name,
                state: state.into(),
                ready: cs.is_some_and(|c| c.ready),
                restart_count: cs.map(|c| c.restart_count).unwrap_or(0),
                reason,
                message,
                exit_code,
            }
        })
        .collect()
}

fn container_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

/// Exit code of the primary container (the first of the spec), when it has
/// terminated; else of the first container in spec order that has.
pub fn exit_code(pod: &Pod) -> Option<i32> {
    let code = |name: &str| {
        container_status(pod, name)?
            .state
            .as_ref()?
            .terminated
            .as_ref()
            .map(|t| t.exit_code)
    };
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find_map(|c| code(&c.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    /// A Pod with containers `ship` then `browser` in the spec and the given
    /// status.
    fn session(status: Value) -> Pod {
        pod(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "ship"}, {"name": "browser"}]},
            "status": status
        }))
    }

    fn cs(name: &str, state: Value) -> Value {
        json!({"name": name, "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": state})
    }

    fn failed(o: StartOutcome) -> Why {
        match o {
            StartOutcome::Failed(w) => w,
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[test]
    fn a_running_pod_with_an_ip_is_ready() {
        let running =
            pod(json!({"metadata":{"name":"p"},"status":{"phase":"Running","podIP":"10.0.0.1"}}));
        assert_eq!(
            start_outcome(Some(&running)),
            StartOutcome::Ready {
                pod_ip: "10.0.0.1".into()
            }
        );
        assert_eq!(not_running_why(&running), None);
    }

    #[test]
    fn image_pulls_fail_fast_only_on_what_will_not_heal() {
        let pulling = |reason: &str, message: &str| {
            session(json!({"phase": "Pending", "containerStatuses": [
                cs("ship", json!({"waiting": {"reason": reason, "message": message}}))]}))
        };
        for message in [
            "rpc error: code = NotFound desc = failed to pull and unpack image \"r/x:v9\": not found",
            "Back-off pulling image \"r/x:v9\": ErrImagePull: manifest unknown",
            "failed to resolve reference \"r/x\": pull access denied, repository does not exist or may require authorization",
            "failed to authorize: 401 Unauthorized",
        ] {
            for reason in ["ErrImagePull", "ImagePullBackOff"] {
                let w = failed(start_outcome(Some(&pulling(reason, message))));
                assert_eq!(w.reason, reason);
                assert!(w.message.starts_with("container ship: "), "{}", w.message);
                assert!(w.message.contains(message), "{}", w.message);
            }
        }
        for message in [
            // What the kubelet quotes is not the registry's answer.
            "failed to pull \"ghcr.io/example/ship:2401\": unexpected status: 429 Too Many Requests",
            "failed to pull \"ghcr.io/denied-team/ship@sha256:0f4010c3\": 503 Service Unavailable",
            "unexpected status from GET request to https://r/v2/x/manifests/v1: 429 Too Many Requests",
            "failed to do request: 503 Service Unavailable",
            "dial tcp 10.0.0.9:443: i/o timeout",
            "Back-off pulling image \"r/x:v1\"",
        ] {
            let o = start_outcome(Some(&pulling("ErrImagePull", message)));
            assert!(
                matches!(&o, StartOutcome::Waiting(Some(w)) if w.reason == "ErrImagePull" && w.message.contains(message)),
                "{message}: {o:?}"
            );
        }
        let never = pulling(
            "ErrImageNeverPull",
            "image not present with pull policy Never",
        );
        assert_eq!(
            failed(start_outcome(Some(&never))).reason,
            "ErrImageNeverPull"
        );
    }

    #[test]
    fn a_missing_secret_key_names_the_container_and_the_key() {
        let p = session(json!({"phase": "Pending", "containerStatuses": [
            cs("browser", json!({"waiting": {"reason": "CreateContainerConfigError",
                "message": "couldn't find key token in Secret bay/creds"}})),
            cs("ship", json!({"waiting": {"reason": "ContainerCreating"}}))]}));
        let w = failed(start_outcome(Some(&p)));
        assert_eq!(w.reason, "CreateContainerConfigError");
        assert_eq!(
            w.message,
            "container browser: couldn't find key token in Secret bay/creds"
        );
    }

    #[test]
    fn an_evicted_pod_says_why_it_was_evicted() {
        let p = session(json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi."}));
        let w = failed(start_outcome(Some(&p)));
        assert_eq!(w.reason, "Evicted");
        assert!(
            w.message
                .starts_with("The node was low on resource: memory")
        );
        assert_eq!(session_status(&p), SessionStatus::Exited);
    }

    #[test]
    fn an_oom_killed_container_is_named_with_its_exit_code() {
        let p = session(json!({"phase": "Failed", "containerStatuses": [
            cs("browser", json!({"terminated": {"exitCode": 0, "reason": "Completed"}})),
            cs("ship", json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}))]}));
        let w = failed(start_outcome(Some(&p)));
        assert_eq!(w.reason, "OOMKilled");
        assert!(
            w.message
                .starts_with("container ship exited with code 137 (OOMKilled"),
            "{}",
            w.message
        );
        // By name, not by position: ship is first in the spec, last here.
        assert_eq!(exit_code(&p), Some(137));
    }

    #[test]
    fn an_init_container_that_failed_ends_the_start() {
        let p = session(json!({"phase": "Pending",
            "initContainerStatuses": [
                cs("chown", json!({"terminated": {"exitCode": 0, "reason": "Completed"}})),
                cs("seed", json!({"terminated": {"exitCode": 2, "reason": "Error", "message": "seed.sh: no such file"}}))],
            "containerStatuses": [cs("ship", json!({"waiting": {"reason": "PodInitializing"}}))]}));
        let w = failed(start_outcome(Some(&p)));
        assert_eq!(w.reason, "Error");
        assert_eq!(
            w.message,
            "init container seed exited with code 2 (Error): seed.sh: no such file"
        );
        // Phase Failed (restartPolicy Never) says the same through `ended`.
        let mut done = p.clone();
        done.status.as_mut().unwrap().phase = Some("Failed".into());
        assert_eq!(failed(start_outcome(Some(&done))), w);
    }

    #[test]
    fn a_failed_pod_without_any_reason_is_never_failed_failed() {
        let p = session(json!({"phase": "Failed"}));
        let w = failed(start_outcome(Some(&p)));
        assert_eq!(w.reason, "Failed");
        assert!(w.message.contains("no reason"), "{}", w.message);
    }

    #[test]
    fn a_terminated_sidecar_breaks_a_running_session() {
        let p = session(
            json!({"phase": "Running", "podIP": "10.0.0.1", "containerStatuses": [
            cs("browser", json!({"terminated": {"exitCode": 1, "reason": "Error"}})),
            cs("ship", json!({"running": {}}))]}),
        );
        assert_eq!(session_status(&p), SessionStatus::Exited);
        assert_eq!(instance_state(&p), "failed");
        let w = failed(start_outcome(Some(&p)));
        assert!(
            w.message
                .starts_with("container browser exited with code 1")
        );
        assert_eq!(exit_code(&p), Some(1));
        let states = container_states(&p);
        assert_eq!(states[0].name, "ship");
        assert_eq!(states[0].state, "running");
        assert_eq!(states[1].name, "browser");
        assert_eq!(states[1].exit_code, Some(1));

        let whole = session(
            json!({"phase": "Running", "podIP": "10.0.0.1", "containerStatuses": [
            cs("browser", json!({"running": {}})), cs("ship", json!({"running": {}}))]}),
        );
        assert_eq!(session_status(&whole), SessionStatus::Running);
        assert_eq!(instance_state(&whole), "running");
        assert_eq!(exit_code(&whole), None);
    }

    #[test]
    fn unschedulable_is_the_callers_decision() {
        let unsched = pod(
            json!({"metadata":{"name":"p"},"status":{"phase":"Pending","conditions":[
            {"type":"PodScheduled","status":"False","reason":"Unschedulable","message":"0/3 nodes are available"}]}}),
        );
        assert_eq!(
            start_outcome(Some(&unsched)),
            StartOutcome::Unschedulable(Why::new("Unschedulable", "0/3 nodes are available"))
        );
        assert_eq!(
            not_running_why(&unsched).map(|w| w.message),
            Some("0/3 nodes are available".into())
        );
        let binding = pod(
            json!({"metadata":{"name":"p"},"status":{"phase":"Pending","conditions":[
            {"type":"PodScheduled","status":"False","reason":"Unschedulable","message":"pod has unbound immediate PersistentVolumeClaims"}]}}),
        );
        assert!(matches!(
            start_outcome(Some(&binding)),
            StartOutcome::Waiting(Some(_))
        ));
    }

    #[test]
    fn deleted_and_dying_pods() {
        let dying = pod(
            json!({"metadata":{"name":"p","deletionTimestamp":"2026-01-01T00:00:00Z"},"status":{"phase":"Running","podIP":"10.0.0.1"}}),
        );
        assert_eq!(failed(start_outcome(Some(&dying))).reason, "Terminating");
        assert_eq!(session_status(&dying), SessionStatus::Removing);
        assert_eq!(instance_state(&dying), "removing");
        assert_eq!(failed(start_outcome(None)).reason, "NotFound");
    }
}
