//! Policy plugins: configuration, the ordered chain, the checks the host
//! makes after every plugin, and hot reload of the whole chain.

pub mod chain;
pub mod context;
pub mod guard;
pub mod identity;
pub mod oci;
pub mod runtime;
pub mod signature;
pub mod source;
pub mod v0_1;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use chain::{
    Chain, FetchedPlugins, PolicyEngine, Shapeable, Shaped, Step, StepDiff, StepResult, run_steps,
};
pub use context::{Hook, Hooks, PluginInfo, Rejection, SessionContext};
pub use guard::{Guards, PodSecurity, Rule, Scope};
pub use runtime::{Limits, Runtime, RuntimeOptions};
pub use source::{Origin, SignaturePolicy, Sources};

/// One plugin in the operator's configuration.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Name used in errors, logs, diffs and metrics.
    pub name: String,
    /// Path of the `.wasm` component (relative paths: to the config file).
    /// Exactly one of `path` and `reference`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub path: Option<PathBuf>,
    /// The component as an OCI artifact: `oci://HOST/REPO:TAG` (resolved
    /// at every load; `/v1/plugins` shows the digest) or
    /// `oci://HOST/REPO@sha256:HEX` (loads from the digest cache with the
    /// registry away).
    #[serde(default)]
    pub reference: Option<String>,
    /// Which signatures this OCI plugin needs, instead of
    /// `plugin_signatures`.
    #[serde(default)]
    pub signature: Option<SignaturePolicy>,
    /// Hex sha256 the component must have; loading fails on a mismatch.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The plugin's settings document, validated by the plugin at load.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// Position in the chain (lower first); equal values keep file order.
    #[serde(default)]
    pub order: i32,
    /// Profile ids this plugin applies to; empty means all.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Namespaces this plugin applies to; empty means all.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Per-call deadline in milliseconds.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Per-call linear memory cap in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Largest object the plugin may return, in KiB.
    #[serde(default = "default_max_output_kb")]
    pub max_output_kb: u64,
    /// Guarded fields this plugin may change anyway, by rule name
    /// (`service-account`, `node-name`, `finalizers`, `owner-references`,
    /// `volume-sources`, `claim-source`, `trusted-peer-labels`). Empty: none.
    #[serde(default)]
    pub allow: Vec<Rule>,
    /// JSON pointer prefixes (e.g. `/spec/affinity`; a `*` segment matches
    /// any one, as in `/spec/containers/*/resources`) every change of this
    /// plugin must fall under. Absent: anywhere the guarded fields allow.
    #[serde(default)]
    pub mutation_scope: Option<Vec<String>>,
}

fn default_deadline_ms() -> u64 {
    100
}
fn default_memory_mb() -> u64 {
    64
}
fn default_max_output_kb() -> u64 {
    1024
}

impl PluginConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            deadline: Duration::from_millis(self.deadline_ms),
            memory_bytes: (self.memory_mb as usize) << 20,
            max_output_bytes: (self.max_output_kb as usize) << 10,
        }
    }

    pub fn validate(&self, key: &str) -> Result<(), String> {
        if self.name.is_empty() {
            return Err(format!("{key}.name must not be empty"));
        }
        match (&self.path, &self.reference) {
            (Some(_), Some(_)) => {
                return Err(format!("{key} names both a path and a reference; keep one"));
            }
            (None, None) => return Err(format!("{key} needs a path or a reference")),
            (None, Some(r)) => {
                oci::parse_reference(r).map_err(|e| format!("{key}.reference: {e}"))?;
                if !r.starts_with(oci::SCHEME) {
                    return Err(format!("{key}.reference must start with {}", oci::SCHEME));
                }
            }
            (Some(_), None) => {
                if self.signature.is_some() {
                    return Err(format!(
                        "{key}.signature applies to OCI plugins (a file is pinned with sha256)"
                    ));
                }
            }
        }
        if let Some(s) = &self.signature {
            s.validate(&format!("{key}.signature"))?;
        }
        if self.deadline_ms == 0 || self.deadline_ms > 10_000 {
            return Err(format!(
                "{key}.deadline_ms must be within 1..=10000, got {}",
                self.deadline_ms
            ));
        }
        if self.memory_mb == 0 || self.memory_mb > 1024 {
            return Err(format!(
                "{key}.memory_mb must be within 1..=1024, got {}",
                self.memory_mb
            ));
        }
        if self.max_output_kb == 0 || self.max_output_kb > 16 * 1024 {
            return Err(format!(
                "{key}.max_output_kb must be within 1..=16384, got {}",
                self.max_output_kb
            ));
        }
        if let Some(h) = &self.sha256
            && (h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(format!("{key}.sha256 must be 64 hex digits"));
        }
        if let Some(scope) = &self.mutation_scope {
            Scope::validate(scope).map_err(|e| format!("{key}.{e}"))?;
        }
        Ok(())
    }

    /// What this entry may change.
    pub fn scope(&self) -> Scope {
        Scope {
            allow: self.allow.clone(),
            mutation_scope: self.mutation_scope.clone(),
        }
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LoadErrorKind {
    #[error("cannot read the component: {0}")]
    Read(String),
    /// The OCI artifact could not be resolved, verified or pulled.
    #[error("{reference}: {error}")]
    Fetch {
        reference: String,
        #[source]
        error: oci::FetchError,
    },
    #[error("sha256 mismatch: configured {expected}, file has {actual}")]
    HashMismatch { expected: String, actual: String },
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    /// Compiling failed for a reason that is not the component's (the
    /// compiling process could not start, was killed, ran out of memory).
    #[error("could not be compiled: {0}")]
    Compiler(String),
    #[error("built for WIT berth:policy@{found}; this host supports berth:policy@{supported}")]
    WitVersion { found: String, supported: String },
    #[error("does not export {expected} (exports: {found:?}); was it built with berth-plugin-sdk?")]
    MissingExport {
        expected: String,
        found: Vec<String>,
    },
    #[error("cannot be linked (it imports something the host does not provide): {0}")]
    Link(String),
    /// A policy function's type differs from the WIT version it exports.
    #[error("was built from a different berth:policy WIT than it claims: {0}")]
    Signature(String),
    #[error(
        "needs {needs_mib} MiB of linear memory before it runs; its memory_mb is {limit_mib} (raise memory_mb, or shrink the plugin's static data)"
    )]
    InitialMemory { needs_mib: u64, limit_mib: u64 },
}

/// A plugin failure. Every variant names the plugin.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {plugin:?} failed to load: {kind}")]
    Load { plugin: String, kind: LoadErrorKind },
    #[error("plugin {plugin:?} rejected its settings: {message}")]
    Settings { plugin: String, message: String },
    #[error("plugin {plugin:?} trapped: {message}")]
    Trap { plugin: String, message: String },
    #[error("plugin {plugin:?} exceeded its deadline of {deadline:?}")]
    Timeout { plugin: String, deadline: Duration },
    /// The chain as a whole ran out of time while (or before) this plugin ran.
    #[error("the policy chain used up its budget of {budget:?} at plugin {plugin:?}")]
    ChainBudget { plugin: String, budget: Duration },
    #[error("plugin {plugin:?} exceeded its memory limit of {limit} bytes")]
    MemoryExceeded { plugin: String, limit: usize },
    /// The plugin held more host resources (WASI handles) than a call may.
    #[error("plugin {plugin:?} held more host resources (WASI handles) at once than a call may")]
    TooManyHandles { plugin: String },
    /// The caller went away, so the call was stopped. Nobody sees this as an
    /// answer; it is counted.
    #[error("plugin {plugin:?} was stopped: its caller went away")]
    Cancelled { plugin: String },
    #[error("plugin {plugin:?} returned {size} bytes, over its limit of {limit}")]
    OutputTooLarge {
        plugin: String,
        size: usize,
        limit: usize,
    },
    #[error("plugin {plugin:?} returned an invalid {kind}: {message}")]
    InvalidOutput {
        plugin: String,
        kind: &'static str,
        message: String,
    },
    #[error("plugin {plugin:?} changed {field}, which only Berth may set")]
    IdentityViolation { plugin: String, field: String },
    /// A guarded field changed without the entry's `allow` lifting the rule.
    #[error(
        "plugin {plugin:?} changed {path}, guarded by rule {rule:?} (lift it for this plugin with allow: [{rule}])"
    )]
    Guarded {
        plugin: String,
        rule: &'static str,
        path: String,
    },
    #[error("plugin {plugin:?} changed {path}, outside its mutation_scope")]
    OutOfScope { plugin: String, path: String },
    /// The chain's output broke the configured Pod Security level here.
    #[error("plugin {plugin:?} made the Pod violate Pod Security {level}: {message}")]
    Posture {
        plugin: String,
        level: &'static str,
        message: String,
    },
    #[error("plugin {plugin:?} reported an error: {message}")]
    Reported { plugin: String, message: String },
    #[error("plugin configuration: {0}")]
    Config(String),
    #[error("plugin engine: {0}")]
    Engine(String),
}

impl PluginError {
    /// The plugin the error is about, if any (for metrics and problem details).
    pub fn plugin(&self) -> Option<&str> {
        match self {
            PluginError::Load { plugin, .. }
            | PluginError::Settings { plugin, .. }
            | PluginError::Trap { plugin, .. }
            | PluginError::Timeout { plugin, .. }
            | PluginError::ChainBudget { plugin, .. }
            | PluginError::MemoryExceeded { plugin, .. }
            | PluginError::TooManyHandles { plugin }
            | PluginError::Cancelled { plugin }
            | PluginError::OutputTooLarge { plugin, .. }
            | PluginError::InvalidOutput { plugin, .. }
            | PluginError::IdentityViolation { plugin, .. }
            | PluginError::Guarded { plugin, .. }
            | PluginError::OutOfScope { plugin, .. }
            | PluginError::Posture { plugin, .. }
            | PluginError::Reported { plugin, .. } => Some(plugin),
            PluginError::Config(_) | PluginError::Engine(_) => None,
        }
    }

    /// A short stable word for the kind of failure (metrics label).
    pub fn reason(&self) -> &'static str {
        match self {
            PluginError::Load { .. } => "load",
            PluginError::Settings { .. } => "settings",
            PluginError::Trap { .. } => "trap",
            PluginError::Timeout { .. } => "timeout",
            PluginError::ChainBudget { .. } => "chain_budget",
            PluginError::MemoryExceeded { .. } => "memory",
            PluginError::TooManyHandles { .. } => "handles",
            PluginError::Cancelled { .. } => "cancelled",
            PluginError::OutputTooLarge { .. } => "output_too_large",
            PluginError::InvalidOutput { .. } => "invalid_output",
            PluginError::IdentityViolation { .. } => "identity",
            PluginError::Guarded { .. } => "guarded_field",
            PluginError::OutOfScope { .. } => "out_of_scope",
            PluginError::Posture { .. } => "posture",
            PluginError::Reported { .. } => "reported",
            PluginError::Config(_) => "config",
            PluginError::Engine(_) => "engine",
        }
    }
}

/// The outcome of running the chain on one object, when it is not a success.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    #[error("denied by policy plugin {plugin:?}: {message}")]
    Denied { plugin: String, message: String },
    #[error(transparent)]
    Plugin(#[from] PluginError),
}
