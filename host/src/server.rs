//! Wiring: config → plugin engine → Kubernetes client → driver → HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::driver::{self, Driver};
use crate::metrics::Metrics;
use crate::plugin::{PolicyEngine, Runtime, RuntimeOptions};

/// Loads the plugins of `config` into a fresh engine.
pub fn policy_engine(config: &Config) -> anyhow::Result<PolicyEngine> {
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
    })?;
    Ok(PolicyEngine::new(
        runtime,
        &config.plugins,
        &config.base_dir,
    )?)
}

pub struct Running {
    pub addr: SocketAddr,
    pub handle: tokio::task::JoinHandle<std::io::Result<()>>,
    pub state: api::Shared,
    /// Notify to stop accepting connections and let in-flight requests
    /// (a `start` may be waiting for its Pod) finish.
    pub shutdown: Arc<tokio::sync::Notify>,
}

/// Starts serving on `listener`; returns once the server accepts requests.
pub async fn start(
    config: Config,
    config_path: Option<PathBuf>,
    listener: TcpListener,
) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    let engine = tokio::task::spawn_blocking({
        let config = config.clone();
        move || policy_engine(&config)
    })
    .await??;
    let client = driver::kube_client(&config)
        .await
        .context("building the Kubernetes client")?;
    driver::network::ensure(&client, &config)
        .await
        .context("applying the session isolation NetworkPolicy")?;
    let metrics = Arc::new(Metrics::new());
    let driver = Driver::new(client, config.clone(), Arc::new(engine), metrics.clone());
    let state = Arc::new(AppState {
        driver,
        metrics,
        tokens: config.tokens.clone(),
        config_path,
    });
    let app = api::router(state.clone(), &config);
    let addr = listener.local_addr()?;
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let stop = shutdown.clone();
    let handle = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.notified().await })
            .await
    });
    Ok(Running {
        addr,
        handle,
        state,
        shutdown,
    })
}

/// `berth serve`: serve until SIGTERM/SIGINT; SIGHUP reloads plugins.
pub async fn serve(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let running = start(config, config_path, listener).await?;
    let chain = running.state.driver.policy().chain();
    tracing::info!(addr = %running.addr, plugins = chain.summaries().len(), generation = chain.generation, "berth serving");
    let state = running.state.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            let path = state.config_path.clone();
            let base = state.driver.config().base_dir.clone();
            let policy = state.driver.policy().clone();
            let plugins = match Config::load(path.as_deref(), &|k| std::env::var(k).ok()) {
                Ok(c) => c.plugins,
                Err(e) => {
                    tracing::error!("SIGHUP: cannot reload config: {e}");
                    continue;
                }
            };
            let _ = tokio::task::spawn_blocking(move || policy.reload(&plugins, &base)).await;
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut handle = running.handle;
    tokio::select! {
        r = &mut handle => { r??; return Ok(()); }
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; draining"),
        _ = term.recv() => tracing::info!("terminated; draining"),
    }
    running.shutdown.notify_one();
    // In-flight requests get as long as a start may take, then are cut.
    let grace = std::time::Duration::from_secs(running.state.driver.config().startup_timeout_s + 5);
    match tokio::time::timeout(grace, handle).await {
        Ok(r) => r??,
        Err(_) => tracing::warn!("requests still running after {grace:?}; exiting anyway"),
    }
    Ok(())
}
