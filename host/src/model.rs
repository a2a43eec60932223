//! Bay's objects as Berth's API receives them: session, profile, cargo,
//! container specs. Field names are Bay's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The session being started (Bay's `Session`).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// Becomes the Pod name `<prefix>-session-<id>` and a label value.
    #[schema(
        pattern = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$",
        max_length = 63
    )]
    pub id: String,
    #[schema(pattern = "^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")]
    pub sandbox_id: String,
    /// The sandbox's owner (Bay keeps it on the sandbox and its cargo). Set as
    /// the `<prefix>.owner` label, which Bay's contract puts on every runtime
    /// instance; must be a valid label value.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")]
    pub owner: Option<String>,
}

/// Bay's `ResourceSpec`: `cpus` as a float, `memory` as "1g", "512m" or "1Gi".
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default = "default_cpus")]
    #[schema(exclusive_minimum = 0.0)]
    pub cpus: f64,
    #[serde(default = "default_memory")]
    #[schema(
        pattern = "^([1-9][0-9]*(\\.[0-9]+)?|0\\.[0-9]*[1-9][0-9]*)(k|K|kb|KB|m|M|mb|MB|g|G|gb|GB|t|T|Ki|Mi|Gi|Ti)?$"
    )]
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

/// Bay's `ProxyConfig`, with Bay's field names and defaults. Given on a
/// container it wins over the profile's; the first one found is used whole
/// (no field-by-field merge), as Bay resolves it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// Off unless set: an explicit `enabled: false` turns the proxy off for
    /// this container or profile even where a wider one is on.
    #[serde(default)]
    pub enabled: bool,
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    /// Appended, after a comma, to `default_no_proxy`.
    pub no_proxy: Option<String>,
    /// Bay's default no-proxy list; Bay's own default when absent.
    #[serde(default = "default_no_proxy")]
    pub default_no_proxy: String,
}

/// Bay's `ProxyConfig.default_no_proxy`: loopback, the private ranges,
/// link-local and the cluster's own names.
pub const DEFAULT_NO_PROXY: &str = "localhost,127.0.0.1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,*.local,.svc,.svc.cluster.local,.pod.cluster.local";

fn default_no_proxy() -> String {
    DEFAULT_NO_PROXY.into()
}

impl Proxy {
    /// The environment this proxy gives a container: nothing when disabled;
    /// otherwise each variable in upper and lower case, as Bay's drivers set
    /// them.
    pub fn env(&self) -> Vec<(String, String)> {
        if !self.enabled {
            return Vec::new();
        }
        let no_proxy = match self.no_proxy.as_deref() {
            Some(extra) if !extra.is_empty() => format!("{},{extra}", self.default_no_proxy),
            _ => self.default_no_proxy.clone(),
        };
        let mut out = Vec::new();
        for (name, value) in [
            ("HTTP_PROXY", self.http_proxy.clone()),
            ("HTTPS_PROXY", self.https_proxy.clone()),
            ("NO_PROXY", Some(no_proxy)),
        ] {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                out.push((name.to_string(), v.clone()));
                out.push((name.to_lowercase(), v));
            }
        }
        out
    }
}

/// One container of a session (Bay's container spec).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    #[schema(pattern = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    pub name: String,
    #[schema(pattern = "\\S")]
    pub image: String,
    #[serde(default = "default_runtime_type")]
    pub runtime_type: String,
    #[serde(
        default = "default_runtime_port",
        deserialize_with = "crate::numbers::port"
    )]
    #[schema(minimum = 1, maximum = 65535)]
    pub runtime_port: u16,
    #[serde(default)]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Capabilities Bay routes to this container first (Bay's `primary_for`).
    #[serde(default)]
    pub primary_for: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// This container's proxy; wins over the profile's when given.
    #[serde(default)]
    pub proxy: Option<Proxy>,
    #[serde(default)]
    pub health_check_path: Option<String>,
    /// Set by Berth on the primary container, chosen as Bay chooses it: the
    /// first container named `primary` or `ship`, else the first. Its port
    /// is the session's runtime port and `logs` reads it by default. Plugins
    /// see it in the container specs; callers do not send it.
    #[serde(
        default,
        skip_deserializing,
        skip_serializing_if = "std::ops::Not::not"
    )]
    #[schema(read_only)]
    pub primary: bool,
    /// A Kubernetes SecurityContext the profile asks for, passed through to
    /// the container for policy plugins to accept, harden or deny.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub security_context: Option<k8s_openapi::api::core::v1::SecurityContext>,
}

pub(crate) fn default_runtime_type() -> String {
    "ship".into()
}
fn default_runtime_port() -> u16 {
    8123
}

/// The image of a profile that names none, as in Bay.
pub const DEFAULT_IMAGE: &str = "ship:latest";

/// Bay's profile: either one image (single-container form) or `containers`,
/// which wins when both are given; with neither, one container runs
/// `ship:latest`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[schema(pattern = "^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")]
    pub id: String,
    #[serde(default)]
    #[schema(pattern = "\\S")]
    pub image: Option<String>,
    #[serde(default = "default_runtime_type")]
    pub runtime_type: String,
    #[serde(
        default = "default_runtime_port",
        deserialize_with = "crate::numbers::port"
    )]
    #[schema(minimum = 1, maximum = 65535)]
    pub runtime_port: u16,
    #[serde(default)]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The proxy of every container that has none of its own. A caller that
    /// has a global proxy (Bay's `settings.proxy`) sends it here when the
    /// profile has none.
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
        // As Bay's `ProfileConfig` does: `containers` wins over the legacy
        // single-image fields.
        if !self.containers.is_empty() {
            let mut specs = self.containers.clone();
            // Bay's rule (`ProfileConfig.get_primary_container`).
            let idx = specs
                .iter()
                .position(|c| c.name == "primary" || c.name == "ship")
                .unwrap_or(0);
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
        // Bay runs its default image when a profile names none.
        let image = self
            .image
            .clone()
            .unwrap_or_else(|| DEFAULT_IMAGE.to_string());
        Ok(vec![ContainerSpec {
            name: "ship".into(),
            image,
            runtime_type: self.runtime_type.clone(),
            runtime_port: self.runtime_port,
            resources: self.resources.clone(),
            capabilities: self.capabilities.clone(),
            primary_for: Vec::new(),
            env: self.env.clone(),
            proxy: None,
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
    #[schema(pattern = "^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")]
    pub id: String,
    /// The PVC name (Bay's `driver_ref`).
    #[schema(
        pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        max_length = 253
    )]
    pub driver_ref: String,
    /// The cargo's size in MiB. `create` grows a smaller claim to the size
    /// the policy chain gives this cargo (Bay's `create_volume` carries no
    /// size, so this is where Bay's size reaches Kubernetes).
    #[serde(
        default = "default_size_limit",
        deserialize_with = "crate::numbers::size_mb"
    )]
    #[schema(minimum = 1, maximum = 1073741824)]
    pub size_limit_mb: u64,
}

fn default_size_limit() -> u64 {
    1024
}

/// The body of `POST /v1/sessions` and `POST /v1/render/pod`: what Bay's
/// `create(session, profile, cargo, labels)` is given, plus the GC instance
/// id Bay's own driver reads from its settings.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    pub session: Session,
    pub profile: Profile,
    pub cargo: Cargo,
    /// Extra labels from the caller. Berth's own (`<prefix>.session_id`,
    /// `.sandbox_id`, `.cargo_id`, `.profile_id`, `.runtime_port`,
    /// `.managed`, and `.owner` / `.instance_id` when given as fields) win
    /// over these.
    #[serde(default)]
    #[schema(schema_with = crate::labels::label_map_schema)]
    pub labels: BTreeMap<String, String>,
    /// Bay's GC instance id (`settings.gc.get_instance_id()`): the
    /// `<prefix>.instance_id` label Bay's orphan-container GC lists by.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")]
    pub instance_id: Option<String>,
}

impl CreateSession {
    pub fn as_request(&self) -> crate::objects::SessionRequest<'_> {
        crate::objects::SessionRequest {
            session: &self.session,
            profile: &self.profile,
            cargo: &self.cargo,
            labels: &self.labels,
            instance_id: self.instance_id.as_deref(),
        }
    }
}
