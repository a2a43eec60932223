//! The plugin list from a ConfigMap: watched through the API server, loaded
//! as the next generation on every change (last-known-good: a list that
//! fails leaves the serving generation), and the outcome reported in
//! `/v1/plugins`, in metrics and as an Event on the ConfigMap.
//!
//! Berth needs only `get`, `list` and `watch` on that one ConfigMap (RBAC
//! `resourceNames`; the watch selects it with `metadata.name=`), and
//! `create`/`patch` on `events.k8s.io` Events.

use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::Resource as _;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::{Deserialize, Serialize};

use crate::api::Shared;
use crate::plugin::PluginConfig;

/// `plugins_configmap:` in the config file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfigMap {
    /// The ConfigMap's name, in Berth's `namespace`.
    pub name: String,
    /// The data key holding the plugin list: a YAML list of plugin entries,
    /// exactly as under `plugins:` in the config file.
    #[serde(default = "default_key")]
    pub key: String,
}

fn default_key() -> String {
    "plugins.yaml".into()
}

/// What became of the ConfigMap's latest version (in `/v1/plugins`).
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ConfigMapStatus {
    /// `NAMESPACE/NAME` of the watched ConfigMap.
    pub configmap: String,
    /// The resourceVersion last read; absent until it has been seen.
    pub resource_version: Option<String>,
    /// The generation that version loaded as, if it did.
    pub generation: Option<u64>,
    /// Why that version is not serving (its list does not parse, or a
    /// plugin failed to load); absent when it is.
    pub error: Option<String>,
}

/// Parses the plugin list held under the key. Whoever edits the ConfigMap
/// may not get around `plugin_signatures.required`: then every entry must
/// be an OCI reference (a file on Berth's disk carries no signature), and
/// an entry's own `signature` may change the keys but not drop the
/// requirement (see `Sources`).
pub fn parse_list(text: &str, signatures_required: bool) -> Result<Vec<PluginConfig>, String> {
    if text.trim().is_empty() {
        return Err("the plugin list is empty (write [] to run without plugins)".into());
    }
    let plugins: Vec<PluginConfig> = serde_path_to_error::deserialize(
        serde_yaml::Deserializer::from_str(text),
    )
    .map_err(|e| {
        let at = e.path().to_string();
        format!("the plugin list does not parse at {at}: {}", e.inner())
    })?;
    for (i, p) in plugins.iter().enumerate() {
        p.validate(&format!("[{i}]"))?;
        if signatures_required && p.reference.is_none() {
            return Err(format!(
                "[{i}] ({:?}) is a file, but plugin_signatures.required asks every plugin from the ConfigMap to be a signed OCI artifact",
                p.name
            ));
        }
    }
    Ok(plugins)
}

/// Watches the ConfigMap until the process ends, loading every new list.
/// The first list that loads fills `first`.
pub async fn watch(
    state: Shared,
    spec: PluginsConfigMap,
    first: tokio::sync::oneshot::Sender<u64>,
) {
    let namespace = state.driver.config().namespace.clone();
    let client = state.driver.client().clone();
    let shown = format!("{namespace}/{}", spec.name);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let mut first = Some(first);
    let mut seen: Option<Option<String>> = None;
    state.set_configmap_status(ConfigMapStatus {
        configmap: shown.clone(),
        ..Default::default()
    });
    state
        .driver
        .policy()
        .waiting(format!("waiting for ConfigMap {shown}"));
    let events = watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={}", spec.name)),
    )
    .default_backoff()
    .applied_objects();
    futures::pin_mut!(events);
    // A list that failed to load (a registry away, say) is tried again,
    // less and less often, until it loads or the ConfigMap changes.
    let mut retry: Option<Retry> = None;
    loop {
        let due = retry.as_ref().map(|r| r.at);
        let (cm, after) = tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(configmap = %shown, error = %e, "watching the plugin ConfigMap");
                    continue;
                }
                Some(Ok(cm)) => {
                    let text = cm.data.as_ref().and_then(|d| d.get(&spec.key)).cloned();
                    // A resync, or a change to another key: nothing to load.
                    if seen.as_ref() == Some(&text) {
                        continue;
                    }
                    seen = Some(text);
                    (cm, None)
                }
            },
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                match retry.take() {
                    Some(r) => (r.cm, Some(r.delay)),
                    None => continue,
                }
            }
        };
        let (outcome, retryable) = apply(&state, &spec, &cm).await;
        if let Err(e) = &outcome {
            // Until a generation is in, readiness says why not.
            state
                .driver
                .policy()
                .waiting(format!("ConfigMap {shown}: {e}"));
        }
        report(
            &state,
            &cm,
            &shown,
            cm.metadata.resource_version.clone(),
            &outcome,
        )
        .await;
        retry = match (&outcome, retryable) {
            (Err(_), true) => {
                // Doubling for the same list; a new list starts over.
                let delay = after.map_or(RETRY_FIRST, |d| (d * 2).min(RETRY_MAX));
                tracing::info!(configmap = %shown, in_s = delay.as_secs(), "will try the plugin list again");
                Some(Retry {
                    at: tokio::time::Instant::now() + delay,
                    delay,
                    cm,
                })
            }
            _ => None,
        };
        if let (Ok(generation), Some(tx)) = (&outcome, first.take_if(|_| outcome.is_ok())) {
            let _ = tx.send(*generation);
        }
    }
}

/// A list that failed to load, to be tried again at `at`.
struct Retry {
    cm: ConfigMap,
    at: tokio::time::Instant,
    delay: Duration,
}

/// The first retry of a list that failed to load, then doubling up to
/// `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// Parses and loads the ConfigMap's list; the new generation, or why not,
/// and whether trying the same list again may help (a load failed, rather
/// than a list that does not parse).
async fn apply(
    state: &Shared,
    spec: &PluginsConfigMap,
    cm: &ConfigMap,
) -> (Result<u64, String>, bool) {
    let listed = match cm.data.as_ref().and_then(|d| d.get(&spec.key)) {
        None => Err(format!("it has no key {:?}", spec.key)),
        Some(text) => parse_list(text, state.driver.policy().sources().signatures.required),
    };
    match listed {
        Err(e) => {
            // Never reached the engine, which counts its own loads.
            state.metrics.reload("configmap", false);
            (Err(e), false)
        }
        Ok(list) => {
            state.set_configmap_plugins(list.clone());
            let loaded = state.driver.reload_plugins(list, "configmap").await;
            (loaded.map_err(|e| e.to_string()), true)
        }
    }
}

async fn report(
    state: &Shared,
    cm: &ConfigMap,
    shown: &str,
    version: Option<String>,
    outcome: &Result<u64, String>,
) {
    let (event, status) = match outcome {
        Ok(generation) => {
            let plugins = state
                .driver
                .policy()
                .chain()
                .summaries()
                .iter()
                .map(|p| match &p.origin.digest {
                    Some(d) => format!("{}@{d}", p.name),
                    None => p.name.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ");
            tracing::info!(configmap = %shown, generation, "plugin list from the ConfigMap loaded");
            (
                Event {
                    type_: EventType::Normal,
                    reason: "PluginsLoaded".into(),
                    note: Some(truncate(format!("generation {generation}: {plugins}"))),
                    action: "LoadPlugins".into(),
                    secondary: None,
                },
                ConfigMapStatus {
                    configmap: shown.into(),
                    resource_version: version,
                    generation: Some(*generation),
                    error: None,
                },
            )
        }
        Err(e) => {
            let serving = state.driver.policy().chain().generation;
            tracing::error!(configmap = %shown, error = %e, serving, "plugin list from the ConfigMap rejected");
            (
                Event {
                    type_: EventType::Warning,
                    reason: "PluginsRejected".into(),
                    note: Some(truncate(format!("{e}; generation {serving} keeps serving"))),
                    action: "LoadPlugins".into(),
                    secondary: None,
                },
                ConfigMapStatus {
                    configmap: shown.into(),
                    resource_version: version,
                    generation: None,
                    error: Some(e.clone()),
                },
            )
        }
    };
    state.set_configmap_status(status);
    // A recorder of its own: one kept across loads would fold every
    // PluginsLoaded into one Event series, keeping the first note (and the
    // first generation's digests).
    let recorder = Recorder::new(
        state.driver.client().clone(),
        Reporter {
            controller: "berth".into(),
            instance: std::env::var("HOSTNAME").ok(),
        },
    );
    if let Err(e) = recorder.publish(&event, &cm.object_ref(&())).await {
        tracing::warn!(configmap = %shown, error = %e, "cannot record an Event on the ConfigMap");
    }
}

/// An Event note holds at most 1 kB.
fn truncate(mut s: String) -> String {
    if s.len() > 1000 {
        let mut end = 1000;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_checked_before_anything_loads() {
        let ok = parse_list(
            "- name: restricted\n  reference: oci://127.0.0.1:5000/berth/restricted:0.1\n",
            true,
        )
        .unwrap();
        assert_eq!(ok[0].name, "restricted");
        let both = "- name: x\n  path: /a.wasm\n  reference: oci://h.io/r:1\n";
        let err = parse_list(both, false).unwrap_err();
        assert!(err.contains("both a path and a reference"), "{err}");
        let err = parse_list("- name: x\n  pth: /a.wasm\n", false).unwrap_err();
        assert!(err.contains("[0]") && err.contains("pth"), "{err}");
        assert!(parse_list("plugins: []", false).is_err());
        // Signatures required: no file from the ConfigMap.
        let file = "- name: x\n  path: /a.wasm\n";
        assert!(parse_list(file, false).is_ok());
        let err = parse_list(file, true).unwrap_err();
        assert!(err.contains("signed OCI artifact"), "{err}");
        // An empty key is a mistake; [] is a choice.
        assert!(parse_list("  \n", false).unwrap_err().contains("write []"));
        assert!(parse_list("[]", true).unwrap().is_empty());
    }
}
