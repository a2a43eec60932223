//! Write a Berth policy plugin over typed Kubernetes objects.
//!
//! ```
//! use berth_plugin_sdk::{export_policy, Context, Hooks, Pod, Policy, Rejection};
//!
//! #[derive(Default, serde::Deserialize)]
//! struct Settings { team: String }
//!
//! struct Label;
//! impl Policy for Label {
//!     type Settings = Settings;
//!     const NAME: &'static str = "label";
//!     const VERSION: &'static str = "0.1.0";
//!     const HOOKS: Hooks = Hooks::POD;
//!     fn shape_pod(s: &Settings, _ctx: &Context, pod: &mut Pod) -> Result<(), Rejection> {
//!         pod.metadata.labels.get_or_insert_default().insert("team".into(), s.team.clone());
//!         Ok(())
//!     }
//! }
//! export_policy!(Label);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`; the `.wasm` in
//! `target/wasm32-wasip2/release/` is the plugin. The same crate also builds
//! natively, so policies can be unit-tested with plain `cargo test`.

use std::collections::BTreeMap;

pub use k8s_openapi;
pub use k8s_openapi::api::core::v1::{Container, PersistentVolumeClaim, Pod};
use serde::de::DeserializeOwned;
pub use serde_json;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/v0.1.0",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "berth_plugin_sdk::bindings",
    });
}

use bindings::exports::berth::policy::policy as wit;

/// Which objects a plugin shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hooks {
    pub pod: bool,
    pub pvc: bool,
}

impl Hooks {
    pub const POD: Hooks = Hooks {
        pod: true,
        pvc: false,
    };
    pub const PVC: Hooks = Hooks {
        pod: false,
        pvc: true,
    };
    pub const BOTH: Hooks = Hooks {
        pod: true,
        pvc: true,
    };
}

/// The session a Pod or PVC is built for, as Bay asked for it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Context {
    pub session_id: String,
    pub sandbox_id: String,
    pub cargo_id: String,
    pub profile_id: String,
    pub namespace: String,
    pub runtime_port: u16,
    /// The profile's container specs as Bay sent them, as JSON text; see
    /// [`Context::containers`].
    pub containers_json: String,
    pub cargo_size_limit_mb: u64,
    pub labels: BTreeMap<String, String>,
}

impl Context {
    /// The profile's container specs, as Bay sent them. Parsed on demand:
    /// most policies never look, and every call starts a fresh instance.
    pub fn containers(&self) -> Result<Vec<serde_json::Value>, Rejection> {
        if self.containers_json.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&self.containers_json)
            .map_err(|e| Rejection::Error(format!("host sent invalid container specs: {e}")))
    }
}

/// Why a plugin returns no object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Policy says no; shown to the user as it is.
    Deny(String),
    /// The plugin could not do its job.
    Error(String),
}

/// Shorthand for a policy denial.
pub fn deny(message: impl Into<String>) -> Rejection {
    Rejection::Deny(message.into())
}

/// A policy. Every method is called in a fresh instance: keep no state.
pub trait Policy {
    /// The operator's settings document. Unknown fields should be rejected
    /// (`#[serde(deny_unknown_fields)]`) so typos fail at load, not silently.
    type Settings: DeserializeOwned + Default;
    const NAME: &'static str;
    const VERSION: &'static str;
    const HOOKS: Hooks;

    /// Checks beyond what deserialising the settings already checks.
    fn validate(_settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }

    fn shape_pod(
        _settings: &Self::Settings,
        _ctx: &Context,
        _pod: &mut Pod,
    ) -> Result<(), Rejection> {
        Ok(())
    }

    fn shape_pvc(
        _settings: &Self::Settings,
        _ctx: &Context,
        _pvc: &mut PersistentVolumeClaim,
    ) -> Result<(), Rejection> {
        Ok(())
    }
}

/// Parses a settings document; empty or `null` means the defaults.
pub fn parse_settings<S: DeserializeOwned + Default>(text: &str) -> Result<S, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(S::default());
    }
    serde_json::from_str(trimmed).map_err(|e| format!("invalid settings: {e}"))
}

/// Logging through the host, attributed to this plugin by the host.
pub mod log {
    #[cfg(target_arch = "wasm32")]
    fn emit(level: crate::bindings::berth::policy::host::Level, message: &str) {
        crate::bindings::berth::policy::host::log(level, message);
    }
    // Natively (unit tests, benchmarks) there is no host to log to.
    #[cfg(not(target_arch = "wasm32"))]
    fn emit(_level: crate::bindings::berth::policy::host::Level, _message: &str) {}

    use crate::bindings::berth::policy::host::Level;
    pub fn debug(message: &str) {
        emit(Level::Debug, message)
    }
    pub fn info(message: &str) {
        emit(Level::Info, message)
    }
    pub fn warn(message: &str) {
        emit(Level::Warn, message)
    }
    pub fn error(message: &str) {
        emit(Level::Error, message)
    }
}

#[doc(hidden)]
pub mod __private {
    use super::*;
    use crate::bindings::berth::policy::types as t;

    pub fn info<P: Policy>() -> t::PluginInfo {
        let mut hooks = t::Hooks::empty();
        if P::HOOKS.pod {
            hooks |= t::Hooks::POD;
        }
        if P::HOOKS.pvc {
            hooks |= t::Hooks::PVC;
        }
        t::PluginInfo {
            name: P::NAME.into(),
            version: P::VERSION.into(),
            hooks,
        }
    }

    pub fn validate_settings<P: Policy>(settings: String) -> Result<(), String> {
        let s: P::Settings = parse_settings(&settings)?;
        P::validate(&s)
    }

    fn context(ctx: t::SessionContext) -> Context {
        Context {
            session_id: ctx.session_id,
            sandbox_id: ctx.sandbox_id,
            cargo_id: ctx.cargo_id,
            profile_id: ctx.profile_id,
            namespace: ctx.namespace,
            runtime_port: ctx.runtime_port,
            containers_json: ctx.containers,
            cargo_size_limit_mb: ctx.cargo_size_limit_mb,
            labels: ctx.labels.into_iter().collect(),
        }
    }

    fn rejection(r: Rejection) -> t::Rejection {
        match r {
            Rejection::Deny(m) => t::Rejection::Deny(m),
            Rejection::Error(m) => t::Rejection::Error(m),
        }
    }

    fn shape<P: Policy, O: serde::Serialize + DeserializeOwned>(
        settings: String,
        ctx: t::SessionContext,
        object: String,
        f: impl FnOnce(&P::Settings, &Context, &mut O) -> Result<(), Rejection>,
    ) -> Result<String, t::Rejection> {
        let settings: P::Settings = parse_settings(&settings).map_err(t::Rejection::Error)?;
        let ctx = context(ctx);
        let mut obj: O = serde_json::from_str(&object).map_err(|e| {
            t::Rejection::Error(format!("host sent an object this plugin cannot read: {e}"))
        })?;
        f(&settings, &ctx, &mut obj).map_err(rejection)?;
        // Policies rarely grow an object by much: one allocation up front
        // instead of a doubling series of copies.
        let mut out = Vec::with_capacity(object.len() + object.len() / 2);
        serde_json::to_writer(&mut out, &obj)
            .map_err(|e| t::Rejection::Error(format!("cannot serialise result: {e}")))?;
        // The instance is thrown away after this call, memory and all:
        // running destructors over the object graph would be wasted work.
        std::mem::forget((obj, ctx, settings, object));
        // serde_json writes UTF-8 only.
        String::from_utf8(out).map_err(|e| t::Rejection::Error(e.to_string()))
    }

    pub fn shape_pod<P: Policy>(
        s: String,
        c: t::SessionContext,
        o: String,
    ) -> Result<String, t::Rejection> {
        shape::<P, Pod>(s, c, o, P::shape_pod)
    }

    pub fn shape_pvc<P: Policy>(
        s: String,
        c: t::SessionContext,
        o: String,
    ) -> Result<String, t::Rejection> {
        shape::<P, PersistentVolumeClaim>(s, c, o, P::shape_pvc)
    }

    pub use super::wit::Guest;
}

/// Exports a [`Policy`] implementation as the plugin's component exports.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        // Exports exist only in the component; natively the crate is a plain
        // library, so policies can be unit-tested and benchmarked.
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        pub struct __BerthPluginExport;

        #[cfg(target_arch = "wasm32")]
        impl $crate::__private::Guest for __BerthPluginExport {
            fn info() -> $crate::bindings::berth::policy::types::PluginInfo {
                $crate::__private::info::<$policy>()
            }
            fn validate_settings(settings: String) -> Result<(), String> {
                $crate::__private::validate_settings::<$policy>(settings)
            }
            fn shape_pod(
                settings: String,
                ctx: $crate::bindings::berth::policy::types::SessionContext,
                pod: String,
            ) -> Result<String, $crate::bindings::berth::policy::types::Rejection> {
                $crate::__private::shape_pod::<$policy>(settings, ctx, pod)
            }
            fn shape_pvc(
                settings: String,
                ctx: $crate::bindings::berth::policy::types::SessionContext,
                pvc: String,
            ) -> Result<String, $crate::bindings::berth::policy::types::Rejection> {
                $crate::__private::shape_pvc::<$policy>(settings, ctx, pvc)
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_plugin!(__BerthPluginExport with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_specs_parse_on_demand() {
        let mut ctx = Context::default();
        assert_eq!(ctx.containers(), Ok(Vec::new()));
        ctx.containers_json = r#"[{"name":"ship","runtime_port":8123}]"#.into();
        let specs = ctx.containers().unwrap();
        assert_eq!(specs[0]["runtime_port"], 8123);
        ctx.containers_json = "[{".into();
        assert!(
            matches!(ctx.containers(), Err(Rejection::Error(m)) if m.starts_with("host sent invalid container specs"))
        );
    }

    #[test]
    fn settings_default_when_empty_and_reject_junk() {
        #[derive(Default, serde::Deserialize, PartialEq, Debug)]
        #[serde(deny_unknown_fields)]
        struct S {
            n: u32,
        }
        assert_eq!(parse_settings::<S>(" null "), Ok(S::default()));
        assert_eq!(parse_settings::<S>(r#"{"n": 3}"#), Ok(S { n: 3 }));
        assert!(
            parse_settings::<S>(r#"{"m": 3}"#)
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
