{{/* Names: <release>-kubellm, shortened to Kubernetes' 63-character limit. */}}
{{- define "kubellm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubellm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kubellm.gateway.fullname" -}}
{{- printf "%s-gateway" (include "kubellm.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubellm.operator.fullname" -}}
{{- printf "%s-operator" (include "kubellm.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Cluster-scoped objects are shared by every release: the namespace keeps them apart. */}}
{{- define "kubellm.clusterName" -}}
{{- printf "%s-%s-%s" .context.Release.Namespace (include "kubellm.fullname" .context) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubellm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kubellm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubellm
{{- end }}

{{/* Selector labels of one component: {{ include "kubellm.selectorLabels" (dict "context" . "component" "gateway") }} */}}
{{- define "kubellm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubellm.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "kubellm.componentLabels" -}}
{{ include "kubellm.labels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "kubellm.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The namespaces served: watchNamespaces, or the release namespace. */}}
{{- define "kubellm.namespaces" -}}
{{- if .Values.watchNamespaces }}
{{- join "," (uniq .Values.watchNamespaces) }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "kubellm.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (include "kubellm.gateway.fullname" .) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- required "gateway.serviceAccount.name is required when gateway.serviceAccount.create is false" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kubellm.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "kubellm.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Environment both components share: log level and OpenTelemetry. */}}
{{- define "kubellm.commonEnv" -}}
- name: KUBELLM_LOG_LEVEL
  value: {{ .context.Values.logLevel | quote }}
{{- with .context.Values.otel }}
{{- if .endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .endpoint | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "kubellm-%s" $.component | quote }}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ include "kubellm.otelAttributes" . | quote }}
{{- if .sampler }}
- name: OTEL_TRACES_SAMPLER
  value: {{ .sampler | quote }}
{{- if .samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .samplerArg | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kubellm.otelAttributes" -}}
{{- $attributes := list "k8s.pod.name=$(POD_NAME)" }}
{{- range $key, $value := .resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $attributes }}
{{- end }}

{{/* The gateway's own environment; see kubellm.env for how extraEnv joins it. */}}
{{- define "kubellm.gateway.env" -}}
- name: KUBELLM_SOURCE
  value: kubernetes
- name: KUBELLM_NAMESPACES
  value: {{ include "kubellm.namespaces" . | quote }}
- name: KUBELLM_HOST
  value: 0.0.0.0
- name: KUBELLM_PORT
  value: {{ .Values.gateway.port | quote }}
- name: KUBELLM_METRICS_PORT
  value: {{ .Values.gateway.metricsPort | quote }}
- name: KUBELLM_SHUTDOWN_GRACE
  value: {{ .Values.gateway.shutdown.graceSeconds | quote }}
{{- with .Values.gateway.oidc }}
{{- if .issuer }}
- name: KUBELLM_OIDC_ISSUER
  value: {{ .issuer | quote }}
- name: KUBELLM_OIDC_AUDIENCE
  value: {{ required "gateway.oidc.audience is required with gateway.oidc.issuer" .audience | quote }}
{{- with .usernameClaim }}
- name: KUBELLM_OIDC_USERNAME_CLAIM
  value: {{ . | quote }}
{{- end }}
{{- with .groupsClaim }}
- name: KUBELLM_OIDC_GROUPS_CLAIM
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.gateway.redis.urlSecret }}
{{- if .name }}
- name: KUBELLM_REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ .name | quote }}, key: {{ .key | quote }}}
{{- end }}
{{- end }}
{{ include "kubellm.commonEnv" (dict "context" . "component" "gateway") }}
{{- end }}

{{- define "kubellm.operator.env" -}}
- name: KUBELLM_NAMESPACES
  value: {{ include "kubellm.namespaces" . | quote }}
- name: KUBELLM_PEERING_NAME
  value: {{ .Values.operator.peering.name | quote }}
- name: KUBELLM_LIVENESS_ENDPOINT
  value: {{ printf "http://0.0.0.0:%d/healthz" (int .Values.operator.healthPort) | quote }}
{{ include "kubellm.commonEnv" (dict "context" . "component" "operator") }}
{{- end }}

{{/*
A container's env: its own entries ("own", YAML), then "extra" (extraEnv). An extra entry
replaces an own one of the same name instead of repeating it: server-side apply, which
helm 4 uses, refuses two env entries with one name.
*/}}
{{- define "kubellm.env" -}}
{{- $replaced := dict }}
{{- range .extra }}
{{- $_ := set $replaced .name true }}
{{- end }}
{{- $env := list }}
{{- range fromYamlArray .own }}
{{- if not (hasKey $replaced .name) }}
{{- $env = append $env . }}
{{- end }}
{{- end }}
{{- toYaml (concat $env .extra) }}
{{- end }}
