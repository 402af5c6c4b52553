#!/usr/bin/env bash
# `make images`: builds the ferryman images here, with no registry but PyPI and Debian's mirrors, and loads
# them into the test cluster's real node.
#
#   1. the Python base image from Debian packages (base.sh: mmdebstrap, cached by its recipe);
#   2. images/runtime.Dockerfile (targets runtime and ray) and images/operator.Dockerfile, built FROM that
#      base with buildah (ray: on the Python base too, `--build-arg RAY_IMAGE=ray-base`);
#   3. each image is tagged <published name>:<version>-local.<digest of its inputs> and built only when no
#      image with that tag is in our buildah store (~/.cache/ferryman/buildah): a second run with no change
#      takes seconds;
#   4. when the cluster in RUN_DIR runs a real node (CONTAINERD_ADDRESS and CTR in RUN_DIR/cluster.env),
#      each image its containerd lacks is imported (namespace k8s.io), so pods run it with
#      imagePullPolicy Never or IfNotPresent.
#
# Usage: bash scripts/images/build.sh [RUN_DIR]   (default: $FERRYMAN_CLUSTER_RUN_DIR, else .cache/cluster)
# Prints the image references, one per line, on stdout (progress on stderr) and writes them to
# $FERRYMAN_IMAGES_ENV (default .cache/images.env) as FERRYMAN_LOCAL_*_IMAGE=... lines.
# FERRYMAN_IMAGES="runtime operator ray" selects the images; FERRYMAN_IMAGES_VERBOSE=1 streams the build
# output (else it goes to ~/.cache/ferryman/images/logs/).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "${HERE}/lib.sh"
trap 'echo "images: error: line ${LINENO}: ${BASH_COMMAND} failed" >&2' ERR

RUN_DIR="${1:-${FERRYMAN_CLUSTER_RUN_DIR:-${FERRYMAN_REPO_ROOT}/.cache/cluster}}"
: "${FERRYMAN_IMAGES:=runtime operator ray}"
: "${FERRYMAN_IMAGES_ENV:=${FERRYMAN_REPO_ROOT}/.cache/images.env}"
LOGS="${FERRYMAN_IMAGES_CACHE}/logs"
ARCHIVES="${FERRYMAN_IMAGES_CACHE}/archives"
TOTAL_START=${SECONDS}

for name in ${FERRYMAN_IMAGES}; do
  case "${name}" in runtime | operator | ray) ;; *) die "FERRYMAN_IMAGES: unknown image '${name}' (runtime, operator, ray)" ;; esac
done
for tool in buildah mmdebstrap; do
  command -v "${tool}" >/dev/null || die "${tool} is missing (bash scripts/system-deps.sh installs it)"
done
mkdir -p "${FERRYMAN_IMAGES_CACHE}" "${LOGS}" "${ARCHIVES}"

# One build at a time on this machine (the store is shared by every clone).
exec 9>"${FERRYMAN_IMAGES_CACHE}/build.lock"
if ! flock -n 9; then
  log "waiting for another image build on this machine"
  flock 9
fi

BASE_REF="$(bash "${HERE}/base.sh")"
POLICY="$(policy_file)"

# --- the build context: exactly the files the Dockerfiles copy ------------------------------------

step_begin "staging the build context"
CONTEXT="${FERRYMAN_IMAGES_CACHE}/context"
rm -rf "${CONTEXT}"
mkdir -p "${CONTEXT}/requirements"
(
  cd "${FERRYMAN_REPO_ROOT}"
  cp pyproject.toml README.md "${CONTEXT}/"
  cp requirements/lock.txt "${CONTEXT}/requirements/"
  tar --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' -cf - platform runtimes operators |
    tar -xf - -C "${CONTEXT}"
)
CONTEXT_DIGEST="$(cd "${CONTEXT}" && content_digest .)"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "${CONTEXT}/pyproject.toml" | head -1)"
[[ -n "${VERSION}" ]] || die "no version in pyproject.toml"
step_end "build context staged ($(du -sm "${CONTEXT}" | cut -f1) MB, digest ${CONTEXT_DIGEST:0:12})"

# tag_of DOCKERFILE: <version>-local.<12 hex of base + Dockerfile + context>
tag_of() {
  local df_digest
  df_digest="$(cd "${FERRYMAN_REPO_ROOT}/images" && content_digest "$1")"
  echo "${VERSION}-local.$(printf '%s\n' "${BASE_REF}" "${df_digest}" "${CONTEXT_DIGEST}" | sha256sum | cut -c1-12)"
}
RUNTIME_TAG="$(tag_of runtime.Dockerfile)"
OPERATOR_TAG="$(tag_of operator.Dockerfile)"

declare -A REFS=(
  [runtime]="${FERRYMAN_IMAGE_REGISTRY}/ferryman:${RUNTIME_TAG}"
  [ray]="${FERRYMAN_IMAGE_REGISTRY}/ferryman-ray:${RUNTIME_TAG}"
  [operator]="${FERRYMAN_IMAGE_REGISTRY}/ferryman-operator:${OPERATOR_TAG}"
)
declare -A DOCKERFILES=([runtime]=runtime.Dockerfile [ray]=runtime.Dockerfile [operator]=operator.Dockerfile)
declare -A TARGETS=([runtime]=runtime [ray]=ray [operator]=operator)

# --- build --------------------------------------------------------------------------------------

build_image() {
  local name="$1" ref="${REFS[$1]}" log_file="${LOGS}/$1.log"
  local -a args=(
    bud --isolation chroot --layers --pull=never --format docker
    --signature-policy "${POLICY}"
    --build-arg "PYTHON_IMAGE=${BASE_REF}"
    --label "dev.ferryman.content-digest=${ref##*.}"
    -f "${FERRYMAN_REPO_ROOT}/images/${DOCKERFILES[$name]}" --target "${TARGETS[$name]}" -t "${ref}"
  )
  if [[ "${name}" == ray ]]; then args+=(--build-arg RAY_IMAGE=ray-base); fi
  if [[ -f "${FERRYMAN_BUILD_CA_BUNDLE}" ]]; then
    args+=(-v "${FERRYMAN_BUILD_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro")
  fi
  step_begin "building ${ref} (log: ${log_file})"
  if [[ "${FERRYMAN_IMAGES_VERBOSE:-0}" == "1" ]]; then
    nice "${BUILDAH[@]}" "${args[@]}" "${CONTEXT}" 2>&1 | tee "${log_file}" >&2 || die "building ${ref} failed (log: ${log_file})"
  elif ! nice "${BUILDAH[@]}" "${args[@]}" "${CONTEXT}" >"${log_file}" 2>&1; then
    tail -n 40 "${log_file}" >&2
    die "building ${ref} failed (log: ${log_file})"
  fi
  step_end "built ${ref}: $(bh images --format '{{.Size}}' "${ref}" | head -1)"
}

# Older local tags of a repository leave the store, the newest FERRYMAN_IMAGES_KEEP (default 3) stay: other
# checkouts or test runs on this machine may still be using theirs. Layers still shared stay too.
prune_old_tags() {
  local ref="$1" repo="${1%:*}" name kept=0
  while read -r name; do
    [[ "${name}" == "${repo}:"*-local.* ]] || continue
    kept=$((kept + 1))
    if [[ "${name}" != "${ref}" && ${kept} -gt ${FERRYMAN_IMAGES_KEEP:-3} ]]; then
      if bh rmi "${name}" >/dev/null 2>&1; then log "removed the older ${name} from the store"; fi
    fi
  done < <(bh images --format '{{.CreatedAtRaw}} {{.Name}}:{{.Tag}}' 2>/dev/null | sort -r | awk '{ print $NF }')
}

for name in ${FERRYMAN_IMAGES}; do
  ref="${REFS[$name]}"
  if image_exists "${ref}"; then
    log "${ref} is cached (inputs unchanged)"
  else
    build_image "${name}"
    prune_old_tags "${ref}"
  fi
done

# --- load into the real node's containerd -----------------------------------------------------------

cluster_value() {
  if [[ -f "${RUN_DIR}/cluster.env" ]]; then sed -n "s/^$1=//p" "${RUN_DIR}/cluster.env" | tail -n 1; fi
}
CONTAINERD_ADDRESS="$(cluster_value CONTAINERD_ADDRESS)"
CTR="$(cluster_value CTR)"
LOADED=""
if [[ -z "${CONTAINERD_ADDRESS}" || -z "${CTR}" ]]; then
  log "no real node in ${RUN_DIR} (no CONTAINERD_ADDRESS/CTR in cluster.env): images built, not loaded"
elif [[ ! -S "${CONTAINERD_ADDRESS}" ]] || ! "${CTR}" --address "${CONTAINERD_ADDRESS}" version >/dev/null 2>&1; then
  log "the node's containerd at ${CONTAINERD_ADDRESS} does not answer: images built, not loaded"
else
  present="$("${CTR}" --address "${CONTAINERD_ADDRESS}" -n k8s.io images ls -q)"
  for name in ${FERRYMAN_IMAGES}; do
    ref="${REFS[$name]}"
    if grep -Fxq "${ref}" <<<"${present}"; then
      log "${ref} is already in the node's containerd"
      continue
    fi
    archive="${ARCHIVES}/${name}-${ref##*:}.tar"
    if [[ ! -f "${archive}" ]]; then
      step_begin "exporting ${ref}"
      rm -f "${ARCHIVES}/${name}-"*.tar
      bh push --quiet --signature-policy "${POLICY}" "${ref}" "docker-archive:${archive}.tmp:${ref}" >&2
      mv "${archive}.tmp" "${archive}"
      step_end "exported ${ref} ($(du -m "${archive}" | cut -f1) MB)"
    fi
    step_begin "importing ${ref} into the node's containerd"
    "${CTR}" --address "${CONTAINERD_ADDRESS}" -n k8s.io images import --local "${archive}" >/dev/null
    step_end "imported ${ref}"
  done
  LOADED="${CONTAINERD_ADDRESS}"
fi

# --- report --------------------------------------------------------------------------------------

mkdir -p "$(dirname "${FERRYMAN_IMAGES_ENV}")"
{
  echo "# written by scripts/images/build.sh: the images built here (content-digest tags)"
  echo "FERRYMAN_LOCAL_IMAGE_REGISTRY=${FERRYMAN_IMAGE_REGISTRY}"
  echo "FERRYMAN_LOCAL_BASE_IMAGE=${BASE_REF}"
  for name in ${FERRYMAN_IMAGES}; do
    case "${name}" in
      runtime) echo "FERRYMAN_LOCAL_IMAGE=${REFS[runtime]}"; echo "FERRYMAN_LOCAL_IMAGE_TAG=${RUNTIME_TAG}" ;;
      operator) echo "FERRYMAN_LOCAL_OPERATOR_IMAGE=${REFS[operator]}" ;;
      ray) echo "FERRYMAN_LOCAL_RAY_IMAGE=${REFS[ray]}" ;;
    esac
  done
  echo "FERRYMAN_LOCAL_IMAGES_LOADED=${LOADED}"
} >"${FERRYMAN_IMAGES_ENV}.tmp"
mv "${FERRYMAN_IMAGES_ENV}.tmp" "${FERRYMAN_IMAGES_ENV}"
log "done in $((SECONDS - TOTAL_START)) s; references in ${FERRYMAN_IMAGES_ENV}"
for name in ${FERRYMAN_IMAGES}; do echo "${REFS[$name]}"; done
