#!/usr/bin/env bash
# Download the pinned Debian bookworm packages that the image is built from
# (kernel + modules, isolinux, pxelinux, shim, signed GRUB, free firmware, a static busybox
# for the diagnostics shell), check each against inputs.lock and unpack it into inputs/.
# No root needed.
#
#   scripts/fetch-inputs.sh                 fetch what inputs.lock pins (idempotent)
#   scripts/fetch-inputs.sh --update-lock   re-pin to the archive's current versions
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
lock="$top/inputs.lock"
inputs="${FAILBACK_INPUTS:-$top/inputs}"
debs="$inputs/debs"
stamps="$inputs/.unpacked"

# linux-image-amd64 is a metapackage; the versioned image it depends on is
# resolved when re-pinning and recorded in the lock like the others.
# firmware-linux-free: the free firmware some included modules request (isci);
# the rest is non-free in Debian: operators add it with `failback build --firmware DIR`.
# busybox-static: /bin/busybox, the diagnostics shell (failback.after=shell).
packages=(linux-image-amd64 isolinux syslinux-common pxelinux shim-signed
    shim-helpers-amd64-signed grub-efi-amd64-signed firmware-linux-free busybox-static)

die() { echo "fetch-inputs: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 not found: run this on a Debian/Ubuntu host (apt-get, dpkg-deb)"; }
need apt-get; need dpkg-deb; need sha256sum

candidate() { apt-cache policy "$1" | awk '/Candidate:/ {print $2}'; }

# download PKG VERSION -> prints the path of the .deb
download() {
    local pkg=$1 ver=$2 tmp
    tmp=$(mktemp -d "$debs/.dl.XXXXXX")
    if ! (cd "$tmp" && apt-get download -q "$pkg=$ver" >/dev/null 2>"$tmp/err"); then
        cat "$tmp/err" >&2; rm -rf "$tmp"
        die "cannot download $pkg=$ver: run 'apt-get update' first; if the archive no longer has this version, re-pin with --update-lock"
    fi
    local deb
    deb=$(ls "$tmp"/*.deb)
    mv "$deb" "$debs/"
    rm -rf "$tmp"
    echo "$debs/$(basename "$deb")"
}

mkdir -p "$debs" "$stamps"

if [[ "${1:-}" == "--update-lock" ]]; then
    image=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [[ -n "$image" ]] || die "cannot resolve the versioned kernel image of linux-image-amd64 (apt-get update?)"
    new=$(mktemp)
    {
        echo "# package version sha256 -- written by scripts/fetch-inputs.sh --update-lock"
        for pkg in "${packages[@]}" "$image"; do
            ver=$(candidate "$pkg")
            [[ -n "$ver" && "$ver" != "(none)" ]] || die "$pkg has no candidate version (apt-get update?)"
            deb=$(download "$pkg" "$ver")
            echo "$pkg $ver $(sha256sum "$deb" | cut -d' ' -f1)"
        done
    } >"$new"
    mv "$new" "$lock"
    echo "fetch-inputs: re-pinned $lock"
elif [[ $# -gt 0 ]]; then
    die "unknown argument '$1' (usage: fetch-inputs.sh [--update-lock])"
fi

[[ -f "$lock" ]] || die "$lock missing: create it with --update-lock"

fetched=0
while read -r pkg ver sum; do
    [[ -z "$pkg" || "$pkg" == \#* ]] && continue
    stamp="$stamps/$pkg"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$ver $sum" ]]; then
        continue
    fi
    # apt names files with the epoch's ':' encoded as %3a
    deb="$debs/${pkg}_${ver//:/%3a}_$(dpkg --print-architecture 2>/dev/null || echo amd64).deb"
    [[ -f "$deb" ]] || deb="$debs/${pkg}_${ver//:/%3a}_all.deb"
    if [[ ! -f "$deb" ]] || [[ "$(sha256sum "$deb" | cut -d' ' -f1)" != "$sum" ]]; then
        rm -f "$deb"
        deb=$(download "$pkg" "$ver")
    fi
    got=$(sha256sum "$deb" | cut -d' ' -f1)
    [[ "$got" == "$sum" ]] || die "$pkg $ver: SHA-256 mismatch (lock $sum, got $got); refusing it. Re-pin on purpose with --update-lock"
    dpkg-deb -x "$deb" "$inputs"
    echo "$ver $sum" >"$stamp"
    echo "fetch-inputs: unpacked $pkg $ver"
    fetched=$((fetched + 1))
done <"$lock"

if [[ $fetched -eq 0 ]]; then
    echo "fetch-inputs: inputs/ is up to date"
fi
