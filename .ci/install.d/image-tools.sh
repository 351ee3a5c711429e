#!/usr/bin/env bash
# What deploy/image.sh and tests/image.rs need. From crates.io, each
# `cargo install --locked` into ~/.cargo/bin at a pinned version:
# cargo-auditable (embeds the dependency list in the binary), auditable2cdx
# (turns that list into the CycloneDX SBOM next to the archive; a few small
# crates, about 3 minutes to build here, where cargo-cyclonedx, which builds
# all of cargo, took 21), rust-audit-info (the test reads the list back). From PyPI: cyclonedx-python-lib with its JSON schema validation (the
# test validates the SBOM). From Debian: python3 (writes the OCI archive),
# ca-certificates (the image's CA bundle), containerd and runc (the test
# imports and runs the image in a containerd of its own), curl and nsenter
# (it asks the container for /readyz). Idempotent: installs only what is
# missing or at another version. Sourced by .ci/run, also runnable alone.
(
    set -euo pipefail
    export PATH="$HOME/.cargo/bin:$PATH"
    missing=()
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    [ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
    command -v containerd >/dev/null 2>&1 || missing+=(containerd)
    command -v runc >/dev/null 2>&1 || missing+=(runc)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
    if [ ${#missing[@]} -gt 0 ]; then
        sudo_cmd=""
        [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
        echo "image-tools.sh: apt-get install ${missing[*]}" >&2
        $sudo_cmd apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # `cargo install` unless cargo's own record has this version and the
    # binary is there (`cargo auditable --version` is cargo's version).
    installed="$(cargo install --list 2>/dev/null || true)"
    install() {
        local crate="$1" version="$2"
        if grep -x -F "$crate v$version:" <<<"$installed" >/dev/null \
            && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/$crate" ]; then
            return 0
        fi
        echo "image-tools.sh: cargo install --locked $crate@$version" >&2
        cargo install --quiet --locked "$crate@$version"
    }
    install cargo-auditable 0.7.7
    install auditable2cdx 0.1.0
    install rust-audit-info 0.5.4
    want_cdx=11.12.0
    if ! python3 -c "import sys, importlib.metadata as m, cyclonedx.validation.json
sys.exit(m.version('cyclonedx-python-lib') != '$want_cdx')" 2>/dev/null; then
        echo "image-tools.sh: pip install cyclonedx-python-lib[json-validation]==$want_cdx" >&2
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
            "cyclonedx-python-lib[json-validation]==$want_cdx"
    fi
)
