//! The ordered chain of plugins, its per-plugin checks and diffs, and the
//! generation swap that lets operators reload plugins without a restart.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::context::{Hook, Rejection, SessionContext};
use super::guard::{self, Breach, Guards, PodSecurity, Scope};
use super::identity::{Guard, IdentityKind};
use super::runtime::{ChainDeadline, LoadedComponent, Runtime, plugin_text};
use super::{PluginConfig, PluginError, PolicyError};

struct Entry {
    component: LoadedComponent,
    origin: super::Origin,
    profiles: Vec<String>,
    namespaces: Vec<String>,
    scope: Scope,
}

impl Entry {
    fn applies(&self, hook: Hook, profile: &str, namespace: &str) -> bool {
        self.component.info.hooks.declares(hook)
            && (self.profiles.is_empty() || self.profiles.iter().any(|p| p == profile))
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
    }
}

/// One loaded generation of the configured plugins, in order.
pub struct Chain {
    pub generation: u64,
    entries: Vec<Entry>,
}

/// One plugin's turn on one object.
#[derive(Clone, Debug)]
pub struct Step {
    pub plugin: String,
    pub duration: Duration,
}

/// What one plugin changed: RFC 6902 JSON Patch from before it to after it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StepDiff {
    pub plugin: String,
    #[schema(value_type = Vec<Object>)]
    pub patch: json_patch::Patch,
}

/// An object the chain shapes: which hook it goes through, what it is
/// called in errors, and which identity it carries.
pub trait Shapeable: Serialize + DeserializeOwned {
    const HOOK: Hook;
    const KIND: &'static str;
    const IDENTITY: IdentityKind;

    /// How the object falls short of `level`, each violation as
    /// `"rule: detail"` (Pods only).
    fn posture(&self, _level: PodSecurity) -> Vec<String> {
        Vec::new()
    }
}

impl Shapeable for Pod {
    const HOOK: Hook = Hook::Pod;
    const KIND: &'static str = "Pod";
    const IDENTITY: IdentityKind = IdentityKind::Pod;

    fn posture(&self, level: PodSecurity) -> Vec<String> {
        level.violations(self)
    }
}

impl Shapeable for PersistentVolumeClaim {
    const HOOK: Hook = Hook::Pvc;
    const KIND: &'static str = "PersistentVolumeClaim";
    const IDENTITY: IdentityKind = IdentityKind::Metadata;
}

/// An object after the chain, with who changed what. The JSON text before
/// and after every step is kept, so diffs cost nothing unless someone asks.
#[derive(Clone, Debug)]
pub struct Shaped<T> {
    pub object: T,
    pub steps: Vec<Step>,
    /// snapshots[0] is the input, snapshots[i + 1] the output of steps[i].
    snapshots: Vec<String>,
}

impl<T> Shaped<T> {
    pub fn diffs(&self) -> Vec<StepDiff> {
        // Every snapshot parsed as a typed object once, so it is JSON.
        let values: Vec<Value> = self
            .snapshots
            .iter()
            .map(|t| serde_json::from_str(t).unwrap_or(Value::Null))
            .collect();
        self.steps
            .iter()
            .zip(values.windows(2))
            .map(|(s, pair)| StepDiff {
                plugin: s.plugin.clone(),
                patch: json_patch::diff(&pair[0], &pair[1]),
            })
            .collect()
    }
}

/// What one step of a chain returns: the object's new JSON text or the
/// plugin's rejection; `Err` when the plugin itself failed.
pub type StepResult = Result<Result<String, Rejection>, PluginError>;

/// Runs `steps` in order over `object`. Apart from how a step runs, this is
/// the whole chain, so a benchmark can put native policies through exactly
/// the same checks.
///
/// After every step the output must be JSON whose identity is unchanged; the
/// object that leaves the chain must parse as `T`. Building the typed object
/// once, at the end, rather than after every plugin is what keeps the checks
/// cheap. An intermediate output that is not a valid `T` is still caught and
/// blamed on the plugin that produced it: whenever the chain fails, every
/// earlier output is parsed as `T` and the first invalid one is the error,
/// since everything after it was working on a broken object.
pub fn run_steps<'s, T, F>(
    object: T,
    guards: &Guards,
    steps: impl IntoIterator<Item = (String, &'s Scope, F)>,
) -> Result<Shaped<T>, PolicyError>
where
    T: Shapeable,
    F: FnOnce(&str) -> StepResult,
{
    // texts[0] is the input and texts[i + 1] the output of done[i]; the text
    // handed to the next plugin is exactly what the last one returned, with
    // no re-serialisation between plugins.
    let input = serde_json::to_string(&object)
        .map_err(|e| PluginError::Engine(format!("cannot serialise {}: {e}", T::KIND)))?;
    let guard = Guard::new(&input, T::IDENTITY, &guards.label_prefix)
        .map_err(|e| PluginError::Engine(format!("cannot read identity of {}: {e}", T::KIND)))?;
    // The guarded fields of the last accepted output.
    let mut before = guard::guarded_fields(&input)
        .map_err(|e| PluginError::Engine(format!("cannot read {}: {e}", T::KIND)))?;
    let mut texts = vec![input];
    let mut done: Vec<Step> = Vec::new();
    for (plugin, scope, run) in steps {
        let span = tracing::debug_span!("plugin", plugin = %plugin, kind = T::KIND);
        let _g = span.enter();
        let started = Instant::now();
        let result = run(texts.last().map(String::as_str).unwrap_or_default());
        let duration = started.elapsed();
        let fail = |e: PolicyError| first_invalid::<T>(&done, &texts).unwrap_or(e);
        let out = match result {
            Ok(Ok(out)) => out,
            // A plugin's words reach Bay's users: bounded, one line.
            Ok(Err(Rejection::Deny(message))) => {
                let message = plugin_text(&message);
                return Err(fail(PolicyError::Denied { plugin, message }));
            }
            Ok(Err(Rejection::Error(message))) => {
                let message = plugin_text(&message);
                return Err(fail(PluginError::Reported { plugin, message }.into()));
            }
            Err(e) => return Err(fail(e.into())),
        };
        match guard.check(&out) {
            Ok(None) => {}
            Ok(Some(field)) => {
                return Err(fail(
                    PluginError::IdentityViolation { plugin, field }.into(),
                ));
            }
            Err(e) => {
                let err = parse_output::<T>(&plugin, &out).err().unwrap_or_else(|| {
                    PluginError::InvalidOutput {
                        plugin: plugin.clone(),
                        kind: T::KIND,
                        message: e.to_string(),
                    }
                });
                return Err(fail(err.into()));
            }
        }
        let after = match guard::guarded_fields(&out) {
            Ok(v) => v,
            Err(e) => {
                let err = parse_output::<T>(&plugin, &out).err().unwrap_or_else(|| {
                    PluginError::InvalidOutput {
                        plugin: plugin.clone(),
                        kind: T::KIND,
                        message: e.to_string(),
                    }
                });
                return Err(fail(err.into()));
            }
        };
        let breach = guard::check_step(T::KIND, &before, &after, scope, guards).or_else(|| {
            // Whole objects only for an entry that has a scope to hold.
            scope.mutation_scope.as_ref()?;
            let whole = |t: &str| serde_json::from_str::<Value>(t).ok();
            let last = texts.last().map(String::as_str).unwrap_or_default();
            guard::check_scope(&whole(last)?, &whole(&out)?, scope)
        });
        match breach {
            None => {}
            Some(Breach::Rule { rule, path }) => {
                return Err(fail(
                    PluginError::Guarded {
                        plugin,
                        rule: rule.name(),
                        path,
                    }
                    .into(),
                ));
            }
            Some(Breach::OutOfScope { path }) => {
                return Err(fail(PluginError::OutOfScope { plugin, path }.into()));
            }
        }
        before = after;
        tracing::debug!(us = duration.as_micros() as u64, "plugin applied");
        done.push(Step { plugin, duration });
        texts.push(out);
    }
    let object = if done.is_empty() {
        object
    } else {
        let last = texts.last().map(String::as_str).unwrap_or_default();
        match serde_json::from_str(last) {
            Ok(object) => object,
            // The last output at least is invalid, so this names a plugin.
            Err(e) => {
                return Err(first_invalid::<T>(&done, &texts).unwrap_or_else(|| {
                    PluginError::Engine(format!("{} left the chain invalid: {e}", T::KIND)).into()
                }));
            }
        }
    };
    if !object.posture(guards.pod_security).is_empty() {
        return Err(posture_breach::<T>(guards.pod_security, &done, &texts));
    }
    Ok(Shaped {
        object,
        steps: done,
        snapshots: texts,
    })
}

/// Blames a Pod Security violation of the final object on the step that
/// introduced it for good: the first of the unbroken run of snapshots, up
/// to the last, that has it. A violation the request had and no plugin
/// fixed is the request's (a plugin that fixes the request's other
/// violations is not blamed for the one it left).
fn posture_breach<T: Shapeable>(
    level: PodSecurity,
    done: &[Step],
    texts: &[String],
) -> PolicyError {
    let violations: Vec<Vec<String>> = texts
        .iter()
        .map(|t| {
            serde_json::from_str::<T>(t)
                .map(|o| o.posture(level))
                .unwrap_or_default()
        })
        .collect();
    let Some(message) = violations.last().and_then(|v| v.first()).cloned() else {
        return PluginError::Engine(format!("{} failed its Pod Security check", T::KIND)).into();
    };
    let since = violations
        .iter()
        .rposition(|v| !v.contains(&message))
        .map_or(0, |i| i + 1);
    match since.checked_sub(1).and_then(|s| done.get(s)) {
        None => PolicyError::Denied {
            plugin: POD_SECURITY.into(),
            message: format!(
                "the session's {} violates Pod Security {} as requested, and no plugin changed that: {message}",
                T::KIND,
                level.name()
            ),
        },
        Some(step) => PluginError::Posture {
            plugin: step.plugin.clone(),
            level: level.name(),
            message,
        }
        .into(),
    }
}

/// The name a request that breaks the Pod Security level is denied under.
pub const POD_SECURITY: &str = "pod-security";

/// The first step whose output is not a valid `T`, as that step's error.
fn first_invalid<T: Shapeable>(done: &[Step], texts: &[String]) -> Option<PolicyError> {
    done.iter().zip(&texts[1..]).find_map(|(step, out)| {
        parse_output::<T>(&step.plugin, out)
            .err()
            .map(PolicyError::from)
    })
}

/// Parses a plugin's output as `T`, saying what is wrong with it if it is not.
fn parse_output<T: Shapeable>(plugin: &str, out: &str) -> Result<T, PluginError> {
    serde_json::from_str(out).map_err(|e| {
        let message = if e.is_syntax() || e.is_eof() {
            format!("not JSON: {e}")
        } else if !out.trim_start().starts_with('{') {
            "not a JSON object".to_string()
        } else {
            e.to_string()
        };
        PluginError::InvalidOutput {
            plugin: plugin.to_string(),
            kind: T::KIND,
            message,
        }
    })
}

/// A plugin list checked, in chain order, with every component fetched:
/// what a generation is built from. Fetching is the part that waits on
/// the network, so it runs before a load takes anything it must share.
pub struct FetchedPlugins {
    ordered: Vec<PluginConfig>,
    components: Vec<super::source::Fetched>,
}

impl FetchedPlugins {
    /// Checks `configs` (names unique, each entry valid), orders them and
    /// fetches their components.
    pub fn fetch(
        sources: &super::Sources,
        configs: &[PluginConfig],
        base_dir: &Path,
        progress: &dyn Fn(String),
    ) -> Result<FetchedPlugins, PluginError> {
        let mut ordered: Vec<PluginConfig> = configs.to_vec();
        ordered.sort_by_key(|c| c.order);
        for (i, c) in ordered.iter().enumerate() {
            if ordered[..i].iter().any(|o| o.name == c.name) {
                return Err(PluginError::Config(format!(
                    "two plugins are named {:?}",
                    c.name
                )));
            }
            c.validate(&format!("plugins[{}]", c.name))
                .map_err(PluginError::Config)?;
        }
        if ordered.iter().any(|c| c.reference.is_some()) {
            progress("fetching plugins from their registries".into());
        }
        let refs: Vec<&PluginConfig> = ordered.iter().collect();
        let components = sources.fetch_all(&refs, base_dir)?;
        Ok(FetchedPlugins {
            ordered,
            components,
        })
    }
}

/// Summary of a loaded plugin, for the API and the harness.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PluginSummary {
    pub name: String,
    pub plugin_name: String,
    pub plugin_version: String,
    pub hooks: Vec<Hook>,
    pub sha256: String,
    /// Where the component came from (file, registry, digest cache) and,
    /// for an OCI plugin, the resolved digest and the key that signed it.
    pub origin: super::Origin,
    pub from_cache: bool,
    pub load_ms: f64,
}

impl Chain {
    pub fn empty() -> Chain {
        Chain {
            generation: 0,
            entries: Vec::new(),
        }
    }

    /// Loads every configured plugin, one after the other (so at most one
    /// compiles at a time); any failure fails the whole generation.
    /// `progress` hears what is being loaded, e.g. `plugin "x" (2 of 3)`.
    pub fn load(
        runtime: &Runtime,
        sources: &super::Sources,
        configs: &[PluginConfig],
        base_dir: &Path,
        generation: u64,
        progress: &dyn Fn(String),
    ) -> Result<Chain, PluginError> {
        let fetched = FetchedPlugins::fetch(sources, configs, base_dir, progress)?;
        Chain::build(runtime, fetched, generation, progress)
    }

    /// Compiles (or takes from the cache) and links fetched components.
    pub fn build(
        runtime: &Runtime,
        fetched: FetchedPlugins,
        generation: u64,
        progress: &dyn Fn(String),
    ) -> Result<Chain, PluginError> {
        let ordered = &fetched.ordered;
        let mut entries = Vec::with_capacity(ordered.len());
        for (i, (c, fetched)) in ordered.iter().zip(fetched.components).enumerate() {
            let settings = serde_json::to_string(&c.settings)
                .map_err(|e| PluginError::Config(e.to_string()))?;
            progress(format!(
                "loading plugin {:?} ({} of {})",
                c.name,
                i + 1,
                ordered.len()
            ));
            let component = runtime.load(
                &c.name,
                fetched.bytes,
                c.sha256.as_deref(),
                settings,
                c.limits(),
            )?;
            tracing::info!(
                plugin = %c.name, version = %component.info.version, from_cache = component.load.from_cache,
                load_ms = component.load.duration.as_secs_f64() * 1e3,
                digest = fetched.origin.digest.as_deref().unwrap_or("-"),
                fetched_from = %fetched.origin.fetched_from, "plugin loaded"
            );
            entries.push(Entry {
                component,
                origin: fetched.origin,
                profiles: c.profiles.clone(),
                namespaces: c.namespaces.clone(),
                scope: c.scope(),
            });
        }
        Ok(Chain {
            generation,
            entries,
        })
    }

    pub fn summaries(&self) -> Vec<PluginSummary> {
        self.entries
            .iter()
            .map(|e| {
                let c = &e.component;
                PluginSummary {
                    name: c.name.to_string(),
                    plugin_name: c.info.name.clone(),
                    plugin_version: c.info.version.clone(),
                    hooks: c.info.hooks.list(),
                    sha256: c.sha256.clone(),
                    origin: e.origin.clone(),
                    from_cache: c.load.from_cache,
                    load_ms: c.load.duration.as_secs_f64() * 1e3,
                }
            })
            .collect()
    }

    /// Runs every applicable plugin on `object`, in order (see [`run_steps`]),
    /// until `cancel` says nobody waits for the result.
    pub fn shape<T: Shapeable>(
        &self,
        runtime: &Runtime,
        ctx: &SessionContext,
        object: T,
        guards: &Guards,
        cancel: CancellationToken,
    ) -> Result<Shaped<T>, PolicyError> {
        let chain = ChainDeadline::starting_now(runtime.chain_budget(), cancel);
        let chain = &chain;
        let steps = self
            .entries
            .iter()
            .filter(|e| e.applies(T::HOOK, &ctx.profile_id, &ctx.namespace))
            .map(|e| {
                let run = move |text: &str| {
                    runtime
                        .shape_within(&e.component, T::HOOK, ctx, text, Some(chain))
                        .map(|(result, _)| result)
                };
                (e.component.name.to_string(), &e.scope, run)
            });
        run_steps(object, guards, steps)
    }
}

/// The live chain plus what it takes to build the next one.
pub struct PolicyEngine {
    runtime: Runtime,
    sources: RwLock<super::Sources>,
    guards: Guards,
    current: RwLock<Arc<Chain>>,
    next_generation: AtomicU64,
    last_error: RwLock<Option<String>>,
    reloading: std::sync::Mutex<()>,
    in_order: std::sync::Mutex<()>,
    /// What the first load is doing, until a generation is in.
    loading: RwLock<Option<String>>,
}

impl PolicyEngine {
    /// An engine with `configs` loaded: generation 1.
    pub fn new(
        runtime: Runtime,
        configs: &[PluginConfig],
        base_dir: &Path,
    ) -> Result<Self, PluginError> {
        let engine = PolicyEngine::pending(runtime);
        engine.reload(configs, base_dir)?;
        Ok(engine)
    }

    /// An engine with no generation yet: it shapes nothing until
    /// [`reload`](Self::reload) brings the first one in (which `berth serve`
    /// does in the background, so it answers probes while compiling).
    pub fn pending(runtime: Runtime) -> Self {
        PolicyEngine {
            runtime,
            sources: RwLock::new(super::Sources::default()),
            guards: Guards::default(),
            current: RwLock::new(Arc::new(Chain::empty())),
            next_generation: AtomicU64::new(1),
            last_error: RwLock::new(None),
            reloading: std::sync::Mutex::new(()),
            in_order: std::sync::Mutex::new(()),
            loading: RwLock::new(Some("waiting to load the plugins".into())),
        }
    }

    /// Says what the first load waits for (`/readyz` shows it); nothing
    /// once a generation is in.
    pub fn waiting(&self, what: String) {
        if self.chain().generation == 0 {
            *self.loading.write().unwrap_or_else(|p| p.into_inner()) = Some(what);
        }
    }

    /// What the engine waits for before it can shape anything (e.g.
    /// `loading plugin "x" (2 of 3)`); `None` once a generation is in.
    pub fn waiting_for(&self) -> Option<String> {
        self.loading
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The same engine fetching plugins through `sources` (registry,
    /// signature policy, digest cache); the default reads files only.
    pub fn with_sources(self, sources: super::Sources) -> Self {
        self.set_sources(sources);
        self
    }

    /// Where OCI plugins come from and what they must be signed by, from
    /// the next load on (a reload of the config file changes them).
    pub fn set_sources(&self, sources: super::Sources) {
        *self.sources.write().unwrap_or_else(|p| p.into_inner()) = sources;
    }

    pub fn sources(&self) -> super::Sources {
        self.sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The same engine holding every chain to `guards` (label prefix,
    /// trusted peer labels, Pod Security level); the default is `bay`, none,
    /// baseline.
    pub fn with_guards(mut self, guards: Guards) -> Self {
        self.guards = guards;
        self
    }

    pub fn guards(&self) -> &Guards {
        &self.guards
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Runs the current chain on `object` for the session `ctx`: the one
    /// entry point every caller uses.
    pub fn shape<T: Shapeable>(
        &self,
        ctx: &SessionContext,
        object: T,
    ) -> Result<Shaped<T>, PolicyError> {
        self.shape_cancellable(ctx, object, CancellationToken::new())
    }

    /// As [`shape`](Self::shape), for a caller that may go away: cancelling
    /// `cancel` stops the running plugin at its next epoch tick or wait
    /// (within about a tenth of the shortest deadline) and runs no other,
    /// so an abandoned request gives its chain slot back at once.
    pub fn shape_cancellable<T: Shapeable>(
        &self,
        ctx: &SessionContext,
        object: T,
        cancel: CancellationToken,
    ) -> Result<Shaped<T>, PolicyError> {
        self.chain()
            .shape(&self.runtime, ctx, object, &self.guards, cancel)
    }

    pub fn chain(&self) -> Arc<Chain> {
        // A poisoned lock only means a panic elsewhere while swapping an Arc;
        // the Arc inside is still whole.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Builds a new generation; only a fully loaded one replaces the current.
    /// On failure the current generation keeps serving and the error is kept
    /// for `/v1/plugins`.
    ///
    /// Reloads run one at a time, in the order they asked: a slow reload
    /// that finished after a newer one would otherwise swap in the older
    /// plugin list, and overlapping loads would take an instance each.
    /// (The driver calls [`fetch`](Self::fetch) and
    /// [`reload_fetched`](Self::reload_fetched) itself, in the same order.)
    pub fn reload(&self, configs: &[PluginConfig], base_dir: &Path) -> Result<u64, PluginError> {
        let _in_order = self.in_order.lock().unwrap_or_else(|p| p.into_inner());
        let fetched = self.fetch(configs, base_dir)?;
        self.reload_fetched(fetched)
    }

    /// The first half of a reload: checks the list and fetches every
    /// component (files, registries), without holding the reload lock. A
    /// failure is kept for `/v1/plugins` as a failed reload is.
    pub fn fetch(
        &self,
        configs: &[PluginConfig],
        base_dir: &Path,
    ) -> Result<FetchedPlugins, PluginError> {
        let progress = |what: String| self.waiting(what);
        FetchedPlugins::fetch(&self.sources(), configs, base_dir, &progress)
            .map_err(|e| self.failed(e))
    }

    /// The second half: builds the next generation from what was fetched;
    /// only a fully loaded one replaces the current.
    pub fn reload_fetched(&self, fetched: FetchedPlugins) -> Result<u64, PluginError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        // Until a generation is in, the engine says what it is loading.
        let progress = |what: String| self.waiting(what);
        match Chain::build(&self.runtime, fetched, generation, &progress) {
            Ok(chain) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(chain);
                *self.loading.write().unwrap_or_else(|p| p.into_inner()) = None;
                *self.last_error.write().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!(generation, "plugin generation swapped in");
                Ok(generation)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Keeps a failed load's error for `/v1/plugins` (and, before the first
    /// generation, for `/readyz`); the current generation keeps serving.
    fn failed(&self, e: PluginError) -> PluginError {
        let first = self.chain().generation == 0;
        if first {
            tracing::error!(error = %e, "the plugins failed to load");
            *self.loading.write().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("the plugins failed to load: {e}"));
        } else {
            tracing::error!(error = %e, "plugin reload failed; keeping the current generation");
        }
        *self.last_error.write().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        e
    }
}
