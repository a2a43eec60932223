//! One watch on all of Berth's session Pods, shared by every waiter.
//!
//! `start` and `destroy` wait for a Pod to change. One watch per waiting
//! request (what `await_condition` opens) costs the API server a watch per
//! in-flight session; with this, it serves one watch per Berth process, and a
//! waiter only looks the Pod up in the local cache whenever anything changed.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

/// The shared watch. Dropping it stops the watch.
pub struct PodWatch {
    store: Store<Pod>,
    namespace: String,
    /// Bumped after every event the cache has applied.
    changed: watch::Receiver<u64>,
    /// The last watch error, cleared by the next good event: what a waiter
    /// that times out reports.
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodWatch {
    /// Starts watching the Pods in `api`'s namespace that match `selector`.
    /// Errors are retried with backoff, as client-go's reflector does.
    pub fn start(api: Api<Pod>, namespace: &str, selector: &str) -> PodWatch {
        let (store, writer) = reflector::store();
        let (tx, changed) = watch::channel(0u64);
        let last_error = Arc::new(std::sync::Mutex::new(None));
        let errors = last_error.clone();
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default().labels(selector)).default_backoff(),
        );
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let mut last = errors.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    Ok(_) => {
                        *last = None;
                        tx.send_modify(|n| *n += 1);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "session Pod watch failed; retrying");
                        *last = Some(e.to_string());
                    }
                }
            }
        });
        PodWatch {
            store,
            namespace: namespace.to_string(),
            changed,
            last_error,
            task,
        }
    }

    /// Resolves with the Pod named `name` (or `None` if it is absent) as soon
    /// as `done` holds for it. Callers bound it with a timeout.
    pub async fn until(&self, name: &str, done: impl Fn(Option<&Pod>) -> bool) -> Option<Arc<Pod>> {
        let key = ObjectRef::new(name).within(&self.namespace);
        let mut changed = self.changed.clone();
        // Only a fully listed cache can say a Pod is absent.
        if self.store.wait_until_ready().await.is_err() {
            return std::future::pending().await;
        }
        loop {
            // Mark the current version seen before looking, so a change
            // between the look and the wait is not missed.
            changed.borrow_and_update();
            let pod = self.store.get(&key);
            if done(pod.as_deref()) {
                return pod;
            }
            if changed.changed().await.is_err() {
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
