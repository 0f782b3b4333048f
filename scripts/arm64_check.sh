#!/usr/bin/env bash
# arm64 (Raspberry Pi) check, issue #8: install edgetl[edge] into a Debian arm64 userland under
# qemu-user emulation, run edge-classify there on the golden model, images and a short video,
# and require the same answers as on x86.
#
#   sudo scripts/arm64_check.sh            # Debian bookworm arm64, Python 3.11 (Raspberry Pi OS 12)
#   sudo scripts/arm64_check.sh --trixie   # Debian trixie arm64, Python 3.13 (Raspberry Pi OS 13)
#
# Environment:
#   ARM64_ROOT       cached rootfs (default /var/cache/edgetl-arm64/<suite>); a re-run reuses it
#   X86_PYTHON       x86 python with numpy, cv2 and ai_edge_litert, the reference side (default python3)
#   ARM64_SCORE_TOL  per-frame score tolerance, x86 vs arm64 (default 0.02)
#   ARM64_QEMU_CPU   emulated CPU (default cortex-a72, the Pi 4; cortex-a76 is the Pi 5)
#   ARM64_MIRROR     Debian mirror (default: the one in /etc/apt/sources.list.d/debian.sources)
#   ARM64_GOLDEN     folder with the model (+ .json card) and *.png images (default tests/golden)
#   ARM64_KEEP=1     keep the work directory (outputs, logs) even when the check passes
#
# Needs root (apt-get, binfmt_misc, debootstrap). Exit 0 when everything agrees, 1 when the
# install fails, edge-classify crashes, or x86 and arm64 disagree; 2 on a usage error.
# Timings measured under emulation are 100-400x slower than a Pi: never read them as Pi speed.
set -euo pipefail

SUITE=bookworm
case "${1:-}" in
    "") ;;
    --trixie) SUITE=trixie ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "usage: $0 [--trixie]" >&2; exit 2 ;;
esac
case "$SUITE" in bookworm) PY=python3.11 ;; trixie) PY=python3.13 ;; esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${ARM64_ROOT:-/var/cache/edgetl-arm64/$SUITE}
X86_PYTHON=${X86_PYTHON:-python3}
TOL=${ARM64_SCORE_TOL:-0.02}
QEMU_CPU_MODEL=${ARM64_QEMU_CPU:-cortex-a72}
GOLDEN=${ARM64_GOLDEN:-$REPO/tests/golden}
COMPARE=$REPO/scripts/arm64_compare.py
VENV=$ROOT/opt/edgetl-venv
PACKAGES=python3,python3-venv,python3-pip,ca-certificates
RECIPE="edgetl arm64 rootfs v1: $SUITE arm64 minbase $PACKAGES"

log() { printf '%s\n' "$*" >&2; }
die() { log "arm64_check: FAIL: $*"; [ -n "${WORK:-}" ] && log "outputs and logs kept in $WORK"; KEEP=1; exit 1; }
STEP_NAME="" STEP_START=$SECONDS TIMES=()
step() {  # step "name": closes the previous step's timer, opens the next
    [ -n "$STEP_NAME" ] && TIMES+=("$(printf '%-24s %4d s' "$STEP_NAME" $((SECONDS - STEP_START)))")
    STEP_NAME=$1 STEP_START=$SECONDS
    [ -n "$1" ] && log "[arm64] $1"
    return 0
}
# Every arm64 process: qemu (through binfmt) finds the loader and libraries under ROOT, emulates a
# Pi's core (the default QEMU_CPU=max gives wrong int8 outputs, FACTS.md), and may write .pyc
# files (dpkg -x skipped py3compile; without them every emulated start recompiles the stdlib).
emu() { env -u PYTHONDONTWRITEBYTECODE QEMU_LD_PREFIX="$ROOT" QEMU_CPU="$QEMU_CPU_MODEL" "$@"; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get, binfmt_misc and debootstrap need it)"
[ "$QEMU_CPU_MODEL" != max ] || die "ARM64_QEMU_CPU=max computes wrong int8 outputs; use cortex-a72 or cortex-a76"
models=("$GOLDEN"/*.tflite)
images=("$GOLDEN"/*.png)
[ -f "${models[0]}" ] || die "no golden model in $GOLDEN (scripts/make_golden.py writes it)"
[ -f "${images[0]}" ] || die "no golden images (*.png) in $GOLDEN"
MODEL=${models[0]}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgetl-arm64.XXXXXX")
KEEP=${ARM64_KEEP:-0}
trap '[ "$KEEP" = 1 ] || rm -rf "$WORK"' EXIT

host_tools() {
    local missing=()
    command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
    command -v update-binfmts >/dev/null || missing+=(binfmt-support)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if [ ${#missing[@]} -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y "${missing[@]}" >"$WORK/apt.log" 2>&1 \
            || { apt-get update >>"$WORK/apt.log" 2>&1 && apt-get install -y "${missing[@]}" >>"$WORK/apt.log" 2>&1; } \
            || { tail -20 "$WORK/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
    fi
    mountpoint -q /proc/sys/fs/binfmt_misc \
        || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
        || die "cannot mount binfmt_misc (in a container: run it privileged)"
    # Warns and succeeds when already enabled; the grep below is the real check.
    grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || update-binfmts --enable qemu-aarch64 || true
    grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || die "binfmt handler qemu-aarch64 is not enabled"
}

debian_mirror() {
    if [ -n "${ARM64_MIRROR:-}" ]; then echo "$ARM64_MIRROR"; return; fi
    local uri=""
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then  # deb822: first stanza that is not -security
        uri=$(awk 'BEGIN { RS = "" } !/security/ && match($0, /URIs:[ \t]*[^ \t\n]+/) {
            s = substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", s); print s; exit }' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

# A Raspberry Pi 4's /proc/cpuinfo. qemu reads ROOT/proc/cpuinfo in place of the host's; with the
# host's x86 text LiteRT (cpuinfo library) segfaults creating the interpreter (FACTS.md).
write_cpuinfo() {
    mkdir -p "$ROOT/proc"
    {
        for i in 0 1 2 3; do
            printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
            printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
        done
        printf 'Hardware\t: BCM2835\nRevision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n'
    } >"$ROOT/proc/cpuinfo"
}

# The fast route (~1 min instead of a second stage under emulation): debootstrap --foreign only
# downloads and unpacks the essentials, then dpkg -x unpacks every downloaded .deb. No maintainer
# scripts run, which a Python userland does not need. Built beside ROOT and renamed at the end,
# so an interrupted build is never mistaken for a cached one.
build_rootfs() {
    if [ "$(cat "$ROOT/.edgetl-rootfs" 2>/dev/null)" = "$RECIPE" ]; then
        ROOTFS_STATE="cached"
    else
        local tmp="$ROOT.partial" mirror deb
        mirror=$(debian_mirror)
        rm -rf "$tmp" "$ROOT"
        debootstrap --arch=arm64 --variant=minbase --foreign --include="$PACKAGES" "$SUITE" "$tmp" "$mirror" \
            >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap $SUITE arm64 from $mirror failed"; }
        for deb in "$tmp"/var/cache/apt/archives/*.deb; do dpkg -x "$deb" "$tmp"; done
        rm -f "$tmp"/var/cache/apt/archives/*.deb
        mv "$tmp" "$ROOT"
        echo "$RECIPE" >"$ROOT/.edgetl-rootfs"
        ROOTFS_STATE="built from $mirror"
    fi
    write_cpuinfo
    # pip inside reads /etc/ssl/certs from ROOT: give it the host's bundle (and any local CA).
    [ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
    ARM_PY_VERSION=$(emu "$ROOT/usr/bin/$PY" -c 'import platform, sys; print(platform.machine(), sys.version.split()[0])') \
        || die "$PY does not start under qemu-aarch64-static"
    [ "${ARM_PY_VERSION%% *}" = aarch64 ] || die "emulated python reports machine ${ARM_PY_VERSION%% *}, not aarch64"
}

# A fresh venv every run, so the install is tested as a user would do it. pip is the rootfs's
# own Debian python3-pip, pointed at the venv with --python: the same pip version ensurepip would
# put in the venv, without ~45 s of emulated ensurepip per run. The build runs from a snapshot of
# the checkout (tracked + untracked, not ignored files), so it never reuses a stale build/ folder
# nor writes one into the checkout.
install_edge() {
    rm -rf "$VENV"
    emu "$ROOT/usr/bin/$PY" -m venv --without-pip "$VENV" || die "cannot create a venv with $PY under emulation"
    mkdir "$WORK/src"
    if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
        git -C "$REPO" ls-files -z --cached --others --exclude-standard \
            | tar -C "$REPO" --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$WORK/src" -xf -
    else
        tar -C "$REPO" --exclude=.venv --exclude=build -cf - . | tar -C "$WORK/src" -xf -
    fi
    (cd "$WORK/src" && emu "$ROOT/usr/bin/$PY" -m pip --disable-pip-version-check --python "$VENV/bin/python" \
        install ".[edge]") >"$WORK/pip.log" 2>&1 || { tail -30 "$WORK/pip.log" >&2; die "pip install .[edge] failed on arm64"; }
    ARM_VERSIONS=$(emu "$VENV/bin/python" - "$VENV" <<'EOF'
import importlib.metadata as md, importlib.util, os, platform, sys
assert platform.machine() == "aarch64", platform.machine()
assert os.path.realpath(sys.prefix) == os.path.realpath(sys.argv[1]), f"venv not active: sys.prefix={sys.prefix} (binfmt lost argv[0]?)"
if importlib.util.find_spec("tensorflow") is not None:
    sys.exit("tensorflow is importable in the edge venv: something in .[edge] pulls it in")
import ai_edge_litert.interpreter, cv2, numpy  # noqa: E401,F401 - they must import on arm64
print(", ".join(f"{n} {md.version(n)}" for n in ("ai-edge-litert", "numpy", "opencv-python-headless", "edgetl")))
EOF
    ) || die "the arm64 venv is not right (message above)"
}

# classify NAME ARGS...: edge-classify on x86 (this checkout, X86_PYTHON) and on arm64 (the
# installed console script, run through binfmt like on a Pi), JSON lines into $WORK/NAME.*.jsonl.
classify() {
    local name=$1 rc=0; shift
    (cd "$REPO" && "$X86_PYTHON" -m edgetl.runtime --model "$MODEL" "$@") >"$WORK/$name.x86.jsonl" 2>"$WORK/$name.x86.err" \
        || { tail -20 "$WORK/$name.x86.err" >&2; die "edge-classify ($name) failed on x86 with $X86_PYTHON"; }
    (cd "$WORK" && emu timeout 1200 "$VENV/bin/edge-classify" --model "$MODEL" "$@") >"$WORK/$name.arm64.jsonl" 2>"$WORK/$name.arm64.err" \
        || rc=$?
    [ "$rc" = 0 ] || { tail -20 "$WORK/$name.arm64.err" >&2; die "edge-classify ($name) crashed on arm64 (exit $rc)"; }
    "$X86_PYTHON" "$COMPARE" frames "$name" "$WORK/$name.x86.jsonl" "$WORK/$name.arm64.jsonl" --tol "$TOL" \
        >>"$WORK/summary.txt" 2>&1 || FAILED+=("$name")
}

# The strict check: identical input tensors (made once, on x86, by edgetl.runtime.preprocess) through
# the interpreter on both sides; only the int8 kernels differ, and their outputs must be equal.
same_tensor() {
    PYTHONPATH="$REPO" "$X86_PYTHON" "$COMPARE" tensors "$MODEL" "$WORK/inputs.npy" "${images[@]}" >/dev/null \
        || die "cannot build input tensors on x86"
    "$X86_PYTHON" "$COMPARE" invoke "$MODEL" "$WORK/inputs.npy" "$WORK/outputs.x86.npy" >/dev/null 2>"$WORK/invoke.x86.err" \
        || { cat "$WORK/invoke.x86.err" >&2; die "interpreter failed on x86"; }
    emu "$VENV/bin/python" "$COMPARE" invoke "$MODEL" "$WORK/inputs.npy" "$WORK/outputs.arm64.npy" >/dev/null 2>"$WORK/invoke.arm64.err" \
        || { tail -20 "$WORK/invoke.arm64.err" >&2; die "interpreter crashed on arm64"; }
    "$X86_PYTHON" "$COMPARE" outputs "$WORK/outputs.x86.npy" "$WORK/outputs.arm64.npy" >>"$WORK/summary.txt" 2>&1 \
        || FAILED+=("same-tensor")
}

FAILED=()
mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock -w 1800 9 || die "another arm64_check holds $ROOT.lock"
"$X86_PYTHON" -c 'import ai_edge_litert, cv2, numpy' 2>/dev/null \
    || die "X86_PYTHON=$X86_PYTHON lacks numpy, cv2 or ai_edge_litert (install .[edge] there)"

step "host tools and binfmt";      host_tools
step "rootfs ($SUITE arm64)";      build_rootfs
step "pip install .[edge]";        install_edge
step "images";                     classify images --image "${images[@]}" --headless
step "video";                      "$X86_PYTHON" "$COMPARE" video "$WORK/clip.avi" "${images[@]}" >/dev/null
                                   classify video --video "$WORK/clip.avi" --headless
step "same tensor";                same_tensor
step ""

echo "arm64 check: Debian $SUITE arm64, Python ${ARM_PY_VERSION#* }, $(qemu-aarch64-static --version | head -1 | cut -d' ' -f1-3), QEMU_CPU=$QEMU_CPU_MODEL"
echo "rootfs $ROOT ($ROOTFS_STATE)"
echo "installed: $ARM_VERSIONS; tensorflow not importable"
echo "model: ${MODEL#"$REPO"/}, ${#images[@]} images"
cat "$WORK/summary.txt"
echo "wall time per step (arm64 steps emulated: not a Pi figure):"
printf '  %s\n' "${TIMES[@]}"
printf '  %-24s %4d s\n' total "$SECONDS"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "RESULT: FAIL (${FAILED[*]}): x86 and arm64 disagree; outputs kept in $WORK"
    KEEP=1
    exit 1
fi
echo "RESULT: PASS"
