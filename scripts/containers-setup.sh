#!/usr/bin/env bash
# Make this machine able to run docker-compose.yml for real: rootful podman + podman-compose, and
# local stand-ins for the two base images.
#
# Why: these machines (a developer's and CI's) have no Docker engine and reach no image registry,
# but they reach Debian's packages and PyPI. This is the set-up in shared/CONTAINERS.md, written
# down so a brand-new machine gets it from the project itself. Idempotent: every step first checks
# whether it is already done, so the compose test can call it on every run.
#
# The images python:3.11-slim and redis:7 built here are NOT the official images: they are Debian
# bookworm (Python 3.11, Redis 7.0) with the same commands and paths the Dockerfile and the compose
# file use. Where a registry is reachable, pull the real ones instead and skip this script.
#
# Usage: sudo scripts/containers-setup.sh        (CI runs it as root, no stdin)
# Env:   DEBIAN_MIRROR  mirror for debootstrap (default: http://deb.debian.org/debian)
#        DEBIAN_SUITE   suite for the stand-ins (default: bookworm, which has Python 3.11 and Redis 7)
set -euo pipefail

readonly PYTHON_IMAGE=docker.io/library/python:3.11-slim
readonly REDIS_IMAGE=docker.io/library/redis:7
readonly PODMAN_COMPOSE_MIN=1.6   # 1.0.3 (Debian's) ignores profiles, --profile and --scale
readonly CONTAINERS_CONF=/etc/containers/containers.conf
readonly MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
readonly SUITE=${DEBIAN_SUITE:-bookworm}
export DEBIAN_FRONTEND=noninteractive

say() { printf '[containers-setup] %s\n' "$*"; }
die() { printf '[containers-setup] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: rootful podman, apt-get and debootstrap need it"

# --- 1. podman, runc, debootstrap from Debian -------------------------------------------------
missing=()
for cmd in podman runc debootstrap; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]} with apt-get"
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
else
    say "podman, runc, debootstrap: already installed ($(podman --version))"
fi

# --- 2. podman-compose >= 1.6 from PyPI -------------------------------------------------------
compose_version() {
    # "podman-compose version 1.6.0" (newer) or "podman-compose version: 1.0.3" (older)
    podman-compose version 2>/dev/null | sed -n 's/^podman-compose version:\{0,1\} *\([0-9.]*\).*/\1/p' | head -n1
}
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

have=""
command -v podman-compose >/dev/null 2>&1 && have=$(compose_version)
if [ -n "$have" ] && version_ge "$have" "$PODMAN_COMPOSE_MIN"; then
    say "podman-compose $have: already installed"
else
    say "installing podman-compose>=$PODMAN_COMPOSE_MIN with pip (found: ${have:-none})"
    # Debian's own python3 refuses global installs (PEP 668); this is a throwaway build host.
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --upgrade "podman-compose>=$PODMAN_COMPOSE_MIN"
    if ! command -v podman-compose >/dev/null 2>&1 || ! version_ge "$(compose_version)" "$PODMAN_COMPOSE_MIN"; then
        # pyenv shims or a venv's bin may not be on PATH: link the script where every shell finds it
        scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
        [ -x "$scripts_dir/podman-compose" ] || die "pip installed podman-compose but $scripts_dir/podman-compose is missing"
        ln -sf "$scripts_dir/podman-compose" /usr/local/bin/podman-compose
        hash -r
        say "linked /usr/local/bin/podman-compose -> $scripts_dir/podman-compose"
    fi
    say "podman-compose $(compose_version) ready"
fi

# --- 3. containers.conf for this sandbox -------------------------------------------------------
conf=$(cat <<'EOF'
# Written by charrnn scripts/containers-setup.sh (see shared/CONTAINERS.md)
[containers]
default_ulimits = []          # the sandbox forbids raising RLIMIT_NOFILE
[engine]
runtime = "runc"              # crun refuses this machine's hybrid cgroups
cgroup_manager = "cgroupfs"
EOF
)
if [ -f "$CONTAINERS_CONF" ] && [ "$(cat "$CONTAINERS_CONF")" = "$conf" ]; then
    say "$CONTAINERS_CONF: already set"
else
    mkdir -p "$(dirname "$CONTAINERS_CONF")"
    if [ -f "$CONTAINERS_CONF" ]; then
        backup="$CONTAINERS_CONF.bak.$(date +%s)"
        cp "$CONTAINERS_CONF" "$backup"
        say "saved the previous $CONTAINERS_CONF as $backup"
    fi
    printf '%s\n' "$conf" > "$CONTAINERS_CONF"
    say "wrote $CONTAINERS_CONF (runc, cgroupfs, no default ulimits)"
fi

# --- 4. local stand-ins for python:3.11-slim and redis:7 --------------------------------------
need_python=0; need_redis=0
podman image exists "$PYTHON_IMAGE" || need_python=1
podman image exists "$REDIS_IMAGE" || need_redis=1
if [ $need_python -eq 0 ] && [ $need_redis -eq 0 ]; then
    say "images $PYTHON_IMAGE and $REDIS_IMAGE: already present"
else
    root=$(mktemp -d /var/tmp/charrnn-standin.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    say "building stand-in base images from Debian $SUITE packages in $root (about a minute)"
    debootstrap --variant=minbase \
        --include=python3,python3-pip,python3-venv,ca-certificates,redis-server,redis-tools \
        "$SUITE" "$root" "$MIRROR" > "$root.debootstrap.log" 2>&1 \
        || { tail -n 30 "$root.debootstrap.log" >&2; die "debootstrap failed (log: $root.debootstrap.log)"; }
    rm -f "$root.debootstrap.log"
    # like the official image: pip installs into the global site-packages
    rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
    ln -sf /usr/bin/python3 "$root"/usr/local/bin/python
    ln -sf /usr/bin/pip3 "$root"/usr/local/bin/pip
    # the host's trust store, so pip inside `podman build --network host` trusts what the host trusts
    cp /etc/ssl/certs/ca-certificates.crt "$root"/etc/ssl/certs/
    # the official redis image's entrypoint: arguments starting with '-' go to redis-server
    # shellcheck disable=SC2016  # the $1 and $@ belong to the script being written
    printf '#!/bin/sh\nset -e\ncase "$1" in -*) set -- redis-server "$@" ;; esac\nexec "$@"\n' \
        > "$root"/usr/local/bin/docker-entrypoint.sh
    chmod +x "$root"/usr/local/bin/docker-entrypoint.sh
    mkdir -p "$root"/data
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    label="org.opencontainers.image.description=local stand-in built from Debian $SUITE packages by charrnn scripts/containers-setup.sh, not the official image"
    if [ $need_python -eq 1 ]; then
        tar -C "$root" -c . | podman import --quiet \
            --change "LABEL $label" --change 'CMD ["python3"]' - "$PYTHON_IMAGE" >/dev/null
        say "imported $PYTHON_IMAGE (stand-in)"
    fi
    if [ $need_redis -eq 1 ]; then
        tar -C "$root" -c . | podman import --quiet \
            --change "LABEL $label" --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
            --change 'CMD ["redis-server"]' --change 'WORKDIR /data' - "$REDIS_IMAGE" >/dev/null
        say "imported $REDIS_IMAGE (stand-in)"
    fi
fi

# --- 5. prove that podman can run a container here at all ------------------------------------
if ! out=$(podman run --rm --network none "$REDIS_IMAGE" redis-server --version 2>&1); then
    die "podman cannot run a container on this machine: $out"
fi
say "podman runs containers: $out"
say "done"
