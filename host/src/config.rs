//! Berth's one configuration struct: a YAML file, then `BERTH_*` environment
//! overrides, validated at start-up with errors that name the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plugin::PluginConfig;

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ImagePullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_k8s(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// What session Pods may reach.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EgressMode {
    /// DNS, and addresses outside the cluster's Pod and Service ranges.
    #[default]
    DnsAndExternal,
    /// DNS only.
    DnsOnly,
    /// No egress rule at all (everything allowed).
    Unrestricted,
}

/// The NetworkPolicy Berth keeps in force for its session Pods.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkPolicyConfig {
    pub enabled: bool,
    /// Pods (in Berth's namespace) allowed to reach runtime ports: Bay and
    /// Berth. Matched by these labels.
    pub ingress_from_pods: BTreeMap<String, String>,
    /// Namespaces (by labels) whose matching Pods may reach runtime ports;
    /// empty means only Berth's own namespace.
    pub ingress_from_namespaces: BTreeMap<String, String>,
    pub egress: EgressMode,
    /// CIDRs session Pods may never reach under `dns_and_external`: the
    /// cluster's Pod and Service ranges and the API server, link-local
    /// (the cloud's instance metadata at 169.254.169.254 hands out node
    /// credentials) and the shared address space cloud networks use.
    pub cluster_cidrs: Vec<String>,
}

impl Default for NetworkPolicyConfig {
    fn default() -> Self {
        NetworkPolicyConfig {
            enabled: true,
            ingress_from_pods: BTreeMap::from([("app.kubernetes.io/name".into(), "bay".into())]),
            ingress_from_namespaces: BTreeMap::new(),
            egress: EgressMode::DnsAndExternal,
            cluster_cidrs: vec![
                "10.0.0.0/8".into(),
                "172.16.0.0/12".into(),
                "192.168.0.0/16".into(),
                "169.254.0.0/16".into(),
                "100.64.0.0/10".into(),
            ],
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Bearer tokens accepted by the API.
    pub tokens: Vec<String>,
    /// File with one token per line (blank lines and `#` comments ignored).
    pub tokens_file: Option<PathBuf>,
    /// Namespace sessions and cargos live in.
    pub namespace: String,
    /// Kubeconfig to use; `None` means the environment's (KUBECONFIG,
    /// ~/.kube/config, or in-cluster).
    pub kubeconfig: Option<PathBuf>,
    pub storage_class: Option<String>,
    pub default_storage_size: String,
    pub image_pull_secrets: Vec<String>,
    pub image_pull_policy: ImagePullPolicy,
    /// How long `start` waits for a Pod to become Running with an IP.
    pub startup_timeout_s: u64,
    /// How long `start` keeps waiting for a Pod the scheduler finds no node
    /// for (`PodScheduled=False, Unschedulable`) before it fails with the
    /// scheduler's message. Covers transient messages (a claim created a
    /// moment ago "not found") and capacity that frees up or arrives within
    /// it. When the cluster autoscaler has reported `TriggeredScaleUp` for
    /// the Pod, `start` waits on to `startup_timeout_s` instead; after
    /// `NotTriggerScaleUp` it fails without waiting further. 0 fails at once.
    pub unschedulable_grace_s: u64,
    /// On SIGTERM: how long Berth lets in-flight requests finish, in seconds.
    /// A `start` or `destroy` still waiting 3 s before the end is answered
    /// 503 `shutting_down` (retry on another replica), then every connection
    /// is closed. Keep it below the Pod's `terminationGracePeriodSeconds`
    /// (`deploy/deployment.yaml`: 30).
    pub shutdown_grace_s: u64,
    /// How long `destroy` waits for a Pod to be gone.
    pub destroy_timeout_s: u64,
    /// Prefix of every label Berth sets (`bay` → `bay.session_id`).
    pub label_prefix: String,
    pub plugins: Vec<PluginConfig>,
    /// Take the plugin list from this ConfigMap (in `namespace`) instead
    /// of `plugins`, and load it again whenever it changes.
    pub plugins_configmap: Option<crate::plugins_configmap::PluginsConfigMap>,
    /// How plugins with an `oci://` reference are pulled.
    pub registry: crate::plugin::oci::RegistryConfig,
    /// Which signatures every OCI plugin needs (a plugin's own `signature`
    /// replaces this).
    pub plugin_signatures: crate::plugin::SignaturePolicy,
    /// Where compiled plugins are cached; default `~/.cache/berth/plugins`.
    pub plugin_cache_dir: Option<PathBuf>,
    /// Plugin instances that may run at once (pooling allocator slots).
    pub plugin_max_instances: u32,
    /// Policy chains that may run at once; `None` means one per CPU the
    /// process may use. More would only make calls fight for the CPU and miss
    /// their wall-clock deadlines. At most `plugin_max_instances`.
    pub plugin_concurrency: Option<u32>,
    /// How long a request waits for a free chain slot before it is answered
    /// 503 `overloaded` (with `Retry-After`). The wait does not count against
    /// any plugin's deadline.
    pub plugin_queue_timeout_ms: u64,
    /// Compile plugins in a child process of `berth serve` (the default), so
    /// the compiler's few hundred MB are returned when it exits; `false`
    /// compiles in the server, which keeps that memory.
    pub plugin_compile_in_child: bool,
    /// Time one run of the whole policy chain may take, in milliseconds;
    /// each plugin's deadline is cut to what is left of it.
    pub plugin_chain_budget_ms: u64,
    pub network_policy: NetworkPolicyConfig,
    /// The Pod Security Standards level every session Pod must meet after
    /// the policy chain (`none`, `baseline`, `restricted`); a violation is
    /// blamed on the plugin that introduced it. Bay's Ship image needs
    /// `baseline` unless the restricted plugin is configured.
    pub pod_security: crate::plugin::PodSecurity,
    pub log_format: LogFormat,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Directory relative plugin paths are resolved against (the config
    /// file's directory); not read from the file.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The `berth` binary that compiles plugins in a child process (see
    /// `RuntimeOptions::compiler`); set by `berth serve` to itself, not read
    /// from the file. `None`: compile in this process.
    #[serde(skip)]
    pub plugin_compiler: Option<PathBuf>,
}

impl Config {
    /// What the host holds every policy chain to under this config.
    pub fn guards(&self) -> crate::plugin::Guards {
        crate::plugin::Guards {
            label_prefix: self.label_prefix.clone(),
            trusted_peer_labels: self.network_policy.ingress_from_pods.clone(),
            pod_security: self.pod_security,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tokens: Vec::new(),
            tokens_file: None,
            namespace: "bay".into(),
            kubeconfig: None,
            storage_class: None,
            default_storage_size: "1Gi".into(),
            image_pull_secrets: Vec::new(),
            image_pull_policy: ImagePullPolicy::IfNotPresent,
            startup_timeout_s: 60,
            unschedulable_grace_s: 15,
            shutdown_grace_s: 25,
            destroy_timeout_s: 60,
            label_prefix: "bay".into(),
            plugins: Vec::new(),
            plugins_configmap: None,
            registry: Default::default(),
            plugin_signatures: Default::default(),
            plugin_cache_dir: None,
            plugin_max_instances: 64,
            plugin_concurrency: None,
            plugin_queue_timeout_ms: 2000,
            plugin_chain_budget_ms: 2000,
            plugin_compile_in_child: true,
            network_policy: NetworkPolicyConfig::default(),
            pod_security: crate::plugin::PodSecurity::Baseline,
            log_format: LogFormat::Text,
            max_body_bytes: 1 << 20,
            base_dir: PathBuf::from("."),
            plugin_compiler: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: String, message: String },
}

/// Top-level keys that can be overridden as `BERTH_<KEY>` (upper case).
/// Lists take comma-separated values.
const ENV_KEYS: &[&str] = &[
    "listen",
    "tokens",
    "tokens_file",
    "namespace",
    "kubeconfig",
    "storage_class",
    "default_storage_size",
    "image_pull_secrets",
    "image_pull_policy",
    "startup_timeout_s",
    "unschedulable_grace_s",
    "shutdown_grace_s",
    "destroy_timeout_s",
    "label_prefix",
    "plugin_cache_dir",
    "plugin_max_instances",
    "plugin_concurrency",
    "plugin_queue_timeout_ms",
    "plugin_chain_budget_ms",
    "plugin_compile_in_child",
    "pod_security",
    "log_format",
    "max_body_bytes",
];
const LIST_KEYS: &[&str] = &["tokens", "image_pull_secrets"];

impl Config {
    /// Chains that may run at once: `plugin_concurrency`, else one per CPU
    /// this process may use, never more than the instance pool holds.
    pub fn plugin_slots(&self) -> usize {
        let n = self
            .plugin_concurrency
            .map(|n| n as usize)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        n.clamp(1, self.plugin_max_instances as usize)
    }

    /// Loads `path` (or the defaults), applies the environment, validates.
    pub fn load(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (mut doc, source, base_dir) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                let doc: serde_yaml::Value = if text.trim().is_empty() {
                    serde_yaml::Value::Mapping(Default::default())
                } else {
                    serde_yaml::from_str(&text).map_err(|e| ConfigError::Parse {
                        path: p.display().to_string(),
                        message: e.to_string(),
                    })?
                };
                let base = p
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from("."));
                (doc, p.display().to_string(), base)
            }
            None => (
                serde_yaml::Value::Mapping(Default::default()),
                "(defaults)".to_string(),
                PathBuf::from("."),
            ),
        };
        let map = doc.as_mapping_mut().ok_or_else(|| ConfigError::Parse {
            path: source.clone(),
            message: "top level must be a mapping".into(),
        })?;
        for key in ENV_KEYS {
            let var = format!("BERTH_{}", key.to_uppercase());
            let Some(raw) = env(&var) else { continue };
            let value = if LIST_KEYS.contains(key) {
                serde_yaml::Value::Sequence(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| serde_yaml::Value::String(s.into()))
                        .collect(),
                )
            } else {
                // Scalars parse as YAML so numbers stay numbers; strings that
                // look like something else are still strings to serde below.
                serde_yaml::from_str::<serde_yaml::Value>(&raw)
                    .ok()
                    .filter(|v| !v.is_mapping() && !v.is_sequence())
                    .unwrap_or(serde_yaml::Value::String(raw.clone()))
            };
            map.insert(serde_yaml::Value::String((*key).into()), value);
        }
        // The path makes errors name the key even when it came from the
        // environment (serde_yaml's own messages carry only a position).
        let mut config: Config = serde_path_to_error::deserialize(doc).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Parse {
                path: source.clone(),
                message: format!("{key}: {}", e.inner()),
            }
        })?;
        config.base_dir = base_dir;
        if let Some(file) = &config.tokens_file {
            let file = if file.is_absolute() {
                file.clone()
            } else {
                config.base_dir.join(file)
            };
            let text = std::fs::read_to_string(&file).map_err(|e| ConfigError::Invalid {
                key: "tokens_file".into(),
                message: format!("cannot read {}: {e}", file.display()),
            })?;
            config.tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message,
            })
        };
        if let Some(t) = self.tokens.iter().find(|t| t.len() < 16) {
            return bad(
                "tokens",
                format!(
                    "a token of {} characters is too short; use at least 16",
                    t.len()
                ),
            );
        }
        if let Err(e) = crate::labels::validate_dns_label(&self.namespace) {
            return bad("namespace", e);
        }
        if let Err(e) = crate::labels::validate_label_prefix(&self.label_prefix) {
            return bad("label_prefix", e);
        }
        if crate::quantity::parse_bytes(&self.default_storage_size).is_none() {
            return bad(
                "default_storage_size",
                format!(
                    "{:?} is not a Kubernetes quantity",
                    self.default_storage_size
                ),
            );
        }
        for (i, s) in self.image_pull_secrets.iter().enumerate() {
            if let Err(e) = crate::labels::validate_dns_subdomain(s) {
                return bad(&format!("image_pull_secrets[{i}]"), e);
            }
        }
        if self.startup_timeout_s == 0 || self.startup_timeout_s > 3600 {
            return bad("startup_timeout_s", "must be within 1..=3600".into());
        }
        if self.unschedulable_grace_s > 3600 {
            return bad("unschedulable_grace_s", "must be within 0..=3600".into());
        }
        if !(4..=3600).contains(&self.shutdown_grace_s) {
            return bad("shutdown_grace_s", "must be within 4..=3600".into());
        }
        if self.destroy_timeout_s == 0 || self.destroy_timeout_s > 3600 {
            return bad("destroy_timeout_s", "must be within 1..=3600".into());
        }
        if self.plugin_max_instances == 0 || self.plugin_max_instances > 4096 {
            return bad("plugin_max_instances", "must be within 1..=4096".into());
        }
        if self.plugin_chain_budget_ms == 0 || self.plugin_chain_budget_ms > 60_000 {
            return bad("plugin_chain_budget_ms", "must be within 1..=60000".into());
        }
        if let Some(n) = self.plugin_concurrency
            && (n == 0 || n > self.plugin_max_instances)
        {
            return bad(
                "plugin_concurrency",
                format!(
                    "must be within 1..=plugin_max_instances ({})",
                    self.plugin_max_instances
                ),
            );
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes", "must be at least 1024".into());
        }
        for (i, p) in self.plugins.iter().enumerate() {
            if let Err(e) = p.validate(&format!("plugins[{i}]")) {
                return bad(&format!("plugins[{i}]"), e);
            }
        }
        if let Some(cm) = &self.plugins_configmap {
            if let Err(e) = crate::labels::validate_dns_subdomain(&cm.name) {
                return bad("plugins_configmap.name", e);
            }
            if !self.plugins.is_empty() {
                return bad(
                    "plugins",
                    "the plugin list comes from plugins_configmap; leave plugins empty".into(),
                );
            }
        }
        if let Err(e) = self.registry.validate() {
            return bad("registry", e);
        }
        if let Err(e) = self.plugin_signatures.validate("plugin_signatures") {
            return bad("plugin_signatures", e);
        }
        Ok(())
    }

    /// Where plugins come from under this config: relative files resolved
    /// against the config file, pulled artifacts kept in the plugin cache.
    pub fn sources(&self) -> crate::plugin::Sources {
        let resolve = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                self.base_dir.join(p)
            }
        };
        let mut registry = self.registry.clone();
        registry.auth_file = registry.auth_file.as_ref().map(resolve);
        registry.ca_file = registry.ca_file.as_ref().map(resolve);
        let mut signatures = self.plugin_signatures.clone();
        signatures.keys = signatures.keys.iter().map(resolve).collect();
        crate::plugin::Sources {
            registry,
            signatures,
            cache: Some(crate::plugin::oci::DigestCache::new(
                &self.plugin_cache_dir(),
            )),
        }
    }

    /// Berth never serves unauthenticated: with no token configured, one is
    /// generated and written (mode 0600) where the operator can read it.
    pub fn ensure_token(&mut self) -> Result<Option<PathBuf>, ConfigError> {
        if !self.tokens.is_empty() {
            return Ok(None);
        }
        let fail = |message: String| ConfigError::Invalid {
            key: "tokens".into(),
            message,
        };
        let mut bytes = [0u8; 24];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").map_err(|e| fail(e.to_string()))?,
            &mut bytes,
        )
        .map_err(|e| fail(e.to_string()))?;
        let token = hex::encode(bytes);
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let path = home.join(".config/berth/token");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::create_dir_all(path.parent().expect("has a parent"))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            writeln!(f, "{token}")
        };
        write().map_err(|e| {
            fail(format!(
                "no tokens configured and cannot write a generated one to {}: {e}",
                path.display()
            ))
        })?;
        self.tokens.push(token);
        Ok(Some(path))
    }

    pub fn plugin_cache_dir(&self) -> PathBuf {
        self.plugin_cache_dir.clone().unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            home.join(".cache/berth/plugins")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn environment_overrides_file_and_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(
            &f,
            "namespace: from-file\ntokens: [aaaaaaaaaaaaaaaaaaaa]\nstartup_timeout_s: 5\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&f),
            &env_of(&[
                ("BERTH_NAMESPACE", "from-env"),
                ("BERTH_STARTUP_TIMEOUT_S", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(c.namespace, "from-env");
        assert_eq!(c.startup_timeout_s, 7);
        assert_eq!(c.base_dir, dir.path());
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::load(
            None,
            &env_of(&[
                ("BERTH_TOKENS", "aaaaaaaaaaaaaaaaaaaa"),
                ("BERTH_NAMESPACE", "Not_Valid"),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("config key namespace:"), "{e}");
        let e = Config::load(None, &env_of(&[("BERTH_TOKENS", "short")])).unwrap_err();
        assert!(e.to_string().starts_with("config key tokens:"), "{e}");
        let e = Config::load(
            None,
            &env_of(&[
                ("BERTH_TOKENS", "aaaaaaaaaaaaaaaaaaaa"),
                ("BERTH_STARTUP_TIMEOUT_S", "soon"),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("startup_timeout_s"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "tokens: [aaaaaaaaaaaaaaaaaaaa]\nnamspace: typo\n").unwrap();
        let e = Config::load(Some(&f), &env_of(&[])).unwrap_err();
        assert!(e.to_string().contains("namspace"), "{e}");
    }
}
