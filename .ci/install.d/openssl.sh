#!/usr/bin/env bash
# openssl, used by tests/chart.rs to verify the chart's generated
# certificates (chain, SAN, key). Part of the machine image already; installed
# from Debian's packages only when missing. Sourced by .ci/run.
(
    set -euo pipefail
    if command -v openssl >/dev/null 2>&1; then
        exit 0
    fi
    echo "openssl.sh: installing openssl" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
)
