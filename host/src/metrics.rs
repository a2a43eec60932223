//! Prometheus metrics operators watch: API requests, Kubernetes calls, plugin
//! calls and plugin failures.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOnly {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeLabels {
    pub call: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// What asked for it: `start`, `configmap`, `sighup` or `api`.
    pub trigger: String,
    /// `loaded` or `failed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginInfoLabels {
    pub plugin: String,
    pub version: String,
    /// The OCI manifest digest, or the component's sha256 for a file.
    pub digest: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLoadLabels {
    pub plugin: String,
    /// `compiled` or `cache`.
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginFailureLabels {
    pub plugin: String,
    pub reason: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~100 s.
    Histogram::new(exponential_buckets(0.00005, 2.5, 16))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RouteLabels, Counter>,
    pub request_seconds: Family<RouteOnly, Histogram, fn() -> Histogram>,
    pub kube_seconds: Family<KubeLabels, Histogram, fn() -> Histogram>,
    pub plugin_seconds: Family<PluginLabels, Histogram, fn() -> Histogram>,
    pub plugin_failures: Family<PluginFailureLabels, Counter>,
    pub policy_denials: Family<PluginLabels, Counter>,
    pub pod_watch_events: Family<OutcomeLabels, Counter>,
    /// Requests waiting for a policy chain slot right now.
    pub plugin_queue_waiting: Gauge,
    /// How long requests waited for a slot (answered or given up).
    pub plugin_queue_wait_seconds: Histogram,
    /// Requests answered 503 `overloaded` after the whole queue timeout.
    pub plugin_queue_rejections: Counter,
    /// Seconds the last load of each plugin took (compile or cached load).
    pub plugin_load_seconds: Family<PluginLoadLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The plugin generation serving (0 until the first load is in).
    pub plugin_generation: Gauge,
    /// Plugin generation loads by trigger and outcome.
    pub plugin_reloads: Family<ReloadLabels, Counter>,
    /// 1 while the last load failed (the previous generation serves).
    pub plugin_reload_failing: Gauge,
    /// 1 for each plugin of the serving generation, with its digest.
    pub plugin_info: Family<PluginInfoLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<RouteLabels, Counter>::default();
        let request_seconds =
            Family::<RouteOnly, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let kube_seconds = Family::<KubeLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let plugin_seconds =
            Family::<PluginLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let plugin_failures = Family::<PluginFailureLabels, Counter>::default();
        let policy_denials = Family::<PluginLabels, Counter>::default();
        let pod_watch_events = Family::<OutcomeLabels, Counter>::default();
        let plugin_load_seconds = Family::default();
        let plugin_generation = Gauge::default();
        let plugin_reloads = Family::<ReloadLabels, Counter>::default();
        let plugin_reload_failing = Gauge::default();
        let plugin_info = Family::<PluginInfoLabels, Gauge>::default();
        registry.register(
            "plugin_reloads",
            "Plugin generation loads by trigger (start, configmap, sighup, api) and outcome",
            plugin_reloads.clone(),
        );
        registry.register(
            "plugin_reload_failing",
            "1 while the last plugin load failed and the previous generation serves",
            plugin_reload_failing.clone(),
        );
        registry.register(
            "plugin_info",
            "The serving generation's plugins, with version and digest",
            plugin_info.clone(),
        );
        registry.register(
            "plugin_load_seconds",
            "Seconds the last load of each plugin took, by source (compiled or cache)",
            plugin_load_seconds.clone(),
        );
        registry.register(
            "plugin_generation",
            "The plugin generation serving; 0 until the first load is in",
            plugin_generation.clone(),
        );
        registry.register(
            "http_requests",
            "API requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "API request latency by route",
            request_seconds.clone(),
        );
        registry.register(
            "kubernetes_call_duration_seconds",
            "Kubernetes API call latency",
            kube_seconds.clone(),
        );
        registry.register(
            "plugin_call_duration_seconds",
            "Policy plugin call latency (fresh instance included)",
            plugin_seconds.clone(),
        );
        registry.register(
            "plugin_failures",
            "Policy plugin failures by reason",
            plugin_failures.clone(),
        );
        registry.register(
            "policy_denials",
            "Requests denied by a policy plugin",
            policy_denials.clone(),
        );
        registry.register(
            "pod_watch_events",
            "Events of the shared session Pod watch: applied to the cache, or watch errors (retried with backoff)",
            pod_watch_events.clone(),
        );
        let plugin_queue_waiting = Gauge::default();
        let plugin_queue_wait_seconds = latency_histogram();
        let plugin_queue_rejections = Counter::default();
        registry.register(
            "plugin_queue_waiting",
            "Requests waiting for a free policy chain slot",
            plugin_queue_waiting.clone(),
        );
        registry.register(
            "plugin_queue_wait_seconds",
            "Time requests waited for a policy chain slot",
            plugin_queue_wait_seconds.clone(),
        );
        registry.register(
            "plugin_queue_rejections",
            "Requests answered overloaded: no chain slot freed within plugin_queue_timeout_ms",
            plugin_queue_rejections.clone(),
        );
        Metrics {
            plugin_queue_waiting,
            plugin_queue_wait_seconds,
            plugin_queue_rejections,
            registry,
            requests,
            request_seconds,
            kube_seconds,
            plugin_seconds,
            plugin_failures,
            policy_denials,
            pod_watch_events,
            plugin_load_seconds,
            plugin_generation,
            plugin_reloads,
            plugin_reload_failing,
            plugin_info,
        }
    }

    pub fn observe_kube(&self, call: &str, ok: bool, d: Duration) {
        self.kube_seconds
            .get_or_create(&KubeLabels {
                call: call.into(),
                outcome: if ok { "ok" } else { "error" }.into(),
            })
            .observe(d.as_secs_f64());
    }

    pub fn pod_watch_event(&self, ok: bool) {
        self.pod_watch_events
            .get_or_create(&OutcomeLabels {
                outcome: if ok { "applied" } else { "error" }.into(),
            })
            .inc();
    }

    pub fn observe_plugin(&self, plugin: &str, d: Duration) {
        self.plugin_seconds
            .get_or_create(&PluginLabels {
                plugin: plugin.into(),
            })
            .observe(d.as_secs_f64());
    }

    pub fn plugin_failed(&self, plugin: &str, reason: &str) {
        self.plugin_failures
            .get_or_create(&PluginFailureLabels {
                plugin: plugin.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Records a generation that went live: its number and how long each
    /// plugin took to load.
    pub fn plugins_loaded(&self, chain: &crate::plugin::Chain) {
        self.plugin_generation.set(chain.generation as i64);
        // Only the serving generation's plugins: one a reload dropped, or
        // the compiled series of one now loaded from the cache, would stay.
        self.plugin_load_seconds.clear();
        self.plugin_info.clear();
        for p in chain.summaries() {
            self.plugin_info
                .get_or_create(&PluginInfoLabels {
                    plugin: p.name.clone(),
                    version: p.plugin_version.clone(),
                    digest: p
                        .origin
                        .digest
                        .clone()
                        .unwrap_or_else(|| format!("sha256:{}", p.sha256)),
                })
                .set(1);
            self.plugin_load_seconds
                .get_or_create(&PluginLoadLabels {
                    plugin: p.name,
                    source: if p.from_cache { "cache" } else { "compiled" }.into(),
                })
                .set(p.load_ms / 1e3);
        }
    }

    /// Counts a load of a plugin generation and whether it failed.
    pub fn reload(&self, trigger: &str, ok: bool) {
        self.plugin_reloads
            .get_or_create(&ReloadLabels {
                trigger: trigger.into(),
                outcome: if ok { "loaded" } else { "failed" }.into(),
            })
            .inc();
        self.plugin_reload_failing.set(i64::from(!ok));
    }

    pub fn denied(&self, plugin: &str) {
        self.policy_denials
            .get_or_create(&PluginLabels {
                plugin: plugin.into(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
