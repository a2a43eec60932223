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
    /// Every policy chain slot stayed busy for the whole queue timeout, or
    /// the plugins are still loading: backpressure, not any plugin's fault.
    /// Retry after a moment.
    #[error("{0}")]
    Overloaded(String),
    /// Berth is shutting down and cut a wait short: retry on another
    /// replica.
    #[error("{0}")]
    ShuttingDown(String),
    #[error("Kubernetes API unavailable: {0}")]
    KubernetesUnavailable(String),
    /// A Kubernetes API call failed; the cause is kept. `api::problem` maps
    /// it by what the API server answered (`KubeFailure`).
    #[error("{}", describe_kube(.0))]
    Kube(#[from] kube::Error),
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

/// What a failed Kubernetes call means for Berth's caller, read from the
/// API server's answer (or its absence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeFailure {
    NotFound,
    /// Already exists, or changed under us.
    Conflict,
    /// 400 or 422: the object was refused as invalid.
    Invalid,
    /// 403: PodSecurity admission or RBAC; the message says which, and
    /// Bay's user needs it verbatim.
    Forbidden,
    /// 429, 5xx, or no answer at all (connect, TLS, timeout).
    Unavailable,
    /// Anything else the API server said.
    Other,
}

impl KubeFailure {
    pub fn of(e: &kube::Error) -> KubeFailure {
        match e {
            kube::Error::Api(s) if s.is_not_found() => KubeFailure::NotFound,
            kube::Error::Api(s) if s.is_already_exists() || s.is_conflict() => {
                KubeFailure::Conflict
            }
            kube::Error::Api(s) if s.is_invalid() || s.code == 400 => KubeFailure::Invalid,
            kube::Error::Api(s) if s.is_forbidden() => KubeFailure::Forbidden,
            kube::Error::Api(s) if s.code == 429 || s.code >= 500 => KubeFailure::Unavailable,
            kube::Error::Api(_) => KubeFailure::Other,
            kube::Error::HyperError(_) | kube::Error::Service(_) => KubeFailure::Unavailable,
            _ => KubeFailure::Other,
        }
    }
}

/// The caller-facing message of a failed Kubernetes call.
fn describe_kube(e: &kube::Error) -> String {
    let said = match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    };
    match KubeFailure::of(e) {
        KubeFailure::NotFound | KubeFailure::Conflict => said,
        KubeFailure::Invalid => format!("rejected by the API server: {said}"),
        KubeFailure::Forbidden => {
            format!("denied by policy plugin \"{KUBERNETES_ADMISSION}\": {said}")
        }
        KubeFailure::Unavailable => format!("Kubernetes API unavailable: {said}"),
        KubeFailure::Other => format!("Kubernetes API error: {said}"),
    }
}

/// The name a Kubernetes refusal (403) is reported under, as if it were a
/// plugin: admission is policy too.
pub const KUBERNETES_ADMISSION: &str = "kubernetes-admission";

pub type Result<T, E = Error> = std::result::Result<T, E>;
