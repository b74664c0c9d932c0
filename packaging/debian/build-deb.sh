#!/usr/bin/env bash
# Builds the Debian packages of augur from already-built binaries, without debhelper:
#
#   packaging/debian/build-deb.sh BIN_DIR OUT_DIR VERSION
#
#   augur-agent_<VERSION>_<arch>.deb       /usr/bin/augur-agent, /etc/augur/agent.toml,
#                                          /lib/systemd/system/augur-agent.service
#   augur-aggregator_<VERSION>_<arch>.deb  /usr/bin/augur-aggregator, /usr/bin/augurctl,
#                                          /etc/augur/aggregator.toml,
#                                          /lib/systemd/system/augur-aggregator.service
#
# BIN_DIR holds augur-agent, augur-aggregator and augurctl (e.g. target/release).
# <arch> is `dpkg --print-architecture` unless DEB_ARCH says otherwise. The configs come
# from packaging/config, the units from systemd/. Depends: is worked out from the
# binaries' shared libraries (readelf), so it stays right as dependencies change.
# Idempotent: each run rebuilds both packages from scratch and overwrites them.
# Honours SOURCE_DATE_EPOCH for reproducible file times, and DEB_COMPRESSION (xz by
# default; gzip, zstd or none for fast test builds).
set -euo pipefail

usage() { echo "usage: $0 BIN_DIR OUT_DIR VERSION" >&2; exit 2; }
[ "$#" -eq 3 ] || usage
bin_dir=$1 out_dir=$2 version=$3

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
arch=${DEB_ARCH:-$(dpkg --print-architecture)}
compression=${DEB_COMPRESSION:-xz}
maintainer="augur project <augur@users.noreply.github.com>"
homepage="https://github.com/augur-project/augur"

die() { echo "build-deb: $*" >&2; exit 1; }
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (apt-get install dpkg)"
# Debian policy: a version starts with a digit and uses only these characters.
[[ $version =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "invalid version '$version'"
for b in augur-agent augur-aggregator augurctl; do
  [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing or not executable"
done
for f in "$repo/packaging/config/agent.toml" "$repo/packaging/config/aggregator.toml" \
         "$repo/systemd/augur-agent.service" "$repo/systemd/augur-aggregator.service"; do
  [ -f "$f" ] || die "$f is missing"
done
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)

umask 022
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Prints the Depends: value for the given ELF binaries: one Debian package per shared
# library they need, libc6 versioned by the newest GLIBC_ symbol they use.
depends_of() {
  if ! command -v readelf >/dev/null; then
    echo "build-deb: readelf not found (binutils); using a fixed Depends:" >&2
    echo "libc6, libgcc-s1, libstdc++6"
    return
  fi
  local libs glibc pkgs=()
  libs=$(readelf -d "$@" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u)
  glibc=$(readelf -V "$@" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1 || true)
  for lib in $libs; do
    case $lib in
      libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|ld-linux*) pkgs+=("libc6${glibc:+ (>= $glibc)}") ;;
      libgcc_s.so.*) pkgs+=("libgcc-s1") ;;
      libstdc++.so.*) pkgs+=("libstdc++6") ;;
      *) die "no Debian package known for shared library $lib; add it to depends_of()" ;;
    esac
  done
  printf '%s\n' "${pkgs[@]}" | sort -u | paste -sd, - | sed 's/,/, /g'
}

# The maintainer scripts follow what dh_installsystemd generates: enable on first install,
# start or restart only when systemd is the running init ([ -d /run/systemd/system ] is
# sd_booted(); it is false in containers, chroots and CI), stop before removal.
write_scripts() { # PKG UNIT STATE_DIR_SETUP PURGE_EXTRA
  local pkg=$1 unit=$2 state_setup=$3 purge_extra=$4 d="$work/$1/DEBIAN"
  cat >"$d/postinst" <<EOF
#!/bin/sh
set -e
if [ "\$1" = configure ] || [ "\$1" = abort-upgrade ] || [ "\$1" = abort-deconfigure ] || [ "\$1" = abort-remove ]; then
$state_setup
	if command -v deb-systemd-helper >/dev/null; then
		deb-systemd-helper unmask '$unit' >/dev/null || true
		# was-enabled is true for a new install, so that enables the unit.
		if deb-systemd-helper --quiet was-enabled '$unit'; then
			deb-systemd-helper enable '$unit' >/dev/null || true
		else
			deb-systemd-helper update-state '$unit' >/dev/null || true
		fi
	fi
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		if [ -n "\$2" ]; then action=try-restart; else action=start; fi
		if command -v deb-systemd-invoke >/dev/null; then
			deb-systemd-invoke \$action '$unit' >/dev/null || true
		else
			systemctl \$action '$unit' >/dev/null || true
		fi
	fi
fi
exit 0
EOF
  cat >"$d/prerm" <<EOF
#!/bin/sh
set -e
# Upgrades keep the service running; postinst restarts it on the new binary.
if [ "\$1" = remove ] && [ -d /run/systemd/system ]; then
	if command -v deb-systemd-invoke >/dev/null; then
		deb-systemd-invoke stop '$unit' >/dev/null || true
	else
		systemctl stop '$unit' >/dev/null || true
	fi
fi
exit 0
EOF
  cat >"$d/postrm" <<EOF
#!/bin/sh
set -e
if [ "\$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if command -v deb-systemd-helper >/dev/null; then
	if [ "\$1" = remove ]; then
		deb-systemd-helper mask '$unit' >/dev/null || true
	fi
	if [ "\$1" = purge ]; then
		deb-systemd-helper purge '$unit' >/dev/null || true
		deb-systemd-helper unmask '$unit' >/dev/null || true
	fi
fi
if [ "\$1" = purge ]; then
$purge_extra
	rmdir /etc/augur 2>/dev/null || true
fi
exit 0
EOF
  chmod 0755 "$d/postinst" "$d/prerm" "$d/postrm"
}

# build_one PKG SECTION DESCRIPTION BINARIES...
build_one() {
  local pkg=$1 short=$2 long=$3; shift 3
  local root="$work/$pkg" unit="$pkg.service" conf="${pkg#augur-}.toml" b
  mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/etc/augur" "$root/lib/systemd/system" \
           "$root/usr/share/doc/$pkg"
  for b in "$@"; do
    install -m 0755 "$bin_dir/$b" "$root/usr/bin/$b"
  done
  install -m 0644 "$repo/packaging/config/$conf" "$root/etc/augur/$conf"
  install -m 0644 "$repo/systemd/$unit" "$root/lib/systemd/system/$unit"
  cat >"$root/usr/share/doc/$pkg/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: augur
Source: $homepage

Files: *
Copyright: the augur authors
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
  chmod 0644 "$root/usr/share/doc/$pkg/copyright"

  local deps; deps=$(cd "$root/usr/bin" && depends_of "$@")
  local size; size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  cat >"$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: $deps
Section: admin
Priority: optional
Homepage: $homepage
Description: $short
$long
EOF
  # Edited configs survive upgrades; dpkg asks before replacing them.
  echo "/etc/augur/$conf" >"$root/DEBIAN/conffiles"
  (cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) \
    >"$root/DEBIAN/md5sums"
  chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
  if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
    find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  fi

  local deb="$out_dir/${pkg}_${version}_${arch}.deb"
  rm -f "$deb"
  dpkg-deb --root-owner-group "-Z$compression" --build "$root" "$deb" >/dev/null
  echo "$deb"
}

# --- augur-agent ---------------------------------------------------------------------
mkdir -p "$work/augur-agent/DEBIAN"
write_scripts augur-agent augur-agent.service \
  "	# The spool and status file; StateDirectory= creates it too, this covers hosts
	# where the agent is started without systemd.
	install -d -m 0700 /var/lib/augur-agent" \
  "	# The spool only holds samples not yet delivered; purge removes it.
	rm -rf /var/lib/augur-agent"
build_one augur-agent \
  "augur host agent: metrics for failure prediction" \
  " Samples host and container metrics (procfs, cgroup v1/v2) every second and
 streams them to an augur aggregator over gRPC, spooling to disk while the
 aggregator is unreachable. Runs as a hardened systemd service capped at 5% of
 one core and 64 MiB." \
  augur-agent

# --- augur-aggregator ----------------------------------------------------------------
mkdir -p "$work/augur-aggregator/DEBIAN"
write_scripts augur-aggregator augur-aggregator.service \
  "	# Under systemd the unit's DynamicUser= and StateDirectory= create (and own)
	# /var/lib/augur-aggregator on first start. Without systemd (containers) create it
	# here for a root-run aggregator; systemd moves such a directory into
	# /var/lib/private and hands it to its user if it ever manages the service.
	if [ ! -d /run/systemd/system ] && [ ! -e /var/lib/augur-aggregator ]; then
		install -d -m 0700 /var/lib/augur-aggregator
	fi" \
  "	# The time-series database is data, not state: purge leaves it. Remove
	# /var/lib/augur-aggregator (and /var/lib/private/augur-aggregator) by hand.
	:"
build_one augur-aggregator \
  "augur aggregator: metrics storage and failure prediction" \
  " Receives metrics from augur agents over gRPC (port 7461), stores them in an
 embedded RocksDB, and serves queries, forecasts and failure predictions.
 Includes augurctl, the command-line client." \
  augur-aggregator augurctl
