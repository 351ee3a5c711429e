#!/usr/bin/env bash
# Installs kubernetes-validate from PyPI: the Kubernetes API's JSON schemas
# for many Kubernetes versions, offline, with a --strict mode that rejects
# unknown fields. Pinned so that CI validates against the same schemas.
# Idempotent and quiet. Sourced by .ci/run, also runnable on its own.
(
    set -euo pipefail
    want=1.37.0
    if [ "$(kubernetes-validate --version 2>/dev/null)" = "$want" ]; then
        exit 0
    fi
    echo "kubernetes-validate.sh: pip install kubernetes-validate==$want" >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        "kubernetes-validate==$want"
    # pyenv puts console scripts behind shims that need a rehash.
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
    kubernetes-validate --version >/dev/null
)
