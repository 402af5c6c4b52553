#!/usr/bin/env bash
# Certificates of the real node, signed by the cluster CA in PKI_DIR (ca.crt, ca.key made by up.sh):
#   kubelet-client             CN=system:node:<node>, O=system:nodes  (Node authorizer, NodeRestriction)
#   kubelet-serving            the kubelet API's server cert, IP SAN = node IP (apiserver verifies it)
#   apiserver-kubelet-client   the apiserver's client cert for the kubelet API (logs, exec, ...);
#                              group ferryman:kubelet-api-admins, bound to system:kubelet-api-admin
#   kube-proxy                 CN=system:kube-proxy (bound to system:node-proxier by default RBAC)
#   coredns                    CN=ferryman:coredns (ClusterRole ferryman:coredns, made by node-up.sh)
# Usage: bash scripts/cluster/node-pki.sh PKI_DIR
set -euo pipefail

# shellcheck source=SCRIPTDIR/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

PKI="${1:?usage: node-pki.sh PKI_DIR}"
[[ -f "${PKI}/ca.crt" && -f "${PKI}/ca.key" ]] || cluster_die "no cluster CA in ${PKI}"
cd "${PKI}"

# sign NAME SUBJECT EXTENSIONS
sign() {
  local name="$1" subject="$2" ext="$3"
  # ECDSA P-256: as good for these certificates and much quicker to make than RSA on 2 busy cores.
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "${name}.key" \
    -out "${name}.csr" -subj "${subject}" 2>/dev/null
  printf '%s\n' "${ext}" >"${name}.ext"
  openssl x509 -req -in "${name}.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 \
    -extfile "${name}.ext" -out "${name}.crt" 2>/dev/null
  rm -f "${name}.csr" "${name}.ext"
  chmod 600 "${name}.key"
}
client_ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"

sign kubelet-client "/O=system:nodes/CN=system:node:${FERRYMAN_NODE_NAME}" "${client_ext}"
sign kubelet-serving "/O=system:nodes/CN=system:node:${FERRYMAN_NODE_NAME}" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:${FERRYMAN_NODE_IP},DNS:${FERRYMAN_NODE_NAME}"
sign apiserver-kubelet-client "/O=ferryman:kubelet-api-admins/CN=kube-apiserver-kubelet-client" "${client_ext}"
sign kube-proxy "/CN=system:kube-proxy" "${client_ext}"
sign coredns "/CN=ferryman:coredns" "${client_ext}"
