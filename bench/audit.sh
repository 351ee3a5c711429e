#!/usr/bin/env bash
# podgate audit against 10,000 Pods (plus their Deployments and ReplicaSets)
# in a throwaway kube-apiserver, side by side with the floor: the same lists
# fetched raw, page by page, with curl (limit=500 and its continue pages, for
# Pods and the seven workload kinds). Prints both times, their ratio, the
# auditor's peak RSS, and the total size of the PolicyReports it writes.
# Not part of CI (it takes a few minutes); see BENCHMARKS.md.
#
#   bash bench/audit.sh                    # 20 namespaces x 50 Deployments x 10 Pods
#   ROUNDS=5 NAMESPACES=2 bash bench/audit.sh
#
# Needs etcd, openssl, curl, python3, GNU time (/usr/bin/time) and the
# kube-apiserver (.ci/install.d/kube-apiserver.sh). Builds podgate --release.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${ROUNDS:-5}"
NAMESPACES="${NAMESPACES:-20}"; DEPLOYMENTS="${DEPLOYMENTS:-50}"; REPLICAS="${REPLICAS:-10}"
PAGE="${PAGE:-500}"
[ -x /usr/bin/time ] || { echo "needs GNU time: apt-get install time" >&2; exit 1; }

# PODGATE_BIN: a podgate binary already built (skips the release build).
if [ -z "${PODGATE_BIN:-}" ]; then
  (cd "$root" && cargo build --release --locked --quiet)
fi
podgate="${PODGATE_BIN:-$root/target/release/podgate}"

work="$(mktemp -d /tmp/podgate-audit-bench.XXXXXX)"
# shellcheck source=bench/cluster.sh
source "$root/bench/cluster.sh" "$work/cluster"
trap cluster_stop EXIT

python3 "$root/bench/audit_seed.py" "$APISERVER" "$work/cluster/ca.crt" "$work/cluster/admin.crt" \
  "$work/cluster/admin.key" "$NAMESPACES" "$DEPLOYMENTS" "$REPLICAS"

collections=(apis/batch/v1/cronjobs apis/apps/v1/deployments apis/apps/v1/statefulsets apis/apps/v1/daemonsets
  api/v1/replicationcontrollers apis/batch/v1/jobs apis/apps/v1/replicasets api/v1/pods)

# The floor: every page of every collection, raw, one curl per page (a new
# TLS connection per page, ~2 ms here; podgate keeps one connection).
raw_fetch() {
  local bytes=0 token page="$work/page.json"
  for collection in "${collections[@]}"; do
    token=""
    while :; do
      # HTTP/1.1 as podgate's client speaks it; a User-Agent that is not
      # curl's, else the apiserver pretty-prints (more bytes, more work).
      curl -sf --http1.1 -A podgate-bench-raw "${CURL_AUTH[@]}" -o "$page" \
        "$APISERVER/$collection?limit=$PAGE${token:+&continue=$token}"
      bytes=$((bytes + $(stat -c %s "$page")))
      # The list's metadata comes first; the token is base64 (URL-encode +/=).
      token="$(head -c 2048 "$page" | grep -o '"continue": *"[^"]*"' | head -1 | cut -d'"' -f4 \
        | sed 's/+/%2B/g; s#/#%2F#g; s/=/%3D/g' || true)"
      [ -n "$token" ] || break
    done
  done
  echo "$bytes"
}

now() { date +%s.%N; }
echo "round  raw_s  audit_s  ratio  audit_peak_rss_kib"
raw_total=0; audit_total=0; ratios=()
for round in $(seq 1 "$ROUNDS"); do
  t0="$(now)"; bytes="$(raw_fetch)"; t1="$(now)"
  /usr/bin/time -f '%M' -o "$work/time" "$podgate" audit --format json --page-size "$PAGE" > "$work/audit.json" || [ $? -eq 1 ]
  t2="$(now)"
  rss="$(tail -1 "$work/time")"
  audit_s="$(python3 -c "print(f'{$t2 - $t1:.3f}')")"
  raw_s="$(python3 -c "print(f'{$t1 - $t0:.3f}')")"
  ratio="$(python3 -c "print(f'{$audit_s / $raw_s:.2f}')")"
  ratios+=("$ratio")
  echo "$round      $raw_s  $audit_s    $ratio   $rss"
done
echo "raw bytes listed per round: $bytes"
echo "median ratio: $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
python3 - "$work/audit.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
results = report["results"]
print(f"results: {len(results)} objects, {sum(r.get('pods') or 0 for r in results)} pods under owners, "
      f"{sum(1 for r in results if not r['allowed'])} denied")
PY

# PolicyReports: install the CRD, write them once, measure what is stored.
python3 -c 'import json,sys,yaml' 2>/dev/null && yaml2json='python3 -c "import json,sys,yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"' \
  || yaml2json="yq -o json"
eval "$yaml2json" < "$root/tests/fixtures/crds/policyreports.wgpolicyk8s.io.yaml" > "$work/crd.json"
curl -sf "${CURL_AUTH[@]}" -X POST -H 'Content-Type: application/json' \
  "$APISERVER/apis/apiextensions.k8s.io/v1/customresourcedefinitions" --data-binary @"$work/crd.json" > /dev/null
for _ in $(seq 1 50); do
  curl -sf "${CURL_AUTH[@]}" "$APISERVER/apis/wgpolicyk8s.io/v1alpha2" | grep -q policyreports && break
  sleep 0.2
done
"$podgate" audit --format json --policy-reports > /dev/null || [ $? -eq 1 ]
curl -sf "${CURL_AUTH[@]}" "$APISERVER/apis/wgpolicyk8s.io/v1alpha2/policyreports" -o "$work/reports.json"
python3 - "$work/reports.json" <<'PY'
import json, sys
items = json.load(open(sys.argv[1]))["items"]
sizes = [len(json.dumps(item, separators=(",", ":"))) for item in items]
results = sum(len(item.get("results") or []) for item in items)
print(f"PolicyReports: {len(items)} reports, {results} results, {sum(sizes)} bytes in all, largest {max(sizes)} bytes")
PY
