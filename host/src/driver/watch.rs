//! One watch on all of Berth's session Pods, shared by every waiting request.
//!
//! `start` and `destroy` wait for a Pod to change. A watch per waiting
//! request (what `await_condition` opens) costs the API server one watch per
//! session in flight; this costs it one per Berth process. A waiter looks its
//! Pod up in the local cache whenever the watch applied an event.
//!
//! The cache lags the API server. A Pod created a moment ago may be missing
//! from it, and an older Pod of the same name may still be in it. So the
//! cache is trusted only about the waiter's own Pod (same uid); any verdict
//! drawn from absence or from another uid is confirmed with one GET first.
//!
//! The API server ends each watch call after `WATCH_TIMEOUT_S`, inside the
//! client's 30 s read timeout, and the watcher resumes from the last
//! resourceVersion. Without that, a quiet namespace sends nothing for 30 s,
//! the read times out, and an idle watch reports an error every 30 s.
//!
//! A wait never depends on the watch alone. After an API server restart the
//! watch needs a moment (and a fresh list, when its resourceVersion expired:
//! 410) before it delivers again, while the Pods it waits for may already be
//! Running. So while the watch is failing or re-listing, a waiter reads its
//! Pod directly every `DIRECT_READ`; and every waiter looks again every
//! `RECHECK` even without events, for verdicts that depend on time (the
//! unschedulable grace).
//!
//! The cache holds only what Berth reads from a Pod (`trim`): at 2,000
//! sessions a full Pod with its managed fields is most of Berth's memory.
//!
//! Readiness (the first full list applied) is tracked here rather than with
//! `Store::wait_until_ready`: that future wakes only the last of several
//! concurrent waiters (one oneshot receiver, one waker), and the others hung
//! until their timeout (measured: 2 to 4 of the first 8 `start` calls).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Seconds the API server keeps one watch call open: below the client's read
/// timeout (30 s, `driver::kube_client`), so an idle watch ends cleanly.
pub const WATCH_TIMEOUT_S: u32 = 25;

/// How long a waiter whose confirming GET failed waits before it asks again.
const CONFIRM_RETRY: Duration = Duration::from_millis(500);

/// How often a waiter reads its Pod from the API server while the watch is
/// failing or re-listing.
const DIRECT_READ: Duration = Duration::from_secs(1);

/// How often a waiter looks at the cache again without an event.
const RECHECK: Duration = Duration::from_secs(1);

/// The watch's retry back-off: from 200 ms, doubling, at most 3 s. The
/// default (800 ms to 30 s) left the watch down for up to a minute after an
/// API server came back (measured: 14 to 67 s).
fn backoff() -> impl kube::runtime::utils::Backoff {
    let exponential: watcher::ExponentialBackoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(3))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into();
    // A watch that has delivered for a minute starts again from 200 ms.
    kube::runtime::utils::ResetTimerBackoff::new(exponential, Duration::from_secs(60))
}

/// Keeps what Berth reads from a cached Pod: its identity, labels,
/// deletion state, container names and ports, and its status. Managed
/// fields, annotations, env, volumes and the rest are dropped.
fn trim(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    if let Some(spec) = pod.spec.as_mut() {
        let keep =
            |c: &k8s_openapi::api::core::v1::Container| k8s_openapi::api::core::v1::Container {
                name: c.name.clone(),
                ports: c.ports.clone(),
                ..Default::default()
            };
        *spec = k8s_openapi::api::core::v1::PodSpec {
            containers: spec.containers.iter().map(keep).collect(),
            init_containers: spec
                .init_containers
                .as_ref()
                .map(|cs| cs.iter().map(keep).collect()),
            ..Default::default()
        };
    }
}

/// The shared watch; dropping it stops the watch.
pub struct PodWatch {
    api: Api<Pod>,
    metrics: Arc<Metrics>,
    store: Store<Pod>,
    namespace: String,
    /// Sent after every event the cache applied; holds whether the first
    /// full list has been applied (before it, absence from the cache means
    /// nothing).
    changed: watch::Receiver<bool>,
    /// The watch's last error, cleared by its next event: what a waiter
    /// that times out reports.
    last_error: Arc<Mutex<Option<String>>>,
    /// True from the start of a (re-)list until it has been applied: the
    /// cache then still shows the world before the list.
    listing: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodWatch {
    /// Watches the Pods in `api`'s namespace that match `selector`. A failing
    /// watch is retried with backoff, as client-go's reflector does.
    pub fn start(
        api: Api<Pod>,
        namespace: &str,
        selector: &str,
        metrics: Arc<Metrics>,
    ) -> PodWatch {
        let (store, writer) = reflector::store();
        let (tx, changed) = watch::channel(false);
        let last_error = Arc::new(Mutex::new(None));
        let errors = last_error.clone();
        let listing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let relisting = listing.clone();
        let counted = metrics.clone();
        let events = reflector::reflector(
            writer,
            watcher(
                api.clone(),
                watcher::Config::default()
                    .labels(selector)
                    .timeout(WATCH_TIMEOUT_S),
            )
            .modify(trim)
            .backoff(backoff()),
        );
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let listed = matches!(event, Ok(watcher::Event::InitDone));
                if matches!(event, Ok(watcher::Event::Init)) {
                    relisting.store(true, std::sync::atomic::Ordering::Relaxed);
                } else if listed {
                    relisting.store(false, std::sync::atomic::Ordering::Relaxed);
                }
                let error = event.err().map(|e| e.to_string());
                counted.pod_watch_event(error.is_none());
                if let Some(e) = &error {
                    tracing::warn!(error = %e, "session Pod watch failed; retrying");
                }
                *errors.lock().unwrap_or_else(|p| p.into_inner()) = error;
                // The reflector applied the event before yielding it, so a
                // woken waiter finds it in the cache.
                tx.send_modify(|ready| *ready |= listed);
            }
        });
        PodWatch {
            api,
            metrics,
            store,
            namespace: namespace.to_string(),
            changed,
            last_error,
            listing,
            task,
        }
    }

    /// Whether the cache can be trusted to show changes as they happen: the
    /// first list is applied, no re-list is under way, and the last call
    /// did not fail.
    fn healthy(&self) -> bool {
        *self.changed.borrow()
            && !self.listing.load(std::sync::atomic::Ordering::Relaxed)
            && self.error().is_none()
    }

    /// Resolves with the Pod named `name` (`None` if it is gone) once `done`
    /// holds for it. `uid` is the waiter's own Pod: the cache's view of it is
    /// trusted; anything else is checked against the API server. A failing
    /// check or watch is retried here, never returned: only the caller's
    /// timeout ends a wait that is not done.
    pub async fn until(
        &self,
        name: &str,
        uid: &str,
        done: impl Fn(Option<&Pod>) -> bool,
    ) -> Option<Pod> {
        let key = ObjectRef::new(name).within(&self.namespace);
        let mut changed = self.changed.clone();
        let mut last_read: Option<Instant> = None;
        loop {
            // Marked seen before looking, so a change between the look and
            // the wait below wakes this waiter.
            let ready = *changed.borrow_and_update();
            let healthy = self.healthy();
            let direct = !healthy && last_read.is_none_or(|t| t.elapsed() >= DIRECT_READ);
            let verdict = if direct {
                // The watch is down or re-listing: read the Pod itself.
                Verdict::Confirm
            } else {
                let cached = self.store.get(&key);
                match judge(ready, cached.as_deref(), uid, &done) {
                    Verdict::Done => return cached.map(|p| (*p).clone()),
                    v => v,
                }
            };
            let mut pause = RECHECK;
            if verdict == Verdict::Confirm {
                let asked = Instant::now();
                last_read = Some(asked);
                let live = self.api.get_opt(name).await;
                self.metrics
                    .observe_kube("get_pod_confirm", live.is_ok(), asked.elapsed());
                match live {
                    Ok(live) if done(live.as_ref()) => return live,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(pod = name, error = %e, "confirming GET failed; retrying");
                        pause = CONFIRM_RETRY;
                    }
                }
            }
            // Woken by the next event, or after `pause` to look again: no
            // event may come (a quiet Pod, a watch that is down, a verdict
            // that changes with time). A finished watch task leaves only the
            // pause.
            if let Ok(Err(_)) = tokio::time::timeout(pause, changed.changed()).await {
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Why the watch is failing right now, if it is.
    pub fn error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[derive(Debug, PartialEq)]
enum Verdict {
    /// Not there yet: wait for the next event.
    Wait,
    /// The cache's view of the waiter's own Pod settles it.
    Done,
    /// The cache says done, but only from absence or another Pod of the same
    /// name, which a lagging cache also shows: ask the API server.
    Confirm,
}

fn judge(
    ready: bool,
    cached: Option<&Pod>,
    uid: &str,
    done: impl Fn(Option<&Pod>) -> bool,
) -> Verdict {
    if !ready || !done(cached) {
        return Verdict::Wait;
    }
    if cached.is_some_and(|p| p.metadata.uid.as_deref() == Some(uid)) {
        Verdict::Done
    } else {
        Verdict::Confirm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, phase: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p", "uid": uid },
            "status": { "phase": phase }
        }))
        .unwrap()
    }

    fn running(p: Option<&Pod>) -> bool {
        p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some("Running")
    }

    fn gone_or_replaced(p: Option<&Pod>) -> bool {
        p.is_none_or(|p| p.metadata.uid.as_deref() != Some("a"))
    }

    #[test]
    fn the_cache_keeps_what_berth_reads_and_nothing_else() {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p", "uid": "a", "labels": { "bay.session_id": "s" },
                "annotations": { "big": "x" }, "finalizers": ["f"],
                "managedFields": [{ "manager": "kubectl", "operation": "Update" }] },
            "spec": { "containers": [{ "name": "ship", "image": "i",
                "env": [{ "name": "A", "value": "b" }],
                "ports": [{ "containerPort": 8123 }] }],
                "volumes": [{ "name": "v", "emptyDir": {} }], "nodeSelector": { "a": "b" } },
            "status": { "phase": "Running", "podIP": "10.0.0.1" }
        }))
        .unwrap();
        trim(&mut p);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": "p", "uid": "a", "labels": { "bay.session_id": "s" }, "finalizers": ["f"] },
                "spec": { "containers": [{ "name": "ship", "ports": [{ "containerPort": 8123 }] }] },
                "status": { "phase": "Running", "podIP": "10.0.0.1" }
            })
        );
    }

    #[test]
    fn nothing_is_decided_before_the_first_list() {
        assert_eq!(
            judge(false, Some(&pod("a", "Running")), "a", running),
            Verdict::Wait
        );
        assert_eq!(judge(false, None, "a", gone_or_replaced), Verdict::Wait);
    }

    #[test]
    fn the_waiters_own_pod_is_trusted() {
        assert_eq!(
            judge(true, Some(&pod("a", "Running")), "a", running),
            Verdict::Done
        );
        assert_eq!(
            judge(true, Some(&pod("a", "Pending")), "a", running),
            Verdict::Wait
        );
        assert_eq!(
            judge(true, Some(&pod("a", "Running")), "a", gone_or_replaced),
            Verdict::Wait
        );
    }

    #[test]
    fn absence_and_other_pods_are_confirmed_first() {
        // A Pod created a moment ago may be missing from a lagging cache.
        assert_eq!(judge(true, None, "a", gone_or_replaced), Verdict::Confirm);
        // An older Pod of the same name may still be in it.
        assert_eq!(
            judge(true, Some(&pod("b", "Running")), "a", gone_or_replaced),
            Verdict::Confirm
        );
        assert_eq!(
            judge(true, Some(&pod("b", "Running")), "a", running),
            Verdict::Confirm
        );
    }
}
