# shellcheck shell=bash
# Shared settings and helpers of scripts/images/*.sh. Source it; it defines variables and functions only.
#
# buildah keeps its own store under ${FERRYMAN_CACHE}/buildah (never the system's /var/lib/containers), so
# images and build layers are cached across clones of the repository and never meet another setup.

: "${FERRYMAN_CACHE:=${HOME}/.cache/ferryman}"
FERRYMAN_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FERRYMAN_IMAGES_CACHE="${FERRYMAN_CACHE}/images"
FERRYMAN_BUILDAH_ROOT="${FERRYMAN_CACHE}/buildah/storage"
FERRYMAN_BUILDAH_RUNROOT="${FERRYMAN_CACHE}/buildah/run"
# Debian release of the Python base image (its python3 is 3.11, the version requirements/lock.txt is for).
: "${FERRYMAN_BASE_SUITE:=bookworm}"
: "${FERRYMAN_DEBIAN_MIRROR:=http://deb.debian.org/debian}"
: "${FERRYMAN_DEBIAN_SECURITY_MIRROR:=http://deb.debian.org/debian-security}"
# Published names of the images (the chart's defaults); local builds get the tag <version>-local.<digest>.
: "${FERRYMAN_IMAGE_REGISTRY:=ghcr.io/ferryman-dev}"
# The CA bundle RUN steps trust for PyPI (bind-mounted during the build only, never part of an image):
# the host's, which carries any CA a proxy on the way to PyPI needs.
: "${FERRYMAN_BUILD_CA_BUNDLE:=/etc/ssl/certs/ca-certificates.crt}"

STEP_START=0

log() { echo "images: $*" >&2; }
die() { echo "images: error: $*" >&2; exit 1; }

step_begin() { STEP_START=$(date +%s.%N); log "$* ..."; }
# step_end MESSAGE: "MESSAGE (12.3 s)"
step_end() { log "$* ($(awk -v a="${STEP_START}" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s)"; }

BUILDAH=(buildah --root "${FERRYMAN_BUILDAH_ROOT}" --runroot "${FERRYMAN_BUILDAH_RUNROOT}" --storage-driver overlay)
bh() { "${BUILDAH[@]}" "$@"; }

# Our own trust policy: images come from local files and our own store only (no system file needed).
policy_file() {
  local f="${FERRYMAN_IMAGES_CACHE}/policy.json"
  if [[ ! -f "${f}" ]]; then
    mkdir -p "${FERRYMAN_IMAGES_CACHE}"
    printf '{"default": [{"type": "insecureAcceptAnything"}]}\n' >"${f}"
  fi
  echo "${f}"
}

image_exists() { bh inspect --type image "$1" >/dev/null 2>&1; }

# sha256 of files and directory trees, by path and content (mtimes and owners do not count).
# Paths are relative to the current directory; missing paths are an error.
content_digest() {
  local p
  for p in "$@"; do [[ -e "${p}" ]] || die "missing input: ${p}"; done
  find "$@" -type f -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 | LC_ALL=C sort -z |
    xargs -0 sha256sum | sha256sum | cut -c1-64
}
