#!/usr/bin/env bash
# Installs kubernetes-validate from PyPI: the Kubernetes API's JSON schemas
# for many Kubernetes versions, offline, with a --strict mode that rejects
# unknown fields. Pinned so that CI validates against the same schemas.
# Linked into "$PODGATE_TOOLS/bin" (where tests/chart.rs also looks) so that
# it is found even when pip's script directory is not on PATH.
# Idempotent and quiet. Sourced by .ci/run, also runnable on its own.
(
    set -euo pipefail
    want=1.37.0
    tools="${PODGATE_TOOLS:-$HOME/.cache/podgate-tools}"
    link="$tools/bin/kubernetes-validate"
    if [ "$("$link" --version 2>/dev/null)" = "$want" ]; then
        exit 0
    fi
    if ! python3 -m pip show kubernetes-validate 2>/dev/null | grep -x "Version: $want" >/dev/null; then
        echo "kubernetes-validate.sh: pip install kubernetes-validate==$want" >&2
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
            "kubernetes-validate==$want"
    fi
    scripts="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
    mkdir -p "$tools/bin"
    ln -sf "$scripts/kubernetes-validate" "$link"
    "$link" --version >/dev/null
)
