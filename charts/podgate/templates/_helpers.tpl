{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "podgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name of the objects: the release name, suffixed with the chart name
unless the release name already contains it.
*/}}
{{- define "podgate.fullname" -}}
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

{{- define "podgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the podgate Pods; never change them after install. */}}
{{- define "podgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "podgate.labels" -}}
helm.sh/chart: {{ include "podgate.chart" . }}
{{ include "podgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: podgate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The annotations block of an object: commonAnnotations plus the given dict. */}}
{{- define "podgate.annotations" -}}
{{- $all := merge (deepCopy (.extra | default dict)) (deepCopy (.root.Values.commonAnnotations | default dict)) -}}
{{- with $all }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "podgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "podgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Secret holding tls.crt and tls.key (and ca.crt) for the server. */}}
{{- define "podgate.tlsSecretName" -}}
{{- printf "%s-tls" (include "podgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* cert-manager Certificate of the serving certificate. */}}
{{- define "podgate.certificateName" -}}
{{- printf "%s-serving" (include "podgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* DNS names of the webhook Service. */}}
{{- define "podgate.dnsNames" -}}
{{- $svc := include "podgate.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson -}}
{{- end -}}

{{/* failurePolicy: explicit, else derived from the mode. */}}
{{- define "podgate.failurePolicy" -}}
{{- if .Values.webhook.failurePolicy -}}
{{- .Values.webhook.failurePolicy -}}
{{- else if eq .Values.mode "audit" -}}
Ignore
{{- else -}}
Fail
{{- end -}}
{{- end -}}

{{/* The image reference: digest wins over tag; tag defaults to appVersion. */}}
{{- define "podgate.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The policy file, exactly the format of `podgate check --config`. */}}
{{- define "podgate.policy" -}}
# podgate policy, rendered by the podgate Helm chart from its values
# (mode, checks, exemptions). Lint it with: podgate check --config FILE
{{- $policy := dict "mode" .Values.mode "checks" .Values.checks "exemptions" .Values.exemptions }}
{{- with .Values.warnBeforeExpiry }}{{ $_ := set $policy "warnBeforeExpiry" . }}{{ end }}
{{- with .Values.controllerUsernames }}{{ $_ := set $policy "controllerUsernames" . }}{{ end }}
{{ $policy | toYaml }}
{{- end -}}

{{/* Labels that select the auditor's Pod: not the webhook's selector labels. */}}
{{- define "podgate.auditSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-audit" (include "podgate.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
