#!/usr/bin/env python3
"""Checks the deployment files offline (CI runs it; needs kubernetes-validate from PyPI):

- every Kubernetes manifest under deploy/k8s against Kubernetes' own API schemas, strictly (an
  unknown field is an error);
- the Knative Service: its kind, and its revision template (a pod spec, less Knative's own
  fields) against the PodSpec schema, strictly;
- the OpenFaaS stack: the fields faas-cli reads, of the types it wants;
- the Dockerfile: it builds with deploy/build.sh, the script CI runs too.
"""

import pathlib
import sys

import kubernetes_validate
import yaml

KUBERNETES = "1.33.0"
ROOT = pathlib.Path(__file__).resolve().parent
failures = []


def check(name, data):
    try:
        kubernetes_validate.validate(data, KUBERNETES, strict=True)
        print(f"ok   {name}: {data['kind']} {data['metadata']['name']}")
    except Exception as e:  # the validator's errors name the field
        failures.append(f"{name}: {data.get('kind')} {data.get('metadata', {}).get('name')}: {e}")


for path in sorted((ROOT / "k8s").glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            check(path.name, doc)

knative = yaml.safe_load((ROOT / "knative" / "service.yaml").read_text())
if (knative.get("apiVersion"), knative.get("kind")) != ("serving.knative.dev/v1", "Service"):
    failures.append("knative/service.yaml: not a serving.knative.dev/v1 Service")
else:
    template = dict(knative["spec"]["template"])
    spec = dict(template["spec"])
    for knative_only in ("containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds"):
        spec.pop(knative_only, None)
    # A revision's containers may leave their name out (Knative names them).
    spec["containers"] = [dict({"name": f"c{i}"}, **c) for i, c in enumerate(spec["containers"])]
    for c in spec["containers"]:
        probe = c.get("readinessProbe", {}).get("httpGet")
        if probe is not None and "port" not in probe:
            probe["port"] = 8080  # Knative fills in the container's port
    check(
        "knative/service.yaml (revision template)",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": knative["metadata"]["name"]},
            "spec": {
                "selector": {"matchLabels": {"app": "w"}},
                "template": {"metadata": {"labels": {"app": "w"}}, "spec": spec},
            },
        },
    )

stack = yaml.safe_load((ROOT / "openfaas" / "stack.yml").read_text())
if stack.get("provider", {}).get("name") != "openfaas" or not isinstance(stack.get("functions"), dict):
    failures.append("openfaas/stack.yml: needs provider.name openfaas and functions")
for name, fn in (stack.get("functions") or {}).items():
    if not isinstance(fn.get("image"), str):
        failures.append(f"openfaas/stack.yml: function {name} has no image")
    for field in ("environment", "labels", "annotations"):
        if not all(isinstance(v, str) for v in (fn.get(field) or {}).values()):
            failures.append(f"openfaas/stack.yml: {name}.{field} values must be strings")
    for field in ("limits", "requests"):
        if set(fn.get(field) or {}) - {"memory", "cpu"}:
            failures.append(f"openfaas/stack.yml: {name}.{field} takes memory and cpu")
print(f"ok   openfaas/stack.yml: {', '.join(stack.get('functions') or {})}")

dockerfile = (ROOT / "Dockerfile").read_text()
if "deploy/build.sh" not in dockerfile:
    failures.append("Dockerfile: does not build with deploy/build.sh")

if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
