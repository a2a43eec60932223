//! Bay's objects as Berth's API receives them: session, profile, cargo,
//! container specs. Field names are Bay's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The session being started (Bay's `Session`).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Session {
    pub id: String,
    pub sandbox_id: String,
}

/// Bay's `ResourceSpec`: `cpus` as a float, `memory` as "1g", "512m" or "1Gi".
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    #[serde(default = "default_memory")]
    pub memory: String,
}

fn default_cpus() -> f64 {
    1.0
}
fn default_memory() -> String {
    "1g".into()
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpus: default_cpus(),
            memory: default_memory(),
        }
    }
}

/// Proxy settings resolved by Bay for the profile.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    pub http: Option<String>,
    pub https: Option<String>,
    pub no_proxy: Option<String>,
}

/// One container of a session (Bay's container spec).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    #[serde(default = "default_runtime_type")]
    pub runtime_type: String,
    #[serde(default = "default_runtime_port")]
    pub runtime_port: u16,
    #[serde(default)]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub health_check_path: Option<String>,
    /// The container whose port is the session's runtime port and whose logs
    /// `logs` returns; the first one when none is marked.
    #[serde(default)]
    pub primary: bool,
    /// A Kubernetes SecurityContext the profile asks for, passed through to
    /// the container for policy plugins to accept, harden or deny.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub security_context: Option<k8s_openapi::api::core::v1::SecurityContext>,
}

fn default_runtime_type() -> String {
    "ship".into()
}
fn default_runtime_port() -> u16 {
    8123
}

/// Bay's profile: either one image (single-container form) or `containers`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub id: String,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default = "default_runtime_type")]
    pub runtime_type: String,
    #[serde(default = "default_runtime_port")]
    pub runtime_port: u16,
    #[serde(default)]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub proxy: Option<Proxy>,
    #[serde(default)]
    pub containers: Vec<ContainerSpec>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub security_context: Option<k8s_openapi::api::core::v1::SecurityContext>,
}

impl Profile {
    /// The profile's containers in one form, primary first. The single-image
    /// form becomes one container named `ship`, as Bay's driver names it.
    pub fn container_specs(&self) -> Result<Vec<ContainerSpec>, String> {
        if !self.containers.is_empty() {
            if self.image.is_some() {
                return Err("profile: give either image or containers, not both".into());
            }
            let mut specs = self.containers.clone();
            let primaries = specs.iter().filter(|c| c.primary).count();
            if primaries > 1 {
                return Err("profile.containers: more than one container is marked primary".into());
            }
            let idx = specs.iter().position(|c| c.primary).unwrap_or(0);
            let primary = specs.remove(idx);
            specs.insert(
                0,
                ContainerSpec {
                    primary: true,
                    ..primary
                },
            );
            return Ok(specs);
        }
        let image = self
            .image
            .clone()
            .ok_or_else(|| "profile: image (or containers) is required".to_string())?;
        Ok(vec![ContainerSpec {
            name: "ship".into(),
            image,
            runtime_type: self.runtime_type.clone(),
            runtime_port: self.runtime_port,
            resources: self.resources.clone(),
            capabilities: self.capabilities.clone(),
            env: self.env.clone(),
            health_check_path: None,
            primary: true,
            security_context: self.security_context.clone(),
        }])
    }
}

/// Bay's cargo: the workspace volume of a sandbox.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cargo {
    pub id: String,
    /// The PVC name (Bay's `driver_ref`).
    pub driver_ref: String,
    #[serde(default = "default_size_limit")]
    pub size_limit_mb: u64,
}

fn default_size_limit() -> u64 {
    1024
}
