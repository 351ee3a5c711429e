#!/usr/bin/env bash
# A single-node Kubernetes cluster on this machine, with podgate installed by
# its Helm chart: for trying podgate on a real node, and for tests/node.rs.
#
#   deploy/node.sh up         # cluster, podgate's image, `helm install` (about a minute)
#   deploy/node.sh down       # stops and removes everything; idempotent, works after a crash
#   deploy/node.sh status     # what runs; `export KUBECONFIG=...` to use kubectl
#   deploy/node.sh cluster    # the cluster alone (no image, no chart)
#   deploy/node.sh install    # image + chart on a running cluster (extra args go to helm)
#   deploy/node.sh check      # root and every tool there? (exit 3 if not; unpacks binaries)
#
# Environment:
#   PODGATE_NODE_DIR   state: PKI, configs, logs, PIDs, data (default /tmp/podgate-node)
#   PODGATE_TOOLS      binaries: kubelet & co are unpacked from ../shared/k8s into
#                      $PODGATE_TOOLS/bin (checksums from its README), helm, kubectl
#   PODGATE_BINARY     podgate binary for the image (default: target/release/podgate,
#                      built when missing)
#   PODGATE_IMAGE      image reference (default podgate.local/podgate:node); the image is
#                      deploy/image.sh's, of the binary without debug information
#
# Root only. Everything lives on this machine: the node IP 198.18.255.1 on
# `lo`, Pods in 198.18.0.0/24 on the bridge podgate0, Services in
# 198.19.0.0/24 (benchmarking ranges, RFC 2544). etcd, kube-apiserver,
# controller-manager, scheduler, containerd (Debian's 1.6, its own socket,
# root and state under the state folder), kubelet and kube-proxy
# (iptables). The reasons for each setting are in ../shared/k8s/README.md;
# the API server calls the webhook at its Service's endpoints
# (--enable-aggregator-routing), so the chart's webhook configuration works
# unchanged. Images cannot be pulled here: the sandbox ("pause") image and
# podgate's are built locally and imported; the chart runs with
# image.pullPolicy=Never. See docs/real-node.md.
set -euo pipefail

DIR="${PODGATE_NODE_DIR:-/tmp/podgate-node}"
TOOLS="${PODGATE_TOOLS:-$HOME/.cache/podgate-tools}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_IP=198.18.255.1
NODE_NAME=podgate-node
POD_CIDR=198.18.0.0/24
SERVICE_CIDR=198.19.0.0/24
BRIDGE=podgate0
API_PORT=6443
APISERVER="https://$NODE_IP:$API_PORT"
SOCK="$DIR/containerd/containerd.sock"
PAUSE_IMAGE=podgate.local/pause:1
IMAGE="${PODGATE_IMAGE:-podgate.local/podgate:node}"
NAMESPACE=podgate
RELEASE=podgate
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy)

say() { printf 'node.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

kubectl() { "$TOOLS/bin/kubectl" --kubeconfig "$DIR/kubeconfig" "$@"; }
ctr_() { ctr --address "$SOCK" -n k8s.io "$@"; }

# The last lines of a component's log, for failures.
tail_log() {
    local name="$1"
    say "--- last 25 lines of $DIR/logs/$name.log"
    tail -n 25 "$DIR/logs/$name.log" 2>/dev/null | sed 's/^/    /' >&2 || true
}

# Fails naming the component, with its log.
fail() {
    local name="$1"; shift
    say "FAILED: $name: $*"
    tail_log "$name"
    exit 1
}

pid_of() { awk -v n="$1" '$1 == n { print $2 }' "$DIR/pids" 2>/dev/null | tail -1; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# Starts a component in the background, in its own session (a Ctrl-C to
# the shell does not reach it), logging to logs/NAME.log; records its PID.
start() {
    local name="$1"; shift
    setsid "$@" </dev/null >"$DIR/logs/$name.log" 2>&1 &
    echo "$name $!" >>"$DIR/pids"
}

# Polls `check` every 0.2 s for up to `seconds`, failing with the
# component's log if it exits or time runs out.
wait_for() {
    local name="$1" seconds="$2" what="$3"; shift 3
    local deadline=$(( $(date +%s) + seconds ))
    until "$@" >/dev/null 2>&1; do
        alive "$(pid_of "$name")" || fail "$name" "exited before $what"
        [ "$(date +%s)" -lt "$deadline" ] || fail "$name" "no $what within ${seconds}s"
        sleep 0.2
    done
}

######################################################################
# Binaries
######################################################################

# shared/k8s from a parent folder of the repository (../shared/k8s next to a checkout).
shared_k8s() {
    local dir="$REPO"
    while [ "$dir" != / ]; do
        [ -f "$dir/shared/k8s/README.md" ] && { echo "$dir/shared/k8s"; return; }
        dir="$(dirname "$dir")"
    done
    return 1
}

# Unpacks NAME.xz into $PODGATE_TOOLS/bin unless the binary there has the
# checksum shared/k8s/README.md gives.
binary() {
    local name="$1" target="$TOOLS/bin/$1" shared want
    shared="$(shared_k8s)" || { say "no shared/k8s above $REPO: cannot unpack $name"; exit 3; }
    want="$(grep "^| \`$name.xz\`" "$shared/README.md" | grep -o '`[0-9a-f]\{64\}`' | head -1 | tr -d '`')"
    [ -n "$want" ] || die "no checksum for $name.xz in $shared/README.md"
    if [ -x "$target" ] && [ "$(sha256sum "$target" | cut -d' ' -f1)" = "$want" ]; then
        return
    fi
    mkdir -p "$TOOLS/bin"
    xz -dc "$shared/$name.xz" >"$target.partial"
    [ "$(sha256sum "$target.partial" | cut -d' ' -f1)" = "$want" ] || { rm -f "$target.partial"; die "$name: checksum differs from $shared/README.md"; }
    chmod 0755 "$target.partial"
    mv "$target.partial" "$target"
}

check_tools() {
    [ "$(id -u)" -eq 0 ] || { say "must run as root (containerd, kubelet, iptables, the node IP)"; exit 3; }
    local tool missing=()
    for tool in etcd containerd containerd-shim-runc-v2 runc ctr iptables ip6tables conntrack openssl xz setsid python3 ldd; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] || missing+=(containernetworking-plugins)
    # Static: it is the whole sandbox image.
    [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || missing+=(busybox-static)
    [ -x "$TOOLS/bin/kubectl" ] || missing+=("kubectl (.ci/install.d/helm.sh)")
    [ -x "$TOOLS/bin/helm" ] || missing+=("helm (.ci/install.d/helm.sh)")
    if [ ${#missing[@]} -gt 0 ]; then
        say "missing: ${missing[*]} (bash .ci/install.d/node.sh installs them)"
        exit 3
    fi
    for tool in kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy; do
        binary "$tool"
    done
}

######################################################################
# PKI (openssl, ECDSA P-256: quick to make)
######################################################################

# cert NAME SUBJECT EXTENSIONS: a key and a certificate signed by the CA.
cert() {
    local name="$1" subject="$2" ext="$3" pki="$DIR/pki"
    openssl ecparam -name prime256v1 -genkey -noout -out "$pki/$name.key" 2>/dev/null
    openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr" 2>/dev/null
    printf '%s\n' "$ext" >"$pki/$name.ext"
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
        -days 2 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
}

pki() {
    local pki="$DIR/pki" client="extendedKeyUsage=clientAuth"
    mkdir -p "$pki"
    openssl ecparam -name prime256v1 -genkey -noout -out "$pki/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$pki/ca.key" -subj /CN=podgate-node-ca -days 2 -out "$pki/ca.crt" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    cert apiserver /CN=kube-apiserver "subjectAltName=IP:$NODE_IP,IP:127.0.0.1,IP:198.19.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost
extendedKeyUsage=serverAuth"
    cert admin "/O=system:masters/CN=podgate-node-admin" "$client"
    cert apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
    cert controller-manager /CN=system:kube-controller-manager "$client"
    cert scheduler /CN=system:kube-scheduler "$client"
    cert kube-proxy /CN=system:kube-proxy "$client"
    cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
    cert kubelet-serving "/CN=$NODE_NAME" "subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME
extendedKeyUsage=serverAuth"
    openssl ecparam -name prime256v1 -genkey -noout -out "$pki/sa.key" 2>/dev/null
    openssl ec -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
    local user
    for user in admin controller-manager scheduler kube-proxy kubelet; do
        cat >"$DIR/$user.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: node, cluster: {server: "$APISERVER", certificate-authority: "$pki/ca.crt"}}]
users: [{name: $user, user: {client-certificate: "$pki/$user.crt", client-key: "$pki/$user.key"}}]
contexts: [{name: node, context: {cluster: node, user: $user}}]
current-context: node
EOF
    done
    mv "$DIR/admin.kubeconfig" "$DIR/kubeconfig"
}

######################################################################
# Images: OCI archives made by hand (no registry, no builder needed)
######################################################################

# oci_archive OUT.tar NAME ROOTFS_DIR ENTRYPOINT_JSON [USER]: a one-layer
# image of ROOTFS_DIR, importable with `ctr image import`.
oci_archive() {
    local out="$1" name="$2" rootfs="$3" entrypoint="$4" user="${5:-}"
    local work; work="$(mktemp -d "$DIR/oci.XXXXXX")"
    mkdir -p "$work/blobs/sha256"
    tar -C "$rootfs" --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -cf "$work/layer.tar" .
    local layer layer_size config config_size manifest manifest_size
    layer="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"; layer_size="$(stat -c %s "$work/layer.tar")"
    mv "$work/layer.tar" "$work/blobs/sha256/$layer"
    printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$entrypoint" "${user:+,\"User\":\"$user\"}" "$layer" >"$work/config.json"
    config="$(sha256sum "$work/config.json" | cut -d' ' -f1)"; config_size="$(stat -c %s "$work/config.json")"
    mv "$work/config.json" "$work/blobs/sha256/$config"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
        "$config" "$config_size" "$layer" "$layer_size" >"$work/manifest.json"
    manifest="$(sha256sum "$work/manifest.json" | cut -d' ' -f1)"; manifest_size="$(stat -c %s "$work/manifest.json")"
    mv "$work/manifest.json" "$work/blobs/sha256/$manifest"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
        "$manifest" "$manifest_size" "$name" "${name##*:}" >"$work/index.json"
    tar -C "$work" -cf "$out" oci-layout index.json blobs
    rm -rf "$work"
}

# The sandbox image: busybox-static sleeping forever (what the pause
# container does: hold the Pod's namespaces).
pause_image() {
    local rootfs="$DIR/images/pause-rootfs"
    mkdir -p "$rootfs"
    cp /bin/busybox "$rootfs/busybox"
    oci_archive "$DIR/images/pause.tar" "$PAUSE_IMAGE" "$rootfs" '["/busybox","sleep","2147483647"]' 65535
    ctr_ image import "$DIR/images/pause.tar" >/dev/null
}

######################################################################
# up
######################################################################

write_configs() {
    mkdir -p "$DIR/containerd" "$DIR/cni" "$DIR/kubelet" "$DIR/logs" "$DIR/images" "$DIR/pod-logs"
    cat >"$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = ""
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "$DIR/containerd/runc"
EOF
    cat >"$DIR/cni/10-podgate.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "podgate",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
               "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$DIR/cni-ipam"}
    }
  ]
}
EOF
    cat >"$DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: $NODE_IP
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$DIR/pki/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$DIR/pki/kubelet-serving.crt"
tlsPrivateKeyFile: "$DIR/pki/kubelet-serving.key"
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: "unix://$SOCK"
podLogsDir: "$DIR/pod-logs"
evictionHard: {"nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%", "memory.available": "100Mi"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
resolvConf: /etc/resolv.conf
# Mounted Secrets and ConfigMaps are refreshed on a Pod's sync: every 10 s
# instead of 1 min, so that a rotated certificate reaches podgate sooner.
syncFrequency: 10s
EOF
}

cluster_up() {
    local t0; t0="$(now)"
    if [ -s "$DIR/pids" ]; then
        local name pid
        while read -r name pid; do
            alive "$pid" && die "a cluster runs already ($name, PID $pid); deploy/node.sh down first"
        done <"$DIR/pids"
    fi
    check_tools
    "$0" down >/dev/null 2>&1 || true  # remains of a crashed run
    mkdir -p "$DIR/logs"
    : >"$DIR/pids"
    [ -d /var/log/containers ] || touch "$DIR/made-var-log-containers"
    ip addr add "$NODE_IP/32" dev lo 2>/dev/null || ip addr show dev lo | grep -q " $NODE_IP/32 " \
        || die "cannot add $NODE_IP to lo"
    pki
    write_configs

    # Each is started before the previous one is ready where it can be:
    # they wait for the API server themselves.
    start etcd etcd --name "$NODE_NAME" --data-dir "$DIR/etcd" --log-level warn --logger zap \
        --listen-client-urls "http://$NODE_IP:12379" --advertise-client-urls "http://$NODE_IP:12379" \
        --listen-peer-urls "http://$NODE_IP:12380" --initial-advertise-peer-urls "http://$NODE_IP:12380" \
        --initial-cluster "$NODE_NAME=http://$NODE_IP:12380" --listen-metrics-urls ""
    start containerd containerd --config "$DIR/containerd/config.toml"
    start kube-apiserver "$TOOLS/bin/kube-apiserver" \
        --etcd-servers "http://$NODE_IP:12379" \
        --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$API_PORT" \
        --tls-cert-file "$DIR/pki/apiserver.crt" --tls-private-key-file "$DIR/pki/apiserver.key" \
        --client-ca-file "$DIR/pki/ca.crt" \
        --kubelet-client-certificate "$DIR/pki/apiserver-kubelet.crt" --kubelet-client-key "$DIR/pki/apiserver-kubelet.key" \
        --kubelet-certificate-authority "$DIR/pki/ca.crt" --kubelet-preferred-address-types InternalIP \
        --service-account-issuer https://kubernetes.default.svc \
        --service-account-key-file "$DIR/pki/sa.pub" --service-account-signing-key-file "$DIR/pki/sa.key" \
        --service-cluster-ip-range "$SERVICE_CIDR" \
        --authorization-mode Node,RBAC --allow-privileged=true \
        --enable-aggregator-routing=true \
        --cert-dir "$DIR/apiserver-certs" --profiling=false
    wait_for containerd 30 "socket" test -S "$SOCK"
    pause_image &
    local pause_pid=$!
    wait_for kube-apiserver 60 "/readyz" kubectl get --raw /readyz
    say "API server ready ($(since "$t0") s)"

    start kube-controller-manager "$TOOLS/bin/kube-controller-manager" \
        --kubeconfig "$DIR/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
        --bind-address "$NODE_IP" --leader-elect=false \
        --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
        --use-service-account-credentials=true \
        --service-account-private-key-file "$DIR/pki/sa.key" --root-ca-file "$DIR/pki/ca.crt" \
        --cluster-signing-cert-file "$DIR/pki/ca.crt" --cluster-signing-key-file "$DIR/pki/ca.key" \
        --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false
    start kube-scheduler "$TOOLS/bin/kube-scheduler" --kubeconfig "$DIR/scheduler.kubeconfig" \
        --authentication-kubeconfig "$DIR/scheduler.kubeconfig" --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
        --bind-address "$NODE_IP" --leader-elect=false --profiling=false
    wait "$pause_pid" || fail containerd "importing the sandbox image"
    start kubelet "$TOOLS/bin/kubelet" --config "$DIR/kubelet/config.yaml" \
        --kubeconfig "$DIR/kubelet.kubeconfig" --root-dir "$DIR/kubelet" \
        --hostname-override "$NODE_NAME" --node-ip "$NODE_IP"
    start kube-proxy "$TOOLS/bin/kube-proxy" --kubeconfig "$DIR/kube-proxy.kubeconfig" \
        --proxy-mode iptables --cluster-cidr "$POD_CIDR" --hostname-override "$NODE_NAME" \
        --bind-address "$NODE_IP" --metrics-bind-address "$NODE_IP:10249" --healthz-bind-address "$NODE_IP:10256" \
        --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0

    local ready='{.status.conditions[?(@.type=="Ready")].status}'
    node_ready() { [ "$(kubectl get node "$NODE_NAME" -o jsonpath="$ready" 2>/dev/null)" = True ]; }
    wait_for kubelet 90 "Ready node" node_ready
    wait_for kube-controller-manager 30 "default ServiceAccount" kubectl -n default get serviceaccount default
    say "node $NODE_NAME Ready ($(since "$t0") s); export KUBECONFIG=$DIR/kubeconfig"
}

######################################################################
# install: podgate's image and chart
######################################################################

podgate_image() {
    local binary="${PODGATE_BINARY:-}" out="$DIR/images/podgate.tar"
    if [ -z "$binary" ]; then
        binary="$REPO/target/release/podgate"
        if [ ! -x "$binary" ]; then
            say "building podgate (cargo build --release --locked)"
            (cd "$REPO" && cargo build --release --locked --bin podgate) >&2
        fi
    fi
    [ -x "$binary" ] || die "PODGATE_BINARY=$binary is not an executable"
    # Without debug information (a debug build is ten times the size); then
    # deploy/image.sh makes the image, as for any cluster.
    local stripped="$DIR/images/podgate"
    strip -o "$stripped" "$binary" 2>/dev/null || cp "$binary" "$stripped"
    PODGATE_SBOM=0 PODGATE_BINARY="$stripped" PODGATE_IMAGE="$IMAGE" "$REPO/deploy/image.sh" "$out" \
        >"$DIR/logs/image.log" 2>&1 || fail image "deploy/image.sh failed"
    ctr_ image import "$out" >/dev/null || die "ctr image import $out failed"
    # `ctr image import` may name an image docker.io/...; the kubelet asks for exactly $IMAGE.
    ctr_ image ls -q | grep -qx "$IMAGE" || die "the imported archive does not carry $IMAGE"
}

install() {
    local t0; t0="$(now)"
    kubectl get --raw /readyz >/dev/null 2>&1 || die "no cluster: deploy/node.sh cluster (or up) first"
    podgate_image
    say "image $IMAGE imported ($(since "$t0") s)"
    kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    kubectl label --overwrite namespace "$NAMESPACE" pod-security.kubernetes.io/enforce=restricted \
        pod-security.kubernetes.io/enforce-version=latest >/dev/null
    local repository="${IMAGE%:*}" tag="${IMAGE##*:}"
    KUBECONFIG="$DIR/kubeconfig" HELM_CACHE_HOME="$DIR/helm/cache" HELM_CONFIG_HOME="$DIR/helm/config" \
        HELM_DATA_HOME="$DIR/helm/data" "$TOOLS/bin/helm" upgrade --install "$RELEASE" "$REPO/charts/podgate" \
        --namespace "$NAMESPACE" --set image.repository="$repository" --set image.tag="$tag" \
        --set image.pullPolicy=Never "$@" --wait --timeout 120s >/dev/null \
        || { kubectl -n "$NAMESPACE" get pods -o wide >&2; kubectl -n "$NAMESPACE" get events >&2; tail_log kubelet; die "helm install failed"; }
    say "podgate installed in namespace $NAMESPACE ($(since "$t0") s):"
    kubectl -n "$NAMESPACE" get pods -o wide >&2
}

######################################################################
# down: by PID, then whatever the cluster left (works after a crash)
######################################################################

# PIDs of the processes in the kubelet's cgroups (the Pods' containers).
pod_pids() {
    local f
    for f in /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/memory/kubepods /sys/fs/cgroup/kubepods; do
        [ -d "$f" ] && find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null
    done | sort -u
}

# Shims of this containerd: they name its socket in -address.
shim_pids() {
    local p
    for p in /proc/[0-9]*; do
        { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q "containerd-shim.*-address $SOCK" && echo "${p#/proc/}"
    done
    return 0
}

stop_pid() {
    local name="$1" pid="$2" i
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    # Two seconds: everything is thrown away, graceful ends buy nothing.
    for i in $(seq 1 20); do alive "$pid" || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

down() {
    # Best effort from here on: a step that finds nothing to do is no error.
    set +e +o pipefail
    local name pid
    # Everything is thrown away: no graceful ends, SIGKILL. The kubelet and
    # the controllers first, so that nothing restarts what is being
    # stopped; then the containers' tasks while containerd still answers.
    local nodes=()
    for name in kubelet kube-proxy kube-scheduler kube-controller-manager; do
        pid="$(pid_of "$name")"
        alive "$pid" && nodes+=("$pid")
    done
    if [ ${#nodes[@]} -gt 0 ]; then
        kill -KILL "${nodes[@]}" 2>/dev/null
        for pid in "${nodes[@]}"; do while alive "$pid"; do sleep 0.05; done; done
    fi
    if [ -S "$SOCK" ] && alive "$(pid_of containerd)"; then
        for pid in $(timeout 10 ctr --address "$SOCK" -n k8s.io task ls -q 2>/dev/null); do
            timeout 5 ctr --address "$SOCK" -n k8s.io task kill -s KILL "$pid" >/dev/null 2>&1 || true
        done
    fi
    stop_pid containerd "$(pid_of containerd)"
    # Shims outlive containerd, and their children (the containers) them.
    local shims pods
    shims="$(shim_pids)"
    pods="$(pod_pids)"
    [ -n "$shims$pods" ] && kill -KILL $shims $pods 2>/dev/null || true
    for pid in $shims $pods; do
        while alive "$pid"; do sleep 0.05; done
    done
    for name in kube-apiserver etcd; do
        pid="$(pid_of "$name")"
        alive "$pid" && kill -KILL "$pid" 2>/dev/null
        while alive "$pid"; do sleep 0.05; done
    done
    # Anything else recorded (a component started by hand).
    if [ -f "$DIR/pids" ]; then
        while read -r name pid; do stop_pid "$name" "$pid"; done <"$DIR/pids"
    fi
    # The shims' sockets: /run/containerd/s/<sha256 of address/namespace/id>.
    if [ -d "$DIR/containerd/state/io.containerd.runtime.v2.task/k8s.io" ]; then
        for name in "$DIR"/containerd/state/io.containerd.runtime.v2.task/k8s.io/*; do
            [ -e "$name" ] || continue
            rm -f "/run/containerd/s/$(printf '%s' "$SOCK/k8s.io/${name##*/}" | sha256sum | cut -d' ' -f1)"
        done
        rmdir /run/containerd/s /run/containerd 2>/dev/null || true
    fi
    # Mounts under the state folder (Pod volumes, rootfs, network
    # namespaces, shm), deepest first.
    local mounts mount
    for _ in 1 2 3; do
        mounts="$(awk -v d="$DIR/" 'index($2, d) == 1 { print $2 }' /proc/mounts | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-)"
        [ -n "$mounts" ] || break
        while IFS= read -r mount; do
            mount="$(printf '%b' "$mount")"  # /proc/mounts escapes spaces as \040
            umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || true
        done <<<"$mounts"
    done
    # The kubelet's cgroups, deepest first.
    local cg
    for cg in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
        [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    # iptables: kube-proxy's rules, then the kubelet's chains and any jump to
    # a KUBE- or CNI- chain left.
    if [ -x "$TOOLS/bin/kube-proxy" ]; then
        "$TOOLS/bin/kube-proxy" --cleanup --proxy-mode iptables >/dev/null 2>&1 || true
    fi
    local ipt table chain rule
    for ipt in iptables ip6tables; do
        command -v "$ipt" >/dev/null || continue
        for table in filter nat mangle; do
            "$ipt-save" -t "$table" 2>/dev/null | grep -E '^-A .* -j (KUBE|CNI)-' | grep -Ev '^-A (KUBE|CNI)-' \
                | sed 's/^-A /-D /' | while IFS= read -r rule; do
                    eval "$ipt -w -t $table $rule" 2>/dev/null || true
                done
            for chain in $("$ipt-save" -t "$table" 2>/dev/null | grep -oE '^:(KUBE|CNI)-[^ ]+' | tr -d :); do
                "$ipt" -w -t "$table" -F "$chain" 2>/dev/null || true
            done
            for chain in $("$ipt-save" -t "$table" 2>/dev/null | grep -oE '^:(KUBE|CNI)-[^ ]+' | tr -d :); do
                "$ipt" -w -t "$table" -X "$chain" 2>/dev/null || true
            done
        done
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true
    # The kubelet links container logs in /var/log/containers.
    find /var/log/containers -maxdepth 1 -type l -lname "$DIR/*" -delete 2>/dev/null
    [ -f "$DIR/made-var-log-containers" ] && rmdir /var/log/containers 2>/dev/null
    if awk -v d="$DIR/" 'index($2, d) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        die "still mounted under $DIR; not removing it"
    fi
    rm -rf "$DIR"
    say "down: nothing of the cluster left"
}

status() {
    local name pid state=0
    if [ ! -f "$DIR/pids" ]; then
        say "no cluster (no $DIR/pids)"
        return 1
    fi
    while read -r name pid; do
        if alive "$pid"; then say "$name: running (PID $pid)"; else say "$name: NOT running (PID $pid)"; state=1; fi
    done <"$DIR/pids"
    kubectl get nodes -o wide 2>/dev/null >&2 || true
    kubectl get pods -A -o wide 2>/dev/null >&2 || true
    say "export KUBECONFIG=$DIR/kubeconfig"
    return $state
}

case "${1:-}" in
    up) cluster_up; shift; install "$@" ;;
    cluster) cluster_up ;;
    install) shift; install "$@" ;;
    down) [ "$(id -u)" -eq 0 ] || die "must run as root"; down ;;
    status) status ;;
    check) check_tools ;;
    *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
