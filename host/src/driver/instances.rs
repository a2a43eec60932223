//! Runtime instances, as Bay's GC and warm pool see them: listing session
//! Pods by label and force-removing one.

use std::collections::BTreeMap;

use kube::api::ListParams;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Driver, state};
use crate::error::{Error, Result};
use crate::labels;

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RuntimeInstance {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Lower-case phase, or `removing` while the Pod is terminating.
    pub state: String,
    pub created_at: Option<String>,
}

impl Driver {
    /// Pods matching ALL the labels. Errors are errors: an empty answer to a
    /// failed list would make Bay's GC delete cargos still in use.
    pub async fn list_runtime_instances(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<RuntimeInstance>> {
        if labels.is_empty() {
            return Err(Error::InvalidRequest(
                "labels must not be empty: listing every Pod is never what GC wants".into(),
            ));
        }
        let selector =
            labels::selector(labels).map_err(|e| Error::InvalidRequest(format!("labels: {e}")))?;
        let list = self
            .kube(
                "list_pods",
                self.pods().list(&ListParams::default().labels(&selector)),
            )
            .await?;
        Ok(list
            .items
            .into_iter()
            .map(|p| {
                let name = p.metadata.name.clone().unwrap_or_default();
                let state = state::instance_state(&p);
                RuntimeInstance {
                    id: name.clone(),
                    name,
                    labels: p.metadata.labels.clone().unwrap_or_default(),
                    state,
                    created_at: p
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.to_string()),
                }
            })
            .collect())
    }

    /// Force-deletes (grace 0); missing is success.
    pub async fn destroy_runtime_instance(&self, id: &str) -> Result<()> {
        self.delete_pod(id, Some(0), false).await
    }
}
