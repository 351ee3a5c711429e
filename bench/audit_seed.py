#!/usr/bin/env python3
"""Fills a test kube-apiserver for bench/audit.sh: NAMESPACES namespaces, each
with DEPLOYMENTS Deployments, each with one ReplicaSet (ownerReference to the
Deployment) and REPLICAS two-container Pods (ownerReference to the
ReplicaSet), as the controllers would make them; no kubelet is needed, the
Pods stay Pending. Half the Deployments pass podgate's checks, half run as
root without probes. Standard library only.

    audit_seed.py APISERVER CA CERT KEY [NAMESPACES DEPLOYMENTS REPLICAS]
"""
import http.client
import json
import ssl
import sys
import threading
from urllib.parse import urlparse

server, ca, cert, key = sys.argv[1:5]
namespaces, deployments, replicas = (int(x) for x in (sys.argv[5:8] or ["20", "50", "10"]))
url = urlparse(server)
context = ssl.create_default_context(cafile=ca)
context.load_cert_chain(cert, key)
local = threading.local()


def post(path, body):
    if not hasattr(local, "conn"):
        local.conn = http.client.HTTPSConnection(url.hostname, url.port, context=context)
    data = json.dumps(body).encode()
    for attempt in range(5):
        try:
            local.conn.request("POST", path, data, {"Content-Type": "application/json"})
            response = local.conn.getresponse()
            text = response.read()
            if response.status not in (200, 201, 409):
                raise SystemExit(f"POST {path}: {response.status} {text[:300]!r}")
            return json.loads(text)
        except (http.client.HTTPException, OSError):
            local.conn = http.client.HTTPSConnection(url.hostname, url.port, context=context)
    raise SystemExit(f"POST {path}: connection keeps failing")


def containers(good):
    def container(name, port):
        c = {
            "name": name,
            "image": f"registry.example.com/shop/{name}:1.4.2",
            "ports": [{"name": "http", "containerPort": port}],
            "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": str(port)}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        }
        if good:
            c["securityContext"] = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True}
            c["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": "http"}}
            c["readinessProbe"] = {"httpGet": {"path": "/ready", "port": port}, "periodSeconds": 5}
        return c

    spec = {"containers": [container("app", 8080), container("proxy", 9090)]}
    if good:
        spec["securityContext"] = {"runAsNonRoot": True, "runAsUser": 10001}
    return spec


def owner(obj):
    return [{"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
             "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]


def seed_namespace(n):
    ns = f"bench-{n:02d}"
    post("/api/v1/namespaces", {"metadata": {"name": ns}})
    post(f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "default"}})
    for d in range(deployments):
        good = d % 2 == 0
        name = f"svc-{d:03d}"
        labels = {"app": name}
        template = {"metadata": {"labels": labels}, "spec": containers(good)}
        dep = post(f"/apis/apps/v1/namespaces/{ns}/deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template}})
        rs_labels = dict(labels, **{"pod-template-hash": "5d8f7c9b6"})
        rs = post(f"/apis/apps/v1/namespaces/{ns}/replicasets", {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{name}-5d8f7c9b6", "labels": rs_labels, "ownerReferences": owner(dep)},
            "spec": {"replicas": replicas, "selector": {"matchLabels": rs_labels},
                     "template": {"metadata": {"labels": rs_labels}, "spec": containers(good)}}})
        for r in range(replicas):
            post(f"/api/v1/namespaces/{ns}/pods", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{name}-5d8f7c9b6-{r:05d}", "labels": rs_labels, "ownerReferences": owner(rs)},
                "spec": containers(good)})


threads = [threading.Thread(target=seed_namespace, args=(n,)) for n in range(namespaces)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"seeded {namespaces * deployments * replicas} pods, {namespaces * deployments} deployments and replicasets",
      file=sys.stderr)
