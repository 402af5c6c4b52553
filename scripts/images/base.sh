#!/usr/bin/env bash
# The Python base image, made here from Debian packages (no registry): `mmdebstrap --variant=minbase` of
# bookworm (+ updates and security) with the packages in base-packages.txt, committed into our buildah
# store as localhost/ferryman-python:<suite>-<digest>. The digest covers this recipe and the package list,
# so the base is made once and reused; FERRYMAN_IMAGES_REFRESH_BASE=1 makes it again (newer Debian updates).
#
# Usage: bash scripts/images/base.sh      prints the image reference on stdout, progress on stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "${HERE}/lib.sh"

PACKAGES_FILE="${HERE}/base-packages.txt"
mapfile -t PACKAGES < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "${PACKAGES_FILE}" | grep -v '^$')
[[ ${#PACKAGES[@]} -gt 0 ]] || die "no packages in ${PACKAGES_FILE}"

digest="$(cd "${HERE}" && { content_digest base.sh base-packages.txt; echo "${FERRYMAN_BASE_SUITE}"; } | sha256sum | cut -c1-12)"
REF="localhost/ferryman-python:${FERRYMAN_BASE_SUITE}-${digest}"

if image_exists "${REF}" && [[ "${FERRYMAN_IMAGES_REFRESH_BASE:-0}" != "1" ]]; then
  log "base image ${REF} is cached"
  echo "${REF}"
  exit 0
fi

command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (bash scripts/system-deps.sh)"
work="$(mktemp -d "${TMPDIR:-/tmp}/ferryman-base.XXXXXX")"
ctr=""
cleanup() {
  if [[ -n "${ctr}" ]]; then bh rm "${ctr}" >/dev/null 2>&1 || true; fi
  rm -rf "${work}"
}
trap cleanup EXIT

step_begin "debootstrapping ${FERRYMAN_BASE_SUITE} minbase with ${PACKAGES[*]}"
# Documentation, manuals and translations are left out (copyright files stay); apt's lists and caches are
# removed by mmdebstrap itself.
mmdebstrap --variant=minbase --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --quiet \
  "${FERRYMAN_BASE_SUITE}" "${work}/rootfs.tar" \
  "deb ${FERRYMAN_DEBIAN_MIRROR} ${FERRYMAN_BASE_SUITE} main" \
  "deb ${FERRYMAN_DEBIAN_MIRROR} ${FERRYMAN_BASE_SUITE}-updates main" \
  "deb ${FERRYMAN_DEBIAN_SECURITY_MIRROR} ${FERRYMAN_BASE_SUITE}-security main" >&2
step_end "debootstrapped: $(du -m "${work}/rootfs.tar" | cut -f1) MB"

step_begin "committing ${REF}"
POLICY="$(policy_file)"
ctr="$(bh from --signature-policy "${POLICY}" --pull=never scratch)"
bh add "${ctr}" "${work}/rootfs.tar" / >/dev/null
bh config \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
  --cmd '["python3"]' \
  --label org.opencontainers.image.title=ferryman-python \
  --label "org.opencontainers.image.description=Debian ${FERRYMAN_BASE_SUITE} minbase with ${PACKAGES[*]}" \
  --label "dev.ferryman.base.digest=${digest}" \
  "${ctr}"
bh commit --signature-policy "${POLICY}" --rm --quiet "${ctr}" "${REF}" >/dev/null
ctr=""
step_end "base image ${REF}"
echo "${REF}"
