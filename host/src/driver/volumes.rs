//! Cargo volumes: the PersistentVolumeClaim behind each of Bay's cargos,
//! and growing it to the cargo's size when a session starts on it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

use super::Driver;
use crate::error::{Error, Result};
use crate::labels;
use crate::objects::{self, SessionRequest};
use crate::plugin::Shaped;
use crate::quantity;

impl Driver {
    /// The exact PVC `create_volume` would submit, after all plugins.
    /// `size_mb` is the cargo's size; `None` means the configured default.
    pub async fn render_pvc(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        size_mb: Option<u64>,
    ) -> Result<Shaped<PersistentVolumeClaim>> {
        labels::validate_dns_subdomain(name)
            .map_err(|e| Error::InvalidRequest(format!("volume name: {e}")))?;
        labels::validate_labels(labels)
            .map_err(|e| Error::InvalidRequest(format!("labels: {e}")))?;
        let pvc = objects::cargo_pvc(&self.config, name, labels, size_mb);
        let size = size_mb.unwrap_or_else(|| objects::default_size_mb(&self.config));
        let ctx = objects::cargo_context(&self.config, name, labels, size);
        self.shape(ctx, pvc).await
    }

    /// Bay's `create_volume` carries no size; its cargo does. When the claim
    /// asks for less than the policy chain gives this cargo, ask Kubernetes
    /// to expand it. A claim Kubernetes cannot expand (its StorageClass has no
    /// `allowVolumeExpansion`, or it is not bound yet) keeps its size: the
    /// session still starts, and the refusal comes back as a warning.
    pub(super) async fn grow_cargo(
        &self,
        claim: &PersistentVolumeClaim,
        req: &SessionRequest<'_>,
    ) -> Result<Vec<String>> {
        let name = &req.cargo.driver_ref;
        let requested = |p: &PersistentVolumeClaim| {
            storage_request(p).and_then(|q| quantity::parse_bytes(&q.0))
        };
        let labels = claim.metadata.labels.clone().unwrap_or_default();
        let wanted = self
            .render_pvc(name, &labels, Some(req.cargo.size_limit_mb))
            .await?;
        let (Some(have), Some(want)) = (requested(claim), requested(&wanted.object)) else {
            return Ok(Vec::new());
        };
        if want <= have {
            return Ok(Vec::new());
        }
        let storage = storage_request(&wanted.object).cloned();
        // Kubernetes expands only bound claims. A claim made a moment ago
        // under an Immediate StorageClass binds within a second or two; one
        // under WaitForFirstConsumer binds only with its first Pod, and is
        // then expanded by the next session's `create`.
        if !bound(claim) {
            let deadline = Instant::now() + BIND_WAIT;
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = self.kube("get_pvc", self.pvcs().get_opt(name)).await?;
                if now.as_ref().is_some_and(bound) {
                    break;
                }
                if Instant::now() >= deadline {
                    let w = format!(
                        "cargo volume {name:?} is not bound yet, so it keeps its size, less than cargo {:?}'s {} MiB; it is expanded when a later session starts after it is bound",
                        req.cargo.id, req.cargo.size_limit_mb
                    );
                    tracing::warn!("{w}");
                    return Ok(vec![w]);
                }
            }
        }
        let patch = serde_json::json!({
            "spec": { "resources": { "requests": { "storage": storage } } }
        });
        match self
            .kube(
                "expand_pvc",
                self.pvcs()
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(pvc = %name, from = have, to = want, "cargo volume expanded to the cargo's size");
                Ok(Vec::new())
            }
            Err(kube::Error::Api(s)) if s.is_forbidden() || s.is_invalid() => {
                let w = format!(
                    "cargo volume {name:?} asks for {have} bytes, less than cargo {:?}'s {} MiB; Kubernetes refused to expand it: {}",
                    req.cargo.id, req.cargo.size_limit_mb, s.message
                );
                tracing::warn!("{w}");
                Ok(vec![w])
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        size_mb: Option<u64>,
    ) -> Result<String> {
        let shaped = self.render_pvc(name, labels, size_mb).await?;
        match self
            .kube(
                "create_pvc",
                self.pvcs().create(&PostParams::default(), &shaped.object),
            )
            .await
        {
            Ok(_) => Ok(name.to_string()),
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                // The same name still being deleted would vanish right
                // after this "success".
                match self.kube("get_pvc", self.pvcs().get_opt(name)).await? {
                    Some(p) if p.metadata.deletion_timestamp.is_some() => {
                        Err(Error::Conflict(format!(
                            "cargo volume {name:?} is still being deleted; retry once it is gone"
                        )))
                    }
                    // Someone else's claim must not become a sandbox's cargo.
                    Some(p) if !self.manages(&p.metadata) => Err(Error::Conflict(format!(
                        "a PersistentVolumeClaim named {name:?} exists that Berth does not manage; choose another name"
                    ))),
                    Some(_) => Ok(name.to_string()),
                    None => Err(Error::Conflict(format!(
                        "cargo volume {name:?} was deleted while being created; retry"
                    ))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_volume(&self, name: &str) -> Result<()> {
        labels::validate_dns_subdomain(name)
            .map_err(|e| Error::InvalidRequest(format!("volume name: {e}")))?;
        let Some(claim) = self.kube("get_pvc", self.pvcs().get_opt(name)).await? else {
            return Ok(());
        };
        if !self.manages(&claim.metadata) {
            return Err(self.not_managed("PersistentVolumeClaim", name));
        }
        // Exactly the claim read above: not one created under its name since.
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: claim.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.kube("delete_pvc", self.pvcs().delete(name, &dp)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn volume_exists(&self, name: &str) -> Result<bool> {
        labels::validate_dns_subdomain(name)
            .map_err(|e| Error::InvalidRequest(format!("volume name: {e}")))?;
        Ok(self
            .kube("get_pvc", self.pvcs().get_opt(name))
            .await?
            .is_some())
    }
}

/// How long `create` waits for a just-made cargo claim to bind before it
/// gives up growing it for this session.
const BIND_WAIT: Duration = Duration::from_secs(5);

/// The storage a claim asks for.
fn storage_request(
    claim: &PersistentVolumeClaim,
) -> Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
}

fn bound(claim: &PersistentVolumeClaim) -> bool {
    claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}
