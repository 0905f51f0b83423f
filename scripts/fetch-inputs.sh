#!/usr/bin/env bash
# Fetch the Debian bookworm packages the image is built from (kernel + modules, isolinux,
# pxelinux, shim, signed GRUB, firmware, a static busybox for the diagnostics shell) as
# inputs.lock pins them, and unpack them into inputs/ (non-free firmware apart, in
# inputs/non-free/). No root needed. scripts/build.sh runs this first.
#
#   scripts/fetch-inputs.sh                 fetch what the lock pins; a pinned version the archive
#                                           dropped is replaced by its current one (one line each)
#                                           and inputs.lock is rewritten, as cargo does Cargo.lock
#   scripts/fetch-inputs.sh --locked        refuse such drift instead (releases)
#   scripts/fetch-inputs.sh --update-lock   re-pin every package to the archive's current version
#
# The packages come through a private apt configuration in inputs/apt (its own sources list,
# lists and cache: bookworm, -updates, -security; main and non-free-firmware), so the host's own
# sources do not matter. apt checks every index's signature against Debian's keyring and every
# .deb against the signed index; the lock adds the SHA-256 of each .deb on top.
# The mirror is the one the host's apt already uses for Debian (a corporate mirror or proxy keeps
# working); FAILBACK_DEBIAN_MIRROR and FAILBACK_SECURITY_MIRROR override it.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
lock="${FAILBACK_INPUTS_LOCK:-$top/inputs.lock}"
inputs="${FAILBACK_INPUTS:-$top/inputs}"
debs="$inputs/debs"
apt_dir="$inputs/apt"
stamp="$inputs/.unpacked-lock"
keyring=${FAILBACK_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
suite=bookworm

# linux-image-amd64 is a metapackage: the ABI-named image it depends on (kernel + modules) is
# resolved through its Depends and pinned like the others.
# firmware-linux-free: the free firmware some included modules request (isci).
# busybox-static: /bin/busybox, the diagnostics shell (failback.after=shell).
# firmware-bnx2x, firmware-misc-nonfree (tg3, ice, cxgb4), firmware-realtek (r8169),
# firmware-qlogic (qed, qla2xxx): the non-free firmware of servers' NICs and HBAs, as in
# Debian's own installer images.
packages=(linux-image-amd64 isolinux syslinux-common pxelinux shim-signed
    shim-helpers-amd64-signed grub-efi-amd64-signed firmware-linux-free busybox-static
    firmware-bnx2x firmware-misc-nonfree firmware-realtek firmware-qlogic)
meta=linux-image-amd64

die() { echo "fetch-inputs: $*" >&2; exit 1; }
say() { echo "inputs: $*"; }
need() { command -v "$1" >/dev/null || die "$1 not found: run this on a Debian/Ubuntu host (apt-get, dpkg-deb)"; }

mode=fetch
case "${1:-}" in
    "") ;;
    --locked) mode=locked ;;
    --update-lock) mode=update ;;
    *) die "unknown argument '$1' (usage: fetch-inputs.sh [--locked | --update-lock])" ;;
esac
[[ $# -le 1 ]] || die "one argument at most (usage: fetch-inputs.sh [--locked | --update-lock])"

# The lock: package -> "version sha256", in file order.
declare -A pinned=()
if [[ -f "$lock" ]]; then
    while read -r pkg ver sum; do
        [[ -z "$pkg" || "$pkg" == \#* ]] && continue
        pinned[$pkg]="$ver $sum"
    done <"$lock"
elif [[ $mode == locked ]]; then
    die "$lock missing: --locked needs a lock (run scripts/fetch-inputs.sh to write one)"
fi
lock_body() { grep -v '^#' "$lock" 2>/dev/null || true; }

# Up to date: what is unpacked is what the lock pins, for every package we need.
# Nothing is asked of the network then.
up_to_date() {
    [[ $mode != update && -f "$stamp" ]] || return 1
    [[ "$(cat "$stamp")" == "$(lock_body)" ]] || return 1
    local pkg
    for pkg in "${packages[@]}"; do [[ -n "${pinned[$pkg]:-}" ]] || return 1; done
}
if up_to_date; then
    echo "fetch-inputs: inputs/ is up to date"
    exit 0
fi

need apt-get; need apt-cache; need dpkg-deb; need sha256sum
[[ -r "$keyring" ]] || die "$keyring not found: install debian-archive-keyring (apt-get install debian-archive-keyring), or set FAILBACK_DEBIAN_KEYRING"

# A directory holding other things than ours is never cleaned.
mkdir -p "$inputs"
if [[ ! -e "$inputs/.failback-inputs" ]]; then
    if [[ -n "$(ls -A "$inputs")" && ! -d "$inputs/debs" ]]; then
        die "$inputs is not empty and was not made by this script: point FAILBACK_INPUTS at a new directory"
    fi
    : >"$inputs/.failback-inputs"
fi
mkdir -p "$debs" "$apt_dir"/{lists/partial,cache/archives/partial,sources.list.d,preferences.d}

# The host's Debian mirror for a release label (Debian, Debian-Security), from its apt lists.
host_mirror() {
    apt-get indextargets --format '$(LABEL) $(REPO_URI)' 2>/dev/null |
        awk -v l="$1" '$1 == l { print $2; exit }'
}
mirror=${FAILBACK_DEBIAN_MIRROR:-$(host_mirror Debian)}
[[ -n "$mirror" ]] || die "no Debian mirror known: set FAILBACK_DEBIAN_MIRROR to a Debian archive URL (or add one to the host's apt sources and run apt-get update)"
security=${FAILBACK_SECURITY_MIRROR:-$(host_mirror Debian-Security)}
security=${security:-${mirror%/}-security}
{
    echo "deb [signed-by=$keyring] $mirror $suite main non-free-firmware"
    echo "deb [signed-by=$keyring] $mirror $suite-updates main non-free-firmware"
    echo "deb [signed-by=$keyring] $security $suite-security main non-free-firmware"
} >"$apt_dir/sources.list"
: >"$apt_dir/status"

# Every apt call sees only our sources, lists, cache and an empty dpkg status (so that the
# candidate is the archive's newest version, whatever the host has installed). The host's
# apt.conf.d stays in force: its proxy settings are the operator's.
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list"
    -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
    -o "Dir::Etc::Preferences=$apt_dir/preferences"
    -o "Dir::Etc::PreferencesParts=$apt_dir/preferences.d"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::State::status=$apt_dir/status"
    -o "Dir::Cache=$apt_dir/cache"
    -o "APT::Architecture=amd64" -o "APT::Architectures::=amd64"
    -o "Acquire::Languages=none")
# As root apt downloads as the _apt user, who may not write to this directory.
[[ $(id -u) -ne 0 ]] || apt_opts+=(-o "APT::Sandbox::User=root")
apt() { command "$1" "${apt_opts[@]}" "${@:2}"; }

if ! apt apt-get -q update >"$apt_dir/update.log" 2>&1 || grep -q '^[WE]:' "$apt_dir/update.log"; then
    cat "$apt_dir/update.log" >&2
    die "cannot update the package lists from $mirror and $security (see above)"
fi

has_version() { apt apt-cache show "$1=$2" 2>/dev/null | grep -q "^Version: $2$"; }
current() {
    local v
    v=$(apt apt-cache policy "$1" | awk '/Candidate:/ { print $2 }')
    [[ -n "$v" && "$v" != "(none)" ]] || die "$1 is not in the archive ($suite, main and non-free-firmware)"
    echo "$v"
}
# The ABI-named image that linux-image-amd64 VERSION depends on: "name version".
kernel_image() {
    apt apt-cache show "$meta=$1" | awk -F': ' '/^Depends:/ { print $2; exit }' |
        tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*\) (= \([^)]*\)).*/\1 \2/p' | head -n 1
}
# The lock's ABI-named image entry, if any.
locked_image() {
    local pkg
    for pkg in "${!pinned[@]}"; do
        [[ $pkg == linux-image-[0-9]* ]] && { echo "$pkg ${pinned[$pkg]%% *}"; return; }
    done
    echo ""
}

# download PKG VERSION -> the path of the .deb (cached in inputs/debs, checked by apt).
download() {
    local pkg=$1 ver=$2 tmp deb
    for deb in "$debs/${pkg}_${ver//:/%3a}_"{amd64,all}.deb; do
        [[ -f "$deb" ]] && { echo "$deb"; return; }
    done
    tmp=$(mktemp -d "$debs/.dl.XXXXXX")
    if ! (cd "$tmp" && apt apt-get download -q "$pkg=$ver" >/dev/null 2>"$tmp/err"); then
        cat "$tmp/err" >&2; rm -rf "$tmp"
        die "cannot download $pkg=$ver from $mirror"
    fi
    deb=$(ls "$tmp"/*.deb)
    mv "$deb" "$debs/"
    rm -rf "$tmp"
    echo "$debs/$(basename "$deb")"
}

# Decide each package's version: the pinned one while the archive has it.
declare -A chosen=()
changes=()
choose() { # PKG PINNED_VERSION NEW_VERSION [NEW_NAME]
    local pkg=$1 old=$2 new=$3 name=${4:-$1} what=$3
    chosen[$name]=$new
    [[ "$old" == "$new" && "$pkg" == "$name" ]] && return
    # The kernel image changes its name with the ABI: say both.
    [[ "$pkg" == "$name" ]] || what="$name $new ($meta's Depends)"
    if [[ -z "$old" ]]; then
        changes+=("$name is not pinned yet; pinning $new")
    elif [[ $mode == update ]]; then
        changes+=("re-pinning $pkg $old to $what")
    else
        changes+=("$pkg $old is gone from the archive; using $what")
    fi
}
for pkg in "${packages[@]}"; do
    old=${pinned[$pkg]:-}; old=${old%% *}
    if [[ $mode != update && -n "$old" ]] && has_version "$pkg" "$old"; then
        chosen[$pkg]=$old
    else
        choose "$pkg" "$old" "$(current "$pkg")"
    fi
done
read -r image image_ver <<<"$(kernel_image "${chosen[$meta]}")"
[[ -n "${image:-}" ]] || die "cannot resolve the kernel image that $meta ${chosen[$meta]} depends on"
read -r old_image old_image_ver <<<"$(locked_image)"
choose "${old_image:-$image}" "${old_image_ver:-}" "$image_ver" "$image"

if [[ ${#changes[@]} -gt 0 && $mode == locked ]]; then
    for c in "${changes[@]}"; do echo "inputs: $c" >&2; done
    die "--locked refuses to change inputs.lock: ${changes[0]%% *} is not as pinned; run scripts/build.sh without --locked to re-pin, and commit inputs.lock"
fi
for c in "${changes[@]}"; do say "$c and updating inputs.lock"; done

# Download and check: a version kept from the lock must match its pinned SHA-256.
declare -A sums=() debs_of=()
for pkg in "${packages[@]}" "$image"; do
    ver=${chosen[$pkg]}
    deb=$(download "$pkg" "$ver")
    sum=$(sha256sum "$deb" | cut -d' ' -f1)
    pin=${pinned[$pkg]:-}
    if [[ "${pin%% *}" == "$ver" && "${pin#* }" != "$sum" ]]; then
        rm -f "$deb"
        die "$pkg $ver: SHA-256 mismatch (lock ${pin#* }, got $sum); refusing it. Re-pin on purpose with --update-lock"
    fi
    sums[$pkg]="$ver $sum"
    debs_of[$pkg]=$deb
done

new_lock=$(mktemp "$inputs/.lock.XXXXXX")
{
    echo "# package version sha256 -- written by scripts/fetch-inputs.sh"
    for pkg in "${packages[@]}" "$image"; do echo "$pkg ${sums[$pkg]}"; done
} >"$new_lock"
if ! cmp -s "$new_lock" "$lock"; then
    mv "$new_lock" "$lock"
    [[ ${#changes[@]} -eq 0 ]] || say "rewrote $lock (git diff shows the drift)"
else
    rm -f "$new_lock"
fi

# The cache keeps only what the lock pins.
keep=" "
for pkg in "${packages[@]}" "$image"; do keep+="$(basename "${debs_of[$pkg]}") "; done
for deb in "$debs"/*.deb; do
    [[ "$keep" == *" $(basename "$deb") "* ]] || rm -f "$deb"
done

# Unpack afresh whenever the lock changed, so no file of an older version stays behind.
# Only the directories Debian packages unpack into are removed.
rm -rf "$inputs"/{boot,etc,lib,usr,bin,sbin,var,non-free} "$inputs/.unpacked" "$stamp"
for pkg in "${packages[@]}" "$image"; do
    deb=${debs_of[$pkg]}
    dest=$inputs
    # Non-free firmware lies apart, so that `failback build --no-non-free-firmware` can leave it out.
    [[ "$(dpkg-deb -f "$deb" Section)" == non-free* ]] && dest="$inputs/non-free"
    mkdir -p "$dest"
    dpkg-deb -x "$deb" "$dest"
    echo "fetch-inputs: unpacked $pkg ${chosen[$pkg]} into ${dest#"$top"/}"
done
lock_body >"$stamp"
