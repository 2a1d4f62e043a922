#!/usr/bin/env bash
# Validates everything under deploy/ offline, as CI does (tests/tests/deploy.rs runs it):
#
#   deploy/validate.sh [OUT_DIR]
#
# 1. lints the Dockerfiles with hadolint (deploy/.hadolint.yaml);
# 2. renders each Kubernetes topology with `kubectl kustomize` into OUT_DIR/<name>.yaml:
#    sidecar, scaled-auth, and the sidecar topology plus each optional component:
#    servicemonitor (Prometheus Operator) and cert-manager (the broker's TLS certificate);
# 3. validates every rendered object against the Kubernetes API schemas with
#    kubernetes-validate --strict (unknown fields are errors), for the oldest and newest
#    versions in K8S_VERSIONS; an object without a schema is an error too, except the
#    components' CRDs (ServiceMonitor, cert-manager's Issuer and Certificate);
# 4. checks deploy/compose.yaml with `docker compose config`, alone (into
#    OUT_DIR/compose.json) and merged with deploy/compose.tls.yaml (OUT_DIR/compose-tls.json).
#
# The tools are pinned in deploy/requirements-validate.txt and installed into a virtualenv at
# $TANDEM_DEPLOY_VENV (default: <cargo target dir>/deploy-venv), remade when that file
# changes. Needs python3 with venv and pip, and PyPI.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${1:-$root/target/deploy-rendered}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# Native sidecars (initContainers with restartPolicy: Always) are on by default from 1.29
# and GA in 1.33; 1.30 is the oldest version these manifests are meant for.
K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.37.0}"

target="${CARGO_TARGET_DIR:-$root/target}"
venv="${TANDEM_DEPLOY_VENV:-$target/deploy-venv}"
requirements="$root/deploy/requirements-validate.txt"
mkdir -p "$(dirname "$venv")"
(
    # One installer at a time (tests may run this concurrently).
    flock 9
    if ! cmp -s "$requirements" "$venv/requirements-validate.txt"; then
        echo "== installing the validation tools into $venv"
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        cp "$requirements" "$venv/requirements-validate.txt"
    fi
) 9>"$venv.lock"
bin="$venv/bin"

echo "== hadolint"
"$bin/hadolint" --config deploy/.hadolint.yaml deploy/Dockerfile deploy/Dockerfile.plugin deploy/Dockerfile.python-acl

echo "== kustomize ($("$bin/kubectl" version --client 2>/dev/null | tr '\n' ' '))"
"$bin/kubectl" kustomize deploy/k8s/sidecar >"$out/sidecar.yaml"
"$bin/kubectl" kustomize deploy/k8s/scaled-auth >"$out/scaled-auth.yaml"
# The optional components, each rendered on top of the sidecar topology from a scratch
# overlay (kustomize takes only relative paths).
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
render_with_component() { # NAME COMPONENT: OUT_DIR/NAME.yaml
    mkdir -p "$scratch/$1"
    cat >"$scratch/$1/kustomization.yaml" <<KUSTOMIZATION
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$scratch/$1" deploy/k8s/sidecar)
components:
  - $(realpath --relative-to="$scratch/$1" "deploy/k8s/components/$2")
KUSTOMIZATION
    "$bin/kubectl" kustomize "$scratch/$1" >"$out/$1.yaml"
}
render_with_component servicemonitor servicemonitor
render_with_component cert-manager cert-manager-tls

for version in $K8S_VERSIONS; do
    for name in sidecar scaled-auth servicemonitor cert-manager; do
        echo "== kubernetes-validate --strict -k $version $name.yaml"
        report="$("$bin/kubernetes-validate" --strict --quiet -k "$version" "$out/$name.yaml" 2>&1)" || {
            echo "$report" >&2
            exit 1
        }
        # A missing schema is only a warning to kubernetes-validate (rc 0): a misspelt
        # apiVersion would pass. Only the CRDs of the optional components may lack one (the
        # Prometheus Operator's ServiceMonitor, cert-manager's Issuer and Certificate); their
        # fields are checked by tests/tests/deploy.rs instead.
        unknown="$(printf '%s\n' "$report" | grep -i "couldn't find schema" |
            grep -v -e 'kind ServiceMonitor with api version monitoring.coreos.com/v1' \
                -e 'kind Issuer with api version cert-manager.io/v1' \
                -e 'kind Certificate with api version cert-manager.io/v1' || true)"
        if [ -n "$unknown" ]; then
            echo "$unknown" >&2
            exit 1
        fi
    done
done

echo "== docker compose config"
"$bin/docker-compose" -f deploy/compose.yaml --profile images config --quiet
# As compose reads it (volumes in their long form): OUT_DIR/compose.json, for the tests.
"$bin/docker-compose" -f deploy/compose.yaml config --format json >"$out/compose.json"
# Merged as compose merges an override file: OUT_DIR/compose-tls.json, for the tests.
"$bin/docker-compose" -f deploy/compose.yaml -f deploy/compose.tls.yaml config --format json \
    >"$out/compose-tls.json"

echo "deploy: ok (rendered into $out)"
