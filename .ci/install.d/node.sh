#!/usr/bin/env bash
# What deploy/node.sh (a single-node cluster on this machine) and
# tests/node.rs need: from Debian, containerd and runc, the CNI plugins
# (bridge, host-local, loopback in /usr/lib/cni), iptables, conntrack,
# iproute2, busybox-static (the sandbox "pause" image), etcd, xz-utils,
# openssl, python3 and binutils (deploy/image.sh writes podgate's image;
# strip); and kube-apiserver, kubelet, kube-controller-manager,
# kube-scheduler and kube-proxy unpacked from shared/k8s/*.xz (found in a
# parent folder of the repository) into "$PODGATE_TOOLS/bin", checked
# against the checksums in shared/k8s/README.md (`deploy/node.sh check`
# does that and reports what else is missing). Root only: the cluster needs
# it, and the tests skip (or fail under PODGATE_REQUIRE_TOOLS=1) without it.
# Idempotent and quiet. Sourced by .ci/run, also runnable on its own.
(
    set -euo pipefail
    if [ "$(id -u)" -ne 0 ]; then
        echo "node.sh: not root; the real-node tests need root, skipping their tools" >&2
        exit 0
    fi
    missing=()
    command -v containerd >/dev/null 2>&1 || missing+=(containerd)
    command -v runc >/dev/null 2>&1 || missing+=(runc)
    [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
    command -v iptables >/dev/null 2>&1 || missing+=(iptables)
    command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    [ -x /bin/busybox ] || missing+=(busybox-static)
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    command -v xz >/dev/null 2>&1 || missing+=(xz-utils)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    command -v strip >/dev/null 2>&1 || missing+=(binutils)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "node.sh: apt-get install ${missing[*]}" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Debian's containerd package may start a system containerd; the
    # cluster runs its own (own socket, root and state) and needs none.
    bash "$(dirname "${BASH_SOURCE[0]}")/../../deploy/node.sh" check
)
