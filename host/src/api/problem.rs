//! The one place errors become HTTP: RFC 9457 problem details with a stable
//! machine-readable `code`.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, KUBERNETES_ADMISSION, KubeFailure};

/// The media type of every error answer (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The stable, machine-readable kinds of error; `Problem::code` is one.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    InvalidRequest,
    Unauthorized,
    NotFound,
    Conflict,
    DeniedByPolicy,
    PluginFailed,
    StartFailed,
    Timeout,
    Overloaded,
    ShuttingDown,
    KubernetesUnavailable,
    Internal,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// URI of the problem type: `urn:berth:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The kind of error; stable across releases.
    #[schema(value_type = ProblemCode)]
    pub code: String,
    /// The plugin that denied or failed, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Kubernetes' reason, for start_failed (e.g. ErrImagePull, Unschedulable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Problem {
        Problem {
            type_: format!("urn:berth:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.into(),
            plugin: None,
            reason: None,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, Json(self)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(PROBLEM_JSON),
        );
        resp
    }
}

impl From<&Error> for Problem {
    fn from(e: &Error) -> Problem {
        let detail = e.to_string();
        match e {
            Error::InvalidRequest(_) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", detail)
            }
            Error::NotFound(_) => Problem::new(StatusCode::NOT_FOUND, "not_found", detail),
            Error::Conflict(_) => Problem::new(StatusCode::CONFLICT, "conflict", detail),
            Error::DeniedByPolicy { plugin, .. } => Problem {
                plugin: Some(plugin.clone()),
                ..Problem::new(StatusCode::FORBIDDEN, "denied_by_policy", detail)
            },
            Error::PluginFailed(p) => Problem {
                plugin: p.plugin().map(String::from),
                ..Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "plugin_failed", detail)
            },
            Error::StartFailed { reason, .. } => Problem {
                reason: Some(reason.clone()),
                ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "start_failed", detail)
            },
            Error::Timeout(_) => Problem::new(StatusCode::GATEWAY_TIMEOUT, "timeout", detail),
            Error::Overloaded(_) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", detail)
            }
            Error::ShuttingDown(_) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", detail)
            }
            Error::KubernetesUnavailable(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "kubernetes_unavailable",
                detail,
            ),
            Error::Kube(e) => match KubeFailure::of(e) {
                KubeFailure::NotFound => Problem::new(StatusCode::NOT_FOUND, "not_found", detail),
                KubeFailure::Conflict => Problem::new(StatusCode::CONFLICT, "conflict", detail),
                KubeFailure::Invalid => {
                    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", detail)
                }
                KubeFailure::Forbidden => Problem {
                    plugin: Some(KUBERNETES_ADMISSION.into()),
                    ..Problem::new(StatusCode::FORBIDDEN, "denied_by_policy", detail)
                },
                KubeFailure::Unavailable => Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "kubernetes_unavailable",
                    detail,
                ),
                KubeFailure::Other => {
                    Problem::new(StatusCode::BAD_GATEWAY, "kubernetes_unavailable", detail)
                }
            },
            Error::Internal(_) => {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
            }
        }
    }
}

/// Seconds a client should wait before it retries an `overloaded` request.
const RETRY_AFTER_S: &str = "1";

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = Problem::from(&self);
        if matches!(self, Error::Overloaded(_) | Error::ShuttingDown(_)) {
            // Backpressure and a drain are the system working, not failing.
            tracing::warn!(code = %problem.code, "{}", problem.detail);
            let mut resp = problem.into_response();
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(RETRY_AFTER_S),
            );
            return resp;
        }
        if problem.status >= 500 {
            tracing::error!(code = %problem.code, "{}", problem.detail);
        } else {
            tracing::info!(code = %problem.code, "{}", problem.detail);
        }
        problem.into_response()
    }
}
