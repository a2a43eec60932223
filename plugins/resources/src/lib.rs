//! Defaults and bounds for container resources (cpu, memory,
//! ephemeral-storage) and for cargo PVCs (storage class, size from the
//! cargo's size limit, clamped or denied against policy bounds).

use std::collections::BTreeMap;

use berth_plugin_sdk::k8s_openapi::api::core::v1::ResourceRequirements;
use berth_plugin_sdk::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use berth_plugin_sdk::{
    Context, Hooks, PersistentVolumeClaim, Pod, Policy, Rejection, deny, export_policy,
};
use serde::Deserialize;

pub mod quantity;
use quantity::{format_bytes, format_cpu, parse};

pub const RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// What happens to a value outside the bounds.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnExceed {
    /// Lower it to the maximum (raise it to the minimum).
    #[default]
    Clamp,
    /// Deny the session with a message naming the value and the bound.
    Deny,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bounds {
    /// Resource name → quantity.
    pub default_requests: BTreeMap<String, String>,
    pub default_limits: BTreeMap<String, String>,
    pub min: BTreeMap<String, String>,
    pub max: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PvcPolicy {
    pub storage_class: Option<String>,
    /// Smallest and largest claim, e.g. "1Gi" and "50Gi".
    pub min_size: Option<String>,
    pub max_size: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    #[serde(flatten)]
    pub bounds: Bounds,
    pub on_exceed: OnExceed,
    pub pvc: PvcPolicy,
}

pub struct Resources;

fn value(resource: &str, q: &str) -> Result<f64, String> {
    parse(q).map_err(|e| format!("{resource}: {e}"))
}

fn render(resource: &str, v: f64) -> Quantity {
    Quantity(if resource == "cpu" {
        format_cpu(v)
    } else {
        format_bytes(v)
    })
}

fn check_map(name: &str, m: &BTreeMap<String, String>) -> Result<(), String> {
    for (r, q) in m {
        if !RESOURCES.contains(&r.as_str()) {
            return Err(format!(
                "{name}: unknown resource {r:?} (expected one of cpu, memory, ephemeral-storage)"
            ));
        }
        value(r, q).map_err(|e| format!("{name}.{e}"))?;
    }
    Ok(())
}

fn shape_resources(
    s: &Settings,
    who: &str,
    res: &mut ResourceRequirements,
) -> Result<(), Rejection> {
    let b = &s.bounds;
    let requests = res.requests.get_or_insert_default();
    for (r, q) in &b.default_requests {
        requests
            .entry(r.clone())
            .or_insert_with(|| Quantity(q.clone()));
    }
    let limits = res.limits.get_or_insert_default();
    for (r, q) in &b.default_limits {
        limits
            .entry(r.clone())
            .or_insert_with(|| Quantity(q.clone()));
    }
    for (kind, map) in [
        ("request", res.requests.as_mut()),
        ("limit", res.limits.as_mut()),
    ] {
        let Some(map) = map else { continue };
        for (r, q) in map.iter_mut() {
            let v = value(r, &q.0).map_err(|e| Rejection::Error(format!("{who} {kind} {e}")))?;
            if let Some(max) = b.max.get(r) {
                let m = value(r, max).map_err(Rejection::Error)?;
                if v > m {
                    match s.on_exceed {
                        OnExceed::Deny => {
                            return Err(deny(format!(
                                "{who} asks for {r} {kind} {}, above the maximum {max}",
                                q.0
                            )));
                        }
                        OnExceed::Clamp => *q = render(r, m),
                    }
                }
            }
            if let Some(min) = b.min.get(r) {
                let m = value(r, min).map_err(Rejection::Error)?;
                if v < m {
                    *q = render(r, m);
                }
            }
        }
    }
    // A request above its limit is invalid: after clamping the limit, bring
    // the request down with it.
    if let (Some(req), Some(lim)) = (res.requests.as_mut(), res.limits.as_ref()) {
        for (r, q) in req.iter_mut() {
            if let Some(l) = lim.get(r) {
                let (rv, lv) = (
                    value(r, &q.0).map_err(Rejection::Error)?,
                    value(r, &l.0).map_err(Rejection::Error)?,
                );
                if rv > lv {
                    *q = l.clone();
                }
            }
        }
    }
    if res.requests.as_ref().is_some_and(|m| m.is_empty()) {
        res.requests = None;
    }
    if res.limits.as_ref().is_some_and(|m| m.is_empty()) {
        res.limits = None;
    }
    Ok(())
}

impl Policy for Resources {
    type Settings = Settings;
    const NAME: &'static str = "resources";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: Hooks = Hooks::BOTH;

    fn validate(s: &Settings) -> Result<(), String> {
        check_map("default_requests", &s.bounds.default_requests)?;
        check_map("default_limits", &s.bounds.default_limits)?;
        check_map("min", &s.bounds.min)?;
        check_map("max", &s.bounds.max)?;
        for (r, min) in &s.bounds.min {
            if let Some(max) = s.bounds.max.get(r)
                && value(r, min)? > value(r, max)?
            {
                return Err(format!("min.{r} ({min}) is above max.{r} ({max})"));
            }
        }
        for (name, q) in [
            ("pvc.min_size", &s.pvc.min_size),
            ("pvc.max_size", &s.pvc.max_size),
        ] {
            if let Some(q) = q {
                parse(q).map_err(|e| format!("{name}: {e}"))?;
            }
        }
        Ok(())
    }

    fn shape_pod(s: &Settings, _ctx: &Context, pod: &mut Pod) -> Result<(), Rejection> {
        let spec = pod
            .spec
            .as_mut()
            .ok_or_else(|| Rejection::Error("Pod has no spec".into()))?;
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            let who = format!("container {:?}", c.name);
            shape_resources(s, &who, c.resources.get_or_insert_default())?;
        }
        Ok(())
    }

    fn shape_pvc(
        s: &Settings,
        ctx: &Context,
        pvc: &mut PersistentVolumeClaim,
    ) -> Result<(), Rejection> {
        let spec = pvc
            .spec
            .as_mut()
            .ok_or_else(|| Rejection::Error("PVC has no spec".into()))?;
        if let Some(class) = &s.pvc.storage_class {
            spec.storage_class_name = Some(class.clone());
        }
        let requests = spec
            .resources
            .get_or_insert_default()
            .requests
            .get_or_insert_default();
        // The cargo's size limit is what Bay promised the user; the claim must
        // hold at least that much.
        let asked = (ctx.cargo_size_limit_mb as f64) * 1024.0 * 1024.0;
        let current = match requests.get("storage") {
            Some(q) => {
                parse(&q.0).map_err(|e| Rejection::Error(format!("storage request: {e}")))?
            }
            None => 0.0,
        };
        let mut size = current.max(asked);
        if let Some(min) = &s.pvc.min_size {
            size = size.max(parse(min).map_err(Rejection::Error)?);
        }
        if let Some(max) = &s.pvc.max_size {
            let m = parse(max).map_err(Rejection::Error)?;
            if size > m {
                match s.on_exceed {
                    OnExceed::Deny => {
                        return Err(deny(format!(
                            "cargo {:?} needs {} of storage, above the maximum claim size {max}",
                            ctx.cargo_id,
                            format_bytes(size)
                        )));
                    }
                    OnExceed::Clamp => size = m,
                }
            }
        }
        if size > 0.0 {
            requests.insert("storage".into(), Quantity(format_bytes(size)));
        }
        Ok(())
    }
}

export_policy!(Resources);
