{{/* Which namespaces the ServiceMonitor/PodMonitor look in: the watched ones, or all of them. */}}
{{- define "ferryman.monitoring.namespaceSelector" -}}
{{- if .Values.operator.namespaces -}}
matchNames:
  {{- toYaml .Values.operator.namespaces | nindent 2 }}
{{- else -}}
any: true
{{- end -}}
{{- end -}}

{{/* The gateways and version servers the operator creates (labels of operators/ferryman_operator/names.py). */}}
{{- define "ferryman.monitoring.workloadSelector" -}}
matchLabels:
  app.kubernetes.io/managed-by: ferryman-operator
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values: ["gateway", "model-version"]
{{- end -}}
