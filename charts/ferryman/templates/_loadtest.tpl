{{- define "ferryman.loadtest.image" -}}
{{- default (include "ferryman.image" .) .Values.loadtest.image -}}
{{- end -}}

{{/* The URL the workers load: `loadtest.target.host`, else the ModelDeployment's gateway Service. */}}
{{- define "ferryman.loadtest.host" -}}
{{- $t := .Values.loadtest.target -}}
{{- if $t.host -}}
{{- $t.host -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%d" $t.modelDeployment (default .Release.Namespace $t.namespace) (int $t.port) -}}
{{- end -}}
{{- end -}}

{{/* One run per release revision: an upgrade replaces the Jobs (and re-runs the test). */}}
{{- define "ferryman.loadtest.run" -}}
{{- printf "r%d" (int .Release.Revision) -}}
{{- end -}}

{{- define "ferryman.loadtest.masterName" -}}
{{- include "ferryman.componentName" (list . "loadtest-master") -}}
{{- end -}}

{{- define "ferryman.loadtest.locustfiles" -}}
/opt/ferryman-loadtest/loadtests/locustfile.py,/opt/ferryman-loadtest/ferryman_budget_gate.py
{{- end -}}

{{/* Environment shared by master and workers: the scenario and the budget of the gate. */}}
{{- define "ferryman.loadtest.env" -}}
{{- $lt := .Values.loadtest -}}
- name: FERRYMAN_LT_PROTOCOL
  value: {{ $lt.protocol | quote }}
- name: FERRYMAN_LT_MODEL
  value: {{ $lt.model | quote }}
- name: FERRYMAN_LT_ROWS
  value: {{ $lt.rows | quote }}
- name: FERRYMAN_LT_RATE
  value: {{ $lt.ratePerUser | quote }}
- name: FERRYMAN_LT_SHAPE
  value: {{ ternary "" $lt.shape (eq $lt.shape "none") | quote }}
- name: FERRYMAN_LT_BUDGET_MS
  value: {{ $lt.budget.p99Ms | quote }}
- name: FERRYMAN_LT_MAX_ERROR_RATE
  value: {{ $lt.budget.maxErrorRate | quote }}
- name: HOME
  value: /tmp
- name: PYTHONUNBUFFERED
  value: "1"
{{- end -}}

{{/* Pod spec parts shared by master and workers. */}}
{{- define "ferryman.loadtest.podCommon" -}}
securityContext:
  {{- include "ferryman.restrictedPodSecurityContext" . | nindent 2 }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: locustfiles
    configMap:
      name: {{ include "ferryman.componentName" (list . "loadtest") }}
      items:
        - key: locustfile.py
          path: loadtests/locustfile.py
        - key: payloads.py
          path: loadtests/payloads.py
        - key: shapes.py
          path: loadtests/shapes.py
        - key: __init__.py
          path: loadtests/__init__.py
        - key: ferryman_budget_gate.py
          path: ferryman_budget_gate.py
  - name: tmp
    emptyDir:
      sizeLimit: 256Mi
{{- end -}}

{{- define "ferryman.loadtest.mounts" -}}
- name: locustfiles
  mountPath: /opt/ferryman-loadtest
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}
