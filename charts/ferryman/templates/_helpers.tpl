{{/* Names --------------------------------------------------------------------------------------- */}}

{{- define "ferryman.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name, suffixed with the chart name unless it contains it. */}}
{{- define "ferryman.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<suffix>", within 63 characters. */}}
{{- define "ferryman.componentName" -}}
{{- $suffix := index . 1 -}}
{{- $full := include "ferryman.fullname" (index . 0) | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $full $suffix -}}
{{- end -}}

{{- define "ferryman.operatorName" -}}
{{- include "ferryman.componentName" (list . "operator") -}}
{{- end -}}

{{- define "ferryman.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ferryman.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ferryman.leaseName" -}}
{{- default (include "ferryman.operatorName" .) .Values.operator.leaderElection.leaseName -}}
{{- end -}}

{{/* Labels ------------------------------------------------------------------------------------- */}}

{{- define "ferryman.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ferryman.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferryman.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object; `ferryman.componentLabels` adds app.kubernetes.io/component. */}}
{{- define "ferryman.labels" -}}
helm.sh/chart: {{ include "ferryman.chart" . }}
{{ include "ferryman.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ferryman
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "ferryman.componentLabels" -}}
{{ include "ferryman.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "ferryman.componentSelectorLabels" -}}
{{ include "ferryman.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Labels of the Prometheus Operator objects: the `release` label kube-prometheus-stack selects on. */}}
{{- define "ferryman.monitoringLabels" -}}
{{ include "ferryman.componentLabels" (list . "monitoring") }}
{{- with .Values.monitoring.release }}
release: {{ . | quote }}
{{- end }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Images ------------------------------------------------------------------------------------- */}}

{{/* The chart's image: repository:tag (tag defaults to appVersion), or repository@digest. */}}
{{- define "ferryman.image" -}}
{{- $repo := .Values.image.repository -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "ferryman.workloadImage" -}}
{{- default (include "ferryman.image" .) .Values.workloads.image -}}
{{- end -}}

{{/* Pod security --------------------------------------------------------------------------------- */}}

{{/* The Pod Security "restricted" pod and container contexts for the chart's other pods. */}}
{{- define "ferryman.restrictedPodSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "ferryman.restrictedSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The namespaces the operator watches ("" = every namespace). */}}
{{- define "ferryman.watchNamespaces" -}}
{{- join "," .Values.operator.namespaces -}}
{{- end -}}
