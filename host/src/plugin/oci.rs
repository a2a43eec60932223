//! Plugins as OCI artifacts: the registry client (through `oci-client`),
//! registry credentials from a Docker config file, and the on-disk cache of
//! what was pulled, keyed by digest.
//!
//! The artifact layout is the one wasm-pkg-tools and Kubewarden push: an OCI
//! image manifest whose config has media type [`WASM_CONFIG`] and whose one
//! component layer has media type [`WASM_LAYER`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::signature::{self, Signed, Unverified};

/// Config media type of a Wasm component artifact.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// Media type of the component layer.
pub const WASM_LAYER: &str = "application/wasm";
/// The scheme of a plugin reference in configuration.
pub const SCHEME: &str = "oci://";

/// The largest signature payload read, bytes (cosign's are ~250).
const MAX_PAYLOAD_BYTES: u64 = 64 << 10;
/// The most signatures of one artifact that are read.
const MAX_SIGNATURES: usize = 16;

/// How Berth reaches registries (`registry:` in the config file).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// A Docker config file with credentials per registry host: a
    /// `~/.docker/config.json`, or the `.dockerconfigjson` of a mounted
    /// `kubernetes.io/dockerconfigjson` Secret. Absent: anonymous.
    pub auth_file: Option<PathBuf>,
    /// Registries (`HOST[:PORT]`) spoken to over plain HTTP rather than
    /// HTTPS: meant for a registry on loopback.
    pub plain_http: Vec<String>,
    /// PEM file of CA certificates trusted for registries beside the
    /// system's.
    pub ca_file: Option<PathBuf>,
    /// Largest component layer pulled, in MiB; a larger one fails its load
    /// before it is downloaded (and a registry that sends more than it
    /// declared is cut off at the limit).
    pub max_component_mb: u64,
    /// Connect timeout, and the longest pause while reading a response, in
    /// seconds.
    pub timeout_s: u64,
    /// The longest one artifact's fetch (manifest, signatures, component)
    /// may take, in seconds, however the registry paces its bytes.
    pub fetch_timeout_s: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            auth_file: None,
            plain_http: Vec::new(),
            ca_file: None,
            max_component_mb: 64,
            timeout_s: 10,
            fetch_timeout_s: 120,
        }
    }
}

impl RegistryConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_component_mb == 0 || self.max_component_mb > 128 {
            return Err(format!(
                "registry.max_component_mb must be within 1..=128, got {}",
                self.max_component_mb
            ));
        }
        if self.fetch_timeout_s == 0 || self.fetch_timeout_s > 3600 {
            return Err(format!(
                "registry.fetch_timeout_s must be within 1..=3600, got {}",
                self.fetch_timeout_s
            ));
        }
        for h in &self.plain_http {
            // As the reference spells it: HOST or HOST:PORT, nothing more.
            let port_ok = h
                .rsplit_once(':')
                .is_none_or(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if h.is_empty() || h.contains('/') || !port_ok {
                return Err(format!(
                    "registry.plain_http entries are HOST or HOST:PORT as in the reference (e.g. 127.0.0.1:5000), got {h:?}"
                ));
            }
        }
        if self.timeout_s == 0 || self.timeout_s > 300 {
            return Err(format!(
                "registry.timeout_s must be within 1..=300, got {}",
                self.timeout_s
            ));
        }
        Ok(())
    }

    pub fn max_component_bytes(&self) -> u64 {
        self.max_component_mb << 20
    }
}

/// Why an artifact could not be had. Each message says what to fix.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum FetchError {
    #[error(
        "not an OCI reference ({0}); expected oci://HOST/REPO:TAG or oci://HOST/REPO@sha256:HEX"
    )]
    BadReference(String),
    #[error("the registry {registry} is unreachable: {message}")]
    Unreachable { registry: String, message: String },
    #[error("the registry {registry} refused access: {message}")]
    Unauthorized { registry: String, message: String },
    #[error("the registry has no such artifact: {0}")]
    NotFound(String),
    #[error("not a Wasm component artifact: {0}")]
    NotWasm(String),
    #[error("the component layer is {size} bytes, over registry.max_component_mb ({limit} bytes)")]
    TooLarge { size: u64, limit: u64 },
    #[error("the manifest declares a layer size of {0}, which is not a size")]
    BadSize(i64),
    #[error("gave up after {0} s (registry.fetch_timeout_s)")]
    TimedOut(u64),
    #[error("the registry served content with digest {actual}, not {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("signature check failed: {0}")]
    Unverified(#[from] Unverified),
    #[error("registry error: {0}")]
    Registry(String),
    #[error("{0}")]
    Local(String),
}

/// Parses `oci://HOST/REPO:TAG` or `oci://HOST/REPO@sha256:HEX` (the scheme
/// may be left out on the command line). The host must be explicit:
/// Berth does not guess Docker Hub.
pub fn parse_reference(text: &str) -> Result<Reference, FetchError> {
    let bare = text.strip_prefix(SCHEME).unwrap_or(text);
    let bad = |why: &str| FetchError::BadReference(format!("{text:?}: {why}"));
    let first = bare.split('/').next().unwrap_or_default();
    if !bare.contains('/') || !(first.contains('.') || first.contains(':') || first == "localhost")
    {
        return Err(bad("it names no registry host"));
    }
    let r: Reference = bare.parse().map_err(|e| bad(&format!("{e}")))?;
    if let Some(d) = r.digest()
        && !is_sha256_digest(d)
    {
        return Err(bad(
            "the digest must be sha256: and 64 lower-case hex digits",
        ));
    }
    // oci-spec reads a bare name as :latest; a policy should say which.
    let last = bare.rsplit('/').next().unwrap_or_default();
    if r.digest().is_none() && !last.contains(':') {
        return Err(bad("it names no tag or digest (add :TAG or @sha256:HEX)"));
    }
    Ok(r)
}

/// `oci://` + the whole reference.
pub fn show(r: &Reference) -> String {
    format!("{SCHEME}{}", r.whole())
}

fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `sha256:` + the hex sha256 of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Credentials per registry host, from a Docker config file.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    hosts: BTreeMap<String, RegistryAuth>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}
#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

impl Credentials {
    /// Reads `auths` from a Docker config file. Credential helpers
    /// (`credsStore`) are not run: a server has none.
    pub fn from_file(path: &Path) -> Result<Credentials, String> {
        use base64::Engine as _;
        let text = super::source::read_limited(path, super::source::MAX_SMALL_FILE_BYTES)?;
        let doc: DockerConfig = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not a Docker config file: {e}", path.display()))?;
        let mut hosts = BTreeMap::new();
        for (key, a) in doc.auths {
            let auth = if let Some(token) = a.identitytoken.filter(|t| !t.is_empty()) {
                RegistryAuth::Bearer(token)
            } else if let (Some(u), Some(p)) = (a.username.clone(), a.password.clone()) {
                RegistryAuth::Basic(u, p)
            } else if let Some(encoded) = a.auth {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|e| format!("{}: auths.{key}.auth: {e}", path.display()))?;
                let raw = String::from_utf8(raw)
                    .map_err(|_| format!("{}: auths.{key}.auth is not UTF-8", path.display()))?;
                let (u, p) = raw.split_once(':').ok_or_else(|| {
                    format!("{}: auths.{key}.auth is not user:password", path.display())
                })?;
                RegistryAuth::Basic(u.into(), p.into())
            } else {
                continue;
            };
            hosts.insert(host_of(&key), auth);
        }
        Ok(Credentials { hosts })
    }

    /// The file named by `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json`, if there is one (for the command line).
    pub fn from_environment() -> Result<Credentials, String> {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
        match dir.map(|d| d.join("config.json")) {
            Some(f) if f.exists() => Credentials::from_file(&f),
            _ => Ok(Credentials::default()),
        }
    }

    fn for_registry(&self, registry: &str) -> RegistryAuth {
        let docker_hub = ["docker.io", "index.docker.io", "registry-1.docker.io"];
        self.hosts
            .iter()
            .find(|(h, _)| {
                h.as_str() == registry
                    || (docker_hub.contains(&registry) && docker_hub.contains(&h.as_str()))
            })
            .map(|(_, a)| a.clone())
            .unwrap_or(RegistryAuth::Anonymous)
    }
}

/// `https://index.docker.io/v1/` → `index.docker.io`.
fn host_of(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k).to_string()
}

/// A component artifact's manifest, checked to be one.
pub struct Manifest {
    /// The manifest's digest, computed from its bytes.
    pub digest: String,
    pub raw: Vec<u8>,
    /// The component layer.
    pub layer: OciDescriptor,
}

impl Manifest {
    /// Checks that `raw` is a component artifact: an image manifest (not an
    /// index), config [`WASM_CONFIG`], one [`WASM_LAYER`] layer.
    pub fn parse(raw: Vec<u8>) -> Result<Manifest, FetchError> {
        let value: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| FetchError::NotWasm(format!("the manifest is not JSON: {e}")))?;
        let media_type = value["mediaType"].as_str().unwrap_or_default();
        if [OCI_IMAGE_INDEX_MEDIA_TYPE, IMAGE_MANIFEST_LIST_MEDIA_TYPE].contains(&media_type)
            || value.get("manifests").is_some()
        {
            return Err(FetchError::NotWasm(
                "it is an image index (a multi-platform image), not a component".into(),
            ));
        }
        let m: OciImageManifest = serde_json::from_value(value)
            .map_err(|e| FetchError::NotWasm(format!("the manifest does not parse: {e}")))?;
        if m.config.media_type != WASM_CONFIG {
            return Err(FetchError::NotWasm(format!(
                "its config media type is {:?}, not {WASM_CONFIG:?} (push components with `berth plugin push`)",
                m.config.media_type
            )));
        }
        let mut wasm = m.layers.iter().filter(|l| l.media_type == WASM_LAYER);
        let (Some(layer), None) = (wasm.next(), wasm.next()) else {
            return Err(FetchError::NotWasm(format!(
                "it has {} {WASM_LAYER} layers, not one (layers: {:?})",
                m.layers
                    .iter()
                    .filter(|l| l.media_type == WASM_LAYER)
                    .count(),
                m.layers.iter().map(|l| &l.media_type).collect::<Vec<_>>()
            )));
        };
        if !is_sha256_digest(&layer.digest) {
            return Err(FetchError::NotWasm(format!(
                "its layer digest {:?} is not sha256",
                layer.digest
            )));
        }
        Ok(Manifest {
            digest: digest_of(&raw),
            layer: layer.clone(),
            raw,
        })
    }
}

/// One registry client with its credentials and limits.
pub struct Registry {
    client: Client,
    credentials: Credentials,
    max_component_bytes: u64,
}

impl Registry {
    /// A client for `config`. rustls needs a crypto provider chosen for the
    /// process; Berth uses ring, as its Kubernetes client does.
    pub fn new(config: &RegistryConfig, credentials: Credentials) -> Result<Registry, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut extra = Vec::new();
        if let Some(ca) = &config.ca_file {
            let data = super::source::read_limited(ca, super::source::MAX_SMALL_FILE_BYTES)?;
            if !String::from_utf8_lossy(&data).contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "registry.ca_file {} holds no PEM certificate",
                    ca.display()
                ));
            }
            extra.push(oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data,
            });
        }
        let timeout = Duration::from_secs(config.timeout_s);
        let client = Client::try_from(ClientConfig {
            protocol: if config.plain_http.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(config.plain_http.clone())
            },
            extra_root_certificates: extra,
            connect_timeout: Some(timeout),
            read_timeout: Some(timeout),
            ..ClientConfig::default()
        })
        .map_err(|e| format!("cannot build the registry client: {e}"))?;
        Ok(Registry {
            client,
            credentials,
            max_component_bytes: config.max_component_bytes(),
        })
    }

    fn auth(&self, r: &Reference) -> RegistryAuth {
        self.credentials.for_registry(r.resolve_registry())
    }

    /// The manifest `r` names, its digest checked against `r`'s pin.
    pub async fn manifest(&self, r: &Reference) -> Result<Manifest, FetchError> {
        let accepted = [
            OCI_IMAGE_MEDIA_TYPE,
            IMAGE_MANIFEST_MEDIA_TYPE,
            OCI_IMAGE_INDEX_MEDIA_TYPE,
            IMAGE_MANIFEST_LIST_MEDIA_TYPE,
        ];
        let (raw, _) = self
            .client
            .pull_manifest_raw(r, &self.auth(r), &accepted)
            .await
            .map_err(|e| classify(r, e))?;
        let actual = digest_of(&raw);
        if let Some(pinned) = r.digest()
            && pinned != actual
        {
            return Err(FetchError::DigestMismatch {
                expected: pinned.to_string(),
                actual,
            });
        }
        Manifest::parse(raw.to_vec())
    }

    /// The component layer of `m`, at most `max_component_mb`, its digest
    /// checked.
    pub async fn component(&self, r: &Reference, m: &Manifest) -> Result<Vec<u8>, FetchError> {
        let limit = self.max_component_bytes;
        if m.layer.size < 0 {
            return Err(FetchError::BadSize(m.layer.size));
        }
        if m.layer.size as u64 > limit {
            return Err(FetchError::TooLarge {
                size: m.layer.size as u64,
                limit,
            });
        }
        self.blob(r, &m.layer, limit).await
    }

    async fn blob(
        &self,
        r: &Reference,
        layer: &OciDescriptor,
        limit: u64,
    ) -> Result<Vec<u8>, FetchError> {
        use futures::StreamExt as _;
        let mut stream = self
            .client
            .pull_blob_stream(r, layer)
            .await
            .map_err(|e| classify(r, e))?;
        let mut bytes = Vec::with_capacity(layer.size.clamp(0, limit as i64) as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| FetchError::Registry(format!("reading a blob: {e}")))?;
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(FetchError::TooLarge {
                    size: (bytes.len() + chunk.len()) as u64,
                    limit,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let actual = digest_of(&bytes);
        if actual != layer.digest {
            return Err(FetchError::DigestMismatch {
                expected: layer.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// The cosign signatures stored for `digest` in `r`'s repository (empty
    /// when there is no signature manifest).
    pub async fn signatures(&self, r: &Reference, digest: &str) -> Result<Vec<Signed>, FetchError> {
        use base64::Engine as _;
        let tag = signature_reference(r, digest);
        let raw = match self
            .client
            .pull_manifest_raw(
                &tag,
                &self.auth(r),
                &[OCI_IMAGE_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE],
            )
            .await
        {
            Ok((raw, _)) => raw,
            Err(e) => match classify(&tag, e) {
                FetchError::NotFound(_) => return Ok(Vec::new()),
                other => return Err(other),
            },
        };
        let m: OciImageManifest = serde_json::from_slice(&raw)
            .map_err(|e| FetchError::Registry(format!("{}: {e}", show(&tag))))?;
        let mut found = Vec::new();
        // Each is a download: a signature manifest with thousands of layers
        // must not turn a load into thousands of requests.
        for layer in m
            .layers
            .iter()
            .filter(|l| l.media_type == signature::PAYLOAD_MEDIA_TYPE)
            .take(MAX_SIGNATURES)
        {
            let Some(sig) = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(signature::SIGNATURE_ANNOTATION))
            else {
                continue;
            };
            let payload = self.blob(&tag, layer, MAX_PAYLOAD_BYTES).await?;
            found.push(Signed {
                payload: base64::engine::general_purpose::STANDARD.encode(payload),
                signature: sig.clone(),
            });
        }
        Ok(found)
    }

    /// Pushes `component` to `r` as a component artifact; the manifest's
    /// digest.
    pub async fn push(&self, r: &Reference, component: Vec<u8>) -> Result<String, FetchError> {
        let layer_digest = digest_of(&component);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer_digest],
        }))
        .map_err(|e| FetchError::Local(e.to_string()))?;
        let layers = [ImageLayer::new(component, WASM_LAYER.into(), None)];
        let config = Config::new(config, WASM_CONFIG.into(), None);
        let mut manifest = OciImageManifest::build(&layers, &config, None);
        manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.into());
        self.push_manifest(r, &layers, config, manifest).await
    }

    /// Adds `signed` to the signature manifest of `digest` (kept beside
    /// the signatures already there, as cosign does).
    pub async fn push_signature(
        &self,
        r: &Reference,
        digest: &str,
        signed: Signed,
    ) -> Result<(), FetchError> {
        use base64::Engine as _;
        let tag = signature_reference(r, digest);
        let mut all = self.signatures(r, digest).await?;
        all.retain(|s| s != &signed);
        all.push(signed);
        let layers = all
            .into_iter()
            .map(|s| {
                let payload = base64::engine::general_purpose::STANDARD
                    .decode(&s.payload)
                    .map_err(|e| FetchError::Local(e.to_string()))?;
                Ok(ImageLayer::new(
                    payload,
                    signature::PAYLOAD_MEDIA_TYPE.into(),
                    Some(BTreeMap::from([(
                        signature::SIGNATURE_ANNOTATION.to_string(),
                        s.signature,
                    )])),
                ))
            })
            .collect::<Result<Vec<_>, FetchError>>()?;
        let config = Config::new(
            b"{}".to_vec(),
            oci_client::manifest::IMAGE_CONFIG_MEDIA_TYPE.into(),
            None,
        );
        let mut manifest = OciImageManifest::build(&layers, &config, None);
        manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.into());
        self.push_manifest(&tag, &layers, config, manifest).await?;
        Ok(())
    }

    async fn push_manifest(
        &self,
        r: &Reference,
        layers: &[ImageLayer],
        config: Config,
        manifest: OciImageManifest,
    ) -> Result<String, FetchError> {
        let auth = self.auth(r);
        self.client
            .auth(r, &auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| classify(r, e))?;
        for (layer, d) in layers.iter().zip(&manifest.layers) {
            self.client
                .push_blob(r, layer.data.clone(), &d.digest)
                .await
                .map_err(|e| classify(r, e))?;
        }
        self.client
            .push_blob(r, config.data.clone(), &manifest.config.digest)
            .await
            .map_err(|e| classify(r, e))?;
        // Pushed as bytes we hold, so the digest printed is the one stored.
        let raw = serde_json::to_vec(&manifest).map_err(|e| FetchError::Local(e.to_string()))?;
        let digest = digest_of(&raw);
        self.client
            .push_manifest_raw(r, raw, http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE))
            .await
            .map_err(|e| classify(r, e))?;
        Ok(digest)
    }
}

/// `HOST/REPO:sha256-HEX.sig`.
pub fn signature_reference(r: &Reference, digest: &str) -> Reference {
    Reference::with_tag(
        r.registry().to_string(),
        r.repository().to_string(),
        signature::signature_tag(digest),
    )
}

/// Sorts the client's errors into what an operator acts on.
fn classify(r: &Reference, e: oci_client::errors::OciDistributionError) -> FetchError {
    use oci_client::errors::OciDistributionError as E;
    let registry = r.resolve_registry().to_string();
    match e {
        E::RequestError(re) => {
            let mut message = re.to_string();
            let mut source = std::error::Error::source(&re);
            while let Some(s) = source {
                message = format!("{message}: {s}");
                source = s.source();
            }
            if re.is_connect() || re.is_timeout() {
                FetchError::Unreachable { registry, message }
            } else {
                FetchError::Registry(message)
            }
        }
        E::AuthenticationFailure(m) => FetchError::Unauthorized {
            registry,
            message: m,
        },
        E::UnauthorizedError { url } => FetchError::Unauthorized {
            message: format!(
                "{url}: 401 (are credentials for {registry} in the Docker config file?)"
            ),
            registry,
        },
        E::ServerError {
            code: 401 | 403, ..
        } => FetchError::Unauthorized {
            message: format!(
                "no access (are credentials for {registry} in the Docker config file?)"
            ),
            registry,
        },
        E::ImageManifestNotFoundError(_) => FetchError::NotFound(show(r)),
        E::ServerError { code: 404, .. } => FetchError::NotFound(show(r)),
        E::RegistryError { ref envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|x| format!("{:?}", x.code).contains("Unknown")) =>
        {
            FetchError::NotFound(show(r))
        }
        E::DigestError(d) => FetchError::DigestMismatch {
            expected: show(r),
            actual: d.to_string(),
        },
        other => FetchError::Registry(other.to_string()),
    }
}

/// What was pulled, on disk by digest under `DIR/oci/`: `manifests/HEX`,
/// `blobs/HEX` and `signatures/HEX.json`. Every read checks the digest, so
/// a damaged file is a miss, never a wrong plugin.
#[derive(Clone, Debug)]
pub struct DigestCache {
    dir: PathBuf,
}

impl DigestCache {
    pub fn new(plugin_cache_dir: &Path) -> DigestCache {
        DigestCache {
            dir: plugin_cache_dir.join("oci"),
        }
    }

    fn path(&self, kind: &str, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        is_sha256_digest(digest).then(|| self.dir.join(kind).join(hex))
    }

    fn read_verified(&self, kind: &str, digest: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.path(kind, digest)?).ok()?;
        (digest_of(&bytes) == digest).then_some(bytes)
    }

    pub fn manifest(&self, digest: &str) -> Option<Manifest> {
        Manifest::parse(self.read_verified("manifests", digest)?).ok()
    }

    pub fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        self.read_verified("blobs", digest)
    }

    pub fn signatures(&self, digest: &str) -> Option<Vec<Signed>> {
        let path = self.path("signatures", digest)?.with_extension("json");
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Stores a pulled artifact: the blob and the signatures before the
    /// manifest, so a manifest in the cache means the rest is there.
    pub fn put(
        &self,
        m: &Manifest,
        component: &[u8],
        signatures: Option<&[Signed]>,
    ) -> Result<(), String> {
        self.write("blobs", &m.layer.digest, component, "")?;
        if let Some(s) = signatures {
            let json = serde_json::to_vec(s).map_err(|e| e.to_string())?;
            self.write("signatures", &m.digest, &json, "json")?;
        }
        self.write("manifests", &m.digest, &m.raw, "")
    }

    fn write(&self, kind: &str, digest: &str, bytes: &[u8], ext: &str) -> Result<(), String> {
        let path = self
            .path(kind, digest)
            .ok_or_else(|| format!("bad digest {digest}"))?
            .with_extension(ext);
        let dir = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = dir.join(format!(".tmp-{}", std::process::id()));
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                format!("{}: {e}", path.display())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_need_a_host_and_a_sha256_digest() {
        let r = parse_reference("oci://127.0.0.1:5000/berth/restricted:0.1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.tag(), Some("0.1"));
        assert!(parse_reference("oci://restricted:0.1").is_err());
        assert!(parse_reference("oci://ghcr.io/x/y@sha256:abc").is_err());
        assert!(parse_reference("oci://ghcr.io/x/y").is_err());
        assert!(parse_reference(&format!("ghcr.io/x/y@sha256:{}", "A".repeat(64))).is_err());
        assert!(parse_reference("oci://127.0.0.1:5000/y").is_err());
        let pinned = format!("ghcr.io/x/y@sha256:{}", "a".repeat(64));
        assert_eq!(
            parse_reference(&pinned).unwrap().digest(),
            Some(&*format!("sha256:{}", "a".repeat(64)))
        );
    }

    #[test]
    fn credentials_come_from_a_docker_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        std::fs::write(
            &f,
            r#"{"auths": {"127.0.0.1:5000": {"auth": "dXNlcjpwYXNz"},
                          "https://index.docker.io/v1/": {"username": "u", "password": "p"}}}"#,
        )
        .unwrap();
        let c = Credentials::from_file(&f).unwrap();
        assert!(
            matches!(c.for_registry("127.0.0.1:5000"), RegistryAuth::Basic(u, p) if u == "user" && p == "pass")
        );
        assert!(matches!(c.for_registry("docker.io"), RegistryAuth::Basic(u, _) if u == "u"));
        assert!(matches!(c.for_registry("ghcr.io"), RegistryAuth::Anonymous));
        std::fs::write(&f, "{not json").unwrap();
        assert!(
            Credentials::from_file(&f)
                .unwrap_err()
                .contains("not a Docker config file")
        );
    }

    #[test]
    fn only_a_component_artifact_passes() {
        let manifest = |config: &str, layers: &[&str]| {
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_IMAGE_MEDIA_TYPE,
                "config": {"mediaType": config, "digest": digest_of(b"{}"), "size": 2},
                "layers": layers.iter().map(|t| serde_json::json!(
                    {"mediaType": t, "digest": digest_of(t.as_bytes()), "size": 1})).collect::<Vec<_>>(),
            }))
            .unwrap()
        };
        assert!(Manifest::parse(manifest(WASM_CONFIG, &[WASM_LAYER])).is_ok());
        let image = Manifest::parse(manifest(
            "application/vnd.oci.image.config.v1+json",
            &["application/vnd.oci.image.layer.v1.tar+gzip"],
        ));
        assert!(matches!(image, Err(FetchError::NotWasm(m)) if m.contains("config media type")));
        let two = Manifest::parse(manifest(WASM_CONFIG, &[WASM_LAYER, WASM_LAYER]));
        assert!(
            matches!(two, Err(FetchError::NotWasm(m)) if m.contains("2 application/wasm layers"))
        );
        let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_IMAGE_INDEX_MEDIA_TYPE, "manifests": []})).unwrap();
        assert!(
            matches!(Manifest::parse(index), Err(FetchError::NotWasm(m)) if m.contains("index"))
        );
    }

    #[test]
    fn a_damaged_cache_file_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DigestCache::new(dir.path());
        let raw = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_IMAGE_MEDIA_TYPE,
            "config": {"mediaType": WASM_CONFIG, "digest": digest_of(b"{}"), "size": 2},
            "layers": [{"mediaType": WASM_LAYER, "digest": digest_of(b"wasm"), "size": 4}],
        }))
        .unwrap();
        let m = Manifest::parse(raw).unwrap();
        cache.put(&m, b"wasm", None).unwrap();
        assert_eq!(cache.blob(&m.layer.digest).unwrap(), b"wasm");
        assert!(cache.manifest(&m.digest).is_some());
        std::fs::write(cache.path("blobs", &m.layer.digest).unwrap(), b"evil").unwrap();
        assert!(cache.blob(&m.layer.digest).is_none());
    }
}
