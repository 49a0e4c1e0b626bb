#!/usr/bin/env bash
# Writes charts/byoc-operator/gitops/argocd-cm-patch.yaml from health.lua
# (a test fails when the two disagree).
set -euo pipefail
dir="$(cd "$(dirname "$0")/.." && pwd)/charts/byoc-operator/gitops"
{
  echo "# Argo CD health checks for byoc.dev, merged into the argocd-cm ConfigMap:"
  echo "#   kubectl -n argocd patch configmap argocd-cm --patch-file argocd-cm-patch.yaml"
  echo "# Generated from health.lua by hack/argocd-cm.sh."
  echo "data:"
  for kind in CloudAccount ComputeCluster; do
    echo "  resource.customizations.health.byoc.dev_$kind: |"
    sed 's/^/    /; s/^ *$//' "$dir/health.lua"
  done
} >"$dir/argocd-cm-patch.yaml"
