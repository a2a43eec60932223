//! What the host and a plugin exchange, as the host's own types. Every WIT
//! version's bindings (`v0_1`, later `v0_2` beside it) convert to and from
//! these at the boundary, so the object builder, the driver and the harness
//! never depend on generated code.

use serde::{Deserialize, Serialize};

/// The session an object is shaped for: what Bay asked for, after Berth
/// validated it. Built by `objects::plan`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionContext {
    pub session_id: String,
    pub sandbox_id: String,
    pub cargo_id: String,
    pub profile_id: String,
    /// Namespace the object will be created in.
    pub namespace: String,
    /// Port of the primary container's runtime API.
    pub runtime_port: u16,
    /// The profile's container specs as Bay sent them: a JSON array of
    /// objects (name, image, runtime_type, runtime_port, resources,
    /// capabilities, env).
    pub containers: String,
    /// Size limit of the cargo workspace, MiB.
    pub cargo_size_limit_mb: u64,
    /// Labels Berth puts on the object (Berth's own and Bay's).
    pub labels: Vec<(String, String)>,
}

/// An object kind a plugin can shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Pod,
    Pvc,
}

/// The hooks a plugin declares; the host skips it for the others without
/// instantiating it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    pub pod: bool,
    pub pvc: bool,
}

impl Hooks {
    pub fn declares(self, hook: Hook) -> bool {
        match hook {
            Hook::Pod => self.pod,
            Hook::Pvc => self.pvc,
        }
    }

    /// The declared hooks, Pod first.
    pub fn list(self) -> Vec<Hook> {
        [Hook::Pod, Hook::Pvc]
            .into_iter()
            .filter(|h| self.declares(*h))
            .collect()
    }
}

/// What a plugin says about itself at load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    /// The plugin's own version (semver).
    pub version: String,
    pub hooks: Hooks,
}

/// Why a plugin did not return an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Policy says no; the message is shown to Bay's user.
    Deny(String),
    /// The plugin could not do its job: a plugin failure, not a decision.
    Error(String),
}
