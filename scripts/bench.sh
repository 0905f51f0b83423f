#!/usr/bin/env bash
# Benchmarks (not tests). Usage: scripts/bench.sh sync|ebs|boot|memory|hostile|scale|continuous
#
# boot: the image as built by scripts/build.sh (out/): `failback build` time, then
# QEMU (TCG) boots of the kernel + initramfs and of the ISO (BIOS CD), BENCH_RUNS
# times each (default 3), timing QEMU start -> the client's `boot` event.
#
# sync: 2 GiB images with 0%, 1%, 10%, 100% of their 512 KiB blocks changed (seeded),
# client and agent on 127.0.0.1. Side by side in one run: failback pull; rsync
# --inplace --no-whole-file through an rsync daemon; a full copy with curl from a local
# HTTP server (python3 -m http.server); and `openssl speed -evp sha256` as the hashing
# floor. Prints a Markdown table (wall time, bytes over the wire).
# Environment: BENCH_DIR (default /tmp/failback-bench), BENCH_MIB (default 2048),
# BENCH_FRACTIONS (default "0 1 10 100"), FAILBACK_BIN (default: cargo build --release).
# The client's CPU (user + sys, GNU time) is in its own column. Needs: rsync, curl,
# openssl, python3, /usr/bin/time (Debian package `time`).
set -euo pipefail

what=${1:-}
[[ $what =~ ^(sync|ebs|boot|memory|hostile|scale|continuous)$ ]] ||
    { echo "usage: $0 sync|ebs|boot|memory|hostile|scale|continuous" >&2; exit 2; }

# Prints the failback to measure: FAILBACK_BIN, else a release build of the tree at $1.
release_failback() {
    if [[ -n ${FAILBACK_BIN:-} ]]; then
        echo "$FAILBACK_BIN"
    else
        echo "building failback (release)..." >&2
        (cd "$1" && cargo build --release --quiet)
        echo "$1/target/release/failback"
    fi
}

# continuous: a BENCH_MIB (default 2048) MiB volume of random data that a writer keeps
# changing at BENCH_WRITE_MIBS (default 10) MiB/s (64 KiB at random places), served on
# 127.0.0.1; `failback pull --continuous --interval BENCH_INTERVAL (default 2)` into an
# empty target for BENCH_PASSES (default 5) passes; then the writer stops, `failback
# cutover` runs, and the target is compared with the volume. Prints the first pass, the
# steady passes (time and lag), the final pass (the downtime) and the cutover command's
# wall time, next to a one-shot pull of the same volume into an empty target.
# BENCH_DIR (default /tmp/failback-bench), FAILBACK_BIN (default: cargo build --release).
bench_continuous() {
    local root fb dir mib=${BENCH_MIB:-2048} rate=${BENCH_WRITE_MIBS:-10}
    local passes=${BENCH_PASSES:-5} interval=${BENCH_INTERVAL:-2} i port fp
    root=$(cd "$(dirname "$0")/.." && pwd)
    dir=${BENCH_DIR:-/tmp/failback-bench}/continuous
    fb=$(release_failback "$root")
    mkdir -p "$dir" && cd "$dir"
    local token=bench-continuous-token-0123456789
    trap '[[ -n ${agent:-} ]] && kill "$agent" 2>/dev/null; [[ -n ${writer:-} ]] && kill "$writer" 2>/dev/null; true' EXIT
    echo "making ${mib} MiB volume..." >&2
    { openssl enc -aes-128-ctr -nosalt -pass pass:cont -pbkdf2 -iter 1 </dev/zero 2>/dev/null || true; } |
        head -c $((mib << 20)) >vol.img
    rm -rf state && : >agent.log
    "$fb" serve --listen 127.0.0.1:0 --state-dir state --token "$token" \
        --volume vol="$dir/vol.img" >agent.log 2>&1 &
    agent=$!
    for ((i = 0; i < 600; i++)); do
        port=$(sed -n 's/^failback agent listening on .*:\([0-9]*\)$/\1/p' agent.log)
        fp=$(awk '/fingerprint:/ {print $2}' agent.log)
        [[ -n $port && -n $fp ]] && break
        sleep 0.1
    done
    [[ -n $fp ]] || { echo "bench: the agent did not start: $(cat agent.log)" >&2; exit 1; }
    local pull=("$fb" pull --source "https://127.0.0.1:$port" --fingerprint "$fp" --yes --progress json)

    # One shot, for comparison (no writer).
    rm -f target.img && truncate -s $((mib << 20)) target.img
    local t0 t1 once
    t0=$(date +%s.%N)
    FAILBACK_TOKEN=$token "${pull[@]}" --map vol="$dir/target.img" >once.json
    t1=$(date +%s.%N)
    once=$(echo "$t1 - $t0" | bc -l | xargs printf '%.1f')

    # Continuous, with the writer.
    rm -f target.img stop cont.json && truncate -s $((mib << 20)) target.img && : >cont.json
    python3 - vol.img "$rate" <<'PY' &
import os, random, sys, time
path, rate = sys.argv[1], float(sys.argv[2])
fd, size, chunk = os.open(path, os.O_WRONLY), os.path.getsize(path), 64 << 10
every, rnd, t = chunk / (rate * (1 << 20)), random.Random(7), time.monotonic()
while not os.path.exists("stop"):
    os.pwrite(fd, rnd.randbytes(chunk), rnd.randrange(0, size - chunk))
    t += every
    time.sleep(max(0.0, t - time.monotonic()))
os.fsync(fd)
PY
    writer=$!
    FAILBACK_TOKEN=$token "${pull[@]}" --continuous --interval "$interval" \
        --map vol="$dir/target.img" >cont.json &
    local client=$!
    while (($(grep -c '"event":"pass"' cont.json || true) < passes)); do
        kill -0 "$client" 2>/dev/null || { echo "bench: the continuous pull ended: $(tail -3 cont.json)" >&2; exit 1; }
        sleep 0.5
    done
    touch stop && wait "$writer" && writer=""
    t0=$(date +%s.%N)
    FAILBACK_TOKEN=$token "$fb" cutover --source "https://127.0.0.1:$port" --fingerprint "$fp" >cutover.txt
    t1=$(date +%s.%N)
    wait "$client"
    cmp -s target.img vol.img || { echo "bench: the target differs from the volume after cutover" >&2; exit 1; }
    local cut
    cut=$(echo "$t1 - $t0" | bc -l | xargs printf '%.1f')
    python3 - "$mib" "$rate" "$interval" "$once" "$cut" <<'PY'
import json, statistics, sys
mib, rate, interval, once, cut = sys.argv[1:]
evs = [json.loads(l) for l in open("cont.json") if l.startswith("{")]
passes = [e for e in evs if e["event"] == "pass"]
done = next(e for e in evs if e["event"] == "cutover_done")
steady = passes[1:] or passes
med = lambda k: statistics.median(p[k] for p in steady)
print(f"| {mib} MiB, {rate} MiB/s of writes, interval {interval} s | seconds |")
print("| --- | --- |")
print(f"| one-shot pull into an empty target | {once} |")
print(f"| first pass (empty target) | {passes[0]['seconds']:.1f} |")
print(f"| steady pass, median of {len(steady)} (blocks pulled: {statistics.median(p['pulled_blocks'] for p in steady):.0f}) | {med('seconds'):.1f} |")
print(f"| steady lag_s, median | {med('lag_s'):.1f} |")
print(f"| final pass after cutover (the downtime) | {done['seconds']:.1f} |")
print(f"| `failback cutover`, wall | {cut} |")
PY
    kill "$agent" 2>/dev/null; agent=""
}

# hostile: `failback serve` (release) on 127.0.0.1 serving a 64 MiB volume, and
# BENCH_HOSTILE_CONNS (default 500) connections that misbehave: half never send a
# ClientHello, half finish the handshake and send half of a 380 KB request head.
# Prints the agent's RSS before and while they are held, how long an authenticated
# request takes meanwhile (curl), and how many of them are still open after 15 s.
# BENCH_FAILBACK: another failback binary to measure (an older build), not built.
bench_hostile() {
    cd "$(dirname "$0")/.."
    local fb=${BENCH_FAILBACK:-target/release/failback} n=${BENCH_HOSTILE_CONNS:-500}
    if [[ -z ${BENCH_FAILBACK:-} ]]; then
        echo "building failback (release)..." >&2
        cargo build --release --quiet
    fi
    local token=bench-hostile-token-0123456789 port="" i
    tmp=$(mktemp -d)
    trap '[[ -n ${agent:-} ]] && kill "$agent" 2>/dev/null; rm -rf "$tmp"' EXIT
    truncate -s 64M "$tmp/vol.img"
    FAILBACK_TOKEN=$token "$fb" serve --listen 127.0.0.1:0 --state-dir "$tmp/state" \
        --volume vol="$tmp/vol.img" >"$tmp/agent.log" 2>&1 &
    agent=$!
    for ((i = 0; i < 100; i++)); do
        port=$(sed -n 's/^failback agent listening on .*:\([0-9]*\)$/\1/p' "$tmp/agent.log")
        [[ -n $port ]] && break
        sleep 0.1
    done
    [[ -n $port ]] || { echo "bench: the agent did not start: $(cat "$tmp/agent.log")" >&2; exit 1; }
    rss() { awk '/VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$agent/status"; }
    local before
    before=$(rss)
    python3 - "$port" "$n" >"$tmp/held.log" 2>&1 <<'PY' &
import socket, ssl, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
held = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if i % 2:
        try:
            s = ctx.wrap_socket(s, server_hostname="localhost")
            s.sendall(b"GET /v1/volumes HTTP/1.1\r\nx-filler: " + b"x" * (190 << 10))
        except OSError:
            pass
    held.append(s)
print("held", flush=True)
time.sleep(15)
still = 0
for s in held:
    s.setblocking(False)
    try:
        while s.recv(65536) != b"":  # an answer (431), then the end
            pass
    except (BlockingIOError, ssl.SSLWantReadError):
        still += 1
    except OSError:
        pass
print(still, flush=True)
PY
    local holder=$!
    for ((i = 0; i < 600 && $(grep -c held "$tmp/held.log") == 0; i++)); do sleep 0.1; done
    local during answer
    during=$(rss)
    answer=$(curl -sk -o /dev/null -w '%{http_code} in %{time_total} s' -m 30 \
        -H "Authorization: Bearer $token" "https://127.0.0.1:$port/v1/volumes" || echo "no answer")
    wait "$holder"
    echo "| agent, $n hostile connections | RSS before | RSS while held | authenticated request | still open after 15 s |"
    echo "| --- | --- | --- | --- | --- |"
    echo "| failback serve | $before | $during | $answer | $(tail -1 "$tmp/held.log") of $n |"
}

# scale: sparse volumes of 1 GiB, 1 TiB and 16 TiB - 1 MiB (ext4's cap on a file is
# just under 16 TiB) (BENCH_SCALE_SIZES, in MiB), each with 16 blocks of random data
# (8 MiB) spread from its first block to its last; the target a sparse file of the
# same size holding a stale state (8 of those blocks differ, and one block of stale
# data lies where the volume is a hole). Client and agent on 127.0.0.1, unattended.
# Wall time, maximum RSS and CPU of the client (/usr/bin/time -v, Debian package
# `time`), maximum RSS of the agent (VmHWM before it stops). Only the data blocks
# and the stale one are compared afterwards (reading 16 TiB of zeros takes hours).
# BENCH_DIR (default /tmp/failback-bench), FAILBACK_BIN (default: cargo build --release).
# Then EBS: moto (the moto venv, scripts/moto-venv.sh) on 127.0.0.1 with snapshots of
# 1 GiB, 1 TiB and 16383 GiB (BENCH_SCALE_EBS_GIB; empty: none) holding the same 16
# blocks spread from the first to the last, pulled onto an empty sparse target with
# one stale block (which must become zeros): the client's wall time, maximum RSS
# and CPU. BENCH_SCALE_SIZES empty: the EBS rows only.
bench_scale() {
    local root dir fb sizes bs=$((512 * 1024)) token=bench-token-0123456789 port=15520
    root=$(cd "$(dirname "$0")/.." && pwd)
    dir=${BENCH_DIR:-/tmp/failback-bench}/scale
    sizes=${BENCH_SCALE_SIZES-1024 1048576 16777215}
    [[ -x /usr/bin/time ]] || { echo "bench: /usr/bin/time is missing: apt-get install -y time" >&2; exit 1; }
    fb=$(release_failback "$root")
    mkdir -p "$dir"
    cd "$dir"
    agent=
    trap '[[ -n $agent ]] && kill "$agent" 2>/dev/null || true' EXIT
    stream() { { openssl enc -aes-128-ctr -nosalt -pass "pass:$1" -pbkdf2 -iter 1 </dev/zero 2>/dev/null || true; } | head -c "$2"; }
    put() { dd of="$1" bs=$bs seek="$2" conv=notrunc status=none; }
    block() { dd if="$1" bs=$bs skip="$2" count=1 status=none; }
    echo "| volume | wall s | client max RSS | client CPU s | agent max RSS | blocks pulled |"
    echo "|---|---|---|---|---|---|"
    local mib blocks k b checked fp t0 t1
    for mib in $sizes; do
        rm -f remote.img target.img
        truncate -s "${mib}M" remote.img target.img
        blocks=$((mib * 2))
        checked=()
        for ((k = 0; k < 16; k++)); do
            b=$(((blocks - 1) * k / 15))
            stream "data$k" $bs | put remote.img "$b"
            if ((k % 2)); then
                block remote.img "$b" | put target.img "$b"
            else
                stream "stale$k" $bs | put target.img "$b"
            fi
            checked+=("$b")
        done
        b=$((blocks / 3 + 1))
        stream stale $bs | put target.img "$b"
        checked+=("$b")
        "$fb" serve --volume disk="$dir/remote.img" --listen 127.0.0.1:$port --state-dir state \
            --token $token >agent.log 2>&1 &
        agent=$!
        for _ in $(seq 50); do grep -q fingerprint agent.log && break; sleep 0.1; done
        fp=$(awk '/fingerprint:/ {print $2}' agent.log)
        t0=$(date +%s.%N)
        FAILBACK_TOKEN=$token /usr/bin/time -v -o client.time "$fb" pull --source https://127.0.0.1:$port \
            --fingerprint "$fp" --map disk="$dir/target.img" --yes --progress json >pull.json 2>pull.err ||
            { echo "bench: the pull of $mib MiB failed: $(tail -3 pull.err)" >&2; exit 1; }
        t1=$(date +%s.%N)
        local agent_kb
        agent_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$agent/status")
        kill "$agent"; wait "$agent" 2>/dev/null || true; agent=
        for b in "${checked[@]}"; do
            cmp -s <(block remote.img "$b") <(block target.img "$b") ||
                { echo "bench: block $b of the $mib MiB target differs" >&2; exit 1; }
        done
        local rss cpu pulled
        rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' client.time)
        cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.2f", u + s}' client.time)
        pulled=$(grep '"event":"done"' pull.json | sed 's/.*"pulled_blocks":\([0-9]*\).*/\1/')
        echo "| $mib MiB | $(echo "$t1 - $t0" | bc -l | xargs printf '%.1f') | $((rss / 1024)) MiB | $cpu | $((agent_kb / 1024)) MiB | $pulled |"
    done
    rm -f remote.img target.img
    bench_scale_ebs
    exit 0
}

# The EBS rows of `scale` (see above), in `scale`'s directory with its helpers.
bench_scale_ebs() {
    local gibs=${BENCH_SCALE_EBS_GIB-1 1024 16383} ebs_port=15521 gib blocks k b
    [[ -n $gibs ]] || return 0
    "$root/scripts/moto-venv.sh"
    local py=${MOTO_VENV:-$root/.venv-moto}/bin/python ep=http://127.0.0.1:$ebs_port
    export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
    unset AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_EBS
    "$py" "$root/tests/ebs_support/moto_server.py" "$ebs_port" >moto.log 2>&1 &
    local moto=$!
    trap '[[ -n $agent ]] && kill "$agent" 2>/dev/null; kill '"$moto"' 2>/dev/null || true' EXIT
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$ebs_port) 2>/dev/null && break; sleep 0.2; done
    for ((k = 0; k < 16; k++)); do stream "data$k" $bs >"data$k.bin"; done
    echo
    echo "| EBS snapshot (moto) | wall s | client max RSS | client CPU s | blocks pulled |"
    echo "|---|---|---|---|---|"
    for gib in $gibs; do
        blocks=$((gib * 2048))
        local args=() checked=() snap
        for ((k = 0; k < 16; k++)); do
            b=$(((blocks - 1) * k / 15))
            args+=("$b" "data$k.bin")
            checked+=("$b")
        done
        # StartSnapshot, PutSnapshotBlock for the 16 blocks, CompleteSnapshot.
        snap=$("$py" - "$ep" "$gib" "${args[@]}" <<'PY'
import base64, hashlib, sys
import boto3
ep, gib, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
ebs = boto3.client("ebs", endpoint_url=ep, region_name="us-east-1")
snap = ebs.start_snapshot(VolumeSize=gib)["SnapshotId"]
for index, path in zip(rest[::2], rest[1::2]):
    data = open(path, "rb").read()
    ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=int(index), BlockData=data,
        DataLength=len(data), ChecksumAlgorithm="SHA256",
        Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode())
ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=16)
print(snap)
PY
        )
        rm -f target.img
        truncate -s "${gib}G" target.img
        b=$((blocks / 3 + 1))
        stream stale $bs | put target.img "$b"
        t0=$(date +%s.%N)
        /usr/bin/time -v -o client.time "$fb" pull --source "ebs://$snap" --endpoint "$ep" \
            --map "$snap=$dir/target.img" --yes --progress json >pull.json 2>pull.err ||
            { echo "bench: the EBS pull of $gib GiB failed: $(tail -3 pull.err)" >&2; exit 1; }
        t1=$(date +%s.%N)
        for ((k = 0; k < 16; k++)); do
            cmp -s "data$k.bin" <(block target.img "${checked[$k]}") ||
                { echo "bench: block ${checked[$k]} of the $gib GiB target differs" >&2; exit 1; }
        done
        cmp -s <(head -c $bs /dev/zero) <(block target.img "$b") ||
            { echo "bench: the stale block $b of the $gib GiB target is not zeros" >&2; exit 1; }
        local rss cpu pulled
        rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' client.time)
        cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.2f", u + s}' client.time)
        pulled=$(grep '"event":"done"' pull.json | sed 's/.*"pulled_blocks":\([0-9]*\).*/\1/')
        echo "| $gib GiB | $(echo "$t1 - $t0" | bc -l | xargs printf '%.1f') | $((rss / 1024)) MiB | $cpu | $pulled |"
    done
    rm -f target.img data*.bin
}
[[ $what == scale ]] && { bench_scale; exit 0; }

# memory: the smallest QEMU -m (MiB, bisected in steps of BENCH_MEM_STEP, default 8,
# between BENCH_MEM_LO (default 64, assumed too small) and BENCH_MEM_HI (default 512))
# with which the image of out/ (scripts/build.sh) reaches (1) the `disks` and
# `network` events (virtio disk + virtio NIC, DHCP) and (2) the `done` event of a pull
# of a BENCH_MEM_PULL_MIB (default 64) MiB volume of random data onto a blank disk from
# `failback serve` on the host (checked with cmp). Then the peak RSS of the same pull
# run on the host (`failback pull`, /usr/bin/time), for comparison.
bench_memory() {
    cd "$(dirname "$0")/.."
    local client=target/x86_64-unknown-linux-gnu/release/failback
    [[ -x $client && -f out/pxe/initrd.img ]] || { echo "bench: run scripts/build.sh first" >&2; exit 1; }
    local lo=${BENCH_MEM_LO:-64} hi=${BENCH_MEM_HI:-512} step=${BENCH_MEM_STEP:-8}
    local vol=${BENCH_MEM_PULL_MIB:-64} token=bench-memory-token-0123456789
    tmp=$(mktemp -d)
    trap '[[ -n ${agent:-} ]] && kill "$agent" 2>/dev/null; rm -rf "$tmp"' EXIT

    # reaches MEM EVENT ARGS...: boots with -m MEM; true when EVENT comes (within
    # 300 s) before a panic, an OOM kill, an error event or QEMU's end.
    reaches() {
        local mem=$1 event=$2 log="$tmp/console-$1-$2.log" pid i
        shift 2
        [[ -n ${prepare:-} ]] && $prepare
        qemu-system-x86_64 -accel tcg -m "$mem" -nographic -no-reboot -monitor none \
            -device virtio-rng-pci -kernel out/pxe/vmlinuz -initrd out/pxe/initrd.img "$@" >"$log" 2>&1 &
        pid=$!
        for ((i = 0; i < 3000; i++)); do
            if grep -q "{\"event\":\"$event\"" "$log" && { [[ -z ${verify:-} ]] || $verify; }; then
                kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
                echo "  -m $mem: $event" >&2
                return 0
            fi
            if grep -qE 'Kernel panic|Out of memory|"event":"error"' "$log" || ! kill -0 "$pid" 2>/dev/null; then
                break
            fi
            sleep 0.1
        done
        kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
        echo "  -m $mem: no $event ($(grep -m1 -oE 'Kernel panic[^\r]*|Out of memory[^\r]*|"event":"error".*' "$log" || echo 'timeout or exit'))" >&2
        return 1
    }
    # smallest EVENT ARGS...: the smallest -m that reaches EVENT.
    smallest() {
        local l=$lo h=$hi mid
        reaches "$h" "$@" || { echo "none up to $hi"; return; }
        while ((h - l > step)); do
            mid=$(((l + h) / 2 / step * step))
            ((mid <= l)) && mid=$((l + step))
            if reaches "$mid" "$@"; then h=$mid; else l=$mid; fi
        done
        echo "$h"
    }

    truncate -s 64M "$tmp/disk.img"
    local append="console=ttyS0 failback.progress=json failback.after=poweroff"
    local drive=(-drive "if=none,id=d,format=raw,file=$tmp/disk.img" -device virtio-blk-pci,drive=d)
    local nic=(-nic user,model=virtio-net-pci)
    echo "boot to the disks and network events:" >&2
    local boot
    boot=$(smallest network -append "$append" "${drive[@]}" "${nic[@]}")

    head -c $((vol << 20)) /dev/urandom >"$tmp/remote.img"
    FAILBACK_TOKEN=$token "$client" serve --listen 127.0.0.1:0 --state-dir "$tmp/state" \
        --volume system="$tmp/remote.img" >"$tmp/agent.log" 2>&1 &
    agent=$!
    local port fp i
    for ((i = 0; i < 100; i++)); do
        port=$(sed -n 's/^failback agent listening on .*:\([0-9]*\)$/\1/p' "$tmp/agent.log")
        fp=$(sed -n 's/^ *fingerprint: *//p' "$tmp/agent.log")
        [[ -n $port && -n $fp ]] && break
        sleep 0.1
    done
    [[ -n $port && -n $fp ]] || { echo "bench: the agent did not start: $(cat "$tmp/agent.log")" >&2; exit 1; }
    prepare() { rm -f "$tmp/disk.img"; truncate -s "${vol}M" "$tmp/disk.img"; }
    verify() { cmp -s "$tmp/disk.img" "$tmp/remote.img"; }
    echo "pull of $vol MiB:" >&2
    local pull
    pull=$(prepare=prepare verify=verify smallest done \
        -append "$append failback.unattended=1 failback.source=https://10.0.2.2:$port failback.token=$token failback.fingerprint=$fp failback.map=system=/dev/vda" \
        "${drive[@]}" "${nic[@]}")

    prepare
    local rss
    rss=$(FAILBACK_TOKEN=$token /usr/bin/time -f %M "$client" pull --source "https://127.0.0.1:$port" \
        --fingerprint "$fp" --map system="$tmp/disk.img" --yes --progress json 2>&1 >/dev/null | tail -1)
    verify || { echo "bench: the host pull did not reproduce the volume" >&2; exit 1; }
    echo "| smallest -m to the disks + network events | $boot MiB |"
    echo "| smallest -m for a pull of $vol MiB (done, verified) | $pull MiB |"
    echo "| peak RSS of the same pull on the host | $((rss / 1024)) MiB |"
    exit 0
}
[[ $what == memory ]] && bench_memory
[[ $what == hostile ]] && { bench_hostile; exit 0; }
[[ $what == continuous ]] && { bench_continuous; exit 0; }

# ebs: one moto server (tests/ebs_support/moto_server.py) on 127.0.0.1; a snapshot of
# BENCH_EBS_MIB (default 512) MiB of random data in a 1 GiB volume and a second one
# with 5% of its blocks rewritten, uploaded with boto3. Side by side: coldsnap
# download (full) and failback pull (full, then from the base snapshot). Needs the
# moto venv (scripts/moto-venv.sh) and coldsnap (COLDSNAP, default
# /tmp/coldsnap/bin/coldsnap; `cargo install --root /tmp/coldsnap coldsnap`).
bench_ebs() {
    local root dir mib bs cs port ep fb t0 t1
    root=$(cd "$(dirname "$0")/.." && pwd)
    dir=${BENCH_DIR:-/tmp/failback-bench}/ebs
    mib=${BENCH_EBS_MIB:-512}
    bs=$((512 * 1024))
    cs=${COLDSNAP:-/tmp/coldsnap/bin/coldsnap}
    port=${BENCH_EBS_PORT:-15510}
    ep=http://127.0.0.1:$port
    [[ -x $cs ]] || { echo "bench: no coldsnap at $cs: cargo install --root /tmp/coldsnap coldsnap (or set COLDSNAP)" >&2; exit 1; }
    "$root/scripts/moto-venv.sh"
    local py=${MOTO_VENV:-$root/.venv-moto}/bin/python
    # The static release client of scripts/build.sh, unless given.
    fb=${FAILBACK_BIN:-$root/target/x86_64-unknown-linux-gnu/release/failback}
    [[ -x $fb ]] || (cd "$root" && scripts/build.sh >/dev/null)
    mkdir -p "$dir"
    cd "$dir"
    export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
    unset AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_EBS
    stream() { { openssl enc -aes-128-ctr -nosalt -pass "pass:$1" -pbkdf2 -iter 1 </dev/zero 2>/dev/null || true; } | head -c "$2"; }
    echo "making images..." >&2
    stream ebs-full $((mib << 20)) >full.img
    truncate -s 1G full.img
    cp full.img changed.img
    local blocks=$((mib * 2)) n=0 b
    for ((b = 7; b < blocks; b += 20)); do
        stream "chg$b" $bs | dd of=changed.img bs=$bs seek=$b conv=notrunc status=none
        n=$((n + 1))
    done
    "$py" "$root/tests/ebs_support/moto_server.py" "$port" >moto.log 2>&1 &
    local moto=$!
    trap 'kill $moto 2>/dev/null || true' EXIT
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
    echo "uploading snapshots to moto..." >&2
    local snap_full snap_chg
    snap_full=$("$py" "$root/tests/ebs_support/snapshots.py" "$ep" full.img)
    snap_chg=$("$py" "$root/tests/ebs_support/snapshots.py" "$ep" changed.img)
    now() { date +%s.%N; }
    secs() { echo "$2 - $1" | bc -l | xargs printf '%.2f'; }
    fresh() { rm -f "$1"; truncate -s 1G "$1"; }

    rm -f cs.img; t0=$(now)
    "$cs" --endpoint "$ep" --region us-east-1 download --no-progress "$snap_full" cs.img
    t1=$(now); local t_cs; t_cs=$(secs "$t0" "$t1")
    cmp cs.img full.img || { echo "bench: coldsnap's copy differs" >&2; exit 1; }

    fresh fb.img; t0=$(now)
    "$fb" pull --source "ebs://$snap_full" --endpoint "$ep" --map "$snap_full=$dir/fb.img" --yes --progress none >fb-full.log 2>&1
    t1=$(now); local t_fb; t_fb=$(secs "$t0" "$t1")
    cmp fb.img full.img || { echo "bench: failback's copy differs" >&2; exit 1; }

    t0=$(now)
    "$fb" pull --source "ebs://$snap_chg?base=$snap_full" --endpoint "$ep" --map "$snap_chg=$dir/fb.img" --yes --progress none >fb-base.log 2>&1
    t1=$(now); local t_base; t_base=$(secs "$t0" "$t1")
    cmp fb.img changed.img || { echo "bench: failback's copy from the base differs" >&2; exit 1; }

    echo
    echo "EBS pull, $mib MiB of data in a 1 GiB snapshot, moto on 127.0.0.1, $(nproc) cores"
    echo
    echo "| run | wall s | vs coldsnap full |"
    echo "|---|---|---|"
    echo "| coldsnap download (full) | $t_cs | 1.00 |"
    echo "| failback pull (full) | $t_fb | $(echo "$t_fb / $t_cs" | bc -l | xargs printf '%.2f') |"
    echo "| failback pull from base ($n blocks = 5% changed) | $t_base | $(echo "$t_base / $t_cs" | bc -l | xargs printf '%.2f') |"
    exit 0
}
[[ $what == ebs ]] && bench_ebs
if [[ $what == boot ]]; then
    cd "$(dirname "$0")/.."
    runs=${BENCH_RUNS:-3}
    client=target/x86_64-unknown-linux-gnu/release/failback
    [[ -x $client && -f out/failback.iso ]] || { echo "bench: run scripts/build.sh first" >&2; exit 1; }
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    start=$(date +%s.%N); "$client" build --inputs inputs --out "$tmp/out" --client "$client" >/dev/null
    echo "| failback build | $(echo "$(date +%s.%N) - $start" | bc -l | xargs printf '%.2f') s |"
    echo "| initrd.img | $(stat -c %s out/pxe/initrd.img) bytes |"
    echo "| failback.iso | $(stat -c %s out/failback.iso) bytes |"
    # The cloud images, and the part of the build they take (its report says).
    for f in failback-gce.tar.gz failback-azure.vhd failback.qcow2; do
        echo "| cloud/$f | $(stat -c %s "out/cloud/$f") bytes |"
    done
    "$client" build --inputs inputs --out "$tmp/out" --client "$client" |
        sed -n 's/^cloud images: .* in \(.*\) s$/| cloud images (part of failback build) | \1 s |/p'
    # Seconds from QEMU start to the boot event (the VM is killed right after).
    to_boot() {
        local t0 line
        t0=$(date +%s.%N)
        while IFS= read -r line; do
            if [[ $line == *'{"event":"boot"'* || $line == *' started after '*'Secure Boot'* ]]; then
                echo "$(date +%s.%N) - $t0" | bc -l | xargs printf '%.1f'
                return
            fi
        done < <(timeout 180 qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot -monitor none \
            -device virtio-rng-pci "$@" 2>&1)
        echo "timeout"
    }
    for mode in kernel+initrd bios-cd; do
        times=()
        for _ in $(seq "$runs"); do
            if [[ $mode == kernel+initrd ]]; then
                times+=("$(to_boot -kernel out/pxe/vmlinuz -initrd out/pxe/initrd.img \
                    -append "console=ttyS0 failback.progress=json")")
            else
                # The ISO's menus wait 3 s before the default entry.
                times+=("$(to_boot -cdrom out/failback.iso)")
            fi
        done
        echo "| QEMU start -> boot event, $mode (TCG) | ${times[*]} s |"
    done
    exit 0
fi

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${BENCH_DIR:-/tmp/failback-bench}
mib=${BENCH_MIB:-2048}
fractions=${BENCH_FRACTIONS:-0 1 10 100}
bs=$((512 * 1024))
blocks=$((mib * 2))
for tool in rsync curl openssl python3; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing: install it (apt-get install -y $tool)" >&2; exit 1; }
done

fb=$(release_failback "$root")

mkdir -p "$dir"
cd "$dir"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Seeded pseudo-random bytes: AES-CTR keystream of zeros.
# (openssl dies of SIGPIPE when head has enough; that is expected.)
stream() { { openssl enc -aes-128-ctr -nosalt -pass "pass:$1" -pbkdf2 -iter 1 </dev/zero 2>/dev/null || true; } | head -c "$2"; }
for img in base alt; do
    if [[ ! -f $img.img || $(stat -c %s $img.img) != $((mib << 20)) ]]; then
        echo "making ${mib} MiB image $img.img..." >&2
        stream $img $((mib << 20)) >$img.img
    fi
done

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l | xargs printf '%.2f'; }

# Hashing floor: both images hashed at openssl's multi-core SHA-256 rate.
cores=$(nproc)
# Bytes per second of `openssl speed` (ARGS...); it sometimes prints no result line
# (seen with -multi): asked again, up to three times.
sha_rate() {
    local r=0
    for _ in 1 2 3; do
        r=$(openssl speed -evp sha256 -bytes $bs -seconds 2 "$@" 2>/dev/null |
            awk '/^sha256|^SHA256/ {v=$NF} END {sub(/k$/,"",v); printf "%.0f", v*1000}')
        ((r > 0)) && break
    done
    ((r > 0)) || { echo "bench: openssl speed $* printed no SHA-256 rate" >&2; exit 1; }
    echo "$r"
}
rate=$(sha_rate -multi "$cores")
floor=$(echo "2 * $mib * 1048576 / $rate" | bc -l | xargs printf '%.2f')
single=$(sha_rate)

port_fb=15500 port_rs=15501 port_http=15502
mkdir -p remote state
cat >rsyncd.conf <<CONF
pid file = $dir/rsyncd.pid
use chroot = no
[bench]
path = $dir/remote
read only = yes
CONF

echo "| changed | tool | wall s | bytes over the wire | vs rsync | vs full copy | vs SHA floor | load (1 min) | client CPU s |"
echo "|---|---|---|---|---|---|---|---|---|"
for pct in $fractions; do
    # The remote (recovered) image: base with pct% of blocks replaced from alt.
    rm -f remote/disk.img
    if [[ $pct == 100 ]]; then
        cp alt.img remote/disk.img
    else
        cp base.img remote/disk.img
        n=$((blocks * pct / 100))
        if ((n > 0)); then
            shuf -i 0-$((blocks - 1)) -n "$n" --random-source=<(stream "pick$pct" 1000000) | sort -n |
                while read -r b; do
                    dd if=alt.img of=remote/disk.img bs=$bs skip="$b" seek="$b" count=1 conv=notrunc status=none
                done
        fi
    fi
    sync

    # failback
    "$fb" serve --volume disk="$dir/remote/disk.img" --listen 127.0.0.1:$port_fb --state-dir state \
        --token bench-token-0123456789 >agent.log 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do grep -q fingerprint agent.log && break; sleep 0.1; done
    fp=$(awk '/fingerprint:/ {print $2}' agent.log)
    cp base.img target.img && sync
    t0=$(now)
    FAILBACK_TOKEN=bench-token-0123456789 /usr/bin/time -o cpu.txt -f "%U %S" "$fb" pull \
        --source https://127.0.0.1:$port_fb --fingerprint "$fp" --map disk="$dir/target.img" --yes --progress json >pull.json
    t1=$(now)
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
    cmp -s target.img remote/disk.img || { echo "bench: failback target differs at $pct%" >&2; exit 1; }
    fb_t=$(secs "$t0" "$t1")
    fb_l=$(cut -d" " -f1 /proc/loadavg)
    fb_b=$(grep '"event":"done"' pull.json | sed 's/.*"wire_bytes":\([0-9]*\).*/\1/')
    fb_c=$(awk '{printf "%.2f", $1 + $2}' cpu.txt)

    # rsync daemon, delta transfer in place
    rsync --daemon --config=rsyncd.conf --port=$port_rs --address=127.0.0.1
    sleep 0.3
    cp base.img target.img && sync
    t0=$(now)
    rs_out=$(rsync --inplace --no-whole-file -I --stats rsync://127.0.0.1:$port_rs/bench/disk.img target.img)
    t1=$(now)
    kill "$(cat rsyncd.pid)"; sleep 0.2
    cmp -s target.img remote/disk.img || { echo "bench: rsync target differs at $pct%" >&2; exit 1; }
    rs_t=$(secs "$t0" "$t1")
    rs_l=$(cut -d" " -f1 /proc/loadavg)
    rs_b=$(echo "$rs_out" | awk -F': ' '/Total bytes received/ {gsub(/,/,"",$2); print $2}')

    # full copy over HTTP
    (cd remote && exec python3 -m http.server $port_http --bind 127.0.0.1 >/dev/null 2>&1) &
    pids+=($!)
    sleep 0.5
    rm -f copy.img
    t0=$(now)
    cp_b=$(curl -sS -o copy.img -w '%{size_download}' http://127.0.0.1:$port_http/disk.img)
    t1=$(now)
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
    cp_t=$(secs "$t0" "$t1")
    cp_l=$(cut -d" " -f1 /proc/loadavg)

    r() { echo "$1 / $2" | bc -l | xargs printf '%.2fx'; }
    echo "| $pct% | failback | $fb_t | $fb_b | $(r "$fb_t" "$rs_t") | $(r "$fb_t" "$cp_t") | $(r "$fb_t" "$floor") | $fb_l | $fb_c |"
    echo "| $pct% | rsync daemon | $rs_t | $rs_b | 1.00x | $(r "$rs_t" "$cp_t") | $(r "$rs_t" "$floor") | $rs_l | - |"
    echo "| $pct% | full copy (curl) | $cp_t | $cp_b | $(r "$cp_t" "$rs_t") | 1.00x | $(r "$cp_t" "$floor") | $cp_l | - |"
done
echo
echo "SHA-256 (openssl speed -evp sha256, 512 KiB): $(echo "$single / 1000000000" | bc -l | xargs printf '%.2f') GB/s on one core, $(echo "$rate / 1000000000" | bc -l | xargs printf '%.2f') GB/s on $cores cores; floor for hashing both ${mib} MiB images: ${floor} s"
