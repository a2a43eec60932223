//! `berth plugin test` with no suite: the plugin project in a directory,
//! built if a source changed, and its suites.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the plugin project in `dir` and returns its suites
/// (`tests/*.yaml`, `tests/*.yml`, sorted).
///
/// - Rust (`Cargo.toml`): `cargo build --target wasm32-wasip2 --release`;
///   cargo rebuilds only what changed.
/// - Python (`pyproject.toml`): `berth-plugin-build --if-stale`, from the
///   Python SDK, on `PATH` (or beside `$VIRTUAL_ENV`'s python).
///
/// Errors say what is missing and how to get it.
pub fn build_and_find_suites(dir: &Path) -> Result<Vec<PathBuf>, String> {
    if dir.join("Cargo.toml").exists() {
        run(
            Command::new("cargo").args([
                "build",
                "--quiet",
                "--target",
                "wasm32-wasip2",
                "--release",
            ]),
            dir,
            "cargo (Rust, with the wasm32-wasip2 target: rustup target add wasm32-wasip2)",
        )?;
    } else if dir.join("pyproject.toml").exists() {
        let tool = python_build_tool().ok_or_else(|| {
            "berth-plugin-build not found: install the Python SDK (pip install <Berth checkout>/plugins/sdk-python) \
             in the environment you run berth plugin test from"
                .to_string()
        })?;
        run(
            Command::new(&tool).arg("--if-stale").arg("."),
            dir,
            &tool.display().to_string(),
        )?;
    } else {
        return Err(format!(
            "{} is not a plugin project (no Cargo.toml or pyproject.toml); name the suite files to run, \
             or create a project with berth plugin new",
            absolute(dir).display()
        ));
    }
    let tests = dir.join("tests");
    let mut suites: Vec<PathBuf> = std::fs::read_dir(&tests)
        .map_err(|e| format!("{}: {e}", tests.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    suites.sort();
    if suites.is_empty() {
        return Err(format!("no suite (*.yaml) in {}", tests.display()));
    }
    Ok(suites)
}

fn run(cmd: &mut Command, dir: &Path, what: &str) -> Result<(), String> {
    let status = cmd
        .current_dir(dir)
        .status()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building the plugin failed ({what}: {status})"))
    }
}

fn python_build_tool() -> Option<PathBuf> {
    let name = "berth-plugin-build";
    let venv = std::env::var_os("VIRTUAL_ENV").map(|v| PathBuf::from(v).join("bin").join(name));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name));
    venv.into_iter().chain(on_path).find(|p| p.is_file())
}

fn absolute(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}
