//! Multi-container sessions: one Pod with a container per profile entry
//! (sidecars), all mounting the cargo. Bay hands its own records back to
//! start, stop and destroy; only the Pod name in them matters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::state::{self, SessionStatus};
use super::{Driver, endpoint, validate_id};
use crate::error::{Error, Result};
use crate::labels;
use crate::objects::SessionRequest;

/// A container of a multi-container session as a caller hands it back.
/// Bay rebuilds these from its database with `name`, `container_id`,
/// `runtime_type` and `capabilities` only; `container_id` (the Pod) is all
/// that stop and destroy need.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MultiContainerRef {
    #[schema(pattern = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// The session's Pod name, the same for every container.
    #[schema(
        pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        max_length = 253
    )]
    pub container_id: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub status: Option<SessionStatus>,
    #[serde(default = "crate::model::default_runtime_type")]
    pub runtime_type: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The container's port; the Pod's declared port for it when absent.
    #[serde(default, deserialize_with = "crate::numbers::opt_port")]
    #[schema(minimum = 1, maximum = 65535)]
    pub runtime_port: Option<u16>,
}

/// One container of a multi-container session (Bay's MultiContainerInfo).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MultiContainerInfo {
    pub name: String,
    pub container_id: String,
    pub endpoint: Option<String>,
    pub status: SessionStatus,
    pub runtime_type: String,
    pub capabilities: Vec<String>,
    pub runtime_port: u16,
}

impl Driver {
    pub async fn create_multi(&self, req: &SessionRequest<'_>) -> Result<Vec<MultiContainerInfo>> {
        let specs = req
            .profile
            .container_specs()
            .map_err(Error::InvalidRequest)?;
        let created = self.create(req).await?;
        Ok(specs
            .into_iter()
            .map(|c| MultiContainerInfo {
                name: c.name,
                container_id: created.container_id.clone(),
                endpoint: None,
                status: SessionStatus::Created,
                runtime_type: c.runtime_type,
                capabilities: c.capabilities,
                runtime_port: c.runtime_port,
            })
            .collect())
    }

    /// Waits for the one Pod; each container's endpoint is the Pod IP and
    /// that container's port (the one given, else the port the Pod declares
    /// for the container of that name).
    pub async fn start_multi(
        &self,
        containers: Vec<MultiContainerRef>,
    ) -> Result<Vec<MultiContainerInfo>> {
        let mut pods = BTreeMap::new();
        for id in multi_pods(&containers)? {
            let pod = self.wait_running(&id).await?;
            pods.insert(id, pod);
        }
        containers
            .into_iter()
            .map(|c| {
                let pod = &pods[&c.container_id];
                let declared = pod
                    .spec
                    .iter()
                    .flat_map(|s| &s.containers)
                    .find(|k| k.name == c.name)
                    .and_then(|k| k.ports.as_ref()?.first())
                    .and_then(|p| u16::try_from(p.container_port).ok());
                let Some(port) = c.runtime_port.or(declared) else {
                    return Err(Error::InvalidRequest(format!(
                        "container {:?} is not in session {} and has no runtime_port",
                        c.name, c.container_id
                    )));
                };
                let status = match state::container_states(pod)
                    .iter()
                    .find(|s| s.name == c.name)
                {
                    Some(s) if s.state == "running" => SessionStatus::Running,
                    Some(s) if s.state == "terminated" => SessionStatus::Exited,
                    _ => SessionStatus::Created,
                };
                Ok(MultiContainerInfo {
                    endpoint: Some(endpoint(pod, port)),
                    status,
                    name: c.name,
                    container_id: c.container_id,
                    runtime_type: c.runtime_type,
                    capabilities: c.capabilities,
                    runtime_port: port,
                })
            })
            .collect()
    }

    /// Stops a multi-container session: its one Pod.
    pub async fn stop_multi(&self, containers: &[MultiContainerRef]) -> Result<()> {
        for id in multi_pods(containers)? {
            self.stop(&id).await?;
        }
        Ok(())
    }

    /// Destroys a multi-container session: its one Pod.
    pub async fn destroy_multi(&self, containers: &[MultiContainerRef]) -> Result<()> {
        for id in multi_pods(containers)? {
            self.destroy(&id).await?;
        }
        Ok(())
    }
}

/// The Pods a list of containers belongs to, each once, in order: one for
/// a multi-container session (every entry carries the session's Pod).
fn multi_pods(containers: &[MultiContainerRef]) -> Result<Vec<String>> {
    if containers.is_empty() {
        return Err(Error::InvalidRequest("containers must not be empty".into()));
    }
    let mut pods: Vec<String> = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        labels::validate_dns_label(&c.name)
            .map_err(|e| Error::InvalidRequest(format!("containers[{i}].name: {e}")))?;
        validate_id(&c.container_id)?;
        if !pods.contains(&c.container_id) {
            pods.push(c.container_id.clone());
        }
    }
    Ok(pods)
}
