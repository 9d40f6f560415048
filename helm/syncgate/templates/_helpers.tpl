{{/* vim: set filetype=mustache: */}}

{{/*
Chart name, 63 characters at most (the DNS label limit).
*/}}
{{- define "syncgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name of the release's resources. The release name alone when it already
contains the chart name, so `helm install syncgate .` does not give syncgate-syncgate.
*/}}
{{- define "syncgate.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "syncgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "syncgate.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels: stable across upgrades, since a Deployment's selector is immutable.
*/}}
{{- define "syncgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "syncgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Labels for every resource.
*/}}
{{- define "syncgate.labels" -}}
helm.sh/chart: {{ include "syncgate.chart" . }}
{{ include "syncgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: syncgate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Metadata annotations shared by every resource; renders nothing when there are none.
*/}}
{{- define "syncgate.annotations" -}}
{{- with .Values.commonAnnotations -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Image reference: registry/repository, then @digest or :tag (default: appVersion).
*/}}
{{- define "syncgate.image" -}}
{{- $registry := default .Values.image.registry .Values.global.imageRegistry -}}
{{- $repository := .Values.image.repository -}}
{{- if $registry -}}
{{- $repository = printf "%s/%s" $registry $repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}
{{- end -}}

{{/*
Pull secrets from global.imagePullSecrets and image.pullSecrets, without duplicates.
*/}}
{{- define "syncgate.imagePullSecrets" -}}
{{- $secrets := concat .Values.global.imagePullSecrets .Values.image.pullSecrets | uniq -}}
{{- if $secrets -}}
imagePullSecrets:
  {{- range $secrets }}
  - name: {{ . | quote }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "syncgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "syncgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Secret loaded into the environment: the existing one, or the one this chart creates.
*/}}
{{- define "syncgate.secretName" -}}
{{- default (include "syncgate.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{- define "syncgate.configmapName" -}}
{{- default (include "syncgate.fullname" .) .Values.existingConfigmap -}}
{{- end -}}

{{/*
Secret values keyed by the environment variable each one sets.
*/}}
{{- define "syncgate.secretEnv" -}}
SYNCGATE_ADMIN_TOKEN: {{ .Values.secrets.adminToken | quote }}
SYNCGATE_REDIS_URL: {{ .Values.secrets.redisUrl | quote }}
SYNCGATE_REDIS_PASSWORD: {{ .Values.secrets.redisPassword | quote }}
SYNCGATE_REDIS_SENTINEL_PASSWORD: {{ .Values.secrets.redisSentinelPassword | quote }}
SYNCGATE_XMPP_PASSWORD: {{ .Values.secrets.xmppPassword | quote }}
SYNCGATE_ADAPTER_XMPP_OMEMO_SECRET: {{ .Values.secrets.xmppOmemoSecret | quote }}
SYNCGATE_MATRIX_AS_TOKEN: {{ .Values.secrets.matrixAsToken | quote }}
SYNCGATE_MATRIX_HS_TOKEN: {{ .Values.secrets.matrixHsToken | quote }}
SYNCGATE_MATRIX_ACCESS_TOKEN: {{ .Values.secrets.matrixAccessToken | quote }}
SYNCGATE_ADAPTER_MATRIX_ENCRYPTION_STORE_SECRET: {{ .Values.secrets.matrixEncryptionStoreSecret | quote }}
SYNCGATE_MQTT_PASSWORD: {{ .Values.secrets.mqttPassword | quote }}
SYNCGATE_VIEWER_TOKENS: {{ join "," .Values.secrets.viewerTokens | quote }}
{{- end -}}

{{/*
Combinations the schema cannot express. Replicas that do not share one Redis
would each keep their own event log and split the rooms' history between them.
*/}}
{{- define "syncgate.validateValues" -}}
{{- $replicas := ternary .Values.autoscaling.maxReplicas .Values.replicaCount .Values.autoscaling.enabled | int -}}
{{- $config := .Values.config | default dict -}}
{{- $cluster := or .Values.redis.clusterNodes (dig "redis" "cluster" "nodes" "" $config) -}}
{{- $sentinel := or .Values.redis.sentinel.nodes (dig "redis" "sentinel" "nodes" "" $config) -}}
{{- if and (gt $replicas 1) (not .Values.existingSecret) (not .Values.secrets.redisUrl) (not $cluster) (not $sentinel) -}}
{{- fail "syncgate: several replicas need one shared Redis. Set secrets.redisUrl (or existingSecret with SYNCGATE_REDIS_URL), or redis.clusterNodes for a Redis Cluster, or redis.sentinel for Redis Sentinel, or replicaCount=1 for a non-durable trial." -}}
{{- end -}}
{{- if gt (len (compact (list .Values.secrets.redisUrl (join "," .Values.redis.clusterNodes) (join "," .Values.redis.sentinel.nodes)))) 1 -}}
{{- fail "syncgate: set one Redis only: secrets.redisUrl, redis.clusterNodes or redis.sentinel.nodes." -}}
{{- end -}}
{{- if and .Values.redis.sentinel.nodes (not .Values.redis.sentinel.name) -}}
{{- fail "syncgate: redis.sentinel.nodes needs redis.sentinel.name (the master group the sentinels monitor)." -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "syncgate: autoscaling.minReplicas must not exceed autoscaling.maxReplicas." -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPU) (not .Values.autoscaling.targetMemory) -}}
{{- fail "syncgate: autoscaling needs autoscaling.targetCPU or autoscaling.targetMemory." -}}
{{- end -}}
{{- end -}}
