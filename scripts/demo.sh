#!/usr/bin/env bash
# The whole failback story for a person to watch, in QEMU (TCG), about 3 minutes:
#
#  1. "AWS": `failback serve` on this host serves two volumes, a 256 MiB bootable
#     system disk (a tiny system made by `failback build`, whose init prints RECOVERED
#     and the SHA-256 of its own disk) and a 128 MiB data disk.
#  2. The failed-back host: a q35 VM with an NVMe disk (256 MiB) and a virtio disk
#     (160 MiB) holding an older state of both (30% of the blocks differ), booting
#     failback.iso as a CD-ROM, built with a preset (source, token, fingerprint,
#     unattended, after = reboot). Its console is this terminal: watch the drivers,
#     the network, the mapping by identity, the progress bars, the reboot.
#  3. The next boot, from the NVMe disk: the recovered system says RECOVERED.
#
# Usage: scripts/demo.sh [WORKDIR]   (default: a new temporary directory)
# Needs scripts/build.sh to have run (it does so if the client is missing), QEMU, OVMF.
# FAILBACK_DEMO_FIRMWARE=uefi boots the ISO under OVMF instead of SeaBIOS.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
target=x86_64-unknown-linux-gnu
client=$repo/target/$target/release/failback
init=$repo/target/$target/release/examples/recovered_init
[[ -x $client && -x $init ]] || scripts/build.sh
work=${1:-$(mktemp -d /tmp/failback-demo.XXXXXX)}
mkdir -p "$work"
cd "$work"
firmware=${FAILBACK_DEMO_FIRMWARE:-bios}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
started=$(date +%s.%N)
since() { awk -v now="$(date +%s.%N)" -v then="$1" 'BEGIN { printf "%.1f", now - then }'; }

say "AWS side: the volumes the recovery instance has"
"$client" build --inputs "$repo/inputs" --out recovered --client "$init" >/dev/null
head -c $((256 << 20)) /dev/urandom >served-system.img
dd if=recovered/failback.iso of=served-system.img conv=notrunc status=none
head -c $((128 << 20)) /dev/urandom >served-data.img
echo "system: 256 MiB, a bootable recovered system + data; data: 128 MiB"

say "The host: its disks hold an older state (30% of the 512 KiB blocks differ)"
cp served-system.img nvme.img
cp served-data.img virtio.img
head -c $((32 << 20)) /dev/urandom >>virtio.img
older() { # file blocks: overwrite every block b with (7b+3) mod 10 < 3, except block 0
    local b
    for ((b = 1; b < $2; b++)); do
        if (((b * 7 + 3) % 10 < 3)); then
            dd if=/dev/urandom of="$1" bs=512K seek=$b count=1 conv=notrunc status=none
        fi
    done
}
older nvme.img 512
older virtio.img 256
echo "nvme.img 256 MiB, virtio.img 160 MiB"

say "AWS side: failback serve"
FAILBACK_TOKEN=demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
export FAILBACK_TOKEN
"$client" serve --listen 127.0.0.1:0 --state-dir agent-state \
    --volume system=served-system.img --volume data=served-data.img >agent.log 2>&1 &
agent=$!
trap 'kill $agent 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q fingerprint: agent.log && break; sleep 0.1; done
port=$(sed -n 's/^failback agent listening on .*:\([0-9]*\)$/\1/p' agent.log)
fingerprint=$(sed -n 's/^ *fingerprint: *//p' agent.log)
cat agent.log

say "The operator's ISO: failback build --config failback.toml"
cat >failback.toml <<EOF
source = "https://10.0.2.2:$port"
token = "$FAILBACK_TOKEN"
fingerprint = "$fingerprint"
unattended = true
# The data disk is proven by nothing but its size (the system disk by its GPT GUID).
map_by_size = true
after = "reboot"
EOF
"$client" build --inputs "$repo/inputs" --out image --client "$client" --config failback.toml \
    | tail -n 3

firmware_args=(-machine q35)
if [[ $firmware == uefi ]]; then
    cp /usr/share/OVMF/OVMF_VARS_4M.fd vars.fd
    firmware_args+=(-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd
        -drive if=pflash,format=raw,unit=1,file=vars.fd)
fi
host=(qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot -monitor none
    "${firmware_args[@]}" -device virtio-rng-pci
    -drive if=none,id=data,format=raw,file=virtio.img -device virtio-blk-pci,drive=data)

say "Power on: the host boots failback.iso ($firmware) and pulls its disks back"
boot=$(date +%s.%N)
"${host[@]}" -nic user,model=virtio-net-pci \
    -drive if=none,id=nvme,format=raw,file=nvme.img -device nvme,drive=nvme,serial=DEMO-NVME \
    -drive if=none,id=cd,media=cdrom,readonly=on,format=raw,file=image/failback.iso \
    -device ide-cd,drive=cd,bus=ide.0,bootindex=0 | tee console-failback.log
failback_s=$(since "$boot")

say "The client rebooted: the next boot is from the NVMe disk"
boot=$(date +%s.%N)
"${host[@]}" -drive if=none,id=nvme,format=raw,file=nvme.img \
    -device nvme,drive=nvme,serial=DEMO-NVME,bootindex=0 | tee console-recovered.log
recovered_s=$(since "$boot")

say "Summary"
want=$(sha256sum <served-system.img | cut -d' ' -f1)
seen=$(sed -n 's/.*RECOVERED .* sha256=\([0-9a-f]*\).*/\1/p' console-recovered.log | tail -n 1)
data_ok=no
cmp -s -n $((128 << 20)) served-data.img virtio.img && data_ok=yes
echo "failback boot (power-on to reboot): ${failback_s} s; recovered boot: ${recovered_s} s"
echo "agent saw: $(grep -c '^client ' agent.log || true) progress reports; last: $(grep '^client ' agent.log | tail -n 1)"
echo "system disk digest on its own boot: ${seen:-none}"
echo "served system volume digest:        $want"
echo "data disk equals the served data volume: $data_ok"
echo "total demo time: $(since "$started") s; files in $work"
if [[ $seen == "$want" && $data_ok == yes ]]; then
    printf '\033[1mRECOVERED: the host boots its own system again.\033[0m\n'
else
    printf '\033[1mNOT RECOVERED: see the logs in %s\033[0m\n' "$work"
    exit 1
fi
