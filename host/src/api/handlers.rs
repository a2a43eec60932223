//! One handler per primitive. Handlers translate between HTTP and the
//! driver; they hold no logic of their own.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiJson, ApiQuery, Problem, Shared};
use crate::driver::{Created, MultiContainerInfo, MultiContainerRef, RuntimeInstance, StatusInfo};
use crate::error::{Error, Result};
use crate::model::{Cargo, CreateSession, Profile, Session};
use crate::objects::SessionRequest;
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
        pattern = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$",
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
}

#[utoipa::path(post, path = "/v1/sessions", request_body = CreateSession,
    responses((status = 201, body = Created, description = "created"), (status = 200, body = Created, description = "a live Pod of the same session already existed and was adopted"),
        (status = 403, body = Problem), (status = 404, body = Problem, description = "the cargo volume does not exist"), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create_session(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<CreateSession>,
) -> Result<impl IntoResponse> {
    let created = s.driver.create(&r.as_request()).await?;
    let status = if created.adopted {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(created)))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/start", request_body = StartRequest, params(("id" = String, Path)),
    responses((status = 200, body = StartResponse), (status = 404, body = Problem), (status = 422, body = Problem), (status = 504, body = Problem)),
    security(("bearer" = [])))]
pub async fn start_session(
    State(s): State<Shared>,
    Path(id): Path<String>,
    ApiJson(r): ApiJson<StartRequest>,
) -> Result<Json<StartResponse>> {
    let endpoint = s.driver.start(&id, r.runtime_port).await?;
    Ok(Json(StartResponse { endpoint }))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/stop", params(("id" = String, Path)), responses((status = 204)), security(("bearer" = [])))]
pub async fn stop_session(State(s): State<Shared>, Path(id): Path<String>) -> Result<StatusCode> {
    s.driver.stop(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/sessions/{id}", params(("id" = String, Path)),
    responses((status = 204, description = "gone (or never existed)"), (status = 504, body = Problem)), security(("bearer" = [])))]
pub async fn destroy_session(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    s.driver.destroy(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/sessions/{id}/status", params(("id" = String, Path), StatusQuery),
    responses((status = 200, body = StatusInfo)), security(("bearer" = [])))]
pub async fn session_status(
    State(s): State<Shared>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<StatusQuery>,
) -> Result<Json<StatusInfo>> {
    Ok(Json(s.driver.status(&id, q.runtime_port).await?))
}

#[utoipa::path(get, path = "/v1/sessions/{id}/logs", params(("id" = String, Path), LogsQuery),
    responses((status = 200, body = LogsResponse)), security(("bearer" = [])))]
pub async fn session_logs(
    State(s): State<Shared>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Json<LogsResponse>> {
    let logs = s
        .driver
        .logs(&id, q.tail.unwrap_or(100), q.container)
        .await?;
    Ok(Json(LogsResponse { logs }))
}

#[utoipa::path(post, path = "/v1/multi-sessions", request_body = CreateMultiRequest,
    responses((status = 201, body = Vec<MultiContainerInfo>), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn create_multi(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<CreateMultiRequest>,
) -> Result<impl IntoResponse> {
    tracing::debug!(network = ?r.network_name, "session networks are no-ops on Kubernetes");
    let req = SessionRequest {
        session: &r.session,
        profile: &r.profile,
        cargo: &r.cargo,
        labels: &r.labels,
        instance_id: r.instance_id.as_deref(),
    };
    let infos = s.driver.create_multi(&req).await?;
    Ok((StatusCode::CREATED, Json(infos)))
}

#[utoipa::path(post, path = "/v1/multi-sessions/start", request_body = MultiRequest,
    responses((status = 200, body = Vec<MultiContainerInfo>)), security(("bearer" = [])))]
pub async fn start_multi(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<MultiRequest>,
) -> Result<Json<Vec<MultiContainerInfo>>> {
    Ok(Json(s.driver.start_multi(r.containers).await?))
}

#[utoipa::path(post, path = "/v1/multi-sessions/stop", request_body = MultiRequest, responses((status = 204)), security(("bearer" = [])))]
pub async fn stop_multi(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<MultiRequest>,
) -> Result<StatusCode> {
    s.driver.stop_multi(&r.containers).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/multi-sessions/destroy", request_body = MultiRequest, responses((status = 204)), security(("bearer" = [])))]
pub async fn destroy_multi(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<MultiRequest>,
) -> Result<StatusCode> {
    s.driver.destroy_multi(&r.containers).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/volumes", request_body = VolumeRequest,
    responses((status = 201, body = VolumeResponse), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn create_volume(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<VolumeRequest>,
) -> Result<impl IntoResponse> {
    let volume = s
        .driver
        .create_volume(&r.name, &r.labels, r.size_limit_mb)
        .await?;
    Ok((StatusCode::CREATED, Json(VolumeResponse { volume })))
}

#[utoipa::path(delete, path = "/v1/volumes/{name}", params(("name" = String, Path)), responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_volume(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    s.driver.delete_volume(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/volumes/{name}", params(("name" = String, Path)),
    responses((status = 200, body = ExistsResponse, description = "the volume exists"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "no such volume")),
    security(("bearer" = [])))]
pub async fn volume_exists(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<ExistsResponse>> {
    if s.driver.volume_exists(&name).await? {
        Ok(Json(ExistsResponse { exists: true }))
    } else {
        Err(Error::NotFound(format!("volume {name} does not exist")))
    }
}

#[utoipa::path(post, path = "/v1/runtime-instances/list", request_body = ListRequest,
    responses((status = 200, body = Vec<RuntimeInstance>)), security(("bearer" = [])))]
pub async fn list_runtime_instances(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<ListRequest>,
) -> Result<Json<Vec<RuntimeInstance>>> {
    Ok(Json(s.driver.list_runtime_instances(&r.labels).await?))
}

#[utoipa::path(delete, path = "/v1/runtime-instances/{id}", params(("id" = String, Path)), responses((status = 204)), security(("bearer" = [])))]
pub async fn destroy_runtime_instance(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    s.driver.destroy_runtime_instance(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/session-networks", request_body = SessionNetworkRequest,
    responses((status = 200, body = SessionNetworkResponse)), security(("bearer" = [])))]
pub async fn create_session_network(
    ApiJson(r): ApiJson<SessionNetworkRequest>,
) -> Result<Json<SessionNetworkResponse>> {
    // Containers of one Pod share localhost: nothing to create.
    if r.session_id.is_empty() {
        return Err(Error::InvalidRequest("session_id must not be empty".into()));
    }
    crate::labels::validate_label_value(&r.session_id)
        .map_err(|e| Error::InvalidRequest(format!("session_id: {e}")))?;
    Ok(Json(SessionNetworkResponse {
        name: format!("session-{}", r.session_id),
    }))
}

#[utoipa::path(delete, path = "/v1/session-networks/{name}", params(("name" = String, Path)), responses((status = 204)), security(("bearer" = [])))]
pub async fn remove_session_network(Path(name): Path<String>) -> Result<StatusCode> {
    crate::labels::validate_dns_subdomain(&name)
        .map_err(|e| Error::InvalidRequest(format!("network name: {e}")))?;
    Ok(StatusCode::NO_CONTENT)
}

fn render_response<T: Serialize>(
    shaped: crate::plugin::Shaped<T>,
    generation: u64,
) -> Result<Json<RenderResponse>> {
    let object =
        serde_json::to_value(&shaped.object).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Json(RenderResponse {
        object,
        steps: shaped.diffs(),
        generation,
    }))
}

#[utoipa::path(post, path = "/v1/render/pod", request_body = CreateSession,
    responses((status = 200, body = RenderResponse), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn render_pod(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<CreateSession>,
) -> Result<Json<RenderResponse>> {
    let generation = s.driver.policy().chain().generation;
    render_response(s.driver.render_pod(&r.as_request()).await?, generation)
}

#[utoipa::path(post, path = "/v1/render/pvc", request_body = VolumeRequest,
    responses((status = 200, body = RenderResponse), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn render_pvc(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<VolumeRequest>,
) -> Result<Json<RenderResponse>> {
    let generation = s.driver.policy().chain().generation;
    render_response(
        s.driver
            .render_pvc(&r.name, &r.labels, r.size_limit_mb)
            .await?,
        generation,
    )
}

fn plugins_response(s: &Shared) -> PluginsResponse {
    let chain = s.driver.policy().chain();
    PluginsResponse {
        generation: chain.generation,
        plugins: chain.summaries(),
        last_reload_error: s.driver.policy().last_error(),
    }
}

#[utoipa::path(get, path = "/v1/plugins", responses((status = 200, body = PluginsResponse)), security(("bearer" = [])))]
pub async fn plugins(State(s): State<Shared>) -> Json<PluginsResponse> {
    Json(plugins_response(&s))
}

#[utoipa::path(post, path = "/v1/plugins/reload",
    responses((status = 200, body = PluginsResponse), (status = 500, body = Problem)), security(("bearer" = [])))]
pub async fn reload_plugins(State(s): State<Shared>) -> Result<Json<PluginsResponse>> {
    let path = s.config_path.clone();
    let plugins = match &path {
        Some(p) => {
            crate::config::Config::load(Some(p), &|k| std::env::var(k).ok())
                .map_err(|e| Error::InvalidRequest(format!("cannot reload: {e}")))?
                .plugins
        }
        None => s.driver.config().plugins.clone(),
    };
    let base = s.driver.config().base_dir.clone();
    let policy = s.driver.policy().clone();
    tokio::task::spawn_blocking(move || policy.reload(&plugins, &base))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(Error::PluginFailed)?;
    Ok(Json(plugins_response(&s)))
}

pub async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the API server answers.
/// Ready when the API server answers within `READYZ_DEADLINE` and the
/// session isolation NetworkPolicy is applied; a 503 names what is missing.
pub async fn readyz(State(s): State<Shared>) -> Result<&'static str> {
    let checks = async {
        s.driver.ping().await?;
        s.driver.ensure_isolation().await
    };
    match tokio::time::timeout(READYZ_DEADLINE, checks).await {
        Ok(r) => r.map(|()| "ready"),
        Err(_) => Err(Error::KubernetesUnavailable(format!(
            "the API server did not answer within {} ms",
            READYZ_DEADLINE.as_millis()
        ))),
    }
}

/// Below the probe's `timeoutSeconds` in `deploy/berth.yaml` (3 s), so the
/// kubelet gets Berth's answer rather than its own timeout.
const READYZ_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);
