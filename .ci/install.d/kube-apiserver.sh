#!/usr/bin/env bash
# What the end-to-end tests (tests/e2e_*.rs) need: etcd (Debian's
# etcd-server), xz-utils, and the kube-apiserver binary unpacked from
# shared/k8s/kube-apiserver.xz (found in a parent directory of the
# repository, ../shared/k8s from a checkout next to it) into
# "$PODGATE_TOOLS/bin/kube-apiserver", where tests/common/apiserver.rs looks.
# Idempotent: unpacks only when the installed binary's checksum differs from
# the one in shared/k8s/README.md (or the .xz is newer). Sourced by .ci/run.
(
    set -euo pipefail
    tools="${PODGATE_TOOLS:-$HOME/.cache/podgate-tools}"
    missing=()
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    command -v xz >/dev/null 2>&1 || missing+=(xz-utils)
    if [ ${#missing[@]} -gt 0 ]; then
        sudo_cmd=""
        [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
        echo "kube-apiserver.sh: apt-get install ${missing[*]}" >&2
        $sudo_cmd apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # etcd-server's package starts a system etcd on :2379; the tests run
    # their own on free ports and need none.
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    xz_file=""
    while [ "$dir" != "/" ]; do
        if [ -f "$dir/shared/k8s/kube-apiserver.xz" ]; then
            xz_file="$dir/shared/k8s/kube-apiserver.xz"
            break
        fi
        dir="$(dirname "$dir")"
    done
    if [ -z "$xz_file" ]; then
        echo "kube-apiserver.sh: no shared/k8s/kube-apiserver.xz above the repository" >&2
        exit 1
    fi
    target="$tools/bin/kube-apiserver"
    want="$(grep -o '`[0-9a-f]\{64\}`' "$(dirname "$xz_file")/README.md" | head -1 | tr -d '`' || true)"
    if [ -x "$target" ] && [ ! "$xz_file" -nt "$target" ] \
        && { [ -z "$want" ] || [ "$(sha256sum "$target" | cut -d' ' -f1)" = "$want" ]; }; then
        exit 0
    fi
    mkdir -p "$tools/bin"
    xz -dc "$xz_file" > "$target.partial"
    chmod 0755 "$target.partial"
    if [ -n "$want" ] && [ "$(sha256sum "$target.partial" | cut -d' ' -f1)" != "$want" ]; then
        rm -f "$target.partial"
        echo "kube-apiserver.sh: checksum of the unpacked binary differs from shared/k8s/README.md" >&2
        exit 1
    fi
    mv "$target.partial" "$target"
    "$target" --version >&2
)
