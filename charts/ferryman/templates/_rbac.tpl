{{/*
The operator's permissions come from the operator itself: files/operator-rbac.yaml is a copy of
operators/ferryman_operator/rbac.yaml (scripts/chart-sync.sh; tests/unit/test_chart_files.py fails when the
copy is stale and when the rendered rules differ from it). Its ClusterRole lists what the operator's client
does on the kinds its backends create; the rules of an optional backend are left out when it is switched
off (`ray.enabled`, `kserve.enabled`). tests/cluster/test_chart_install.py runs the operator with this
ServiceAccount's token and checks `kubectl auth can-i` for what it must and must not do.

Nothing cluster-scoped (kopf runs with resource scanning off), no Secrets, no Pods, no RBAC objects.
*/}}

{{/* The operator's rbac.yaml documents, by kind. */}}
{{- define "ferryman.rbac.operatorRoles" -}}
{{- $out := dict -}}
{{- range $doc := splitList "\n---" (.Files.Get "files/operator-rbac.yaml") -}}
{{- $obj := fromYaml $doc -}}
{{- if $obj.kind -}}
{{- $_ := set $out $obj.kind $obj -}}
{{- end -}}
{{- end -}}
{{- if not (hasKey $out "ClusterRole") -}}
{{- fail "files/operator-rbac.yaml has no ClusterRole: refresh the chart's copies with scripts/chart-sync.sh" -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Rules on namespaced resources: in a ClusterRole (cluster-wide mode) or a Role per watched namespace. */}}
{{- define "ferryman.rbac.namespacedRules" -}}
{{- $roles := include "ferryman.rbac.operatorRoles" . | fromJson -}}
{{- $off := list -}}
{{- if not .Values.ray.enabled }}{{ $off = append $off "ray.io" }}{{ end -}}
{{- if not .Values.kserve.enabled }}{{ $off = append $off "serving.kserve.io" }}{{ end -}}
{{- $rules := list -}}
{{- range $rule := $roles.ClusterRole.rules -}}
{{- $keep := true -}}
{{- range $group := $rule.apiGroups -}}
{{- if has $group $off }}{{ $keep = false }}{{ end -}}
{{- end -}}
{{- if $keep }}{{ $rules = append $rules $rule }}{{ end -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}

{{/* Leader election, in the release namespace: the operator's Role narrowed to its own Lease (`create`
cannot be limited by name; get and update can). */}}
{{- define "ferryman.rbac.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "ferryman.leaseName" . | quote }}]
  verbs: ["get", "update"]
{{- end -}}
