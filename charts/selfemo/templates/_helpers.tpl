{{/*
Names and labels shared by every template (and by the monitoring templates:
prometheusrule.yaml and dashboard-configmap.yaml include these too).
*/}}

{{/* The chart name, overridable with nameOverride. */}}
{{- define "selfemo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's object name prefix: fullnameOverride, else the release name when
it already contains the chart name ("selfemo"), else "<release>-<chart>".
Truncated to 63 characters (DNS label limit).
*/}}
{{- define "selfemo.fullname" -}}
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

{{/* chart label value: name-version ("+" is not allowed in label values). */}}
{{- define "selfemo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of the operator's pods. Stable across upgrades: never add
a label here that changes between releases (Deployment selectors are immutable).
*/}}
{{- define "selfemo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "selfemo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Common labels on every object the chart creates. */}}
{{- define "selfemo.labels" -}}
helm.sh/chart: {{ include "selfemo.chart" . }}
app.kubernetes.io/name: {{ include "selfemo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: selfemo
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "selfemo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "selfemo.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The kopf peering object's name (--peering). */}}
{{- define "selfemo.peeringName" -}}
{{- default (include "selfemo.fullname" .) .Values.operator.peeringName }}
{{- end }}

{{/*
The namespaces the operator watches when not cluster-wide: the listed ones,
else the release namespace. Returned as a JSON list (fromJsonArray to use).
*/}}
{{- define "selfemo.watchNamespaces" -}}
{{- if .Values.watch.namespaces }}
{{- .Values.watch.namespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}: the digest pins it when
set, else the tag, else the chart's appVersion.
Call: include "selfemo.image" (dict "image" .Values.images.operator "ctx" $)
*/}}
{{- define "selfemo.image" -}}
{{- $img := .image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .ctx.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}
