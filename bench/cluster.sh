#!/usr/bin/env bash
# Starts a throwaway etcd + kube-apiserver for the audit benchmark (and for
# trying `podgate audit` by hand), with a cluster-admin kubeconfig.
#
#   source bench/cluster.sh DIR     # sets KUBECONFIG, APISERVER, CLUSTER_PIDS
#   cluster_stop                    # stops both, removes DIR
#
# Needs etcd (Debian: etcd-server), openssl, and kube-apiserver in
# $PODGATE_TOOLS/bin (.ci/install.d unpacks ../shared/k8s/kube-apiserver.xz there)
# or on PATH. Listens on 127.0.0.1 only, on free ports.

cluster_dir="${1:?usage: source bench/cluster.sh DIR}"
mkdir -p "$cluster_dir"
cluster_dir="$(cd "$cluster_dir" && pwd)"
tools="${PODGATE_TOOLS:-$HOME/.cache/podgate-tools}"
apiserver_bin="$(command -v kube-apiserver || echo "$tools/bin/kube-apiserver")"
[ -x "$apiserver_bin" ] || { echo "no kube-apiserver (see .ci/install.d)" >&2; return 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

(
  cd "$cluster_dir"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=bench-ca 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=kube-apiserver 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=bench-admin" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 2 -extfile client.ext 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
)

etcd_port="$(free_port)"; etcd_peer="$(free_port)"; api_port="$(free_port)"
etcd --data-dir "$cluster_dir/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
  --quota-backend-bytes 8589934592 > "$cluster_dir/etcd.log" 2>&1 &
etcd_pid=$!
"$apiserver_bin" --etcd-servers "http://127.0.0.1:$etcd_port" --secure-port "$api_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
  --tls-cert-file "$cluster_dir/server.crt" --tls-private-key-file "$cluster_dir/server.key" \
  --client-ca-file "$cluster_dir/ca.crt" --service-account-issuer https://bench.invalid \
  --service-account-key-file "$cluster_dir/sa.key" --service-account-signing-key-file "$cluster_dir/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none \
  --authorization-mode RBAC --allow-privileged=true > "$cluster_dir/apiserver.log" 2>&1 &
apiserver_pid=$!
CLUSTER_PIDS="$apiserver_pid $etcd_pid"
APISERVER="https://127.0.0.1:$api_port"
export KUBECONFIG="$cluster_dir/kubeconfig"
cat > "$KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: bench, cluster: {server: "$APISERVER", certificate-authority: "$cluster_dir/ca.crt"}}]
users: [{name: admin, user: {client-certificate: "$cluster_dir/admin.crt", client-key: "$cluster_dir/admin.key"}}]
contexts: [{name: bench, context: {cluster: bench, user: admin}}]
current-context: bench
EOF
CURL_AUTH=(--cacert "$cluster_dir/ca.crt" --cert "$cluster_dir/admin.crt" --key "$cluster_dir/admin.key")

# The apiserver first (without etcd its graceful shutdown never ends), then
# etcd; anything still running after 5 s is killed.
cluster_stop() {
  local pid
  for pid in $CLUSTER_PIDS; do
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$cluster_dir"
}

for _ in $(seq 1 120); do
  [ "$(curl -s "${CURL_AUTH[@]}" "$APISERVER/readyz" 2>/dev/null)" = ok ] && break
  sleep 0.5
done
[ "$(curl -s "${CURL_AUTH[@]}" "$APISERVER/readyz")" = ok ] || { echo "apiserver not ready, see $cluster_dir/apiserver.log" >&2; return 1; }
echo "cluster up: $APISERVER (KUBECONFIG=$KUBECONFIG)" >&2
