{{/* The name every object of a release carries. */}}
{{- define "kubeleash.fullname" -}}
{{- printf "%s-kubeleash" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubeleash.labels" -}}
app.kubernetes.io/name: kubeleash
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kubeleash.selector" -}}
app.kubernetes.io/name: kubeleash
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The names agents reach the proxy by: its Service's. */}}
{{- define "kubeleash.serviceNames" -}}
{{- $n := include "kubeleash.fullname" . -}}
{{- list $n (printf "%s.%s" $n .Release.Namespace) (printf "%s.%s.svc" $n .Release.Namespace) (printf "%s.%s.svc.cluster.local" $n .Release.Namespace) | toJson -}}
{{- end -}}
