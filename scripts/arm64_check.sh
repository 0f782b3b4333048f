#!/usr/bin/env bash
# arm64 (Raspberry Pi) check, issues #8 and #21: follow docs/raspberry-pi.md's "Step by step"
# in a Debian arm64 userland under qemu-user emulation, run edge-classify there on the golden
# model, images and a short video, and require the same answers as on x86.
#
#   sudo scripts/arm64_check.sh            # Debian bookworm arm64, Python 3.11 (Raspberry Pi OS 12)
#   sudo scripts/arm64_check.sh --trixie   # Debian trixie arm64, Python 3.13 (Raspberry Pi OS 13)
#
# The guide's shell lines are read from docs/raspberry-pi.md (the fenced blocks after the
# "<!-- pi-guide:training-machine -->" and "<!-- pi-guide:on-the-pi -->" markers) and run as
# written: the first on x86 (pip = X86_PYTHON's), the second inside the rootfs (chroot through
# binfmt) as an unprivileged user "pi", "scp" being a copy into its home. apt's part comes from
# debootstrap (python3-numpy: apt's numpy 1.24 on bookworm, the one Picamera2 is built against);
# a line that needs sudo, a camera or systemd is reported as not run, with the reason. On trixie
# (numpy 2 from apt) the pip line's [edge-bookworm] is replaced by [edge].
#
# Environment:
#   ARM64_ROOT       cached rootfs (default /var/cache/edgetl-arm64/<suite>); a re-run reuses it
#   X86_PYTHON       x86 python with numpy, cv2, ai_edge_litert and pip, the reference side and the
#                    "training machine" that builds the wheel (default: the project's venv, $VENV or
#                    .venv, as scripts/setup.sh makes it; python3 when there is none)
#   ARM64_SCORE_TOL  per-frame score tolerance, x86 vs arm64 (default 0.02)
#   ARM64_QEMU_CPU   emulated CPU (default cortex-a72, the Pi 4; cortex-a76 is the Pi 5)
#   ARM64_MIRROR     Debian mirror (default: the one in /etc/apt/sources.list.d/debian.sources)
#   ARM64_GOLDEN     folder with the model (+ .json card) and *.png images (default tests/golden)
#   ARM64_KEEP=1     keep the work directory (outputs, logs) even when the check passes
#
# Needs root (apt-get, binfmt_misc, debootstrap, chroot). Exit 0 when everything agrees, 1 when
# the install fails, the venv imports the wrong numpy, edge-classify crashes, or x86 and arm64
# disagree; 2 on a usage error.
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
if [ -z "${X86_PYTHON:-}" ]; then
    X86_PYTHON=python3
    for candidate in ${VENV:+"$VENV/bin/python"} "$REPO/.venv/bin/python"; do
        [ -x "$candidate" ] && { X86_PYTHON=$candidate; break; }
    done
fi
case "$X86_PYTHON" in */*) X86_PYTHON="$(cd "$(dirname "$X86_PYTHON")" && pwd)/${X86_PYTHON##*/}" ;; esac  # steps cd elsewhere
TOL=${ARM64_SCORE_TOL:-0.02}
QEMU_CPU_MODEL=${ARM64_QEMU_CPU:-cortex-a72}
GOLDEN=${ARM64_GOLDEN:-$REPO/tests/golden}
COMPARE=$REPO/scripts/arm64_compare.py
PI_HOME=/home/pi            # inside the rootfs; the guide's ~
VENV=$PI_HOME/edgetl       # the guide's venv
PACKAGES=python3,python3-venv,python3-pip,python3-numpy,ca-certificates
RECIPE="edgetl arm64 rootfs v3 (user pi, blas): $SUITE arm64 minbase $PACKAGES"

log() { printf '%s\n' "$*" >&2; }
die() { log "arm64_check: FAIL: $*"; [ -n "${WORK:-}" ] && log "outputs and logs kept in $WORK"; KEEP=1; exit 1; }
STEP_NAME="" STEP_START=$SECONDS TIMES=()
step() {  # step "name": closes the previous step's timer, opens the next
    [ -n "$STEP_NAME" ] && TIMES+=("$(printf '%-24s %4d s' "$STEP_NAME" $((SECONDS - STEP_START)))")
    STEP_NAME=$1 STEP_START=$SECONDS
    [ -n "$1" ] && log "[arm64] $1"
    return 0
}
# pi CMD...: CMD inside the rootfs (chroot; binfmt's F flag lets the kernel start qemu there) as
# the Pi's user (uid 1000) in its home, with a clean environment: paths are the Pi's
# (/usr/lib/python3/dist-packages is apt's) and nothing of the host's pip configuration leaks in.
# QEMU_CPU, in every exec's environment (each starts a new qemu), emulates a Pi's core: the
# default QEMU_CPU=max gives wrong int8 outputs (FACTS.md). /proc is not mounted: qemu reads the
# rootfs's /proc/cpuinfo, a Pi's (write_cpuinfo). dpkg -x skipped py3compile and pi cannot write
# .pyc files beside apt's modules: PYTHONPYCACHEPREFIX keeps them in pi's cache, kept across runs
# (without them every emulated start recompiles what it imports).
pi() {
    chroot --userspec=1000:1000 "$ROOT" /usr/bin/env -i HOME="$PI_HOME" USER=pi LOGNAME=pi LANG=C.UTF-8 \
        PATH=/usr/local/bin:/usr/bin:/bin QEMU_CPU="$QEMU_CPU_MODEL" PYTHONPYCACHEPREFIX="$PI_HOME/.cache/pyc" /bin/bash -c 'cd && "$@"' pi "$@"
}

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
        # Another apt-get or dpkg running (unattended-upgrades, a second check) holds the lock: wait, do not fail.
        local wait=(-o DPkg::Lock::Timeout=600)
        apt-get "${wait[@]}" install -y "${missing[@]}" >"$WORK/apt.log" 2>&1 \
            || { apt-get "${wait[@]}" update >>"$WORK/apt.log" 2>&1 \
                && apt-get "${wait[@]}" install -y "${missing[@]}" >>"$WORK/apt.log" 2>&1; } \
            || { tail -20 "$WORK/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
    fi
    mountpoint -q /proc/sys/fs/binfmt_misc \
        || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
        || die "cannot mount binfmt_misc (in a container: run it privileged)"
    # Warns and succeeds when already enabled; the grep below is the real check.
    grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || update-binfmts --enable qemu-aarch64 || true
    grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || die "binfmt handler qemu-aarch64 is not enabled"
    grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
        || die "binfmt handler qemu-aarch64 lacks the F flag (fix-binary), which chroot needs: use Debian's qemu-user-static"
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

# A Raspberry Pi 4's /proc/cpuinfo, read in the chroot (no /proc mounted) in place of the host's; with the
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
    # No /sys in the chroot either: the CPU lists cpuinfo (LiteRT) and os.cpu_count() read, a Pi 4's.
    mkdir -p "$ROOT/sys/devices/system/cpu"
    for list in possible present online; do echo 0-3 >"$ROOT/sys/devices/system/cpu/$list"; done
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
        # What maintainer scripts would have done and the Pi's user needs: accounts, and the
        # BLAS/LAPACK alternatives numpy loads (update-alternatives never ran).
        cp "$tmp/usr/share/base-passwd/passwd.master" "$tmp/etc/passwd"
        cp "$tmp/usr/share/base-passwd/group.master" "$tmp/etc/group"
        echo "pi:x:1000:1000:pi:$PI_HOME:/bin/bash" >>"$tmp/etc/passwd"
        echo "pi:x:1000:" >>"$tmp/etc/group"
        for lib in blas/libblas.so.3 lapack/liblapack.so.3; do
            if [ -e "$tmp/usr/lib/aarch64-linux-gnu/$lib" ]; then
                ln -sf "/usr/lib/aarch64-linux-gnu/$lib" "$tmp/usr/lib/aarch64-linux-gnu/${lib#*/}"
            fi
        done
        mv "$tmp" "$ROOT"
        echo "$RECIPE" >"$ROOT/.edgetl-rootfs"
        ROOTFS_STATE="built from $mirror"
    fi
    write_cpuinfo
    # pip inside reads /etc/ssl/certs from ROOT: give it the host's bundle (and any local CA).
    [ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
    install -d -o 1000 -g 1000 "$ROOT$PI_HOME"
    ARM_PY_VERSION=$(pi "/usr/bin/$PY" -c 'import platform, sys; print(platform.machine(), sys.version.split()[0])') \
        || die "$PY does not start under qemu-aarch64-static"
    [ "${ARM_PY_VERSION%% *}" = aarch64 ] || die "emulated python reports machine ${ARM_PY_VERSION%% *}, not aarch64"
}

# guide_block MARKER: the shell lines of the first fenced block after "<!-- pi-guide:MARKER -->".
guide_block() {
    awk -v m="<!-- pi-guide:$1 -->" '$0 == m { f = 1; next } f == 1 && /^```/ { f = 2; next }
        f == 2 && /^```/ { exit } f == 2 && NF { print }' "$REPO/docs/raspberry-pi.md"
}

# The guide's "training machine" block, on x86 in a snapshot of the checkout (tracked + untracked,
# not ignored files: never a stale build/), whose run folder runs/my-model holds the golden model
# under the guide's names. pip is X86_PYTHON's; scp copies into the rootfs's /home/pi.
guide_training_machine() {
    local block
    block=$(guide_block training-machine)
    [ -n "$block" ] || die "docs/raspberry-pi.md has no <!-- pi-guide:training-machine --> block"
    mkdir -p "$WORK/src"
    if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
        git -C "$REPO" ls-files -z --cached --others --exclude-standard \
            | tar -C "$REPO" --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$WORK/src" -xf -
    else
        tar -C "$REPO" --exclude=.venv --exclude=build -cf - . | tar -C "$WORK/src" -xf -
    fi
    mkdir -p "$WORK/src/runs/my-model"
    cp "$MODEL" "$WORK/src/runs/my-model/model_int8.tflite"
    cp "${MODEL%.tflite}.json" "$WORK/src/runs/my-model/model_int8.json"
    pip() { "$X86_PYTHON" -m pip "$@"; }
    scp() { local n=$(($# - 1)); install -o 1000 -g 1000 -m 644 "${@:1:$n}" "$ROOT$PI_HOME/"; }
    (cd "$WORK/src" && export X86_PYTHON ROOT PI_HOME && bash -euo pipefail -c "$(declare -f pip scp); $block") \
        >"$WORK/training-machine.log" 2>&1 || { tail -30 "$WORK/training-machine.log" >&2; die "the guide's training-machine lines failed on x86"; }
    GUIDE_LOG+=("training machine (x86): $(echo "$block" | wc -l) lines run")
}

# The guide's "on the Pi" block, line by line in the rootfs as user pi. What emulation cannot do
# is reported, not silently dropped.
guide_on_the_pi() {
    local block line rc
    block=$(guide_block on-the-pi)
    [ -n "$block" ] || die "docs/raspberry-pi.md has no <!-- pi-guide:on-the-pi --> block"
    [ "$SUITE" = bookworm ] || block=${block//\[edge-bookworm\]/[edge]}
    while IFS= read -r line; do
        case "$line" in
            sudo\ apt*)
                GUIDE_LOG+=("not run: $line  (no apt under qemu-user: debootstrap --include=$PACKAGES; Debian has no python3-picamera2)") ;;
            *--camera\ picam*)
                rc=0; pi bash -c "$line" >"$WORK/picam.out" 2>"$WORK/picam.err" || rc=$?
                [ "$rc" = 4 ] && grep -q picamera2 "$WORK/picam.err" \
                    || { cat "$WORK/picam.err" >&2; die "'$line' gave exit $rc; expected 4 (no Picamera2 here)"; }
                GUIDE_LOG+=("run, exit 4 as expected (no Picamera2, no camera under emulation): $line") ;;
            *)
                pi bash -euo pipefail -c "$line" >>"$WORK/on-the-pi.log" 2>&1 \
                    || { tail -30 "$WORK/on-the-pi.log" >&2; die "guide line failed in the rootfs: $line"; }
                GUIDE_LOG+=("run: $line") ;;
        esac
    done <<<"$block"
}

# The guide's "at boot" block: the unit file is copied as written (as root in the rootfs); with no
# systemd under qemu-user, the host's systemd-analyze verifies that copy instead, its /home paths
# moved under the rootfs (so ExecStart must be the guide's installed edge-classify).
guide_at_boot() {
    local block line
    block=$(guide_block at-boot)
    [ -n "$block" ] || die "docs/raspberry-pi.md has no <!-- pi-guide:at-boot --> block"
    while IFS= read -r line; do
        case "$line" in
            sudo\ cp\ *)
                chroot "$ROOT" /usr/bin/env -i HOME=/root USER=pi PATH=/usr/bin:/bin QEMU_CPU="$QEMU_CPU_MODEL" \
                    /bin/bash -c "cd $PI_HOME && ${line#sudo }" >>"$WORK/at-boot.log" 2>&1 \
                    || { tail -20 "$WORK/at-boot.log" >&2; die "guide line failed in the rootfs: $line"; }
                GUIDE_LOG+=("run (as root): $line") ;;
            *) GUIDE_LOG+=("not run: $line  (no systemd under qemu-user)") ;;
        esac
    done <<<"$block"
    [ -f "$ROOT/etc/systemd/system/edge-classify@.service" ] || die "the guide's at-boot lines did not install edge-classify@.service"
    if command -v systemd-analyze >/dev/null; then  # the installed unit, its /home moved under ROOT
        mkdir -p "$WORK/unit"
        sed "s#/home/#$ROOT/home/#g" "$ROOT/etc/systemd/system/edge-classify@.service" >"$WORK/unit/edge-classify@pi.service"
        systemd-analyze verify "$WORK/unit/edge-classify@pi.service" >"$WORK/verify.log" 2>&1 \
            || { cat "$WORK/verify.log" >&2; die "systemd-analyze verify edge-classify@pi.service failed (paths under the rootfs)"; }
        GUIDE_LOG+=("systemd-analyze verify edge-classify@pi.service (its /home under the rootfs, ExecStart from the guide's venv): clean")
    else
        GUIDE_LOG+=("not verified: no systemd-analyze on this host")
    fi
}

# The Pi side of the guide, then what it must have produced: apt's numpy (1.24 on bookworm) is
# the one the venv imports, next to opencv and LiteRT, and TensorFlow is not there.
install_guide() {
    find "$ROOT$PI_HOME" -mindepth 1 -maxdepth 1 ! -name .cache -exec rm -rf {} +  # keep pip's cache
    install -d -o 1000 -g 1000 "$ROOT$PI_HOME"
    guide_training_machine
    guide_on_the_pi
    guide_at_boot
    local want_numpy=""
    [ "$SUITE" = bookworm ] && want_numpy=1.24.
    ARM_VERSIONS=$(pi "$VENV/bin/python" - "$want_numpy" <<'EOF'
import importlib.metadata as md, importlib.util, platform, sys
assert platform.machine() == "aarch64", platform.machine()
if importlib.util.find_spec("tensorflow") is not None:
    sys.exit("tensorflow is importable in the edge venv: something in the install pulls it in")
import ai_edge_litert.interpreter, cv2, numpy  # noqa: E401,F401 - they must import on arm64
if not numpy.__file__.startswith("/usr/lib/python3/dist-packages/"):
    sys.exit(f"the venv imports numpy {numpy.__version__} from {numpy.__file__}, not apt's (/usr/lib/python3/dist-packages)")
if not numpy.__version__.startswith(sys.argv[1]):
    sys.exit(f"the venv imports numpy {numpy.__version__}, not {sys.argv[1]}x")
def version(name):
    try:
        return f"{name} {md.version(name)}"
    except md.PackageNotFoundError:
        return None
found = filter(None, map(version, ("ai-edge-litert", "numpy", "opencv-python-headless", "ml-dtypes", "edgetl")))
print(", ".join(found) + f" (numpy from {numpy.__file__.rsplit('/numpy/', 1)[0]})")
EOF
    ) || die "the arm64 venv is not right (message above)"
}

# The inputs both sides classify, in a folder copied into the Pi's home (~/check): the golden
# images, a short MJPG video made from them, their exact input tensors (made once, on x86, by
# edgetl.runtime.preprocess) and arm64_compare.py, which needs only numpy and ai_edge_litert there.
make_inputs() {
    mkdir -p "$WORK/check"
    cp "${images[@]}" "$COMPARE" "$WORK/check/"
    "$X86_PYTHON" "$COMPARE" video "$WORK/check/clip.avi" "${images[@]}" >/dev/null || die "cannot write the video on x86"
    PYTHONPATH="$REPO" "$X86_PYTHON" "$COMPARE" tensors "$MODEL" "$WORK/check/inputs.npy" "${images[@]}" >/dev/null \
        || die "cannot build input tensors on x86"
    cp -r "$WORK/check" "$ROOT$PI_HOME/check" && chown -R 1000:1000 "$ROOT$PI_HOME/check"
}
in_check() { pi /bin/bash -c 'cd check && exec timeout 1200 "$@"' in_check "$@"; }  # CMD in ~/check as pi

# classify NAME ARGS...: edge-classify on x86 (this checkout, X86_PYTHON) and on arm64 (the
# guide's venv and model, as user pi), JSON lines into $WORK/NAME.*.jsonl.
classify() {
    local name=$1 rc=0; shift
    (cd "$WORK/check" && PYTHONPATH="$REPO" "$X86_PYTHON" -m edgetl.runtime --model "$MODEL" "$@") \
        >"$WORK/$name.x86.jsonl" 2>"$WORK/$name.x86.err" \
        || { tail -20 "$WORK/$name.x86.err" >&2; die "edge-classify ($name) failed on x86 with $X86_PYTHON"; }
    in_check "$VENV/bin/edge-classify" --model "$PI_HOME/models/model_int8.tflite" "$@" \
        >"$WORK/$name.arm64.jsonl" 2>"$WORK/$name.arm64.err" || rc=$?
    [ "$rc" = 0 ] || { tail -20 "$WORK/$name.arm64.err" >&2; die "edge-classify ($name) crashed on arm64 (exit $rc)"; }
    "$X86_PYTHON" "$COMPARE" frames "$name" "$WORK/$name.x86.jsonl" "$WORK/$name.arm64.jsonl" --tol "$TOL" \
        >>"$WORK/summary.txt" 2>&1 || FAILED+=("$name")
}

# The strict check: identical input tensors through the interpreter on both sides; only the
# int8 kernels differ, and their outputs must be equal.
same_tensor() {
    "$X86_PYTHON" "$COMPARE" invoke "$MODEL" "$WORK/check/inputs.npy" "$WORK/outputs.x86.npy" >/dev/null 2>"$WORK/invoke.x86.err" \
        || { cat "$WORK/invoke.x86.err" >&2; die "interpreter failed on x86"; }
    in_check "$VENV/bin/python" arm64_compare.py invoke "$PI_HOME/models/model_int8.tflite" inputs.npy outputs.arm64.npy \
        >/dev/null 2>"$WORK/invoke.arm64.err" || { tail -20 "$WORK/invoke.arm64.err" >&2; die "interpreter crashed on arm64"; }
    "$X86_PYTHON" "$COMPARE" outputs "$WORK/outputs.x86.npy" "$ROOT$PI_HOME/check/outputs.arm64.npy" >>"$WORK/summary.txt" 2>&1 \
        || FAILED+=("same-tensor")
}

# edge-classify benchmark (issue #30) with the guide's venv and model: it must run on arm64 and
# say it is emulated (the rootfs's cpuinfo names a Pi 4, so the board line alone would mislead).
# Its figures only prove that it runs: qemu is 100-400x slower than a Pi.
bench() {
    in_check "$VENV/bin/edge-classify" benchmark "$PI_HOME/models/model_int8.tflite" --threads 1,2 --runs 5 --warmup 1 \
        --seconds 5 --json >"$WORK/benchmark.arm64.json" 2>"$WORK/benchmark.arm64.err" \
        || { tail -20 "$WORK/benchmark.arm64.err" >&2; die "edge-classify benchmark failed on arm64"; }
    "$X86_PYTHON" - "$WORK/benchmark.arm64.json" >>"$WORK/summary.txt" 2>&1 <<'EOF' || FAILED+=("benchmark")
import json, sys
report = json.load(open(sys.argv[1]))
board, rows = report["board"], report["rows"]
assert board["machine"] == "aarch64" and "emulated" in board, board
assert [r["threads"] for r in rows] == [1, 2] and all(r["runs"] >= 1 and r["e2e_p50_ms"] > 0 for r in rows), rows
print(f"benchmark: EMULATED ({board['emulated']}); reported board {board['board']!r}, {board['cpu']}, {board['runtime']}, {board['python']}, {board['os']}")
for r in rows:
    print(f"  {r['model']}, {r['threads']} thread(s), {r['runs']} runs: invoke p50 {r['invoke_p50_ms']} ms, "
          f"end-to-end p50 {r['e2e_p50_ms']} ms (emulated, not Pi speed)")
EOF
}

FAILED=() GUIDE_LOG=()
mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock -w 1800 9 || die "another arm64_check holds $ROOT.lock"
"$X86_PYTHON" -c 'import ai_edge_litert, cv2, numpy, edgetl.runtime' 2>/dev/null \
    || die "X86_PYTHON=$X86_PYTHON lacks numpy, cv2, ai_edge_litert or edgetl (run scripts/setup.sh for .venv, or pip install -e '.[edge]' there)"

step "host tools and binfmt";      host_tools
step "rootfs ($SUITE arm64)";      build_rootfs
step "Pi guide install (docs/raspberry-pi.md)";    install_guide
step "inputs";                     make_inputs
step "images";                     classify images --image "${images[@]##*/}" --headless
step "video";                      classify video --video clip.avi --headless
step "same tensor";                same_tensor
step "benchmark (emulated)";       bench
step ""

echo "arm64 check: Debian $SUITE arm64, Python ${ARM_PY_VERSION#* }, $(qemu-aarch64-static --version | head -1 | cut -d' ' -f1-3), QEMU_CPU=$QEMU_CPU_MODEL"
echo "rootfs $ROOT ($ROOTFS_STATE)"
echo "installed: $ARM_VERSIONS; tensorflow not importable"
echo "Pi guide (docs/raspberry-pi.md), as written (as user pi in the rootfs):"
printf '  %s\n' "${GUIDE_LOG[@]}"
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
