#!/usr/bin/env bash
# The Debian package end to end, as .ci/run runs it (as root, on Debian 12): builds
# the package, installs it with apt into a clean Debian 12 root made by debootstrap,
# and checks there the installed programs, user, certificates, man pages and
# completions, that the installed device serves with the installed config, that
# systemd-analyze accepts the unit, and that purge removes what the package made.
# The root is removed afterwards, also on failure (nothing stays mounted).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CARGO_DEB_VERSION=3.8.0
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' control/Cargo.toml | head -n 1)

step() { echo "== packaging: $* (at $((SECONDS - started)) s)"; }
fail() {
    echo "packaging/ci.sh: $*" >&2
    exit 1
}

step "tools: debootstrap, cargo-deb $CARGO_DEB_VERSION"
if ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

step "build the package"
deb=$(packaging/build-deb.sh | tail -n 1)
[ -f "$deb" ] || fail "packaging/build-deb.sh made no package ($deb)"
echo "$deb: $(du -k "$deb" | cut -f1) KiB"

root=$(mktemp -d /tmp/offloadd-deb-root.XXXXXX)
device_pid=""
cleanup() {
    if [ -n "$device_pid" ]; then
        kill "$device_pid" 2>/dev/null || true
        wait "$device_pid" 2>/dev/null || true
    fi
    # Deepest first: whatever this script or a failed debootstrap left mounted.
    findmnt -rn -o TARGET | { grep "^$root/" || true; } | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
    rm -rf --one-file-system "$root"
    rm -f "$root.log"
    ip link del offpkg-o 2>/dev/null || true
    ip link del offpkg-i 2>/dev/null || true
}
trap cleanup EXIT
in_root() { chroot "$root" "$@"; }
# Runs a command with its output in $root.log, shown only if it fails.
quietly() {
    "$@" >"$root.log" 2>&1 || {
        tail -n 30 "$root.log" >&2
        fail "failed: $*"
    }
}
# The root's "/" (mktemp made it 0700): the service user runs in it too.
chmod 755 "$root"

step "debootstrap --variant=minbase bookworm from $MIRROR"
quietly debootstrap --variant=minbase bookworm "$root" "$MIRROR"
mount -t proc proc "$root/proc"

step "apt-get install the package (pulls its dependencies from the mirror)"
cp "$deb" "$root/tmp/offloadd.deb"
quietly in_root apt-get update
quietly in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y /tmp/offloadd.deb
grep -q 'wrote development certificates to /etc/offloadd/certs' "$root.log" ||
    fail "the postinst did not write the certificates: $(cat "$root.log")"

step "the installed programs run"
got=$(in_root offloadd --version)
[ "$got" = "offloadd $VERSION" ] || fail "offloadd --version says '$got', want 'offloadd $VERSION'"
in_root offloadctl --help | grep -q '^Usage: offloadctl' || fail "offloadctl --help has no usage line"

step "the service user and the certificates"
in_root getent passwd offloadd >/dev/null || fail "no user offloadd"
expect_mode() {
    local want=$1 file=$2 got
    # Inside the root: its user and group names, not this machine's.
    got=$(in_root stat -c '%U:%G %a' "$file" 2>/dev/null) || fail "$file is missing"
    [ "$got" = "$want" ] || fail "$file is '$got', want '$want'"
}
expect_mode "root:root 755" /etc/offloadd/certs
expect_mode "root:offloadd 640" /etc/offloadd/certs/server.key
expect_mode "root:root 644" /etc/offloadd/certs/server.crt
expect_mode "root:root 644" /etc/offloadd/certs/ca.crt
expect_mode "root:root 600" /etc/offloadd/certs/ca.key
expect_mode "root:root 600" /etc/offloadd/certs/client.key
expect_mode "root:root 644" /etc/offloadd/offloadd.toml
grep -qx '/etc/offloadd/offloadd.toml' "$root/var/lib/dpkg/info/offloadd.conffiles" ||
    fail "the config is not a conffile"

# The unit's user, capabilities (ambient and bounding) and NoNewPrivileges, as
# setpriv gives them to a command in the root.
caps=$(sed -n 's/^AmbientCapabilities=//p' "$root/usr/lib/systemd/system/offloadd.service")
[ -n "$caps" ] || fail "the unit grants no capabilities"
setpriv_caps=$(for c in $caps; do c=${c#CAP_}; printf ',+%s' "${c,,}"; done)
as_service=(setpriv --reuid=offloadd --regid=offloadd --init-groups --no-new-privs
    "--inh-caps=-all$setpriv_caps" "--ambient-caps=-all$setpriv_caps" "--bounding-set=-all$setpriv_caps")
without_caps=(setpriv --reuid=offloadd --regid=offloadd --init-groups --no-new-privs
    --inh-caps=-all --ambient-caps=-all --bounding-set=-all)

# Runs a command in the root in the background, its stderr in $root/tmp/device.log;
# sets device_pid and, once the device serves, port (empty if it exited first).
serve_in_root() {
    chroot "$root" "$@" 2>"$root/tmp/device.log" &
    device_pid=$!
    port=""
    for _ in $(seq 1200); do
        port=$(sed -n 's/.*serving.*addrs=\[127\.0\.0\.1:\([0-9]*\)\].*/\1/p' "$root/tmp/device.log")
        [ -n "$port" ] && return 0
        kill -0 "$device_pid" 2>/dev/null || return 0
        sleep 0.1
    done
}
device_log() { cat "$root/tmp/device.log"; }
stop_device() {
    kill -TERM "$device_pid"
    wait "$device_pid" || fail "offloadd did not stop cleanly on SIGTERM: $(device_log)"
    device_pid=""
}

step "the installed device serves as the unit runs it, with the installed config and certificates"
# No --config: the search finds /etc/offloadd/offloadd.toml. A port of its own, as
# other devices may run on this machine.
serve_in_root "${as_service[@]}" offloadd --listen 127.0.0.1:0 --metrics-listen ""
[ -n "$port" ] || fail "the installed offloadd did not serve: $(device_log)"
grep -q 'config=/etc/offloadd/offloadd.toml' "$root/tmp/device.log" ||
    fail "offloadd did not read /etc/offloadd/offloadd.toml: $(device_log)"
# TLS with the CA offloadctl finds by default (/etc/offloadd/certs/ca.crt).
in_root offloadctl --server "https://127.0.0.1:$port" stats --json | grep -q '"sessions"' ||
    fail "offloadctl stats against the installed device failed"
stop_device

step "the unit's capabilities ($caps) suffice for af_packet ports and SCHED_FIFO workers"
for end in o i; do
    ip link add "offpkg-$end" type veth peer name "offpkg-${end}p"
    ip link set "offpkg-$end" up
    ip link set "offpkg-${end}p" up
done
cat >"$root/tmp/af_packet.toml" <<'TOML'
[api]
listen = "127.0.0.1:0"
plaintext = true
[dataplane]
workers = 1
realtime_priority = 10
[[port]]
name = "outside"
backend = "af_packet"
interface = "offpkg-o"
lif = 1
[[port]]
name = "inside"
backend = "af_packet"
interface = "offpkg-i"
lif = 2
[[port]]
name = "firewall"
backend = "ring"
[[port]]
name = "collector"
backend = "ring"
TOML
serve_in_root "${as_service[@]}" offloadd --config /tmp/af_packet.toml --metrics-listen ""
[ -n "$port" ] || fail "offloadd with af_packet ports did not serve with the unit's capabilities: $(device_log)"
stop_device
# ... and are needed: without them the same device refuses to start.
serve_in_root "${without_caps[@]}" offloadd --config /tmp/af_packet.toml --metrics-listen ""
rc=0
wait "$device_pid" || rc=$?
device_pid=""
[ -z "$port" ] && [ "$rc" = 2 ] && grep -q 'CAP_NET_RAW' "$root/tmp/device.log" ||
    fail "offloadd without capabilities: exit $rc, port '$port': $(device_log)"

step "man pages and completions"
for page in offloadd offloadctl offloadctl-add offloadctl-stats; do
    gzip -t "$root/usr/share/man/man1/$page.1.gz" || fail "no man page $page.1.gz"
done
zcat "$root/usr/share/man/man1/offloadd.1.gz" | grep -q -- 'config' || fail "offloadd.1 has no --config"
for bin in offloadd offloadctl; do
    bash -n "$root/usr/share/bash-completion/completions/$bin" || fail "bad bash completion for $bin"
    [ -s "$root/usr/share/zsh/vendor-completions/_$bin" ] || fail "no zsh completion for $bin"
    [ -s "$root/usr/share/fish/vendor_completions.d/$bin.fish" ] || fail "no fish completion for $bin"
done
# The bash completion completes: "offloadctl st<TAB>" offers stats.
words=$(in_root bash -c 'source /usr/share/bash-completion/completions/offloadctl
    COMP_WORDS=(offloadctl st); COMP_CWORD=1; COMP_LINE="offloadctl st"; COMP_POINT=${#COMP_LINE}
    _offloadctl offloadctl st offloadctl; echo "${COMPREPLY[*]}"')
case " $words " in *" stats "*) ;; *) fail "bash completion of 'offloadctl st' gave '$words'" ;; esac

step "systemd-analyze verify the installed unit"
quietly in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd
# --man=no: a minbase root has no man-db to resolve Documentation=man:...; the pages
# themselves are checked above.
# It exits 0 on directives it ignores (a typo, a bad value) and only says so: any
# output fails too.
verify=$(in_root systemd-analyze verify --man=no /usr/lib/systemd/system/offloadd.service 2>&1) ||
    fail "systemd-analyze verify rejects offloadd.service: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify complains about offloadd.service: $verify"

step "purge removes the config and the certificates"
quietly in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y offloadd
[ ! -e "$root/etc/offloadd" ] || fail "/etc/offloadd is still there after purge: $(ls -R "$root/etc/offloadd")"
[ ! -e "$root/usr/bin/offloadd" ] || fail "/usr/bin/offloadd is still there after purge"

step "done: package $(basename "$deb") built, installed and checked in $((SECONDS - started)) s"
