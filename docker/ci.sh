#!/usr/bin/env bash
# The docker deployment end to end, as .ci/run runs it (as root, on Debian 12, no image
# registry needed): installs what is missing (Debian's docker.io, debootstrap, the
# compose tool), starts dockerd if none is running, makes a Debian 12 base image with
# debootstrap, builds the image from docker/Dockerfile with the binaries built on the
# host (every backend), and runs docker/compose.yaml twice, with AF_PACKET and with
# AF_XDP ports. Each deployment must pass the checks of check_deployment; afterwards
# `compose down` must leave no container, network or network namespace behind.
# Everything it made is removed, also on failure (OFFLOADD_DOCKER_KEEP_BASE=1 keeps the
# base image as a cache for the next run), and a dockerd it started is stopped.
#
# Environment: CARGO_TARGET_DIR (where the host build goes), DEBIAN_MIRROR,
# OFFLOADD_COMPOSE (the compose command, e.g. "docker compose"; default:
# docker-compose, else the docker compose plugin), OFFLOADD_DOCKER_MIN_DATAGRAMS (5).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Debian's client, whose API version is its dockerd's (a newer client elsewhere in PATH
# would have to negotiate down).
DOCKER=/usr/bin/docker
BASE=offloadd-ci-base:bookworm
IMAGE=offloadd-ci:latest
PROJECT=offloadd-ci
FEATURES="afxdp dpdk"
MIN_DATAGRAMS=${OFFLOADD_DOCKER_MIN_DATAGRAMS:-5}
# Seconds the demo session may stay idle: its closed record comes this long after the
# inside host stops.
SESSION_TIMEOUT=5
CA=/etc/offloadd/certs/ca.crt
# What compose.yaml reads (OFFLOADD_CONFIG is set for each deployment).
export OFFLOADD_IMAGE=$IMAGE SESSION_TIMEOUT
work=$(mktemp -d /tmp/offloadd-docker-ci.XXXXXX)
dockerd_pid=""
made_base=""
compose=()
# The device containers' network namespaces (their veths live there).
sandboxes=()

step() { echo "== docker: $* (at $((SECONDS - started)) s)"; }
project=""
fail() {
    echo "docker/ci.sh: $*" >&2
    # Inside a deployment: what its containers said.
    [ -z "$project" ] || show_logs
    exit 1
}
# Runs a command with its output in $work/quiet.log, shown only if it fails.
quietly() {
    "$@" >"$work/quiet.log" 2>&1 || {
        tail -n 40 "$work/quiet.log" >&2
        fail "failed: $*"
    }
}

install_missing() {
    local missing=() p
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

choose_compose() {
    if [ -n "${OFFLOADD_COMPOSE:-}" ]; then
        read -r -a compose <<<"$OFFLOADD_COMPOSE"
    elif command -v docker-compose >/dev/null; then
        compose=(docker-compose)
    elif "$DOCKER" compose version >/dev/null 2>&1; then
        compose=("$DOCKER" compose)
    else
        install_missing docker-compose
        compose=(docker-compose)
    fi
    echo "compose: ${compose[*]} ($("${compose[@]}" version 2>/dev/null | head -n 1))"
}

docker_mounts() { findmnt -rn -o TARGET | grep -E '^/(var/lib|run)/docker(/|$)' || true; }

start_dockerd() {
    if "$DOCKER" info >/dev/null 2>&1; then
        echo "using the running dockerd"
        return
    fi
    docker_mounts >"$work/mounts-before"
    # No default bridge and no iptables rules: containers get only the networks the
    # deployment makes (here none: the device makes its own veths).
    dockerd --bridge=none --iptables=false --pidfile "$work/dockerd.pid" >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    local deadline=$((SECONDS + 60))
    until "$DOCKER" info >/dev/null 2>&1; do
        kill -0 "$dockerd_pid" 2>/dev/null || fail "dockerd exited: $(tail -n 20 "$work/dockerd.log")"
        [ $SECONDS -lt $deadline ] || fail "dockerd did not answer within 60 s"
        sleep 0.5
    done
    echo "started dockerd (pid $dockerd_pid)"
}

stop_dockerd() {
    [ -n "$dockerd_pid" ] || return 0
    kill "$dockerd_pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$dockerd_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
    kill -0 "$dockerd_pid" 2>/dev/null && kill -9 "$dockerd_pid" 2>/dev/null
    wait "$dockerd_pid" 2>/dev/null || true
    dockerd_pid=""
}

compose_in() {
    local project=$1
    shift
    "${compose[@]}" -p "$project" -f docker/compose.yaml "$@"
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT
    if [ ${#compose[@]} -gt 0 ] && "$DOCKER" info >/dev/null 2>&1; then
        for backend in afpacket afxdp; do
            compose_in "$PROJECT-$backend" down -t 5 >/dev/null 2>&1
        done
        # Whatever a failed compose call left.
        "$DOCKER" ps -aq --filter "label=com.docker.compose.project=$PROJECT-afpacket" \
            --filter "label=com.docker.compose.project=$PROJECT-afxdp" | xargs -r "$DOCKER" rm -f >/dev/null
        # Every image this run made (the image, the untagged build stage); the base
        # image it made too, unless OFFLOADD_DOCKER_KEEP_BASE=1 keeps it as a cache.
        "$DOCKER" rmi "$IMAGE" >/dev/null 2>&1
        # The base last: an image with children cannot be removed.
        if [ -n "$made_base" ]; then
            # Kept out of the sweep below: removed last, on its own.
            "$DOCKER" image inspect -f '{{.Id}}' "$BASE" >>"$work/images-before" 2>/dev/null
        fi
        if [ -f "$work/images-before" ]; then
            "$DOCKER" images -aq --no-trunc | sort -u | grep -vxF -f "$work/images-before" |
                xargs -r "$DOCKER" rmi -f >/dev/null 2>&1
        fi
        if [ -n "$made_base" ] && [ "${OFFLOADD_DOCKER_KEEP_BASE:-0}" != 1 ]; then
            "$DOCKER" rmi "$BASE" >/dev/null 2>&1 || echo "docker/ci.sh: could not remove $BASE" >&2
        fi
    fi
    if [ -n "$dockerd_pid" ]; then
        stop_dockerd
        # What the stopped daemon leaves mounted: the network namespaces it had not
        # collected yet (after a failure) and its own (/run/docker/netns/default).
        # Anything else of docker's is a leak.
        docker_mounts | grep -vxF -f "$work/mounts-before" | { grep '^/run/docker/netns/' || true; } |
            while read -r m; do umount "$m" && rm -f "$m"; done
        left=$(docker_mounts | grep -vxF -f "$work/mounts-before" || true)
        if [ -n "$left" ]; then
            echo "docker/ci.sh: mounted after its dockerd stopped: $left" >&2
            [ $rc -ne 0 ] || rc=1
        fi
    fi
    rm -rf docker/bin
    findmnt -rn -o TARGET | { grep "^$work/" || true; } | sort -r | xargs -r -n 1 umount -l
    rm -rf --one-file-system "$work"
    if [ $rc -eq 0 ]; then
        echo "== docker: passed in $((SECONDS - started)) s"
    else
        echo "== docker: FAILED (exit $rc) after $((SECONDS - started)) s; everything it made is removed" >&2
    fi
    exit $rc
}
trap cleanup EXIT

# --- the checks of one deployment -------------------------------------------------

# A field of a JSON line (numbers and strings, no nesting needed here).
json_field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p" | head -n 1; }

# offloadctl in the firewall container, over TLS with the image's CA.
ctl() { compose_in "$project" exec -T firewall offloadctl --ca "$CA" "$@"; }

logs_of() { "$DOCKER" logs "$(compose_in "$project" ps -q "$1")" 2>&1; }

# The first line of a service's log that matches an extended regex. (The log is read
# whole first: under pipefail, `logs | grep -q` fails when grep stops reading early.)
log_has() {
    local text
    text=$(logs_of "$1")
    grep -E -m 1 "$2" <<<"$text"
}

show_logs() {
    local s
    for s in device firewall outside-host inside-host; do
        echo "--- $s" >&2
        logs_of "$s" | tail -n 25 >&2 || true
    done
}

check_healthy() {
    local health
    health=$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$device")
    [ "$health" = healthy ] || fail "device container is $health, not healthy"
    echo "device container healthy"
}

# The ports run on the backend the config names: AF_XDP attaches an XDP program in skb
# (generic) mode to each veth, AF_PACKET none.
check_backend() {
    local port links xdp=0
    for port in outside inside firewall collector; do
        links=$(compose_in "$project" exec -T device ip -d link show dev "veth-$port")
        grep -q xdpgeneric <<<"$links" && xdp=$((xdp + 1))
    done
    case "$backend" in
    af_xdp) [ $xdp -eq 4 ] || fail "$xdp of 4 veths have a generic XDP program (af_xdp)" ;;
    *) [ $xdp -eq 0 ] || fail "$xdp veths have an XDP program ($backend)" ;;
    esac
    echo "ports on $backend: $xdp of 4 device veths carry a generic (skb mode) XDP program"
}

check_offloaded_over_tls() {
    local deadline=$((SECONDS + 60))
    until log_has firewall '^session 1: accepted' >/dev/null; do
        [ $SECONDS -lt $deadline ] || fail "the firewall never offloaded session 1: $(logs_of firewall | head)"
        sleep 0.5
    done
    # The API speaks only TLS: the same call in plaintext is refused.
    if compose_in "$project" exec -T firewall offloadctl --server http://localhost:3443 stats >/dev/null 2>&1; then
        fail "the device answered plaintext gRPC"
    fi
    echo "firewall offloaded session 1 over TLS (https://localhost:3443, CA $CA); plaintext refused"
}

# Datagrams both ways for at least 5 s: the session's counters grow by MIN_DATAGRAMS
# or more in each direction, and the inside host got the outside host's echoes.
check_traffic() {
    local first t0 now in0 out0 in1 out1 echoes deadline=$((SECONDS + 90))
    first=$(ctl --json get 1) || fail "GetSession 1 failed"
    in0=$(json_field in_packets <<<"$first")
    out0=$(json_field out_packets <<<"$first")
    t0=$SECONDS
    while true; do
        now=$(ctl --json get 1) || fail "GetSession 1 failed"
        in1=$(json_field in_packets <<<"$now")
        out1=$(json_field out_packets <<<"$now")
        if [ $((SECONDS - t0)) -ge 5 ] && [ $((in1 - in0)) -ge "$MIN_DATAGRAMS" ] &&
            [ $((out1 - out0)) -ge "$MIN_DATAGRAMS" ]; then
            break
        fi
        [ $SECONDS -lt $deadline ] || fail "after $((SECONDS - t0)) s session 1 counted $((in1 - in0)) in and $((out1 - out0)) out (want $MIN_DATAGRAMS each): $now"
        sleep 1
    done
    echoes=$(logs_of inside-host | grep -c '^hello [0-9]* from 10.0.0.2/24$' || true)
    [ "$echoes" -ge "$MIN_DATAGRAMS" ] || fail "the inside host got $echoes echoes"
    echo "in $((SECONDS - t0)) s session 1 counted $((in1 - in0)) packets in and $((out1 - out0)) out (totals: in $in1 packets $(json_field in_bytes <<<"$now") bytes, out $out1 packets $(json_field out_bytes <<<"$now") bytes); the inside host got $echoes echoes"
    last_counts="in $in1, out $out1"
}

check_watch_shows_it() {
    local line
    line=$(ctl --json watch --once | grep -o '{[^{}]*"session_id":1[,}][^{}]*}' || true)
    [ -n "$line" ] || fail "offloadctl watch --once --json does not show session 1: $(ctl --json watch --once | head -c 2000)"
    echo "offloadctl --json watch --once shows session 1: $line"
}

# The inside host stops: the outside host only echoes, so the session goes idle, ends
# by its timeout, and its closed record reaches the firewall simulator.
check_closed_by_timeout() {
    local t0 line deadline listed
    compose_in "$project" stop -t 10 inside-host >/dev/null 2>&1
    t0=$SECONDS
    deadline=$((SECONDS + SESSION_TIMEOUT + 60))
    until line=$(log_has firewall '^ +closed +1 '); do
        [ $SECONDS -lt $deadline ] || fail "no closed record of session 1 in the firewall's log after $((SECONDS - t0)) s"
        sleep 0.5
    done
    grep -q TIMEOUT <<<"$line" || fail "session 1 closed, but not by timeout: $line"
    listed=$(ctl --json list) || fail "ListSessions failed"
    if grep -q '"session_id":1[,}]' <<<"$listed"; then
        fail "session 1 is still listed after its closed record"
    fi
    echo "inside host stopped; $((SECONDS - t0)) s later fw-sim logged:$line (last counters: $last_counts)"
}

check_down_leaves_nothing() {
    local left
    quietly compose_in "$project" down -t 10
    left=$("$DOCKER" ps -aq --filter "label=com.docker.compose.project=$project")
    [ -z "$left" ] || fail "containers left after down: $left"
    left=$("$DOCKER" network ls -q --filter "label=com.docker.compose.project=$project")
    [ -z "$left" ] || fail "networks left after down: $left"
    left=$(findmnt -rn -o TARGET,SOURCE | grep -F -e "${device:0:12}" || true)
    [ -z "$left" ] || fail "mounts left after down: $left"
    left=$(ip -o link show | grep -E ' (veth|eth)-(outside|inside|firewall|collector)[@:]' || true)
    [ -z "$left" ] || fail "veths left on the host: $left"
    echo "compose down: no containers, networks, container mounts or veths left"
    sandboxes+=("$sandbox")
}

check_deployment() {
    project=$1
    backend=$3
    export OFFLOADD_CONFIG=$2
    quietly compose_in "$project" up -d --no-build
    device=$(compose_in "$project" ps -q device)
    sandbox=$("$DOCKER" inspect -f '{{.NetworkSettings.SandboxKey}}' "$device")
    check_healthy
    check_backend
    check_offloaded_over_tls
    check_traffic
    check_watch_shows_it
    check_closed_by_timeout
    check_down_leaves_nothing
    project=""
}

step "tools: docker.io, debootstrap, the backends' build dependencies, a compose tool"
install_missing docker.io debootstrap clang llvm libclang-dev libelf-dev zlib1g-dev \
    pkg-config m4 make gcc dpdk-dev libdpdk-dev
choose_compose
start_dockerd
echo "docker: $("$DOCKER" version --format 'client {{.Client.Version}} (API {{.Client.APIVersion}}), daemon {{.Server.Version}} (API {{.Server.APIVersion}})')"

"$DOCKER" images -aq --no-trunc | sort -u >"$work/images-before"

step "base image $BASE"
if "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
    echo "$BASE is there (a cache of an earlier run)"
else
    quietly debootstrap --variant=minbase bookworm "$work/base" "$MIRROR"
    rm -f "$work"/base/var/cache/apt/archives/*.deb
    tar -C "$work/base" -c . | "$DOCKER" import - "$BASE" >/dev/null
    rm -rf --one-file-system "$work/base"
    made_base=1
    echo "$BASE: debootstrap --variant=minbase bookworm, imported"
fi

step "offloadd and offloadctl on the host (features: $FEATURES)"
cargo build --release -p control --bin offloadd --bin offloadctl --features "$FEATURES"
target=${CARGO_TARGET_DIR:-target}
mkdir -p docker/bin
# Stripped, as the Debian package has them (debug info would treble the image).
strip -o docker/bin/offloadd "$target/release/offloadd"
strip -o docker/bin/offloadctl "$target/release/offloadctl"

step "image $IMAGE (docker/Dockerfile, BINARIES=context, both stages from $BASE)"
# The build's RUN steps use the host's network (the daemon has no bridge) for apt.
quietly "$DOCKER" build --network host -f docker/Dockerfile -t "$IMAGE" \
    --build-arg RUST_IMAGE="$BASE" --build-arg RUNTIME_IMAGE="$BASE" \
    --build-arg BINARIES=context --build-arg FEATURES="$FEATURES" .
echo "$IMAGE: $(("$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")" / 1000000)) MB"
"$DOCKER" run --rm --network none --entrypoint offloadd "$IMAGE" --version


step "deployment 1: AF_PACKET ports (docker/offloadd.toml)"
check_deployment "$PROJECT-afpacket" /etc/offloadd/docker/offloadd.toml af_packet
step "deployment 2: AF_XDP ports, skb mode (docker/offloadd-afxdp.toml)"
check_deployment "$PROJECT-afxdp" /etc/offloadd/docker/offloadd-afxdp.toml af_xdp

# dockerd frees a removed container's network namespace (its /run/docker/netns mount,
# and so the veths in it) in a collection pass that runs once a minute.
step "the devices' network namespaces are freed"
deadline=$((SECONDS + 150))
for ns in "${sandboxes[@]}"; do
    while [ -e "$ns" ] || grep -qxF "$ns" <<<"$(findmnt -rn -o TARGET)"; do
        [ $SECONDS -lt $deadline ] || fail "the network namespace $ns is still there"
        sleep 1
    done
done
echo "${#sandboxes[@]} network namespaces freed: ${sandboxes[*]}"
