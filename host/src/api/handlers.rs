//! One handler per primitive. Handlers translate between HTTP and the
//! driver; they hold no logic of their own.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;

use super::types::*;
use super::{ApiJson, ApiQuery, Problem, Shared};
use crate::error::{Error, Result};
use crate::objects::SessionRequest;

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

#[utoipa::path(post, path = "/v1/sessions/{id}/stop", params(("id" = String, Path)), responses((status = 204), (status = 404, body = Problem, description = "exists but is not managed by Berth")), security(("bearer" = [])))]
pub async fn stop_session(State(s): State<Shared>, Path(id): Path<String>) -> Result<StatusCode> {
    s.driver.stop(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/sessions/{id}", params(("id" = String, Path)),
    responses((status = 204, description = "gone (or never existed)"), (status = 404, body = Problem, description = "exists but is not managed by Berth"), (status = 504, body = Problem)), security(("bearer" = [])))]
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
    responses((status = 200, body = LogsResponse), (status = 404, body = Problem, description = "the session has no container of that name")), security(("bearer" = [])))]
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

#[utoipa::path(delete, path = "/v1/volumes/{name}", params(("name" = String, Path)), responses((status = 204), (status = 404, body = Problem, description = "exists but is not managed by Berth")), security(("bearer" = [])))]
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

#[utoipa::path(delete, path = "/v1/runtime-instances/{id}", params(("id" = String, Path)), responses((status = 204), (status = 404, body = Problem, description = "exists but is not managed by Berth")), security(("bearer" = [])))]
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
        configmap: s
            .configmap_status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    }
}

#[utoipa::path(get, path = "/v1/plugins", responses((status = 200, body = PluginsResponse)), security(("bearer" = [])))]
pub async fn plugins(State(s): State<Shared>) -> Json<PluginsResponse> {
    Json(plugins_response(&s))
}

#[utoipa::path(post, path = "/v1/plugins/reload",
    responses((status = 200, body = PluginsResponse), (status = 500, body = Problem)), security(("bearer" = [])))]
pub async fn reload_plugins(State(s): State<Shared>) -> Result<Json<PluginsResponse>> {
    let plugins = s.desired_plugins().map_err(Error::InvalidRequest)?;
    s.driver.reload_plugins(plugins, "api").await?;
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

/// Ready when the plugins are loaded, the API server answers within
/// `READYZ_DEADLINE` and the session isolation NetworkPolicy is applied; a
/// 503 names what is missing (e.g. the plugin being compiled).
pub async fn readyz(State(s): State<Shared>) -> Result<&'static str> {
    let checks = async {
        s.driver.plugins_ready()?;
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

/// Below the probe's `timeoutSeconds` in `deploy/deployment.yaml` (3 s), so the
/// kubelet gets Berth's answer rather than its own timeout.
const READYZ_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);
