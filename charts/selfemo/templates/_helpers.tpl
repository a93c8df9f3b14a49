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
