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
    /// Print the exact Pod and PVC the server would create for a request,
    /// after all plugins, with each plugin's JSON Patch. Touches no cluster.
    Render {
        #[arg(long, env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
        /// YAML/JSON file with Bay's request: session, profile, cargo, labels.
        #[arg(long)]
        request: PathBuf,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Compile a plugin component read from stdin; the artifact goes to
    /// stdout. What `serve` runs as a child process, so the compiler's
    /// memory is returned when it exits. The options must match the server's.
    #[command(hide = true)]
    CompilePlugin {
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
        max_instances: u32,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=(1u64 << 30)))]
        max_memory_bytes: u64,
    },
    /// Plugin author tools.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Measure a suite case's chain: calls/s, p50/p99 with a fresh instance
    /// per call, compile and cached-load time, peak memory per instance.
    Bench {
        suite: PathBuf,
        /// Case name (default: the first case with a request).
        #[arg(long)]
        case: Option<String>,
        #[arg(long, default_value_t = 2000)]
        calls: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Push a component to an OCI registry (config media type
    /// application/vnd.wasm.config.v0+json, one application/wasm layer);
    /// prints the digest-pinned reference.
    Push {
        /// The component (.wasm).
        file: PathBuf,
        /// Where to: oci://HOST/REPO:TAG.
        reference: String,
        /// Also sign it with this private key (as `berth plugin sign`).
        #[arg(long)]
        key: Option<PathBuf>,
        #[command(flatten)]
        registry: berth::harness::registry::RegistryArgs,
    },
    /// Pull a plugin from an OCI registry into a file.
    Pull {
        /// oci://HOST/REPO:TAG or oci://HOST/REPO@sha256:HEX.
        reference: String,
        /// Where to write the component.
        #[arg(short, long, default_value = "plugin.wasm")]
        output: PathBuf,
        /// Require a signature by one of these public keys (cosign.pub).
        #[arg(long)]
        key: Vec<PathBuf>,
        #[command(flatten)]
        registry: berth::harness::registry::RegistryArgs,
    },
    /// Sign a plugin in a registry, cosign-compatibly (a `sha256-HEX.sig`
    /// manifest beside it). The key is a PKCS#8 PEM or cosign's encrypted
    /// cosign.key (password in COSIGN_PASSWORD).
    Sign {
        reference: String,
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        registry: berth::harness::registry::RegistryArgs,
    },
    /// Scaffold a plugin project that passes `berth plugin test` as generated.
    New {
        name: String,
        /// The plugin's language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: berth::harness::scaffold::Lang,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Path of the SDK (default: plugins/sdk or plugins/sdk-python of the
        /// tree berth was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Run suite files (YAML): one line per case, diffs on failure. With no
    /// suite, in a plugin project: build the plugin (cargo for Rust,
    /// berth-plugin-build for Python; only what changed), then run every
    /// suite in tests/.
    Test {
        /// Suite files (default: the project's tests/*.yaml, after a build).
        suites: Vec<PathBuf>,
        /// Rewrite golden files with the actual output.
        #[arg(long)]
        update: bool,
        /// Run only cases whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Write a JSON report of every case here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Write a JUnit XML report here, for CI systems.
        #[arg(long)]
        junit: Option<PathBuf>,
    },
}

fn plugin_test(
    suites: Vec<PathBuf>,
    update: bool,
    filter: Option<String>,
    report: Option<PathBuf>,
    junit: Option<PathBuf>,
) -> anyhow::Result<bool> {
    use std::io::IsTerminal;
    let color = std::io::stdout().is_terminal();
    let paint = |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let opts = berth::harness::Options {
        update,
        filter,
        cache_dir: Some(home.join(".cache/berth/plugins")),
    };
    let mut all = Vec::new();
    for suite in &suites {
        let results = berth::harness::run_suite(suite, &opts)?;
        for r in &results {
            if r.passed {
                println!("{} {} :: {}", paint("32", "PASS"), r.suite, r.case);
            } else {
                println!("{} {} :: {}", paint("31", "FAIL"), r.suite, r.case);
                for f in &r.failures {
                    println!("    {f}");
                }
                if let Some(d) = &r.diff {
                    for line in d.lines() {
                        let code = if line.starts_with('+') {
                            "32"
                        } else if line.starts_with('-') {
                            "31"
                        } else {
                            "0"
                        };
                        println!("    {}", paint(code, line));
                    }
                }
                for s in &r.steps {
                    println!(
                        "    {} changed: {}",
                        s.plugin,
                        serde_json::to_string(&s.patch)?
                    );
                }
            }
        }
        all.extend(results);
    }
    let failed = all.iter().filter(|r| !r.passed).count();
    println!("{} passed, {} failed", all.len() - failed, failed);
    if let Some(path) = report {
        std::fs::write(&path, serde_json::to_string_pretty(&all)?)?;
    }
    if let Some(path) = junit {
        std::fs::write(&path, berth::harness::junit::render(&all))?;
    }
    Ok(failed == 0)
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

/// Only `serve` runs in a Tokio runtime. The offline tools call plugins
/// from plain threads, as the server's blocking pool does: WASI's sync
/// bindings drive their own futures, which a runtime's worker thread cannot
/// (a plugin that printed or slept made them panic).
fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        // The offline tools end quietly when their reader goes away
        // (`berth openapi | head`), as other command-line tools do, rather
        // than panic on the write. The server keeps Rust's default: a
        // client hanging up must never end it.
        // SAFETY: restoring a default signal disposition, before any thread.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Serve { config } => {
            let mut cfg = load(config.as_deref())?;
            init_tracing(cfg.log_format);
            if cfg.plugin_compile_in_child {
                cfg.plugin_compiler = Some(
                    std::env::current_exe()
                        .context("finding this binary to compile plugins with")?,
                );
            }
            if let Some(path) = cfg.ensure_token()? {
                tracing::warn!(path = %path.display(), "no API tokens configured; generated one");
            }
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let served = runtime.block_on(berth::server::serve(cfg, config));
            // A plugin load or reload may still be compiling on a blocking
            // thread; it must not keep a drained server alive.
            runtime.shutdown_background();
            served
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
        Command::Plugin {
            command:
                PluginCommand::Bench {
                    suite,
                    case,
                    calls,
                    json,
                },
        } => {
            init_tracing(LogFormat::Text);
            if calls == 0 {
                anyhow::bail!("--calls must be at least 1");
            }
            let r = berth::harness::bench::bench_case(&suite, case.as_deref(), calls)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "case {}: {} calls, {:.0} calls/s, p50 {:.1} µs, p99 {:.1} µs (fresh instance per plugin call)",
                    r.case, r.calls, r.calls_per_second, r.p50_us, r.p99_us
                );
                for p in &r.plugins {
                    println!(
                        "  {}: compile {:.1} ms, cached load {:.2} ms, peak linear memory {} KiB",
                        p.name, p.compile_ms, p.cached_load_ms, p.peak_memory_kib
                    );
                    println!(
                        "  {}: one call alone p50 {:.1} µs = instantiate {:.1} + run {:.1} + teardown {:.1} (medians of each phase)",
                        p.name,
                        p.call_p50_us,
                        p.instantiate_p50_us,
                        p.run_p50_us,
                        p.teardown_p50_us
                    );
                }
            }
            Ok(())
        }
        Command::Plugin {
            command:
                PluginCommand::New {
                    name,
                    lang,
                    dir,
                    sdk,
                },
        } => {
            use berth::harness::scaffold::Lang;
            let sdk = sdk.unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(match lang {
                    Lang::Rust => "../plugins/sdk",
                    Lang::Python => "../plugins/sdk-python",
                })
            });
            let sdk = sdk
                .canonicalize()
                .with_context(|| format!("SDK not found at {}", sdk.display()))?;
            let root = berth::harness::scaffold::new_plugin(&dir, &name, lang, &sdk)
                .map_err(anyhow::Error::msg)?;
            println!(
                "created {}\nnext: cd {} && berth plugin test",
                root.display(),
                root.display()
            );
            Ok(())
        }
        Command::Plugin {
            command:
                PluginCommand::Test {
                    suites,
                    update,
                    filter,
                    report,
                    junit,
                },
        } => {
            // Plugin logs and load times only when asked (BERTH_LOG=info).
            if std::env::var_os("BERTH_LOG").is_none() {
                // SAFETY: single-threaded here, before any thread reads the environment.
                unsafe { std::env::set_var("BERTH_LOG", "warn") };
            }
            init_tracing(LogFormat::Text);
            let suites = if suites.is_empty() {
                berth::harness::project::build_and_find_suites(std::path::Path::new("."))
                    .map_err(anyhow::Error::msg)?
            } else {
                suites
            };
            if !plugin_test(suites, update, filter, report, junit)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Plugin {
            command:
                PluginCommand::Push {
                    file,
                    reference,
                    key,
                    registry,
                },
        } => {
            use berth::harness::registry;
            // The key first: a key that cannot sign must not leave the tag
            // moved to an unsigned artifact.
            let signer = match &key {
                Some(k) => Some(registry::signing_key(k).map_err(anyhow::Error::msg)?),
                None => None,
            };
            let pinned =
                registry::push(&file, &reference, &registry).map_err(anyhow::Error::msg)?;
            println!("pushed {pinned}");
            if let (Some(signer), Some(key)) = (signer, key) {
                registry::sign(&pinned, &signer, &registry).map_err(anyhow::Error::msg)?;
                println!("signed {pinned} with {}", key.display());
            }
            Ok(())
        }
        Command::Plugin {
            command:
                PluginCommand::Pull {
                    reference,
                    output,
                    key,
                    registry,
                },
        } => {
            let pulled = berth::harness::registry::pull(&reference, &output, &key, &registry)
                .map_err(anyhow::Error::msg)?;
            println!(
                "pulled {} ({} bytes) to {}{}",
                pulled.pinned,
                pulled.bytes,
                output.display(),
                pulled
                    .signed_by
                    .map(|k| format!(", signed by {k}"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        Command::Plugin {
            command:
                PluginCommand::Sign {
                    reference,
                    key,
                    registry,
                },
        } => {
            let signer = berth::harness::registry::signing_key(&key).map_err(anyhow::Error::msg)?;
            let pinned = berth::harness::registry::sign(&reference, &signer, &registry)
                .map_err(anyhow::Error::msg)?;
            println!("signed {pinned} with {}", key.display());
            Ok(())
        }
        Command::Render { config, request } => {
            let mut cfg = load(config.as_deref())?;
            cfg.tokens.clear();
            init_tracing(LogFormat::Text);
            let text = std::fs::read_to_string(&request)
                .with_context(|| format!("reading {}", request.display()))?;
            let req: berth::harness::Request = serde_yaml::from_str(&text)
                .with_context(|| format!("{} is not a request", request.display()))?;
            let engine = berth::server::policy_engine(&cfg)?;
            let mut failed = false;
            for hook in [berth::plugin::Hook::Pod, berth::plugin::Hook::Pvc] {
                let (object, ctx) =
                    berth::harness::build(&cfg, hook, &req).map_err(anyhow::Error::msg)?;
                match berth::harness::run_chain(&engine, hook, &ctx, &object) {
                    Ok((out, steps)) => {
                        println!(
                            "---\n# {hook:?} after {} plugin(s)\n{}",
                            steps.len(),
                            serde_yaml::to_string(&out)?
                        );
                        for s in steps {
                            println!(
                                "# {} changed: {}",
                                s.plugin,
                                serde_json::to_string(&s.patch)?
                            );
                        }
                    }
                    Err(e) => {
                        println!("---\n# {hook:?}: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::CompilePlugin {
            max_instances,
            max_memory_bytes,
        } => {
            use std::io::{Read, Write};
            berth::plugin::runtime::die_with_parent();
            let compiled = (|| {
                let mut wasm = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut wasm)
                    .map_err(|e| format!("reading the component from stdin: {e}"))?;
                let options = berth::plugin::RuntimeOptions {
                    max_instances,
                    max_memory_bytes: max_memory_bytes as usize,
                    ..Default::default()
                };
                let artifact = berth::plugin::runtime::precompile(&options, &wasm)
                    .map_err(|e| format!("{}{e}", berth::plugin::runtime::INVALID_COMPONENT))?;
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(&artifact)
                    .and_then(|()| stdout.flush())
                    .map_err(|e| format!("writing the artifact to stdout: {e}"))
            })();
            if let Err(e) = compiled {
                // One line: the server reports it as the plugin's load error.
                eprintln!("{}", e.replace('\n', " "));
                std::process::exit(1);
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
