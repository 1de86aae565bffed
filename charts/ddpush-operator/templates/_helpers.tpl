{{/*
Name of the chart, or nameOverride.
*/}}
{{- define "ddpush-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources: fullnameOverride, else the release name
if it already contains the chart name, else "<release>-<chart>". Kept to 52
characters so that suffixed names ("-leader-election", …) stay under 63.
*/}}
{{- define "ddpush-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "ddpush-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object of the chart.
*/}}
{{- define "ddpush-operator.labels" -}}
helm.sh/chart: {{ include "ddpush-operator.chart" . }}
{{ include "ddpush-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ddpush-operator
{{- end }}

{{/*
Labels selecting the manager's pods.
*/}}
{{- define "ddpush-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ddpush-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of the manager's pods, Deployment and metrics Service.
*/}}
{{- define "ddpush-operator.managerSelectorLabels" -}}
{{ include "ddpush-operator.selectorLabels" . }}
app.kubernetes.io/component: manager
{{- end }}

{{/*
Name of the manager's ServiceAccount.
*/}}
{{- define "ddpush-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ddpush-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image holding the manager and the push node: repository:tag, the tag
defaulting to the chart's appVersion (the release whose manager names the
same image by default).
*/}}
{{- define "ddpush-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Image of push nodes whose PushNode names none.
*/}}
{{- define "ddpush-operator.pushNodeImage" -}}
{{- default (include "ddpush-operator.image" .) .Values.pushNode.image }}
{{- end }}
