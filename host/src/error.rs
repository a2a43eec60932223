//! Berth's error type. Every failure a caller can see is one of these; the
//! HTTP mapping (status, problem code) lives in `api::problem`.

use crate::plugin::{PluginError, PolicyError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("denied by policy plugin {plugin:?}: {message}")]
    DeniedByPolicy { plugin: String, message: String },
    #[error(transparent)]
    PluginFailed(PluginError),
    /// The Pod cannot become ready; `reason` is Kubernetes' word for why.
    #[error("session {pod} cannot start: {reason}: {message}")]
    StartFailed {
        pod: String,
        reason: String,
        message: String,
    },
    #[error("{0}")]
    Timeout(String),
    /// Every policy chain slot stayed busy for the whole queue timeout:
    /// backpressure, not any plugin's fault. Retry after a moment.
    #[error("{0}")]
    Overloaded(String),
    /// Berth is shutting down and cut a wait short: retry on another
    /// replica.
    #[error("{0}")]
    ShuttingDown(String),
    #[error("Kubernetes API unavailable: {0}")]
    KubernetesUnavailable(String),
    /// The API server answered with an error Berth did not expect.
    #[error("Kubernetes API error: {0}")]
    Kubernetes(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<PolicyError> for Error {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Denied { plugin, message } => Error::DeniedByPolicy { plugin, message },
            PolicyError::Plugin(p) => Error::PluginFailed(p),
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        match &e {
            kube::Error::Api(status) => match status.code {
                404 => Error::NotFound(status.message.clone()),
                409 => Error::Conflict(status.message.clone()),
                400 | 422 => {
                    Error::InvalidRequest(format!("rejected by the API server: {}", status.message))
                }
                // PodSecurity admission and RBAC both answer 403; the message
                // says which, and Bay's user needs it verbatim.
                403 => Error::DeniedByPolicy {
                    plugin: "kubernetes-admission".into(),
                    message: status.message.clone(),
                },
                429 | 500..=599 => Error::KubernetesUnavailable(status.message.clone()),
                _ => Error::Kubernetes(status.message.clone()),
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => {
                Error::KubernetesUnavailable(e.to_string())
            }
            _ => Error::Kubernetes(e.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
