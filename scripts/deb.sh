#!/usr/bin/env bash
# Builds dist/simple-tpm-pk11_VERSION_ARCH.deb with dpkg-deb alone (no
# debhelper, no source package): "make install" into a staging tree with
# Debian's paths, plus what Debian policy asks of a binary package
# (stripped binaries, gzipped man pages, a copyright file, md5sums).
#
# The version comes from git describe: TAG (without a leading v) on a tag,
# TAG+gitDATE.HASH after one, 0.0~gitDATE.HASH with no tag at all, DATE
# being the commit's. DEB_VERSION overrides it; DEB_MAINTAINER (or
# DEBFULLNAME and DEBEMAIL) sets the Maintainer field.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH=/usr/local/go/bin:$PATH

die() {
	echo "deb: $*" >&2
	exit 1
}

for t in dpkg-deb dpkg-shlibdeps go-md2man git strip gzip; do
	command -v "$t" >/dev/null || die "$t not found: run make deps"
done

pkg=simple-tpm-pk11

version=${DEB_VERSION:-}
if [ -z "$version" ]; then
	hash=$(git rev-parse --short=7 HEAD)
	date=$(TZ=UTC git log -1 --date=format-local:%Y%m%d --format=%cd HEAD)
	if tag=$(git describe --tags --exact-match 2>/dev/null); then
		version=${tag#v}
	elif tag=$(git describe --tags --abbrev=0 2>/dev/null); then
		version=${tag#v}+git$date.$hash
	else
		version=0.0~git$date.$hash
	fi
	version=${version//-/\~} # v1.0-rc1 sorts before 1.0 as 1.0~rc1
fi
dpkg --validate-version "$version" || die "$version is not a valid Debian version"

if command -v dpkg-architecture >/dev/null; then
	arch=$(dpkg-architecture -qDEB_HOST_ARCH)
	multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
else
	arch=$(dpkg --print-architecture)
	multiarch=$(gcc -print-multiarch)
fi
[ -n "$multiarch" ] || die "cannot tell the multiarch triplet"

maintainer=${DEB_MAINTAINER:-}
if [ -z "$maintainer" ] && [ -n "${DEBFULLNAME:-}" ] && [ -n "${DEBEMAIL:-}" ]; then
	maintainer="$DEBFULLNAME <$DEBEMAIL>"
fi
if [ -z "$maintainer" ]; then
	name=$(git config user.name || true)
	email=$(git config user.email || true)
	if [ -n "$name" ] && [ -n "$email" ]; then
		maintainer="$name <$email>"
	else
		maintainer="simple-tpm-pk11 maintainers <root@localhost>"
	fi
fi

# dpkg-shlibdeps wants the tree at debian/PACKAGE beside debian/control.
work=$(mktemp -d "${TMPDIR:-/tmp}/stpm-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/debian/$pkg
mkdir -p "$root"

make --no-print-directory install PREFIX=/usr LIBDIR="/usr/lib/$multiarch/pkcs11" \
	DESTDIR="$root" VERSION="$version" >"$work/install.log" 2>&1 ||
	{ cat "$work/install.log" >&2; die "make install failed"; }

# Every Go module linked into the package must be in the copyright file.
modules=$(for f in "$root"/usr/bin/* "$root/usr/lib/$multiarch/pkcs11/"*.so; do
	go version -m "$f" | awk '$1 == "dep" { print $2 }'
done | sort -u)
for m in $modules; do
	grep -qxF -e "Files: $m/*" -e " $m/*" contrib/debian/copyright ||
		die "$m is linked into the package but missing from contrib/debian/copyright"
done

strip --remove-section=.comment --remove-section=.note "$root"/usr/bin/*
strip --remove-section=.comment --remove-section=.note --strip-unneeded "$root/usr/lib/$multiarch/pkcs11/"*.so
find "$root/usr/share/man" -type f -name '*.[1-9]' -exec gzip -9n {} +

doc=$root/usr/share/doc/$pkg
install -d "$doc"
install -m 0644 contrib/debian/copyright "$doc/copyright"
gzip -9nc README.md >"$doc/README.md.gz"
{
	printf '%s (%s) unstable; urgency=medium\n\n' "$pkg" "$version"
	printf '  * Built from git commit %s.\n\n' "$(git rev-parse HEAD)"
	printf ' -- %s  %s\n' "$maintainer" "$(git log -1 --date=rfc2822 --format=%cd HEAD)"
} | gzip -9n >"$doc/changelog.gz"

printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$pkg" "$pkg" >"$work/debian/control"
objects=("-e$root/usr/lib/$multiarch/pkcs11/libsimple-tpm-pk11.so")
for f in "$root"/usr/bin/*; do objects+=("-e$f"); done
shlibs=$(cd "$work" && dpkg-shlibdeps -O "${objects[@]}" 2>"$work/shlibdeps.log" |
	sed -n 's/^shlibs:Depends=//p') || true
if [ -z "$shlibs" ]; then
	cat "$work/shlibdeps.log" >&2
	echo "deb: dpkg-shlibdeps gave nothing; depending on libc6" >&2
	shlibs=libc6
fi

install -d "$root/DEBIAN"
(cd "$root" && find usr -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
size=$(du -sk --apparent-size "$root/usr" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: $shlibs, p11-kit, p11-kit-modules
Recommends: openssh-client
Suggests: swtpm, tpm2-tools
Section: utils
Priority: optional
Description: keep ssh keys inside a TPM 2.0, for ssh and PKCS#11
 simple-tpm-pk11 makes keys inside a TPM 2.0 chip, where they cannot be
 copied, and signs with them for ssh and anything else that speaks
 PKCS#11.
 .
 This package has the PKCS#11 module libsimple-tpm-pk11.so, registered
 with p11-kit; stpm-keygen, stpm-sign and stpm-verify to make keys and
 sign with them; stpm-doctor, which checks the TPM, the keys, p11-kit and
 ssh and says how to fix what is wrong; and stpm-bridge, which forwards
 the token over ssh so
 that remote hosts sign with the workstation's TPM, with a systemd user
 unit that keeps its server running.
EOF
chmod -R u+rwX,go+rX,go-w "$root"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

mkdir -p dist
deb=dist/${pkg}_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null

# Sanity: dpkg-deb reads it back, and the files that make it work are in it.
dpkg-deb --info "$deb" >/dev/null
contents=$(dpkg-deb --contents "$deb")
for f in usr/bin/stpm-keygen "usr/lib/$multiarch/pkcs11/libsimple-tpm-pk11.so" \
	usr/share/p11-kit/modules/simple-tpm-pk11.module usr/share/man/man8/simple-tpm-pk11.8.gz \
	usr/lib/systemd/user/stpm-bridge.service "usr/share/doc/$pkg/copyright"; do
	grep -q " \./$f\$" <<<"$contents" || die "$deb lacks /$f"
done
if grep -v ' root/root ' <<<"$contents" | grep -q .; then
	die "$deb has files not owned by root"
fi
if command -v lintian >/dev/null; then
	lintian "$deb" || echo "deb: lintian has remarks (above)" >&2
fi
echo "$deb"
