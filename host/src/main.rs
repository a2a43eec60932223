//! The `berth` command.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use berth::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Bay's sandbox-session driver for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the driver API.
    Serve {
        /// YAML config file; BERTH_* environment variables override it.
        #[arg(long, env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a config file and load its plugins, then exit.
    Check {
        #[arg(long, env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the OpenAPI document.
    Openapi,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn load(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Config::load(path, &|k| std::env::var(k).ok()).context("invalid configuration")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let mut cfg = load(config.as_deref())?;
            init_tracing(cfg.log_format);
            if let Some(path) = cfg.ensure_token()? {
                tracing::warn!(path = %path.display(), "no API tokens configured; generated one");
            }
            berth::server::serve(cfg, config).await
        }
        Command::Check { config } => {
            let cfg = load(config.as_deref())?;
            init_tracing(cfg.log_format);
            let engine = berth::server::policy_engine(&cfg)?;
            for p in engine.chain().summaries() {
                println!(
                    "{} {} {} hooks={:?} cached={} load={:.1}ms",
                    p.name, p.plugin_name, p.plugin_version, p.hooks, p.from_cache, p.load_ms
                );
            }
            Ok(())
        }
        Command::Openapi => {
            use utoipa::OpenApi;
            println!(
                "{}",
                berth::api::openapi::ApiDoc::openapi().to_pretty_json()?
            );
            Ok(())
        }
    }
}
