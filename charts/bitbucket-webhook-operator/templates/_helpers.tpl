{{- define "bbwo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bbwo.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "bbwo.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bbwo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bbwo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "bbwo.watchNamespace" -}}
{{- default .Release.Namespace .Values.watchNamespace -}}
{{- end -}}

{{/* What the operator does with each resource; docs/operations.md explains every verb. */}}
{{- define "bbwo.rules" }}
- apiGroups: ["bitbucket.hooks.dev"]
  resources: ["webhooks"]
  # patch: the finalizer and the operator's own annotations, and a WebhookSet's Webhooks
  # put back to its template; create, delete: a WebhookSet's Webhooks.
  verbs: ["get", "list", "watch", "patch", "create", "delete"]
- apiGroups: ["bitbucket.hooks.dev"]
  resources: ["webhooksets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["bitbucket.hooks.dev"]
  resources: ["bitbucketconnections"]
  # patch: the finalizer that keeps a connection while Webhooks use it.
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["bitbucket.hooks.dev"]
  resources: ["webhooks/status", "webhooksets/status", "bitbucketconnections/status"]
  verbs: ["patch"]
# Secrets: read credentials and signing secrets, watch for rotations, create a missing
# signing Secret when secretRef.generate is true. Never update or delete.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.urlFrom.fluxReceivers }}
# urlFrom.receiverRef: read Flux Receivers (their webhookPath), watched to follow them.
- apiGroups: ["notification.toolkit.fluxcd.io"]
  resources: ["receivers"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- if .Values.urlFrom.configMaps }}
# urlFrom.configMapKeyRef: read the ConfigMap that holds a Webhook's URL.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
{{- end }}
{{- end }}
