//! Wiring: config → plugin engine → Kubernetes client → driver → HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::driver::{self, Driver};
use crate::metrics::Metrics;
use crate::plugin::{PolicyEngine, Runtime, RuntimeOptions};

/// Loads the plugins of `config` into a fresh engine.
pub fn policy_engine(config: &Config) -> anyhow::Result<PolicyEngine> {
    let engine = pending_engine(config)?;
    engine.reload(&config.plugins, &config.base_dir)?;
    Ok(engine)
}

/// The engine for `config`, with no plugins loaded yet.
fn pending_engine(config: &Config) -> anyhow::Result<PolicyEngine> {
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: Some(config.plugin_cache_dir()),
        max_instances: config.plugin_max_instances,
        max_memory_bytes: config
            .plugins
            .iter()
            .map(|p| (p.memory_mb as usize) << 20)
            .max()
            .unwrap_or(64 << 20)
            .max(64 << 20),
        chain_budget: std::time::Duration::from_millis(config.plugin_chain_budget_ms),
        compiler: config.plugin_compiler.clone(),
        ..RuntimeOptions::default()
    })?;
    Ok(PolicyEngine::pending(runtime)
        .with_guards(config.guards())
        .with_sources(config.sources()))
}

/// How long a client has to send a request's headers. hyper times the wait
/// for the next request on a kept-alive connection the same way, so this is
/// also how long an idle connection stays open.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest pause allowed while a client sends a request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long before the end of the shutdown grace the waits still running
/// are cut, so their 503 reaches the caller before connections close.
const CUT_BEFORE_END: Duration = Duration::from_secs(3);

pub struct Running {
    pub addr: SocketAddr,
    pub handle: tokio::task::JoinHandle<std::io::Result<()>>,
    pub state: api::Shared,
    /// Notify to stop accepting connections and drain: in-flight requests
    /// (a `start` may be waiting for its Pod) get `shutdown_grace_s`.
    pub shutdown: Arc<tokio::sync::Notify>,
    /// The first plugin load, running in the background: its generation,
    /// or why it failed (then `berth serve` exits).
    pub plugins: tokio::task::JoinHandle<anyhow::Result<u64>>,
}

impl Running {
    /// Waits for the first plugin load; its generation.
    pub async fn plugins_loaded(&mut self) -> anyhow::Result<u64> {
        (&mut self.plugins).await?
    }
}

/// Starts serving on `listener`; returns once the server accepts requests.
/// The API server need not be reachable: until the session isolation
/// NetworkPolicy is applied (retried in the background) Berth is not ready
/// and creates no session.
pub async fn start(
    config: Config,
    config_path: Option<PathBuf>,
    listener: TcpListener,
) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    let engine = Arc::new(pending_engine(&config)?);
    let client = driver::kube_client(&config)
        .await
        .context("building the Kubernetes client")?;
    let metrics = Arc::new(Metrics::new());
    let driver = Driver::new(client, config.clone(), engine.clone(), metrics.clone());
    let state = Arc::new(AppState::new(
        driver,
        metrics,
        config.tokens.clone(),
        config_path,
    ));
    // Compiling a cold plugin cache takes seconds; serving (and probes)
    // start at once, unready until the first generation is in. Reloads
    // queue behind this load.
    let plugins = match config.plugins_configmap.clone() {
        // From a ConfigMap: the first list that loads. Until then Berth
        // stays up, unready, saying why, and a fixed list loads.
        Some(spec) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(crate::plugins_configmap::watch(state.clone(), spec, tx));
            tokio::spawn(async move {
                rx.await
                    .map_err(|_| anyhow::anyhow!("the plugin ConfigMap watch ended"))
            })
        }
        None => tokio::spawn({
            let state = state.clone();
            let plugins = config.plugins.clone();
            async move { Ok(state.driver.reload_plugins(plugins, "start").await?) }
        }),
    };
    // Applied in the background, retried until the API server answers;
    // serving starts at once. Until it is in, `/readyz` says so and no
    // session is created (`Driver::create` checks), so nothing runs without
    // it, and a probe gets an answer even while the API server is away.
    tokio::spawn(isolate(state.clone()));
    let app = api::router(state.clone(), &config).layer(
        tower_http::timeout::RequestBodyTimeoutLayer::new(BODY_READ_TIMEOUT),
    );
    let addr = listener.local_addr()?;
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let grace = Duration::from_secs(config.shutdown_grace_s);
    let handle = tokio::spawn(serve_connections(
        listener,
        app,
        shutdown.clone(),
        state.clone(),
        grace,
    ));
    Ok(Running {
        addr,
        handle,
        state,
        shutdown,
        plugins,
    })
}

/// Applies the session isolation NetworkPolicy, retrying with back-off
/// (1 s doubling to 30 s) while the API server cannot be reached.
async fn isolate(state: api::Shared) {
    let mut pause = Duration::from_secs(1);
    loop {
        match state.driver.ensure_isolation().await {
            Ok(()) => return,
            Err(e) => tracing::warn!(retry_in = ?pause, "{e}"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// Accepts HTTP/1 connections until `stop`, then drains: no new
/// connections, idle ones closed, in-flight requests given `grace` (their
/// waits cut `CUT_BEFORE_END` before it ends), then the rest dropped.
async fn serve_connections(
    listener: TcpListener,
    app: axum::Router,
    stop: Arc<tokio::sync::Notify>,
    state: api::Shared,
    grace: Duration,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, not exit.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.notified() => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            // hyper times a request's headers from their first byte, so a
            // connection that never sends one would stay open for ever (and
            // hold the drain): it gets the same time for its first byte.
            let mut first = [0u8; 1];
            match tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(?grace, "draining connections");
    let cut = tokio::spawn(async move {
        tokio::time::sleep(grace.saturating_sub(CUT_BEFORE_END)).await;
        state.driver.cut_waits();
    });
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "requests still running at the end of the shutdown grace; closing"
        );
    }
    cut.abort();
    Ok(())
}

/// `berth serve`: serve until SIGTERM/SIGINT; SIGHUP reloads plugins.
pub async fn serve(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let running = start(config, config_path, listener).await?;
    tracing::info!(addr = %running.addr, "berth serving; loading plugins");
    let state = running.state.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            // A SIGHUP during the first load applies once it is in.
            while state.driver.policy().waiting_for().is_some() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let plugins = match state.desired_plugins() {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("SIGHUP: {e}");
                    continue;
                }
            };
            // Failures are logged and kept for /v1/plugins by the engine.
            if let Err(e) = state.driver.reload_plugins(plugins, "sighup").await {
                tracing::error!("SIGHUP: reload failed: {e}");
            }
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut handle = running.handle;
    let mut plugins = running.plugins;
    let mut loading = true;
    loop {
        tokio::select! {
            // A replica that cannot load its plugins can serve nothing: exit
            // with the reason, loudly, rather than stay up unready.
            r = &mut plugins, if loading => {
                r?.context("loading the plugins")?;
                loading = false;
                continue;
            }
            r = &mut handle => { r??; return Ok(()); }
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; draining"),
            _ = term.recv() => tracing::info!("terminated; draining"),
        }
        break;
    }
    running.shutdown.notify_one();
    handle.await??;
    Ok(())
}
