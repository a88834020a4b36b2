{{/*
Names, labels and the per-mode wiring every template shares.
*/}}

{{/* The three services, in call order; every per-service template loops over these. */}}
{{- define "shop.services" -}}
gateway orders inventory
{{- end }}

{{- define "shop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name. The release name alone when it already is, or is part
of, the chart name (`helm install shop` gives shop-gateway, not shop-grpc-shop-gateway).
Cut so that prefix + "-" + the longest suffix ("inventory-headless") fits in 63.
*/}}
{{- define "shop.fullname" -}}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- $full := "" }}
{{- if .Values.fullnameOverride }}
{{- $full = .Values.fullnameOverride }}
{{- else if or (contains $name .Release.Name) (contains .Release.Name $name) }}
{{- $full = .Release.Name }}
{{- else }}
{{- $full = printf "%s-%s" .Release.Name $name }}
{{- end }}
{{- $full | trunc 44 | trimSuffix "-" }}
{{- end }}

{{/* Name of one component's resources: (dict "root" $ "component" "orders"). */}}
{{- define "shop.componentName" -}}
{{- printf "%s-%s" (include "shop.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that never change for a component (Deployment selectors are immutable). */}}
{{- define "shop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shop.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "shop.labels" -}}
{{ include "shop.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: grpc-shop
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "shop.chart" .root }}
{{- end }}

{{- define "shop.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Istio mesh identity (SPIFFE principal) of a component's ServiceAccount. */}}
{{- define "shop.principal" -}}
{{- printf "cluster.local/ns/%s/sa/%s" .root.Release.Namespace (include "shop.componentName" .) }}
{{- end }}

{{/* In-cluster DNS name of a component's Service. */}}
{{- define "shop.serviceHost" -}}
{{- printf "%s.%s.svc.cluster.local" (include "shop.componentName" .) .root.Release.Namespace }}
{{- end }}

{{/*
gRPC target a client uses to reach a component; this is where the modes differ.
  clusterip, istio: the ClusterIP Service by name (one connection; Envoy balances in istio)
  headless:         dns:/// on the headless Service, so DNS returns every pod
  proxyless:        xds:///, resolved by istiod through the injected grpc-agent's bootstrap
*/}}
{{- define "shop.target" -}}
{{- $root := .root }}
{{- $port := int $root.Values.grpcPort }}
{{- if eq $root.Values.mode "headless" }}
{{- printf "dns:///%s-headless.%s.svc.cluster.local:%d" (include "shop.componentName" .) $root.Release.Namespace $port }}
{{- else if eq $root.Values.mode "proxyless" }}
{{- printf "xds:///%s:%d" (include "shop.serviceHost" .) $port }}
{{- else }}
{{- printf "%s:%d" (include "shop.serviceHost" .) $port }}
{{- end }}
{{- end }}

{{/* Client balancing policy: round_robin where the client balances itself. */}}
{{- define "shop.lbPolicy" -}}
{{- if has .Values.mode (list "headless" "proxyless") }}round_robin{{ else }}pick_first{{ end }}
{{- end }}

{{/* Whether a mode puts the pods in the Istio mesh (sidecar or grpc-agent). */}}
{{- define "shop.inMesh" -}}
{{- if has .Values.mode (list "istio" "proxyless") }}true{{ end }}
{{- end }}

{{- define "shop.databaseSecretName" -}}
{{- if .Values.postgresql.enabled }}
{{- include "shop.componentName" (dict "root" . "component" "postgresql") }}
{{- else }}
{{- .Values.externalDatabase.existingSecret }}
{{- end }}
{{- end }}

{{- define "shop.databaseSecretKey" -}}
{{- if .Values.postgresql.enabled }}database-url{{ else }}{{ .Values.externalDatabase.existingSecretKey }}{{ end }}
{{- end }}

{{/* terminationGracePeriodSeconds: drain delay + grace + margin, so the kubelet never cuts a drain short. */}}
{{- define "shop.terminationGracePeriodSeconds" -}}
{{- add (ceil .Values.drainDelaySeconds) (ceil .Values.shutdownGraceSeconds) .Values.terminationGraceMarginSeconds | int }}
{{- end }}

{{/* Pod security: non-root with the image's numeric user, RuntimeDefault seccomp. */}}
{{- define "shop.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "shop.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end }}

{{/*
Environment of one service container: (dict "root" $ "component" "orders").
Every name here is a variable the service reads (a test compares them with
shop.runtime.config); values come from the mode and the flat values above.
*/}}
{{- define "shop.env" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $headless := eq $v.mode "headless" }}
- name: SHOP_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: SHOP_LISTEN_ADDR
  value: {{ printf "0.0.0.0:%d" (int $v.grpcPort) | quote }}
- name: SHOP_METRICS_ADDR
  value: {{ printf "0.0.0.0:%d" (int $v.metricsPort) | quote }}
- name: SHOP_MODE
  value: {{ $v.mode | quote }}
- name: SHOP_LOG_LEVEL
  value: {{ $v.logLevel | quote }}
- name: SHOP_UVLOOP
  value: {{ $v.uvloop | quote }}
- name: SHOP_DRAIN_DELAY_S
  value: {{ $v.drainDelaySeconds | quote }}
- name: SHOP_SHUTDOWN_GRACE_S
  value: {{ $v.shutdownGraceSeconds | quote }}
- name: SHOP_MAX_CONNECTION_AGE_S
  value: {{ ternary $v.headless.maxConnectionAgeSeconds 0 $headless | quote }}
- name: SHOP_MAX_CONNECTION_AGE_GRACE_S
  value: {{ $v.headless.maxConnectionAgeGraceSeconds | quote }}
- name: SHOP_KEEPALIVE_TIME_S
  value: {{ $v.client.keepaliveTimeSeconds | quote }}
- name: SHOP_LB_POLICY
  value: {{ include "shop.lbPolicy" $root | quote }}
- name: SHOP_CLIENT_HEALTH_CHECK
  value: {{ and $headless $v.headless.clientHealthCheck | quote }}
- name: SHOP_DNS_MIN_RERESOLUTION_S
  value: {{ ternary $v.headless.dnsMinReresolutionSeconds 30 $headless | quote }}
- name: SHOP_DOWNSTREAM_TIMEOUT_S
  value: {{ $v.client.downstreamTimeoutSeconds | quote }}
- name: SHOP_RETRY_MAX_ATTEMPTS
  value: {{ $v.client.retryMaxAttempts | quote }}
{{- if eq .component "gateway" }}
- name: SHOP_ORDERS_TARGET
  value: {{ include "shop.target" (dict "root" $root "component" "orders") | quote }}
{{- end }}
{{- if has .component (list "gateway" "orders") }}
- name: SHOP_INVENTORY_TARGET
  value: {{ include "shop.target" (dict "root" $root "component" "inventory") | quote }}
{{- end }}
{{- if has .component (list "orders" "inventory") }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "shop.databaseSecretName" $root }}
      key: {{ include "shop.databaseSecretKey" $root }}
- name: SHOP_DATABASE_WAIT_S
  value: {{ $v.databaseWaitSeconds | quote }}
{{- end }}
{{- if eq .component "inventory" }}
- name: SHOP_SEED_STOCK
  value: {{ $v.inventory.seedStock | int64 | quote }}
{{- end }}
{{- if $v.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $v.otel.endpoint | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $v.otel.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $v.otel.samplerArg | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.namespace.name=%s,k8s.pod.name=$(SHOP_POD_NAME),service.version=%s,shop.mode=%s" $root.Release.Namespace $root.Chart.AppVersion $v.mode | quote }}
{{- else }}
- name: OTEL_TRACES_EXPORTER
  value: "none"
{{- end }}
{{- end }}
