#!/usr/bin/env bash
# Command-line tools the tests use besides the platform's own clients.
#
#   deploy/local/tools.sh             installs what is missing; a no-op when all are present
#   deploy/local/tools.sh TOOL...     only these (kcat, docker-compose, kustomize)
#
# kcat: a Kafka client independent of the platform's, to read the topic as a partner would
#   (Debian package; installing it needs root).
# docker-compose: validates docker-compose.yml where Docker's compose plugin is absent
#   (Debian package; installing it needs root).
# kustomize: renders deploy/k8s; built with Go into CARBON_TOOLS_BIN
#   (default ${XDG_CACHE_HOME:-$HOME/.cache}/carbon/bin), outside the repository; no root needed.
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.2
TOOLS_BIN="${CARBON_TOOLS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/carbon/bin}"

install_kustomize() {
    local have
    have="$("$TOOLS_BIN/kustomize" version 2>/dev/null || true)"
    [[ "$have" == "$KUSTOMIZE_VERSION" ]] && return 0
    if ! command -v go >/dev/null 2>&1; then
        echo "tools: kustomize needs Go 1.21+ to build (https://go.dev/dl/), or put kustomize $KUSTOMIZE_VERSION at $TOOLS_BIN/kustomize" >&2
        return 1
    fi
    mkdir -p "$TOOLS_BIN"
    echo "tools: building kustomize $KUSTOMIZE_VERSION into $TOOLS_BIN (about a minute the first time)" >&2
    # GOTOOLCHAIN=auto: an older Go fetches the toolchain this kustomize release needs from the module proxy.
    (cd "$TOOLS_BIN" && GOBIN="$TOOLS_BIN" GOTOOLCHAIN=auto GOFLAGS=-mod=mod \
        go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION")
}

has_compose() {
    docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1
}

tools=("$@")
((${#tools[@]} == 0)) && tools=(kcat docker-compose kustomize)

status=0
packages=()
for tool in "${tools[@]}"; do
    case "$tool" in
        kcat) command -v kcat >/dev/null 2>&1 || packages+=(kcat) ;;
        docker-compose) has_compose || packages+=(docker-compose) ;;
        kustomize) install_kustomize || status=1 ;;
        *) echo "tools: unknown tool $tool (known: kcat, docker-compose, kustomize)" >&2; exit 2 ;;
    esac
done
((${#packages[@]} == 0)) && exit "$status"

if [[ $EUID -ne 0 ]]; then
    echo "tools: missing ${packages[*]}; as root run: apt-get install -y ${packages[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# No recommends: docker-compose would otherwise pull in a whole Docker engine.
install=(apt-get install -y -q --no-install-recommends "${packages[@]}")
# A fresh image has no package lists yet: refresh them only when the first attempt fails.
"${install[@]}" >&2 || { apt-get update -q >&2 && "${install[@]}" >&2; }
exit "$status"
