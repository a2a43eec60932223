"""Image policy: which registries a session may pull from, whether images
must be pinned, and the pull policy every container gets.

Settings (all optional):

    allowed_registries: [ghcr.io/acme, registry.k8s.io]  # prefixes; empty: any
    require_digest: false    # every image pinned as ...@sha256:<digest>
    deny_latest: true        # no tag, or the tag "latest", is denied
    pull_policy: IfNotPresent  # set on every container; null leaves it

A reference without a registry is Docker Hub's, as the container runtime
reads it: ``ship:1.0`` is ``docker.io/library/ship:1.0``.
"""

import berth_plugin as berth

PULL_POLICIES = ("Always", "IfNotPresent", "Never")
KEYS = {"allowed_registries", "require_digest", "deny_latest", "pull_policy"}


def parse(image: str) -> tuple[str, str | None, str | None]:
    """(repository with its registry, tag, digest) of an image reference."""
    name, _, digest = image.partition("@")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    first, _, rest = name.partition("/")
    if not rest or not ("." in first or ":" in first or first == "localhost"):
        # No registry: Docker Hub, official images under library/.
        name = f"docker.io/{name if rest else 'library/' + name}"
    return name, tag, digest or None


def allowed(repository: str, prefixes: list[str]) -> bool:
    return not prefixes or any(
        repository == p or repository.startswith(p.rstrip("/") + "/") for p in prefixes
    )


class ImagePolicy(berth.Plugin):
    name = "image-policy"
    version = "0.1.0"
    hooks = {"pod"}

    def validate_settings(self, s):
        s = {} if s is None else s
        if not isinstance(s, dict):
            raise ValueError("settings must be a mapping")
        unknown = sorted(set(s) - KEYS)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(KEYS))}")
        registries = s.get("allowed_registries", [])
        if not isinstance(registries, list) or not all(isinstance(r, str) and r for r in registries):
            raise ValueError("allowed_registries must be a list of registry prefixes, e.g. [ghcr.io/acme]")
        for key in ("require_digest", "deny_latest"):
            if not isinstance(s.get(key, False), bool):
                raise ValueError(f"{key} must be true or false")
        policy = s.get("pull_policy")
        if policy is not None and policy not in PULL_POLICIES:
            raise ValueError(f"pull_policy must be one of {', '.join(PULL_POLICIES)}, got {policy!r}")

    def shape_pod(self, s, ctx, pod):
        s = s or {}
        prefixes = s.get("allowed_registries", [])
        for c in berth.containers(pod, init=True) + berth.containers(pod):
            image = c.get("image", "")
            who = f"container {c.get('name')!r}: image {image!r}"
            repository, tag, digest = parse(image)
            if not allowed(repository, prefixes):
                raise berth.Deny(f"{who} is not from an allowed registry ({', '.join(prefixes)})")
            if s.get("require_digest") and not digest:
                raise berth.Deny(f"{who} is not pinned by digest; use {repository}@sha256:<digest>")
            if s.get("deny_latest", True) and not digest and tag in (None, "latest"):
                raise berth.Deny(f"{who} has {'the tag latest' if tag else 'no tag'}; pin a version or a digest")
            if s.get("pull_policy"):
                c["imagePullPolicy"] = s["pull_policy"]


Policy = berth.export(ImagePolicy)
