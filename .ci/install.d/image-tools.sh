#!/usr/bin/env bash
# What deploy/image.sh and tests/image.rs need: cargo-auditable (embeds the
# dependency list in the binary), cargo-cyclonedx (the SBOM next to the
# archive), both `cargo install --locked` into ~/.cargo/bin at pinned
# versions; from Debian: python3 (writes the OCI archive), binutils (objcopy,
# which the test uses to read the audit section), ca-certificates (the
# image's CA bundle), containerd and runc (the test imports and runs the
# image in a containerd of its own). Idempotent: installs only what is
# missing or at another version. Sourced by .ci/run, also runnable alone.
(
    set -euo pipefail
    export PATH="$HOME/.cargo/bin:$PATH"
    missing=()
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    command -v objcopy >/dev/null 2>&1 || missing+=(binutils)
    [ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
    command -v containerd >/dev/null 2>&1 || missing+=(containerd)
    command -v runc >/dev/null 2>&1 || missing+=(runc)
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
    install cargo-cyclonedx 0.5.9
)
