//! Berth's HTTP API: one JSON endpoint per driver primitive, `render`,
//! plugin administration, health, metrics and the OpenAPI document.

mod auth;
mod handlers;
pub mod openapi;
pub mod problem;
pub mod types;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::driver::Driver;
use crate::metrics::{Metrics, RouteLabels, RouteOnly};
pub use problem::Problem;

pub struct AppState {
    pub driver: Driver,
    pub metrics: Arc<Metrics>,
    pub tokens: Vec<String>,
    /// Where `POST /v1/plugins/reload` reads the plugin list from.
    pub config_path: Option<std::path::PathBuf>,
    /// The list last read from the plugin ConfigMap, when Berth takes its
    /// plugins from one (`plugins_configmap`).
    pub configmap_plugins: std::sync::RwLock<Option<Vec<crate::plugin::PluginConfig>>>,
    /// What became of the ConfigMap's latest version.
    pub configmap_status: std::sync::RwLock<Option<crate::plugins_configmap::ConfigMapStatus>>,
}

impl AppState {
    pub fn new(
        driver: Driver,
        metrics: Arc<Metrics>,
        tokens: Vec<String>,
        config_path: Option<std::path::PathBuf>,
    ) -> AppState {
        AppState {
            driver,
            metrics,
            tokens,
            config_path,
            configmap_plugins: Default::default(),
            configmap_status: Default::default(),
        }
    }

    /// The plugin list a reload (SIGHUP, `POST /v1/plugins/reload`) loads:
    /// the ConfigMap's latest when Berth watches one, else the config
    /// file's, read again. The file's `registry` and `plugin_signatures`
    /// are read again too and apply from this load on.
    pub fn desired_plugins(&self) -> Result<Vec<crate::plugin::PluginConfig>, String> {
        let file = match &self.config_path {
            Some(p) => Some(
                crate::config::Config::load(Some(p), &|k| std::env::var(k).ok())
                    .map_err(|e| format!("cannot reload: {e}"))?,
            ),
            None => None,
        };
        if let Some(config) = &file {
            self.driver.policy().set_sources(config.sources());
        }
        if self.driver.config().plugins_configmap.is_some() {
            return self
                .configmap_plugins
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .ok_or_else(|| "the plugin ConfigMap has not been read yet".to_string());
        }
        Ok(match file {
            Some(config) => config.plugins,
            None => self.driver.config().plugins.clone(),
        })
    }

    pub fn set_configmap_plugins(&self, plugins: Vec<crate::plugin::PluginConfig>) {
        *self
            .configmap_plugins
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(plugins);
    }

    pub fn set_configmap_status(&self, status: crate::plugins_configmap::ConfigMapStatus) {
        *self
            .configmap_status
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(status);
    }
}

pub type Shared = Arc<AppState>;

/// JSON body extractor whose rejections (syntax, missing fields, wrong
/// types, oversized bodies, wrong content type) are problem documents.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => {
                let status = rejection.status();
                let detail = rejection.body_text();
                // Too large and wrong media type keep their status; every
                // other rejection is a malformed request.
                let status = match status {
                    StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE => status,
                    _ => StatusCode::BAD_REQUEST,
                };
                Err(Problem::new(status, "invalid_request", detail))
            }
        }
    }
}

/// Query-string extractor whose rejections are problem documents (400).
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                rejection.body_text(),
            )),
        }
    }
}

pub fn router(state: Shared, config: &Config) -> Router {
    let api = Router::new()
        .route("/v1/sessions", post(handlers::create_session))
        .route("/v1/sessions/{id}", delete(handlers::destroy_session))
        .route("/v1/sessions/{id}/start", post(handlers::start_session))
        .route("/v1/sessions/{id}/stop", post(handlers::stop_session))
        .route("/v1/sessions/{id}/status", get(handlers::session_status))
        .route("/v1/sessions/{id}/logs", get(handlers::session_logs))
        .route("/v1/multi-sessions", post(handlers::create_multi))
        .route("/v1/multi-sessions/start", post(handlers::start_multi))
        .route("/v1/multi-sessions/stop", post(handlers::stop_multi))
        .route("/v1/multi-sessions/destroy", post(handlers::destroy_multi))
        .route("/v1/volumes", post(handlers::create_volume))
        .route(
            "/v1/volumes/{name}",
            get(handlers::volume_exists).delete(handlers::delete_volume),
        )
        .route(
            "/v1/runtime-instances/list",
            post(handlers::list_runtime_instances),
        )
        .route(
            "/v1/runtime-instances/{id}",
            delete(handlers::destroy_runtime_instance),
        )
        .route(
            "/v1/session-networks",
            post(handlers::create_session_network),
        )
        .route(
            "/v1/session-networks/{name}",
            delete(handlers::remove_session_network),
        )
        .route("/v1/render/pod", post(handlers::render_pod))
        .route("/v1/render/pvc", post(handlers::render_pvc))
        .route("/v1/plugins", get(handlers::plugins))
        .route("/v1/plugins/reload", post(handlers::reload_plugins))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(openapi::serve))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .merge(api)
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A span and metrics for every request.
async fn observe(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let span = tracing::info_span!("request", %method, %route);
    let started = Instant::now();
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    span.in_scope(|| tracing::debug!(status, ms = elapsed.as_secs_f64() * 1e3, "request done"));
    state
        .metrics
        .requests
        .get_or_create(&RouteLabels {
            method,
            route: route.clone(),
            status,
        })
        .inc();
    state
        .metrics
        .request_seconds
        .get_or_create(&RouteOnly { route })
        .observe(elapsed.as_secs_f64());
    resp.into_response()
}
