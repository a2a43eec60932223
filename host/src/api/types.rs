//! Every request and response body of Berth's HTTP API in one place: the
//! ones only the API uses are defined here, the ones the driver returns are
//! re-exported from it. The OpenAPI document is generated from these.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use crate::driver::state::{ContainerState, SessionStatus};
pub use crate::driver::{
    Created, MultiContainerInfo, MultiContainerRef, RuntimeInstance, StatusInfo,
};
pub use crate::model::{Cargo, CreateSession, Profile, Session};
use crate::plugin::StepDiff;
use crate::plugin::chain::PluginSummary;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMultiRequest {
    pub session: Session,
    pub profile: Profile,
    pub cargo: Cargo,
    /// Bay's session network; meaningless on Kubernetes (containers of one
    /// Pod share localhost) and accepted for compatibility.
    #[serde(default)]
    pub network_name: Option<String>,
    #[serde(default)]
    #[schema(schema_with = crate::labels::label_map_schema)]
    pub labels: BTreeMap<String, String>,
    /// Bay's GC instance id, as in `POST /v1/sessions`.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")]
    pub instance_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    #[serde(default = "default_port", deserialize_with = "crate::numbers::port")]
    #[schema(minimum = 1, maximum = 65535)]
    pub runtime_port: u16,
}

fn default_port() -> u16 {
    8123
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StartResponse {
    /// `http://<podIP>:<runtime_port>`
    pub endpoint: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// The runtime's port, for the endpoint of a running session.
    #[param(minimum = 1, maximum = 65535)]
    pub runtime_port: Option<u16>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Number of lines from the end (default 100).
    #[param(minimum = 1, maximum = 100000)]
    pub tail: Option<i64>,
    /// Container name; the primary container by default.
    #[param(pattern = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    pub container: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogsResponse {
    pub logs: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MultiRequest {
    /// What `create_multi` (or `start_multi`) returned, or Bay's own record of
    /// it: only `name` and `container_id` are required.
    #[schema(min_items = 1)]
    pub containers: Vec<MultiContainerRef>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeRequest {
    /// PVC name (Bay's cargo `driver_ref`).
    #[schema(
        pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        max_length = 253
    )]
    pub name: String,
    #[serde(default)]
    #[schema(schema_with = crate::labels::label_map_schema)]
    pub labels: BTreeMap<String, String>,
    /// The cargo's size in MiB: the claim asks for this much (before
    /// plugins). Absent, the claim gets the configured
    /// `default_storage_size`, as Bay's driver gives it.
    #[serde(default, deserialize_with = "crate::numbers::opt_size_mb")]
    #[schema(minimum = 1, maximum = 1073741824)]
    pub size_limit_mb: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VolumeResponse {
    pub volume: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExistsResponse {
    pub exists: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    /// Every label must match; at least one.
    #[schema(schema_with = crate::labels::label_selector_schema)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionNetworkRequest {
    #[schema(pattern = "^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")]
    pub session_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionNetworkResponse {
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RenderResponse {
    /// The object exactly as it would be submitted.
    #[schema(value_type = Object)]
    pub object: serde_json::Value,
    /// What each plugin changed, in order.
    pub steps: Vec<StepDiff>,
    pub generation: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginsResponse {
    pub generation: u64,
    pub plugins: Vec<PluginSummary>,
    /// The last failed reload, if the current generation is older than it.
    pub last_reload_error: Option<String>,
    /// The watched plugin ConfigMap and what became of its latest version
    /// (only with `plugins_configmap`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configmap: Option<crate::plugins_configmap::ConfigMapStatus>,
}
