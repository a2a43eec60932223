//! The plugin world of WIT `berth:policy@0.1.0`: its generated bindings,
//! the host functions it imports, and the conversions between its records
//! and the host's own types (`context`). Nothing outside this module sees a
//! generated type. A `berth:policy@0.2.0` is a `v0_2` module beside this one;
//! `runtime` picks the module by the version a component exports.

use wasmtime::component::{HasSelf, InstancePre, Linker};
use wasmtime::{AsContextMut, Store};

use super::context::{Hook, Hooks, PluginInfo, Rejection, SessionContext};
use super::runtime::CallState;

mod wit {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "plugin",
    });
}

use wit::berth::policy::{host, types};

/// The version as it appears in import and export names.
pub const VERSION: &str = "0.1.0";
/// The interface every plugin of this version exports.
pub const POLICY_EXPORT: &str = "berth:policy/policy@0.1.0";

/// What a plugin of this version may import from the host.
pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    wit::Plugin::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
}

/// A linked component of this version, ready to be instantiated per call.
pub struct Pre(wit::PluginPre<CallState>);

/// One live instance: lives as long as the call's store.
pub struct Instance(wit::Plugin);

/// A policy function whose type is not the one this version defines.
#[derive(Debug, thiserror::Error)]
#[error("{function} does not have the type berth:policy@{VERSION} gives it ({expected}): {reason}")]
pub struct WrongSignature {
    pub function: &'static str,
    pub expected: &'static str,
    pub reason: String,
}

impl Pre {
    pub fn new(pre: InstancePre<CallState>) -> wasmtime::Result<Pre> {
        wit::PluginPre::new(pre).map(Pre)
    }

    pub fn instantiate(&self, store: &mut Store<CallState>) -> wasmtime::Result<Instance> {
        self.0.instantiate(store).map(Instance)
    }

    /// Checks every policy function against this version's types in a
    /// fresh instance. The bindings check a function's type only when it is
    /// first called, which would turn an author's wrong WIT into a "trap"
    /// on the first session; at load it is a load error naming the function.
    pub fn check_signatures(&self, store: &mut Store<CallState>) -> Result<(), SignatureCheck> {
        let instance = self
            .0
            .instance_pre()
            .instantiate(&mut *store)
            .map_err(SignatureCheck::Run)?;
        let component = self.0.instance_pre().component();
        let Some(policy) = component.get_export_index(None, POLICY_EXPORT) else {
            return Err(SignatureCheck::Run(wasmtime::Error::msg(format!(
                "no export {POLICY_EXPORT}"
            ))));
        };
        let check = |store: &mut Store<CallState>,
                     function: &'static str,
                     expected: &'static str,
                     typed: &dyn Fn(
            &mut Store<CallState>,
            &wasmtime::component::ComponentExportIndex,
        ) -> wasmtime::Result<()>| {
            let wrong = |reason: String| {
                SignatureCheck::Wrong(WrongSignature {
                    function,
                    expected,
                    reason,
                })
            };
            let index = component
                .get_export_index(Some(&policy), function)
                .ok_or_else(|| wrong("not exported".into()))?;
            typed(store, &index).map_err(|e| wrong(format!("{e:#}")))
        };
        check(store, "info", "func() -> plugin-info", &|s, i| {
            instance
                .get_typed_func::<(), (types::PluginInfo,)>(s.as_context_mut(), i)
                .map(drop)
        })?;
        check(
            store,
            "validate-settings",
            "func(settings: string) -> result<_, string>",
            &|s, i| {
                instance
                    .get_typed_func::<(&str,), (Result<(), String>,)>(s.as_context_mut(), i)
                    .map(drop)
            },
        )?;
        for function in ["shape-pod", "shape-pvc"] {
            check(
                store,
                function,
                "func(settings: string, ctx: session-context, object: string) -> result<string, rejection>",
                &|s, i| {
                    instance
                        .get_typed_func::<
                            (&str, &types::SessionContext, &str),
                            (Result<String, types::Rejection>,),
                        >(s.as_context_mut(), i)
                        .map(drop)
                },
            )?;
        }
        Ok(())
    }
}

/// Why [`Pre::check_signatures`] failed.
#[derive(Debug)]
pub enum SignatureCheck {
    /// A function's type is wrong: the component is not of this version.
    Wrong(WrongSignature),
    /// The check could not run (instantiation failed): the same failure any
    /// call would meet, for the runtime to classify.
    Run(wasmtime::Error),
}

impl Instance {
    pub fn info(&self, store: &mut Store<CallState>) -> wasmtime::Result<PluginInfo> {
        let info = self.0.berth_policy_policy().call_info(store)?;
        Ok(PluginInfo {
            name: info.name,
            version: info.version,
            hooks: Hooks {
                pod: info.hooks.contains(types::Hooks::POD),
                pvc: info.hooks.contains(types::Hooks::PVC),
            },
        })
    }

    pub fn validate_settings(
        &self,
        store: &mut Store<CallState>,
        settings: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        self.0
            .berth_policy_policy()
            .call_validate_settings(store, settings)
    }

    pub fn shape(
        &self,
        store: &mut Store<CallState>,
        hook: Hook,
        settings: &str,
        ctx: &SessionContext,
        object: &str,
    ) -> wasmtime::Result<Result<String, Rejection>> {
        let ctx = record(ctx);
        let policy = self.0.berth_policy_policy();
        let result = match hook {
            Hook::Pod => policy.call_shape_pod(store, settings, &ctx, object)?,
            Hook::Pvc => policy.call_shape_pvc(store, settings, &ctx, object)?,
        };
        Ok(result.map_err(|r| match r {
            types::Rejection::Deny(m) => Rejection::Deny(m),
            types::Rejection::Error(m) => Rejection::Error(m),
        }))
    }
}

/// The WIT record of a session context. Owned strings, as the generated
/// type wants: a copy of a few hundred bytes to a few KiB per call.
fn record(ctx: &SessionContext) -> types::SessionContext {
    types::SessionContext {
        session_id: ctx.session_id.clone(),
        sandbox_id: ctx.sandbox_id.clone(),
        cargo_id: ctx.cargo_id.clone(),
        profile_id: ctx.profile_id.clone(),
        namespace: ctx.namespace.clone(),
        runtime_port: ctx.runtime_port,
        containers: ctx.containers.clone(),
        cargo_size_limit_mb: ctx.cargo_size_limit_mb,
        labels: ctx.labels.clone(),
    }
}

impl host::Host for CallState {
    fn log(&mut self, level: host::Level, message: String) {
        let level = match level {
            host::Level::Trace => tracing::Level::TRACE,
            host::Level::Debug => tracing::Level::DEBUG,
            host::Level::Info => tracing::Level::INFO,
            host::Level::Warn => tracing::Level::WARN,
            host::Level::Error => tracing::Level::ERROR,
        };
        self.log(level, message);
    }
}

impl types::Host for CallState {}
