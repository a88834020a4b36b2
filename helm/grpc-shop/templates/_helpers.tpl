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

{{/* Client balancing policy of the mode: round_robin where the client balances itself.
The load generator takes it as is (`shop load --lb-policy`: pick_first or round_robin). */}}
{{- define "shop.lbPolicy" -}}
{{- if has .Values.mode (list "headless" "proxyless") }}round_robin{{ else }}pick_first{{ end }}
{{- end }}

{{/* The services' client policy (SHOP_LB_POLICY): the mode's, except that mode=headless
takes headless.loadBalancingPolicy (round_robin, or weighted_round_robin fed by the
servers' ORCA load reports). */}}
{{- define "shop.serviceLbPolicy" -}}
{{- if eq .Values.mode "headless" }}{{ .Values.headless.loadBalancingPolicy }}{{ else }}{{ include "shop.lbPolicy" . }}{{ end }}
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

{{/*
Authentication (README: Security). Where end users' keys come from: "url" (auth.jwksUrl),
"secret" (auth.existingSecret) or "demo" (the chart's demo issuer, templates/credentials.yaml).
*/}}
{{- define "shop.authSource" -}}
{{- if .Values.auth.jwksUrl }}url{{ else if .Values.auth.existingSecret }}secret{{ else }}demo{{ end }}
{{- end }}

{{/* Services that verify bearer tokens: the gateway (every method) and inventory
(SetStock needs the shop.admin scope). Orders only serves the gateway. */}}
{{- define "shop.tokenVerifiers" -}}
gateway inventory
{{- end }}

{{/* Services that call others, so sign with a key of their own (inventory calls nobody). */}}
{{- define "shop.callingServices" -}}
gateway orders
{{- end }}

{{/*
Internal keys a service's pod gets: its own (to sign its calls) and those of the callers
its access rules name (each service's app.py). The gateway is called by end users only.
*/}}
{{- define "shop.internalKeysOf" -}}
{{- $keys := dict "gateway" (list "gateway") "orders" (list "gateway" "orders") "inventory" (list "gateway" "orders") }}
{{- index $keys . | default list | join " " }}
{{- end }}

{{/* Mount point of every pod's credentials volume; the image creates /credentials (the
compose stack mounts its keys there too), so the read-only root needs no new directory. */}}
{{- define "shop.credentialsDir" -}}
/credentials
{{- end }}

{{- define "shop.demoIssuerName" -}}
{{- include "shop.componentName" (dict "root" . "component" "demo-issuer") }}
{{- end }}

{{- define "shop.internalKeysSecretName" -}}
{{- .Values.internalKeys.existingSecret | default (include "shop.componentName" (dict "root" . "component" "internal-keys")) }}
{{- end }}

{{/* File, in the credentials volume, of the keys that verify bearer tokens. */}}
{{- define "shop.authKeyFile" -}}
{{- if eq (include "shop.authSource" .) "demo" }}issuer.crt{{ else }}auth-keys{{ end }}
{{- end }}

{{/* SHOP_AUTH_JWKS of a component: the URL, or the mounted file; empty for orders. */}}
{{- define "shop.authJwks" -}}
{{- $root := .root }}
{{- if has .component (splitList " " (include "shop.tokenVerifiers" $root)) }}
{{- if eq (include "shop.authSource" $root) "url" }}
{{- $root.Values.auth.jwksUrl }}
{{- else }}
{{- printf "%s/%s" (include "shop.credentialsDir" $root) (include "shop.authKeyFile" $root) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Sources of a pod's projected credentials volume: (dict "root" $ "component" "orders").
Each pod gets only what it uses, so a compromised pod cannot sign as another service
or mint end users' tokens: internal keys per shop.internalKeysOf; the demo issuer's
certificate (never its private key) or the user's key file for the token verifiers; the
load generator only the demo issuer's private key (it mints customers' tokens) or the
user's bearer token, and no internal key.
*/}}
{{- define "shop.credentialSources" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $auth := include "shop.authSource" $root }}
{{- with include "shop.internalKeysOf" .component }}
- secret:
    name: {{ include "shop.internalKeysSecretName" $root }}
    items:
      {{- range splitList " " . }}
      - key: {{ . }}
        path: internal/{{ . }}
      {{- end }}
{{- end }}
{{- if has .component (splitList " " (include "shop.tokenVerifiers" $root)) }}
{{- if eq $auth "demo" }}
- secret:
    name: {{ include "shop.demoIssuerName" $root }}
    items:
      - key: tls.crt
        path: {{ include "shop.authKeyFile" $root }}
{{- else if eq $auth "secret" }}
- secret:
    name: {{ $v.auth.existingSecret }}
    items:
      - key: {{ $v.auth.existingSecretKey }}
        path: {{ include "shop.authKeyFile" $root }}
{{- end }}
{{- end }}
{{- if eq .component "loadgen" }}
{{- if eq $auth "demo" }}
- secret:
    name: {{ include "shop.demoIssuerName" $root }}
    items:
      - key: tls.key
        path: issuer-key.pem
{{- else }}
- secret:
    name: {{ $v.loadgen.tokenSecret }}
    items:
      - key: {{ $v.loadgen.tokenSecretKey }}
        path: token
{{- end }}
{{- end }}
{{- end }}

{{/* The credentials volume of a pod: (dict "root" $ "component" "orders"). */}}
{{- define "shop.credentialsVolume" -}}
- name: credentials
  projected:
    # 0440: owner root, group the pod's fsGroup (10001), which the kubelet sets on
    # the files; the service's uid reads them through its group, others cannot.
    defaultMode: 288
    sources:
      {{- include "shop.credentialSources" . | nindent 6 }}
{{- end }}

{{- define "shop.credentialsMount" -}}
- name: credentials
  mountPath: {{ include "shop.credentialsDir" .root }}
  readOnly: true
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
{{- /* Every server, in every mode: a load report in each answer's trailers. */}}
- name: SHOP_ORCA_REPORTS
  value: {{ $v.orcaReports | quote }}
- name: SHOP_LB_POLICY
  value: {{ include "shop.serviceLbPolicy" $root | quote }}
{{- /* mode=headless only, and only when switched on: the other modes' clients keep the
runtime's defaults (and proxyless gets its policy from xDS). */}}
{{- if and $headless (eq $v.headless.loadBalancingPolicy "weighted_round_robin") }}
{{- with $v.headless.weightedRoundRobin }}
- name: SHOP_WRR_BLACKOUT_S
  value: {{ .blackoutPeriodSeconds | quote }}
- name: SHOP_WRR_ERROR_PENALTY
  value: {{ .errorUtilizationPenalty | quote }}
{{- end }}
{{- end }}
{{- if and $headless $v.headless.outlierDetection.enabled }}
{{- with $v.headless.outlierDetection }}
- name: SHOP_OUTLIER_DETECTION
  value: "true"
- name: SHOP_OUTLIER_INTERVAL_S
  value: {{ .intervalSeconds | quote }}
- name: SHOP_OUTLIER_BASE_EJECTION_S
  value: {{ .baseEjectionTimeSeconds | quote }}
- name: SHOP_OUTLIER_MAX_EJECTION_PERCENT
  value: {{ .maxEjectionPercent | int | quote }}
- name: SHOP_OUTLIER_FAILURE_PERCENT
  value: {{ .failurePercentageThreshold | int | quote }}
- name: SHOP_OUTLIER_MIN_HOSTS
  value: {{ .minimumHosts | int | quote }}
- name: SHOP_OUTLIER_REQUEST_VOLUME
  value: {{ .requestVolume | int | quote }}
{{- end }}
{{- end }}
- name: SHOP_CLIENT_HEALTH_CHECK
  value: {{ and $headless $v.headless.clientHealthCheck | quote }}
- name: SHOP_DNS_MIN_RERESOLUTION_S
  value: {{ ternary $v.headless.dnsMinReresolutionSeconds 30 $headless | quote }}
- name: SHOP_DOWNSTREAM_TIMEOUT_S
  value: {{ $v.client.downstreamTimeoutSeconds | quote }}
- name: SHOP_RETRY_MAX_ATTEMPTS
  value: {{ $v.client.retryMaxAttempts | quote }}
{{- /* Every service reads the four auth settings at start-up (AuthConfig); orders
verifies no bearer token, so its SHOP_AUTH_JWKS is empty and it gets no key for it. */}}
- name: SHOP_AUTH_JWKS
  value: {{ include "shop.authJwks" . | quote }}
- name: SHOP_AUTH_ISSUER
  value: {{ $v.auth.issuer | quote }}
- name: SHOP_AUTH_AUDIENCE
  value: {{ $v.auth.audience | quote }}
- name: SHOP_INTERNAL_KEYS_DIR
  value: {{ printf "%s/internal" (include "shop.credentialsDir" $root) | quote }}
{{- if has .component (list "gateway" "orders") }}
{{- /* WatchOrder streams pass through the gateway and orders. */}}
- name: SHOP_STREAMS_MAX_PER_REPLICA
  value: {{ $v.streams.maxPerReplica | int | quote }}
- name: SHOP_STREAMS_MAX_PER_CALLER
  value: {{ $v.streams.maxPerCaller | int | quote }}
- name: SHOP_STREAM_MAX_LIFETIME_S
  value: {{ $v.streams.maxLifetimeSeconds | quote }}
{{- end }}
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
