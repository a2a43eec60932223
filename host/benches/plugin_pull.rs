//! What loading the three shipped plugins from a registry costs, against
//! loading the same components from files, in one run:
//!
//! - `cold`: tag references, signatures required; empty digest cache and
//!   empty compile cache (a new Pod: pull + verify + compile);
//! - `pull+verify`: the same, with the compile cache warm (the registry's
//!   share of a cold start);
//! - `warm`: digest-pinned references from the digest cache, compile cache
//!   warm, the registry stopped (a restarted container);
//! - `files`: the same components from files, compile cache warm (the
//!   baseline: how Berth started before OCI).
//!
//!   cargo bench -p berth --bench plugin_pull
//!
//! Needs the shipped plugins (`tests/build-plugins.sh`) and Debian's
//! `docker-registry`, which it starts on a loopback port. Compiles run in
//! this process, on every core, as `berth check` does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth::plugin::oci::{self, DigestCache, Registry, RegistryConfig};
use berth::plugin::signature::SigningKey;
use berth::plugin::{
    PluginConfig, PolicyEngine, Runtime, RuntimeOptions, SignaturePolicy, Sources,
};

mod common;

const ROUNDS: usize = 5;

struct Registryd {
    addr: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Registryd {
    fn start() -> Registryd {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        std::fs::write(
            dir.path().join("config.yml"),
            format!(
                "version: 0.1\nlog: {{ level: error }}\nstorage: {{ filesystem: {{ rootdirectory: {} }} }}\nhttp: {{ addr: {addr}, secret: bench }}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (Debian's docker-registry) is missing");
        while std::net::TcpStream::connect(&addr).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Registryd {
            addr,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Registryd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shipped() -> Vec<(PluginConfig, PathBuf)> {
    [
        ("restricted", serde_json::json!({ "level": "baseline" })),
        ("scheduling", serde_json::json!({})),
        ("resources", serde_json::json!({ "max": { "cpu": "8" } })),
    ]
    .into_iter()
    .map(|(name, settings)| {
        let file = common::wasm(&format!("berth_plugin_{name}"));
        let config = serde_json::from_value(serde_json::json!({
            "name": name, "path": file, "settings": settings,
        }))
        .unwrap();
        (config, file)
    })
    .collect()
}

fn engine(compile_cache: &Path, sources: Sources) -> PolicyEngine {
    PolicyEngine::pending(
        Runtime::new(RuntimeOptions {
            cache_dir: Some(compile_cache.to_path_buf()),
            ..RuntimeOptions::default()
        })
        .unwrap(),
    )
    .with_sources(sources)
}

/// Seconds one load of `list` takes from nothing but the given caches.
fn load(compile_cache: &Path, sources: Sources, list: &[PluginConfig]) -> f64 {
    let e = engine(compile_cache, sources);
    let t = Instant::now();
    e.reload(list, Path::new("/")).expect("loads");
    t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut reg = Registryd::start();
    let work = tempfile::tempdir().unwrap();
    let key_pair = sigstore::crypto::signing_key::SigStoreKeyPair::ECDSA(
        sigstore::crypto::signing_key::ecdsa::ECDSAKeys::new(
            sigstore::crypto::signing_key::ecdsa::EllipticCurve::P256,
        )
        .unwrap(),
    );
    let (private, public) = (work.path().join("k.key"), work.path().join("k.pub"));
    std::fs::write(&private, key_pair.private_key_to_pem().unwrap().as_bytes()).unwrap();
    std::fs::write(&public, key_pair.public_key_to_pem().unwrap()).unwrap();
    let signer = SigningKey::from_file(&private, None).unwrap();

    let registry_config = RegistryConfig {
        plain_http: vec![reg.addr.clone()],
        ..RegistryConfig::default()
    };
    let registry = Registry::new(&registry_config, Default::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut files, mut tagged, mut pinned) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    for (config, file) in shipped() {
        let reference = format!("oci://{}/bench/{}:1", reg.addr, config.name);
        let r = oci::parse_reference(&reference).unwrap();
        let component = std::fs::read(&file).unwrap();
        bytes += component.len();
        let digest = rt.block_on(registry.push(&r, component)).unwrap();
        let signed = signer
            .sign_digest(&format!("{}/{}", r.registry(), r.repository()), &digest)
            .unwrap();
        rt.block_on(registry.push_signature(&r, &digest, signed))
            .unwrap();
        let with = |reference: String| {
            let mut c = config.clone();
            c.path = None;
            c.reference = Some(reference);
            c
        };
        tagged.push(with(reference));
        pinned.push(with(format!(
            "oci://{}/bench/{}@{digest}",
            reg.addr, config.name
        )));
        files.push(config);
    }
    let sources = |cache: &Path| Sources {
        registry: registry_config.clone(),
        signatures: SignaturePolicy {
            keys: vec![public.clone()],
            required: true,
        },
        cache: Some(DigestCache::new(cache)),
    };
    let warm_compile = work.path().join("compiled");
    let digests = work.path().join("digests");
    load(&warm_compile, sources(&digests), &tagged);

    let (mut cold, mut pull, mut warm, mut base, mut down) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let fresh = work.path().join(format!("cold-{round}"));
        cold.push(load(
            &fresh.join("compiled"),
            sources(&fresh.join("oci")),
            &tagged,
        ));
        pull.push(load(&warm_compile, sources(&fresh.join("oci2")), &tagged));
        warm.push(load(&warm_compile, sources(&digests), &pinned));
        base.push(load(&warm_compile, Sources::default(), &files));
    }
    // The registry gone: the pinned start must not notice.
    reg.child.kill().unwrap();
    let _ = reg.child.wait();
    for _ in 0..ROUNDS {
        down.push(load(&warm_compile, sources(&digests), &pinned));
    }

    let b = median(base.clone());
    println!(
        "three shipped plugins ({} KiB of components), signatures required, median of {ROUNDS}:",
        bytes / 1024
    );
    for (what, v) in [
        ("cold: pull + verify + compile", &cold),
        ("pull + verify, compile cached", &pull),
        ("warm: digest cache, registry up", &warm),
        ("warm: digest cache, registry down", &down),
        ("files, compile cached (baseline)", &base),
    ] {
        let m = median(v.clone());
        println!("  {what:<36} {:>9.1} ms   {:>7.2}x files", m * 1e3, m / b);
    }
    println!(
        "  the registry's share of a cold start: {:.1} ms of {:.1} ms",
        (median(pull) - b) * 1e3,
        median(cold) * 1e3
    );
}
