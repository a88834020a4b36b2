{{/*
What a pod carries besides its containers: the chart's own labels and annotations per
workload, and the escape hatches for cluster policies the chart cannot know (values
priorityClassName, imagePullSecrets, nodeSelector, tolerations, affinity, podLabels,
podAnnotations, extraEnv). The release-wide values apply to every pod; a workload's
own block adds to them or replaces them, as each helper says.
*/}}

{{/* Labels the chart puts on a service pod: (dict "root" $ "component" "orders"). */}}
{{- define "shop.pod.serviceLabels" -}}
{{ include "shop.labels" . }}
# Istio names the workload after this, not after the shared chart name.
service.istio.io/canonical-name: {{ .component }}
service.istio.io/canonical-revision: {{ .root.Chart.AppVersion | quote }}
# Explicit either way: a namespace labelled for injection must not turn the
# non-mesh modes into a mesh and spoil the comparison.
sidecar.istio.io/inject: {{ ternary "true" "false" (eq (include "shop.inMesh" .root) "true") | quote }}
{{- end }}

{{/*
mode=istio, on the services' and the load generator's pods: each sidecar keeps three of
Envoy's own stats of the clusters it calls, which Istio's default stats matcher drops
(it keeps cluster_manager, server, cluster.xds-grpc and little more). The mesh row of
dashboards/mode-comparison.json reads them as envoy_cluster_upstream_rq_total,
envoy_cluster_upstream_rq_retry and envoy_cluster_outlier_detection_ejections_active,
labelled cluster_name by Istio's bootstrap; upstream Envoy exposes the same stats, so
those panels do not need Istio's istio_* metrics. Istio merges this ProxyConfig over
the mesh's defaultConfig (istio/mesh.yaml), whose settings still apply.
The regex is RE2 and matches a whole stat name, such as
cluster.outbound|50051||shop-orders.shop.svc.cluster.local.upstream_rq_total. It says
[.] and [|] rather than backslashes, which the JSON would need doubled. Only outbound
clusters and only these three stats: each one more is a series per pod and per service
in the mesh.
*/}}
{{- define "shop.pod.envoyStats" -}}
proxy.istio.io/config: '{"proxyStatsMatcher": {"inclusionRegexps": ["cluster[.]outbound[|][0-9]+[|][^|]*[|][^|]+[.](upstream_rq_total|upstream_rq_retry|outlier_detection[.]ejections_active)"]}}'
{{- end }}

{{- define "shop.pod.serviceAnnotations" -}}
{{- $v := .root.Values }}
# With a sidecar beside it, `kubectl logs/exec` still pick the service.
kubectl.kubernetes.io/default-container: {{ .component }}
{{- if eq $v.mode "proxyless" }}
# Inject only the istio-agent, which serves xDS to the gRPC client and writes
# GRPC_XDS_BOOTSTRAP; no Envoy in the data path.
inject.istio.io/templates: grpc-agent
# The client's first xds:/// resolution needs the agent's bootstrap file.
proxy.istio.io/config: '{"holdApplicationUntilProxyStarts": true}'
{{- else if eq $v.mode "istio" }}
{{ include "shop.pod.envoyStats" . }}
{{- end }}
{{- if not $v.serviceMonitor.enabled }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ $v.metricsPort | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{- define "shop.pod.loadgenLabels" -}}
{{ include "shop.labels" . }}
service.istio.io/canonical-name: loadgen
sidecar.istio.io/inject: {{ ternary "true" "false" (eq (include "shop.inMesh" .root) "true") | quote }}
{{- end }}

{{- define "shop.pod.loadgenAnnotations" -}}
{{- if eq .root.Values.mode "proxyless" }}
inject.istio.io/templates: grpc-agent
proxy.istio.io/config: '{"holdApplicationUntilProxyStarts": true}'
{{- else if eq .root.Values.mode "istio" }}
{{ include "shop.pod.envoyStats" . }}
{{- end }}
{{- end }}

{{/* The helm test pod: in the mesh only in mode=istio (see tests/test-health.yaml). */}}
{{- define "shop.pod.testLabels" -}}
{{ include "shop.labels" . }}
sidecar.istio.io/inject: {{ ternary "true" "false" (eq .root.Values.mode "istio") | quote }}
{{- end }}
{{- define "shop.pod.testAnnotations" -}}
helm.sh/hook: test
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- if eq .root.Values.mode "istio" }}
proxy.istio.io/config: '{"holdApplicationUntilProxyStarts": true}'
{{- end }}
{{- end }}

{{/*
metadata.labels and metadata.annotations of a pod:
(dict "root" $ "component" "orders" "own" $workloadValues "labels" $yaml "annotations" $yaml).
The chart's own (YAML text, so its comments stay in the output) come first, then
podLabels/podAnnotations: the release-wide ones merged with the workload's own, which
win on the same key. A key the chart already sets is refused, not overridden: a
changed selector label would cut pods off from their Deployment, Service, policies
and budgets; a changed sidecar.istio.io/inject or proxy annotation would change the
mode behind the chart's back.
*/}}
{{- define "shop.pod.metadata" -}}
{{- $v := .root.Values }}
{{- $component := .component }}
{{- $selector := include "shop.selectorLabels" . | fromYaml }}
{{- range $field := list "labels" "annotations" }}
{{- $key := printf "pod%s" (title $field) }}
{{- $chartText := index $ $field | default "" | trim }}
{{- $chart := $chartText | fromYaml | default dict }}
{{- $own := index $.own $key | default dict }}
{{- $extra := mergeOverwrite (deepCopy (index $v $key | default dict)) $own }}
{{- range $name := keys $extra | sortAlpha }}
{{- $where := ternary (printf "%s.%s" $component $key) $key (hasKey $own $name) }}
{{- if hasKey $selector $name }}
{{- fail (printf "%s: %q is a selector label of the chart; a different value would detach the %s pods from what selects them (Deployment, Service, NetworkPolicy, ...)" $where $name $component) }}
{{- else if hasKey $chart $name }}
{{- fail (printf "%s: %q is set by the chart on the %s pods (to %q) and cannot be overridden; use another key" $where $name $component (index $chart $name | toString)) }}
{{- end }}
{{- end }}
{{- if or $chartText $extra }}
{{ $field }}:
{{- with $chartText }}
  {{- . | nindent 2 }}
{{- end }}
{{- with $extra }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Scheduling and image pulling of a pod spec: (dict "root" $ "own" $workloadValues).
A workload's own nodeSelector, tolerations or affinity replace the release-wide ones
when not empty; they are not merged, since a merge could never take a release-wide
entry away for one workload.
*/}}
{{- define "shop.pod.scheduling" -}}
{{- $v := .root.Values }}
{{- $own := .own | default dict }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $own.nodeSelector | default $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $own.tolerations | default $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $own.affinity | default $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Extra environment of a service container, to follow the chart's own entries:
(dict "root" $ "component" "orders" "own" $svc "chart" (include "shop.env" $ctx)).
The release-wide extraEnv, then the service's own extraEnv, whose entries replace
release-wide ones of the same name. Refused: every SHOP_* name (the services'
settings; each follows a value of this chart and agrees with what the chart renders
around it: ports, probes, targets, the mode) and any name the chart sets in this
container (DATABASE_URL, OTEL_*). Appending them would silently win, since the last
entry of a name is the one a container gets.
*/}}
{{- define "shop.pod.extraEnv" -}}
{{- $component := .component }}
{{- $chartNames := dict }}
{{- range .chart | fromYamlArray }}
{{- $_ := set $chartNames .name true }}
{{- end }}
{{- $ownKey := printf "%s.extraEnv" $component }}
{{- $own := .own.extraEnv | default list }}
{{- $ownNames := dict }}
{{- range $own }}
{{- if hasKey $ownNames .name }}
{{- fail (printf "%s: %s is listed twice" $ownKey .name) }}
{{- end }}
{{- $_ := set $ownNames .name true }}
{{- end }}
{{- $merged := list }}
{{- $globalNames := dict }}
{{- range .root.Values.extraEnv }}
{{- if hasKey $globalNames .name }}
{{- fail (printf "extraEnv: %s is listed twice" .name) }}
{{- end }}
{{- $_ := set $globalNames .name true }}
{{- if not (hasKey $ownNames .name) }}
{{- $merged = append $merged . }}
{{- end }}
{{- end }}
{{- range $env := concat $merged $own }}
{{- $where := ternary $ownKey "extraEnv" (hasKey $ownNames $env.name) }}
{{- if hasPrefix "SHOP_" $env.name }}
{{- fail (printf "%s: %s is a setting of the shop services, which the chart sets from its values; set the chart's value instead (values.yaml)" $where $env.name) }}
{{- else if hasKey $chartNames $env.name }}
{{- fail (printf "%s: %s is set by the chart in the %s container and cannot be overridden (DATABASE_URL: postgresql or externalDatabase; OTEL_*: otel)" $where $env.name $component) }}
{{- end }}
{{- end }}
{{- with concat $merged $own }}
{{- toYaml . }}
{{- end }}
{{- end }}
