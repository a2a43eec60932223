//! The wasmtime side of policy plugins: one engine, compiled components cached
//! on disk, an `InstancePre` per plugin, and a fresh store and instance for
//! every call so nothing leaks between sessions. The WIT-specific part of a
//! call (bindings, records) is in the version's module, [`super::v0_1`].

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, Linker, ResourceTable, ResourceTableError};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::context::{Hook, PluginInfo, Rejection, SessionContext};
use super::v0_1;
use super::{LoadErrorKind, PluginError};

/// The WIT package this host implements, as it appears in export names.
pub const WIT_PACKAGE: &str = "berth:policy";
pub const WIT_VERSION: &str = v0_1::VERSION;

/// Engine-wide settings; per-plugin limits live in [`Limits`].
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Concurrent plugin instances the pooling allocator reserves slots for.
    pub max_instances: u32,
    /// Largest linear memory any plugin may be given (bytes).
    pub max_memory_bytes: usize,
    /// Time one run of the whole chain may take; each plugin's deadline is
    /// cut to what is left of it.
    pub chain_budget: Duration,
    /// Host resources (WASI handles: pollables, streams) one call may hold
    /// at once. Each is host memory outside the plugin's `memory_mb`; a
    /// policy needs a handful.
    pub max_handles: usize,
    /// The `berth` binary to compile plugins with, in a child process
    /// (`berth compile-plugin`) that writes the cache: Cranelift's few
    /// hundred MB go back to the system when the child exits instead of
    /// staying in this process's heap. Needs `cache_dir`. `None` compiles
    /// in this process (the offline tools, library tests).
    pub compiler: Option<PathBuf>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            cache_dir: None,
            max_instances: 64,
            max_memory_bytes: 256 << 20,
            chain_budget: DEFAULT_CHAIN_BUDGET,
            max_handles: DEFAULT_MAX_HANDLES,
            compiler: None,
        }
    }
}

/// The default `chain_budget`: far above any sane chain (the shipped three
/// take well under a millisecond), far below a client's patience.
pub const DEFAULT_CHAIN_BUDGET: Duration = Duration::from_secs(2);

/// The default `max_handles`.
pub const DEFAULT_MAX_HANDLES: usize = 1024;

/// The chain run a call belongs to: when it must be over, and whether its
/// caller has gone away.
#[derive(Clone, Debug)]
pub struct ChainDeadline {
    pub end: Instant,
    pub budget: Duration,
    /// Cancelled when nobody waits for the result any more: the running
    /// plugin is stopped at its next epoch tick or wait, and no further
    /// plugin runs.
    pub cancel: CancellationToken,
}

impl ChainDeadline {
    pub fn starting_now(budget: Duration, cancel: CancellationToken) -> ChainDeadline {
        ChainDeadline {
            end: Instant::now() + budget,
            budget,
            cancel,
        }
    }
}

/// Per-call limits of one plugin.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub deadline: Duration,
    pub memory_bytes: usize,
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(100),
            memory_bytes: 64 << 20,
            max_output_bytes: 1 << 20,
        }
    }
}

/// Deadlines are counted in epoch ticks. Each tick wakes a thread and
/// interrupts whatever runs on its core, which showed up as a second mode in
/// the chain's latency (every 1 ms tick delayed the calls it landed on), so
/// ticks are as coarse as the deadlines allow: a tenth of the shortest
/// deadline loaded, between these bounds. A deadline is then honoured within
/// about 10 %.
const MIN_TICK: Duration = Duration::from_millis(1);
const MAX_TICK: Duration = Duration::from_millis(10);

fn tick_for(deadline: Duration) -> Duration {
    (deadline / 10).clamp(MIN_TICK, MAX_TICK)
}

/// The engine configuration for `options`. A compiled plugin is valid only
/// for an engine configured exactly alike, so the compiling child process
/// builds its engine here too.
fn engine_config(options: &RuntimeOptions) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Guests are small policy functions; a deep stack only helps runaway recursion.
    config.max_wasm_stack(256 << 10);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(options.max_instances);
    // A Rust plugin instantiates 3 core modules; a Python one (componentize-py:
    // the interpreter, libc, extension modules, WASI stubs) 38. Slots are
    // only bookkeeping until used, so size for Python: a chain slot must
    // never find the pool empty and have it blamed on a plugin.
    pool.total_core_instances(options.max_instances * 64);
    pool.total_memories(options.max_instances * 2);
    pool.total_tables(options.max_instances * 4);
    pool.total_stacks(options.max_instances);
    pool.max_memory_size(options.max_memory_bytes);
    // Keeping the first pages resident makes the next instantiation in
    // the same slot skip page faults: measured to roughly halve call time.
    pool.linear_memory_keep_resident(1 << 20);
    // Resetting a slot then touches only the pages the last call dirtied
    // (Linux 6.7+, else a full reset). This is what lets plugins start with
    // enough memory that they never grow it: growing costs an mprotect and
    // page faults per call, measured at a quarter of a call.
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    pool.table_keep_resident(64 << 10);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// How `berth compile-plugin` marks, on stderr, an error that is the
/// component's own (it does not compile), as opposed to the compiler's.
pub const INVALID_COMPONENT: &str = "invalid component: ";

/// In `berth compile-plugin`: die with the server that started it, so a
/// killed server leaves no compiler running (Linux; elsewhere a no-op).
pub fn die_with_parent() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and changes
    // nothing but this process's parent-death signal.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The parent may have died before the prctl: then we were adopted.
        if libc::getppid() == 1 {
            std::process::exit(1);
        }
    }
}

/// Compiles a component for an engine configured by `options`: what
/// `berth compile-plugin` runs in the child process. Returns the artifact
/// `Component::deserialize` takes (machine code plus metadata, a few MB).
pub fn precompile(options: &RuntimeOptions, wasm: &[u8]) -> Result<Vec<u8>, String> {
    let engine = Engine::new(&engine_config(options)).map_err(|e| format!("{e:#}"))?;
    engine
        .precompile_component(wasm)
        .map_err(|e| format!("{e:#}"))
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    options: RuntimeOptions,
    engine_key: String,
    ticker_stop: Arc<AtomicBool>,
    /// The current tick in nanoseconds; only ever shortened.
    tick_nanos: Arc<AtomicU64>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Per-call store data: an empty WASI context (no preopens, env, args,
/// stdio or network), the memory limiter, the call's deadline and
/// attribution for logs.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryCap,
    plugin: Arc<str>,
    /// What this call has logged so far, against `LOG_BUDGET_*`.
    logged_bytes: usize,
    logged_lines: usize,
    dropped_lines: usize,
    /// When the call must be over. Every epoch tick checks it while the
    /// plugin runs; waits in `wasi:io/poll` (a sleep, a clock subscription)
    /// are host code that epochs cannot interrupt, so they are cut at it.
    deadline: Instant,
    /// The caller's cancellation, checked at the same points.
    cancel: Option<CancellationToken>,
}

/// The `wasi:io/poll` interface this host links (wasmtime-wasi 48); guests
/// importing any 0.2.x resolve to it.
const WASI_POLL: &str = "wasi:io/poll@0.2.12";

/// A plugin waited in `wasi:io/poll` past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the plugin was still waiting (wasi:io/poll) at its deadline")]
struct WaitedPastDeadline;

/// The call's caller went away; the call was stopped.
#[derive(Debug, thiserror::Error)]
#[error("the caller went away")]
struct CallCancelled;

/// Runs one of WASI's waits, but not past the call's deadline nor past its
/// caller's cancellation.
fn wait_within<F: std::future::Future>(
    deadline: Instant,
    cancel: Option<CancellationToken>,
    f: F,
) -> wasmtime::Result<F::Output> {
    let left = deadline.saturating_duration_since(Instant::now());
    let cancel = cancel.unwrap_or_default();
    // The timer is made inside the runtime `in_tokio` enters (or starts).
    wasmtime_wasi::runtime::in_tokio(async move {
        tokio::select! {
            r = tokio::time::timeout(left, f) => r.map_err(|_| wasmtime::Error::new(WaitedPastDeadline)),
            _ = cancel.cancelled() => Err(wasmtime::Error::new(CallCancelled)),
        }
    })
}

/// Replaces `poll` and `pollable.block` with versions bounded by the call's
/// deadline; everything else in `wasi:io/poll` stays wasmtime-wasi's.
fn bound_waits(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::DynPollable;
    use wasmtime_wasi_io::bindings::wasi::io::poll::{Host, HostPollable};
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_POLL)?;
    poll.func_wrap(
        "poll",
        |mut store: wasmtime::StoreContextMut<'_, CallState>,
         (list,): (Vec<Resource<DynPollable>>,)| {
            let state = store.data_mut();
            let (deadline, cancel) = (state.deadline, state.cancel.clone());
            wait_within(deadline, cancel, Host::poll(&mut state.table, list))?.map(|ready| (ready,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: wasmtime::StoreContextMut<'_, CallState>, (p,): (Resource<DynPollable>,)| {
            let state = store.data_mut();
            let (deadline, cancel) = (state.deadline, state.cancel.clone());
            wait_within(deadline, cancel, HostPollable::block(&mut state.table, p))?
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Per call, a plugin may log this many lines and bytes; the rest is
/// dropped, with one line saying so.
const LOG_BUDGET_LINES: usize = 100;
const LOG_BUDGET_BYTES: usize = 64 << 10;
/// Longest log line, denial or error message a plugin can send.
pub const MAX_MESSAGE_CHARS: usize = 4096;

/// A plugin's text made safe to show: at most `MAX_MESSAGE_CHARS`, control
/// characters (newlines included) escaped so it cannot forge log lines.
pub fn plugin_text(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_CHARS));
    for (i, c) in message.chars().enumerate() {
        if i == MAX_MESSAGE_CHARS {
            out.push_str("… (cut)");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl CallState {
    /// A plugin's log line, attributed to it and to the request it serves
    /// (the span the call runs in), within the call's log budget.
    pub(super) fn log(&mut self, level: tracing::Level, message: String) {
        use tracing::Level;
        if self.logged_lines >= LOG_BUDGET_LINES || self.logged_bytes >= LOG_BUDGET_BYTES {
            if self.dropped_lines == 0 {
                tracing::warn!(
                    plugin = &*self.plugin,
                    "log budget of this call used up; further lines dropped"
                );
            }
            self.dropped_lines += 1;
            return;
        }
        self.logged_lines += 1;
        self.logged_bytes += message.len();
        let message = plugin_text(&message);
        let plugin = &*self.plugin;
        match level {
            Level::TRACE => tracing::trace!(plugin, "{message}"),
            Level::DEBUG => tracing::debug!(plugin, "{message}"),
            Level::INFO => tracing::info!(plugin, "{message}"),
            Level::WARN => tracing::warn!(plugin, "{message}"),
            _ => tracing::error!(plugin, "{message}"),
        }
    }
}

/// Refuses memory growth past the plugin's cap and remembers that it did, so
/// the resulting trap is reported as what it is.
struct MemoryCap {
    cap: usize,
    exceeded: bool,
    peak: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("memory cap exceeded")]
struct MemoryCapExceeded;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.exceeded = true;
            return Err(wasmtime::Error::new(MemoryCapExceeded));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A compiled, linked plugin ready to be instantiated.
pub struct LoadedComponent {
    pub name: Arc<str>,
    pub info: PluginInfo,
    pub sha256: String,
    pub limits: Limits,
    pub settings: String,
    pre: v0_1::Pre,
    /// How the component got here: compiled now or loaded from the cache.
    pub load: LoadStats,
}

#[derive(Clone, Copy, Debug)]
pub struct LoadStats {
    pub from_cache: bool,
    pub duration: Duration,
}

/// What one call measured, for metrics and benchmarks. The three phases
/// split the sandbox's own cost (a fresh store and instance, then handing
/// the pool slot back) from the plugin's work, which an author can change.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallStats {
    pub peak_memory_bytes: usize,
    /// A fresh store and an instance from the pre-linked component.
    pub instantiate: Duration,
    /// The export itself: arguments in, the plugin's code, the result out.
    pub run: Duration,
    /// Dropping the store, which resets the instance's pool slot.
    pub teardown: Duration,
    /// Log lines the plugin sent past its per-call budget, dropped.
    pub log_lines_dropped: usize,
}

impl Runtime {
    pub fn new(options: RuntimeOptions) -> Result<Self, PluginError> {
        let engine = Engine::new(&engine_config(&options))
            .map_err(|e| PluginError::Engine(e.to_string()))?;

        let mut linker: Linker<CallState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        bound_waits(&mut linker).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        v0_1::add_to_linker(&mut linker).map_err(|e| PluginError::Engine(e.to_string()))?;

        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = format!("{:016x}", h.finish());

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let tick_nanos = Arc::new(AtomicU64::new(MAX_TICK.as_nanos() as u64));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let tick = tick_nanos.clone();
            std::thread::Builder::new()
                .name("berth-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_nanos(tick.load(Ordering::Relaxed)));
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| PluginError::Engine(format!("cannot start epoch thread: {e}")))?;
        }
        Ok(Runtime {
            engine,
            linker,
            options,
            engine_key,
            ticker_stop,
            tick_nanos,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles (or loads from the cache) and links a component, checks that
    /// it targets this host's WIT version, reads its info and validates its
    /// settings in a fresh instance.
    pub fn load(
        &self,
        name: &str,
        bytes: Vec<u8>,
        expected_sha256: Option<&str>,
        settings: String,
        limits: Limits,
    ) -> Result<LoadedComponent, PluginError> {
        let name: Arc<str> = Arc::from(name);
        let err = |kind: LoadErrorKind| PluginError::Load {
            plugin: name.to_string(),
            kind,
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if let Some(want) = expected_sha256
            && !want.eq_ignore_ascii_case(&sha256)
        {
            return Err(err(LoadErrorKind::HashMismatch {
                expected: want.to_string(),
                actual: sha256,
            }));
        }
        if limits.memory_bytes > self.options.max_memory_bytes {
            return Err(err(LoadErrorKind::Invalid(format!(
                "memory_mb {} exceeds the engine maximum of {} MiB",
                limits.memory_bytes >> 20,
                self.options.max_memory_bytes >> 20
            ))));
        }
        // Before compiling: wasmtime would refuse such a component only as
        // "not valid" with the pool's limit in hex, or trap at first call.
        let initial = initial_memory_bytes(&bytes).map_err(|m| err(LoadErrorKind::Invalid(m)))?;
        if initial > limits.memory_bytes as u64 {
            return Err(err(LoadErrorKind::InitialMemory {
                needs_mib: initial.div_ceil(1 << 20),
                limit_mib: (limits.memory_bytes >> 20) as u64,
            }));
        }
        self.tick_nanos.fetch_min(
            tick_for(limits.deadline).as_nanos() as u64,
            Ordering::Relaxed,
        );
        let started = Instant::now();
        let (component, from_cache) = self.compile_cached(&bytes, &sha256).map_err(err)?;
        check_exports(&self.engine, &component).map_err(err)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| err(LoadErrorKind::Link(format!("{e:#}"))))?;
        let pre = v0_1::Pre::new(pre).map_err(|e| err(LoadErrorKind::Link(format!("{e:#}"))))?;
        let load = LoadStats {
            from_cache,
            duration: started.elapsed(),
        };
        let mut loaded = LoadedComponent {
            name: name.clone(),
            info: PluginInfo::default(),
            sha256,
            limits,
            settings,
            pre,
            load,
        };

        let mut store = self.new_store(&loaded, limits.deadline, None);
        match loaded.pre.check_signatures(&mut store) {
            Ok(()) => {}
            Err(v0_1::SignatureCheck::Wrong(w)) => {
                return Err(err(LoadErrorKind::Signature(w.to_string())));
            }
            Err(v0_1::SignatureCheck::Run(e)) => {
                let exceeded = store.data().limiter.exceeded;
                return Err(classify(&name, limits, exceeded, e));
            }
        }
        drop(store);
        let (info, _) = self.call(&loaded, None, |p, store| p.info(store))?;
        loaded.info = info;
        let settings = loaded.settings.clone();
        let (validated, _) = self.call(&loaded, None, |p, store| {
            p.validate_settings(store, &settings)
        })?;
        validated.map_err(|message| PluginError::Settings {
            plugin: name.to_string(),
            message: plugin_text(&message),
        })?;
        Ok(loaded)
    }

    fn compile_cached(
        &self,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<(Component, bool), LoadErrorKind> {
        let invalid = |e: wasmtime::Error| LoadErrorKind::Invalid(format!("{e:#}"));
        let Some(dir) = &self.options.cache_dir else {
            return Component::new(&self.engine, bytes)
                .map(|c| (c, false))
                .map_err(invalid);
        };
        // Artifacts are only valid for the same wasmtime version, config and
        // features: the engine hash is part of the key.
        let path = dir.join(format!("{sha256}-{}.cwasm", self.engine_key));
        // Read into memory rather than mmap the file: a cache file truncated
        // or rewritten in place under a live mapping would SIGBUS the server.
        if let Ok(artifact) = std::fs::read(&path) {
            // SAFETY: deserialize trusts the artifact's machine code. The file
            // is one this host wrote, named by the content hash of its source
            // and the engine's compatibility hash, in a directory only Berth
            // writes; wasmtime's header checks reject foreign or corrupt
            // files, which are then recompiled below.
            match unsafe { Component::deserialize(&self.engine, &artifact) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "discarding unusable compiled plugin: {e:#}")
                }
            }
        }
        let (component, artifact) = match &self.options.compiler {
            Some(compiler) => {
                let artifact = self.compile_in_child(compiler, bytes)?;
                // SAFETY: the artifact comes from this same binary, compiled
                // by an engine configured by the same options; wasmtime's
                // header checks still refuse anything else.
                let component = unsafe { Component::deserialize(&self.engine, &artifact) }
                    .map_err(|e| {
                        LoadErrorKind::Compiler(format!("the compiled plugin is unusable: {e:#}"))
                    })?;
                (component, artifact)
            }
            None => {
                let component = Component::new(&self.engine, bytes).map_err(invalid)?;
                let artifact = component.serialize().map_err(invalid)?;
                (component, artifact)
            }
        };
        // A cache that cannot be written costs the next start a compile,
        // not this load.
        if let Err(e) = write_artifact(dir, &path, &artifact) {
            tracing::warn!(path = %path.display(), "cannot cache compiled plugin: {e}");
        }
        Ok((component, false))
    }

    /// Runs `compiler compile-plugin` with the component on stdin; the
    /// child writes the compiled artifact to stdout and exits, taking the
    /// compiler's memory with it. Its error, if any, is the last line it
    /// wrote to stderr.
    fn compile_in_child(&self, compiler: &Path, bytes: &[u8]) -> Result<Vec<u8>, LoadErrorKind> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let started = Instant::now();
        let mut child = Command::new(compiler)
            .arg("compile-plugin")
            .arg("--max-instances")
            .arg(self.options.max_instances.to_string())
            .arg("--max-memory-bytes")
            .arg(self.options.max_memory_bytes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                LoadErrorKind::Compiler(format!(
                    "cannot start the compiler {}: {e}",
                    compiler.display()
                ))
            })?;
        // The child reads all of stdin before it writes anything, so this
        // cannot fill a pipe both ways. One that exits early closes its
        // stdin; its stderr then says why.
        let fed = child.stdin.take().map(|mut stdin| stdin.write_all(bytes));
        let output = child
            .wait_with_output()
            .map_err(|e| LoadErrorKind::Compiler(format!("waiting for the compiler: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            // The component's fault is marked; anything else (a signal, a
            // panic, no memory) is the compiler's.
            if let Some(why) = stderr
                .lines()
                .find_map(|l| l.trim().strip_prefix(INVALID_COMPONENT))
            {
                return Err(LoadErrorKind::Invalid(plugin_text(why)));
            }
            let said = stderr
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty() && !l.starts_with("note: run with"))
                .map(|l| format!(": {}", plugin_text(l)))
                .unwrap_or_default();
            return Err(LoadErrorKind::Compiler(format!(
                "the compiling process {}{said}",
                output.status
            )));
        }
        if let Some(Err(e)) = fed {
            return Err(LoadErrorKind::Compiler(format!(
                "feeding the compiler: {e}"
            )));
        }
        tracing::info!(
            ms = started.elapsed().as_secs_f64() * 1e3,
            bytes = output.stdout.len(),
            "plugin compiled in a child process"
        );
        Ok(output.stdout)
    }

    fn new_store(
        &self,
        plugin: &LoadedComponent,
        deadline: Duration,
        cancel: Option<CancellationToken>,
    ) -> Store<CallState> {
        let mut table = ResourceTable::new();
        table.set_max_capacity(self.options.max_handles);
        let state = CallState {
            wasi: WasiCtxBuilder::new().build(),
            table,
            limiter: MemoryCap {
                cap: plugin.limits.memory_bytes,
                exceeded: false,
                peak: 0,
            },
            plugin: plugin.name.clone(),
            logged_bytes: 0,
            logged_lines: 0,
            dropped_lines: 0,
            deadline: Instant::now() + deadline,
            cancel,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Every tick, while the plugin runs: stop it if its caller went away
        // or its time is up. Ticks are a tenth of the shortest deadline, so
        // this is a few checks per call.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            if state.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                return Err(wasmtime::Error::new(CallCancelled));
            }
            if Instant::now() >= state.deadline {
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Continue(1))
        });
        store
    }

    /// Runs `f` against a fresh instance of `plugin`, turning traps, timeouts
    /// and memory exhaustion into errors that name the plugin.
    fn call<R>(
        &self,
        plugin: &LoadedComponent,
        chain: Option<&ChainDeadline>,
        f: impl FnOnce(&v0_1::Instance, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<(R, CallStats), PluginError> {
        let started = Instant::now();
        if chain.is_some_and(|c| c.cancel.is_cancelled()) {
            return Err(PluginError::Cancelled {
                plugin: plugin.name.to_string(),
            });
        }
        let left = chain.map(|c| c.end.saturating_duration_since(started));
        let cut = left.is_some_and(|l| l < plugin.limits.deadline);
        let budget_spent = || PluginError::ChainBudget {
            plugin: plugin.name.to_string(),
            budget: chain.map(|c| c.budget).unwrap_or_default(),
        };
        if left == Some(Duration::ZERO) {
            return Err(budget_spent());
        }
        let deadline = left.map_or(plugin.limits.deadline, |l| l.min(plugin.limits.deadline));
        let mut store = self.new_store(plugin, deadline, chain.map(|c| c.cancel.clone()));
        let instance = plugin.pre.instantiate(&mut store);
        let instantiated = Instant::now();
        let result = instance.and_then(|instance| f(&instance, &mut store));
        let ran = Instant::now();
        let limiter = &store.data().limiter;
        let (peak_memory_bytes, memory_exceeded) = (limiter.peak, limiter.exceeded);
        let log_lines_dropped = store.data().dropped_lines;
        drop(store);
        let stats = CallStats {
            peak_memory_bytes,
            instantiate: instantiated - started,
            run: ran - instantiated,
            teardown: ran.elapsed(),
            log_lines_dropped,
        };
        match result {
            Ok(r) => Ok((r, stats)),
            Err(e) => match classify(&plugin.name, plugin.limits, memory_exceeded, e) {
                PluginError::Timeout { .. } if cut => Err(budget_spent()),
                other => Err(other),
            },
        }
    }

    /// The chain budget runs go by.
    pub fn chain_budget(&self) -> Duration {
        self.options.chain_budget
    }

    /// One plugin call on its own: its own deadline, no chain budget.
    pub fn shape(
        &self,
        plugin: &LoadedComponent,
        hook: Hook,
        ctx: &SessionContext,
        object: &str,
    ) -> Result<(Result<String, Rejection>, CallStats), PluginError> {
        self.shape_within(plugin, hook, ctx, object, None)
    }

    /// One plugin call as part of a chain run: its deadline is cut to what
    /// is left of the chain's.
    pub fn shape_within(
        &self,
        plugin: &LoadedComponent,
        hook: Hook,
        ctx: &SessionContext,
        object: &str,
        chain: Option<&ChainDeadline>,
    ) -> Result<(Result<String, Rejection>, CallStats), PluginError> {
        let (result, stats) = self.call(plugin, chain, |p, store| {
            p.shape(store, hook, &plugin.settings, ctx, object)
        })?;
        if let Ok(out) = &result
            && out.len() > plugin.limits.max_output_bytes
        {
            return Err(PluginError::OutputTooLarge {
                plugin: plugin.name.to_string(),
                size: out.len(),
                limit: plugin.limits.max_output_bytes,
            });
        }
        Ok((result, stats))
    }
}

fn classify(
    plugin: &str,
    limits: Limits,
    memory_exceeded: bool,
    e: wasmtime::Error,
) -> PluginError {
    let plugin = plugin.to_string();
    if memory_exceeded || e.downcast_ref::<MemoryCapExceeded>().is_some() {
        return PluginError::MemoryExceeded {
            plugin,
            limit: limits.memory_bytes,
        };
    }
    if e.downcast_ref::<WaitedPastDeadline>().is_some() {
        return PluginError::Timeout {
            plugin,
            deadline: limits.deadline,
        };
    }
    if e.downcast_ref::<CallCancelled>().is_some() {
        return PluginError::Cancelled { plugin };
    }
    if e.chain().any(|c| {
        matches!(
            c.downcast_ref::<ResourceTableError>(),
            Some(ResourceTableError::Full)
        )
    }) {
        return PluginError::TooManyHandles { plugin };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PluginError::Timeout {
            plugin,
            deadline: limits.deadline,
        },
        other => {
            // The WebAssembly backtrace is for the operator's log; the caller
            // (Bay's user, in the end) gets the one-line reason.
            tracing::warn!(plugin = %plugin, "plugin trapped: {e:?}");
            let message = match other {
                Some(trap) => trap.to_string(),
                // The outermost context is the backtrace; the cause says why.
                None => e.root_cause().to_string(),
            };
            PluginError::Trap {
                plugin,
                message: plugin_text(message.lines().next().unwrap_or_default()),
            }
        }
    }
}

/// The largest initial linear memory of any core module in a component, in
/// bytes: what every instance of it costs before it runs a line of code.
fn initial_memory_bytes(bytes: &[u8]) -> Result<u64, String> {
    let mut largest = 0u64;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| e.to_string())?;
        if let wasmparser::Payload::MemorySection(memories) = payload {
            for memory in memories {
                let memory = memory.map_err(|e| e.to_string())?;
                let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                largest = largest.max(memory.initial.saturating_mul(page));
            }
        }
    }
    Ok(largest)
}

/// Checks that the component exports this host's policy interface, and says
/// which version it targets when it does not.
fn check_exports(engine: &Engine, component: &Component) -> Result<(), LoadErrorKind> {
    let ty = component.component_type();
    let names: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    if names.iter().any(|n| n == v0_1::POLICY_EXPORT) {
        return Ok(());
    }
    let prefix = format!("{WIT_PACKAGE}/policy@");
    if let Some(other) = names.iter().find_map(|n| n.strip_prefix(&prefix)) {
        return Err(LoadErrorKind::WitVersion {
            found: other.to_string(),
            supported: WIT_VERSION.to_string(),
        });
    }
    Err(LoadErrorKind::MissingExport {
        expected: v0_1::POLICY_EXPORT.to_string(),
        found: names,
    })
}

/// Writes a compiled artifact to the cache at `path`, atomically.
fn write_artifact(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // Write then rename, so a concurrent reader never sees half a file.
    // Unique per writer (process and call), so two threads compiling the
    // same plugin never write into one temporary file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_a_tenth_of_the_deadline_within_bounds() {
        assert_eq!(
            tick_for(Duration::from_millis(50)),
            Duration::from_millis(5)
        );
        assert_eq!(tick_for(Duration::from_millis(5)), MIN_TICK);
        assert_eq!(tick_for(Duration::from_secs(5)), MAX_TICK);
    }
}
