{{/*
Names, labels and the few computed values of the chart, each in one place.
*/}}

{{- define "ocpp-router.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ocpp-router.fullname" -}}
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

{{- define "ocpp-router.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ocpp-router.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: router
{{- end }}

{{- define "ocpp-router.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "ocpp-router.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ocpp-router
{{- end }}

{{- define "ocpp-router.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ocpp-router.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ocpp-router.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The chargers' Service port: 443 with TLS, else 80, unless set. */}}
{{- define "ocpp-router.servicePort" -}}
{{- if .Values.service.port }}{{ .Values.service.port }}{{ else }}{{ ternary 443 80 .Values.tls.enabled }}{{ end }}
{{- end }}

{{- define "ocpp-router.scheme" -}}
{{- ternary "wss" "ws" .Values.tls.enabled }}
{{- end }}

{{/*
terminationGracePeriodSeconds. Kubernetes starts the grace clock before the
preStop hook, then sends SIGTERM; the router drains over drain_seconds, waits
at most close_timeout for the last close handshakes and publish_timeout for
its last publishes. Anything shorter is cut by SIGKILL mid-drain.
*/}}
{{- define "ocpp-router.minimumGracePeriod" -}}
{{- $c := .Values.config }}
{{- addf .Values.lifecycle.preStopSeconds $c.drain_seconds $c.close_timeout $c.publish_timeout .Values.lifecycle.terminationMarginSeconds | ceil | int }}
{{- end }}

{{- define "ocpp-router.terminationGracePeriodSeconds" -}}
{{- $minimum := include "ocpp-router.minimumGracePeriod" . | int }}
{{- $set := .Values.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $set }}{{ $minimum }}
{{- else if lt (int $set) $minimum }}
{{- fail (printf "terminationGracePeriodSeconds %d is shorter than the drain needs: lifecycle.preStopSeconds %v + config.drain_seconds %v + config.close_timeout %v + config.publish_timeout %v + lifecycle.terminationMarginSeconds %v = %d s; chargers would be cut off mid-drain (raise it, or leave it null to compute it)" (int $set) .Values.lifecycle.preStopSeconds .Values.config.drain_seconds .Values.config.close_timeout .Values.config.publish_timeout .Values.lifecycle.terminationMarginSeconds $minimum) }}
{{- else }}{{ int $set }}
{{- end }}
{{- end }}

{{/*
minReadySeconds: the rollout replaces the next pod only after the previous one
has finished its preStop and its drain, so one pod's chargers reconnect at a time.
*/}}
{{- define "ocpp-router.minReadySeconds" -}}
{{- if kindIs "invalid" .Values.minReadySeconds }}
{{- addf .Values.lifecycle.preStopSeconds .Values.config.drain_seconds | ceil | int }}
{{- else }}{{ .Values.minReadySeconds }}
{{- end }}
{{- end }}

{{/* Checks that need two values at once (JSON Schema compares none). */}}
{{- define "ocpp-router.validate" -}}
{{- $idle := .Values.loadBalancer.idleTimeoutSeconds | int }}
{{- $ping := .Values.config.ping_interval }}
{{- if and (gt $idle 0) (or (eq (float64 $ping) 0.0) (ge (float64 $ping) (float64 $idle))) }}
{{- fail (printf "config.ping_interval %v must be above 0 and below loadBalancer.idleTimeoutSeconds %d: the load balancer would cut idle chargers before the router pings them" $ping $idle) }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret (a kubernetes.io/tls Secret with tls.crt and tls.key)" }}
{{- end }}
{{- if and .Values.tls.clientCA.enabled (not .Values.tls.clientCA.existingSecret) }}
{{- fail "tls.clientCA.enabled needs tls.clientCA.existingSecret (a Secret with the CA bundle under tls.clientCA.key)" }}
{{- end }}
{{- end }}

{{/*
router.toml: config plus what other values imply, one `key = value` per line.
JSON scalars and arrays of strings are valid TOML, and JSON keeps numbers as
written (Helm holds them as floats; toToml would print 9000.0).
*/}}
{{- define "ocpp-router.configToml" -}}
{{- $config := deepCopy .Values.config }}
{{- if .Values.trustedProxy.header }}
{{- $_ := set $config "trusted_proxy_header" .Values.trustedProxy.header }}
{{- $_ := set $config "trusted_proxy_networks" .Values.trustedProxy.networks }}
{{- end }}
# ocpp-router options (docs/configuration.md), rendered by the Helm chart.
{{- range $key, $value := $config }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}

{{/* Environment shared by the router and the tools that read its streams. */}}
{{- define "ocpp-router.redisEnv" -}}
- name: OCPP_ROUTER_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret | quote }}
      key: {{ .Values.redis.urlKey | quote }}
{{- if and .Values.redis.tls.existingSecret .Values.redis.tls.caKey }}
- name: SSL_CERT_FILE
  value: {{ printf "/etc/ocpp-router/redis-tls/%s" .Values.redis.tls.caKey | quote }}
{{- end }}
{{- end }}

{{- define "ocpp-router.redisVolume" -}}
{{- if .Values.redis.tls.existingSecret }}
- name: redis-tls
  secret:
    secretName: {{ .Values.redis.tls.existingSecret | quote }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "ocpp-router.redisVolumeMount" -}}
{{- if .Values.redis.tls.existingSecret }}
- name: redis-tls
  mountPath: /etc/ocpp-router/redis-tls
  readOnly: true
{{- end }}
{{- end }}

{{/* Scale up at once, down one pod at a time: every removed pod drains its chargers. */}}
{{- define "ocpp-router.scalingBehavior" -}}
scaleUp:
  stabilizationWindowSeconds: 0
  policies:
    - type: Percent
      value: 100
      periodSeconds: 60
scaleDown:
  stabilizationWindowSeconds: {{ .Values.autoscaling.scaleDown.stabilizationWindowSeconds }}
  policies:
    - type: Pods
      value: {{ .Values.autoscaling.scaleDown.podsPerPeriod }}
      periodSeconds: {{ .Values.autoscaling.scaleDown.periodSeconds }}
{{- end }}
