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
        let counted = metrics.clone();
        let events = reflector::reflector(
            writer,
            watcher(
                api.clone(),
                watcher::Config::default()
                    .labels(selector)
                    .timeout(WATCH_TIMEOUT_S),
            )
            .default_backoff(),
        );
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let listed = matches!(event, Ok(watcher::Event::InitDone));
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
            task,
        }
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
        loop {
            // Marked seen before looking, so a change between the look and
            // the wait below wakes this waiter.
            let ready = *changed.borrow_and_update();
            let cached = self.store.get(&key);
            let mut retry = false;
            match judge(ready, cached.as_deref(), uid, &done) {
                Verdict::Wait => {}
                Verdict::Done => return cached.map(|p| (*p).clone()),
                Verdict::Confirm => {
                    let asked = Instant::now();
                    let live = self.api.get_opt(name).await;
                    self.metrics
                        .observe_kube("get_pod_confirm", live.is_ok(), asked.elapsed());
                    match live {
                        Ok(live) if done(live.as_ref()) => return live,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(pod = name, error = %e, "confirming GET failed; retrying");
                            retry = true;
                        }
                    }
                }
            }
            if retry {
                // No event may come to wake this waiter: ask again soon.
                let _ = tokio::time::timeout(CONFIRM_RETRY, changed.changed()).await;
            } else if changed.changed().await.is_err() {
                // The watch task is gone; only the caller's timeout ends this.
                return std::future::pending().await;
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
