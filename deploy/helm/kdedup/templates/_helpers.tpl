{{/*
Names and labels.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "kdedup.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every resource name: fullnameOverride, else the release name
(with the chart name unless the release name holds it). The pods are
<fullname>-<ordinal>, and the pod name is kdedup's instance_id: at most 52
characters leave room for the ordinal and for the StatefulSet controller's
revision label (63 characters at most).
*/}}
{{- define "kdedup.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The labels that select the pods: the StatefulSet's, the Services', the PDB's. */}}
{{- define "kdedup.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kdedup.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The labels of every resource. */}}
{{- define "kdedup.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kdedup.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kdedup
{{- end -}}

{{/* The image reference. */}}
{{- define "kdedup.image" -}}
{{- printf "%s:%s" (required "image.repository is required" .Values.image.repository) (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
Where the container finds its files. The ConfigMap and each Secret get a
directory of their own (a mount inside another volume's mount would need
a mount point inside a read-only volume).
*/}}
{{- define "kdedup.configDir" -}}/etc/kdedup/config{{- end -}}
{{- define "kdedup.stateDir" -}}/data{{- end -}}
{{- define "kdedup.saslDir" -}}/etc/kdedup/sasl{{- end -}}
{{- define "kdedup.adminTokenDir" -}}/etc/kdedup/admin-token{{- end -}}
{{- define "kdedup.kafkaTLSDir" -}}/etc/kdedup/kafka-tls{{- end -}}
{{- define "kdedup.adminTLSDir" -}}/etc/kdedup/admin-tls{{- end -}}

{{/*
Secrets: whether each is configured, and the name of the Secret that
holds it (the user's existingSecret, or the one secret.yaml creates from a
value).
*/}}
{{- define "kdedup.saslSecretName" -}}
{{- .Values.kafka.sasl.password.existingSecret | default (printf "%s-sasl" (include "kdedup.fullname" .)) -}}
{{- end -}}

{{- define "kdedup.adminTokenOn" -}}
{{- if or .Values.admin.token.existingSecret .Values.admin.token.value -}}true{{- end -}}
{{- end -}}

{{- define "kdedup.adminTokenSecretName" -}}
{{- .Values.admin.token.existingSecret | default (printf "%s-admin-token" (include "kdedup.fullname" .)) -}}
{{- end -}}

{{- define "kdedup.adminScheme" -}}
{{- if .Values.admin.tls.existingSecret -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}

{{/*
The container's memory, request and limit, in MiB: state.memory plus
memory.headroomPercent.
*/}}
{{- define "kdedup.containerMemoryMiB" -}}
{{- div (mul (int .Values.memory.stateMiB) (add 100 (int .Values.memory.headroomPercent))) 100 -}}
{{- end -}}

{{/*
kdedup's SASL mechanism as KEDA's Kafka scaler names it.
*/}}
{{- define "kdedup.kedaSASL" -}}
{{- $m := upper .Values.kafka.sasl.mechanism -}}
{{- if eq $m "PLAIN" -}}plaintext
{{- else if eq $m "SCRAM-SHA-256" -}}scram_sha256
{{- else if eq $m "SCRAM-SHA-512" -}}scram_sha512
{{- end -}}
{{- end -}}

{{/*
The configuration fields the chart owns, each with the value to set
instead. `config` must not hold them.
*/}}
{{- define "kdedup.managedFields" -}}
brokers: kafka.brokers
group: kafka.group
sasl: kafka.sasl
tls: kafka.tls
instance_id: "nothing: it is the pod name"
state_dir: "nothing: it is /data, the pod's volume"
admin_addr: admin.port
admin_token: "admin.token (a Secret)"
admin_token_file: admin.token
admin_tls: admin.tls
{{- end -}}

{{/*
kdedup.validate fails the render on values that cannot work, naming the
value and the fix. Every template that depends on the values includes it,
so a bad value fails helm template and helm install alike.
*/}}
{{- define "kdedup.validate" -}}
{{- $v := .Values -}}
{{- if not $v.kafka.brokers -}}
{{- fail "kafka.brokers is required: without brokers kdedup starts its embedded single-node broker, which is for trying kdedup, not for a StatefulSet" -}}
{{- end -}}
{{- if not $v.kafka.group -}}
{{- fail "kafka.group is required: it is the consumer group and the prefix of the transactional ids" -}}
{{- end -}}
{{- if lt (int $v.partitions) 1 -}}
{{- fail (printf "partitions must be at least 1 (got %v): set it to the number of partitions the group consumes, the sum over the streams' input topics" $v.partitions) -}}
{{- end -}}
{{- if and (not $v.autoscaling.enabled) (gt (int $v.replicaCount) (int $v.partitions)) -}}
{{- fail (printf "replicaCount (%d) is more than partitions (%d): the group gives each partition to one instance, so instances beyond the partitions sit idle; lower replicaCount, or raise partitions if the topics have more" (int $v.replicaCount) (int $v.partitions)) -}}
{{- end -}}
{{- if and (not $v.autoscaling.enabled) (lt (int $v.replicaCount) 1) -}}
{{- fail (printf "replicaCount must be at least 1 (got %d)" (int $v.replicaCount)) -}}
{{- end -}}
{{- if $v.autoscaling.enabled -}}
{{- if gt (int $v.autoscaling.maxReplicas) (int $v.partitions) -}}
{{- fail (printf "autoscaling.maxReplicas (%d) is more than partitions (%d): instances beyond the partitions the group consumes sit idle; lower autoscaling.maxReplicas, or raise partitions if the topics have more" (int $v.autoscaling.maxReplicas) (int $v.partitions)) -}}
{{- end -}}
{{- if lt (int $v.autoscaling.minReplicas) 1 -}}
{{- fail (printf "autoscaling.minReplicas must be at least 1 (got %d): at zero no instance decides, and the first record after an idle spell waits for a pod to start, join the group and restore" (int $v.autoscaling.minReplicas)) -}}
{{- end -}}
{{- if gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas) -}}
{{- fail (printf "autoscaling.minReplicas (%d) is more than autoscaling.maxReplicas (%d)" (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if lt (int $v.autoscaling.lagThreshold) 1 -}}
{{- fail "autoscaling.lagThreshold must be at least 1" -}}
{{- end -}}
{{- end -}}
{{- if le (int $v.terminationGracePeriodSeconds) (int $v.shutdownBoundSeconds) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be more than shutdownBoundSeconds (%d): kdedup may take that long to stop cleanly on SIGTERM, and a SIGKILL before then aborts its transaction and turns the handover into a crash recovery" (int $v.terminationGracePeriodSeconds) (int $v.shutdownBoundSeconds)) -}}
{{- end -}}
{{- if lt (int $v.memory.stateMiB) 128 -}}
{{- fail (printf "memory.stateMiB must be at least 128 (got %d): kdedup's state.memory minimum" (int $v.memory.stateMiB)) -}}
{{- end -}}
{{- if lt (int $v.memory.headroomPercent) 10 -}}
{{- fail (printf "memory.headroomPercent must be at least 10 (got %d): part of kdedup's memory (Pebble's compactions, the runtime) lives outside Go's limit, and a container limit at state.memory gets the process OOM-killed" (int $v.memory.headroomPercent)) -}}
{{- end -}}
{{- if not (has $v.podAntiAffinity (list "soft" "hard" "none")) -}}
{{- fail (printf "podAntiAffinity must be soft, hard or none, got %q" $v.podAntiAffinity) -}}
{{- end -}}
{{- /* The configuration: the chart's fields stay the chart's. */ -}}
{{- $managed := include "kdedup.managedFields" . | fromYaml -}}
{{- range $field, $instead := $managed -}}
{{- if hasKey ($v.config | default dict) $field -}}
{{- fail (printf "config.%s is set by the chart: set %s instead" $field $instead) -}}
{{- end -}}
{{- end -}}
{{- if hasKey (($v.config | default dict).state | default dict) "memory" -}}
{{- fail "config.state.memory is set by the chart: set memory.stateMiB instead (it sizes the container's memory too)" -}}
{{- end -}}
{{- if not ($v.config | default dict).streams -}}
{{- fail "config.streams is required: at least one stream (name, input, ttl, key), as in docs/configuration.md" -}}
{{- end -}}
{{- /* SASL. */ -}}
{{- $sasl := $v.kafka.sasl -}}
{{- if $sasl.mechanism -}}
{{- if not (has (upper $sasl.mechanism) (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512")) -}}
{{- fail (printf "kafka.sasl.mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got %q" $sasl.mechanism) -}}
{{- end -}}
{{- if not $sasl.username -}}
{{- fail "kafka.sasl.username is required with kafka.sasl.mechanism" -}}
{{- end -}}
{{- if and $sasl.password.existingSecret $sasl.password.value -}}
{{- fail "kafka.sasl.password: set existingSecret or value, not both" -}}
{{- end -}}
{{- if not (or $sasl.password.existingSecret $sasl.password.value) -}}
{{- fail "kafka.sasl.password.existingSecret (the name of a Secret holding the password) is required with kafka.sasl.mechanism, or kafka.sasl.password.value for the chart to create one" -}}
{{- end -}}
{{- if not $sasl.password.key -}}
{{- fail "kafka.sasl.password.key is required: the key of the password in its Secret" -}}
{{- end -}}
{{- else if or $sasl.username $sasl.password.existingSecret $sasl.password.value -}}
{{- fail "kafka.sasl.mechanism is required with a SASL username or password: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512" -}}
{{- end -}}
{{- /* TLS to the brokers. */ -}}
{{- $tls := $v.kafka.tls -}}
{{- if and (not $tls.enabled) (or $tls.existingSecret $tls.serverName $tls.insecureSkipVerify) -}}
{{- fail "kafka.tls.enabled must be true for kafka.tls.existingSecret, serverName or insecureSkipVerify to apply" -}}
{{- end -}}
{{- if ne (empty $tls.certKey) (empty $tls.keyKey) -}}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together: set both (mutual TLS) or neither" -}}
{{- end -}}
{{- if and $tls.existingSecret (not (or $tls.caKey $tls.certKey)) -}}
{{- fail "kafka.tls.existingSecret needs kafka.tls.caKey, or certKey and keyKey: the keys of the files to take from it" -}}
{{- end -}}
{{- if and $tls.certKey (not $tls.existingSecret) -}}
{{- fail "kafka.tls.existingSecret is required with kafka.tls.certKey: the Secret that holds the client certificate and key" -}}
{{- end -}}
{{- /* The admin token and TLS. */ -}}
{{- if and $v.admin.token.existingSecret $v.admin.token.value -}}
{{- fail "admin.token: set existingSecret or value, not both" -}}
{{- end -}}
{{- if and $v.admin.tls.existingSecret (not (and $v.admin.tls.certKey $v.admin.tls.keyKey)) -}}
{{- fail "admin.tls.certKey and admin.tls.keyKey are required with admin.tls.existingSecret" -}}
{{- end -}}
{{- /* The environment: Go's limit and kdedup's fields have one source each. */ -}}
{{- range $v.extraEnv -}}
{{- if eq .name "GOMEMLIMIT" -}}
{{- fail "extraEnv must not set GOMEMLIMIT: kdedup derives Go's memory limit from state.memory (memory.stateMiB); set memory.stateMiB instead" -}}
{{- end -}}
{{- if hasPrefix "KDEDUP_" .name -}}
{{- fail (printf "extraEnv must not set %s: set kdedup's fields under config (or the chart's values for the fields it owns), where the chart checks them" .name) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
kdedup.config is kdedup's configuration file: `config` with the fields the
chart owns set from their values. Secret values never appear in it: the
SASL password and the admin token are files mounted from Secrets
(sasl.password_file, admin_token_file), the SASL user name comes from the
environment (KDEDUP_SASL_USERNAME, where KEDA reads it too), and the
instance id from the pod name (KDEDUP_INSTANCE_ID).
*/}}
{{- define "kdedup.config" -}}
{{- $v := .Values -}}
{{- $c := deepCopy ($v.config | default dict) -}}
{{- $_ := set $c "brokers" $v.kafka.brokers -}}
{{- $_ := set $c "group" $v.kafka.group -}}
{{- $_ := set $c "state_dir" (include "kdedup.stateDir" .) -}}
{{- $_ := set $c "admin_addr" (printf ":%d" (int $v.admin.port)) -}}
{{- $state := deepCopy (get $c "state" | default dict) -}}
{{- $_ := set $state "memory" (printf "%dMiB" (int $v.memory.stateMiB)) -}}
{{- $_ := set $c "state" $state -}}
{{- if $v.kafka.sasl.mechanism -}}
{{- $_ := set $c "sasl" (dict "mechanism" (upper $v.kafka.sasl.mechanism) "password_file" (printf "%s/password" (include "kdedup.saslDir" .))) -}}
{{- end -}}
{{- if $v.kafka.tls.enabled -}}
{{- $t := dict "enabled" true -}}
{{- if and $v.kafka.tls.existingSecret $v.kafka.tls.caKey -}}
{{- $_ := set $t "ca_file" (printf "%s/ca.crt" (include "kdedup.kafkaTLSDir" .)) -}}
{{- end -}}
{{- if $v.kafka.tls.certKey -}}
{{- $_ := set $t "cert_file" (printf "%s/tls.crt" (include "kdedup.kafkaTLSDir" .)) -}}
{{- $_ := set $t "key_file" (printf "%s/tls.key" (include "kdedup.kafkaTLSDir" .)) -}}
{{- end -}}
{{- if $v.kafka.tls.serverName -}}
{{- $_ := set $t "server_name" $v.kafka.tls.serverName -}}
{{- end -}}
{{- if $v.kafka.tls.insecureSkipVerify -}}
{{- $_ := set $t "insecure_skip_verify" true -}}
{{- end -}}
{{- $_ := set $c "tls" $t -}}
{{- end -}}
{{- if include "kdedup.adminTokenOn" . -}}
{{- $_ := set $c "admin_token_file" (printf "%s/token" (include "kdedup.adminTokenDir" .)) -}}
{{- end -}}
{{- if $v.admin.tls.existingSecret -}}
{{- $_ := set $c "admin_tls" (dict "cert_file" (printf "%s/tls.crt" (include "kdedup.adminTLSDir" .)) "key_file" (printf "%s/tls.key" (include "kdedup.adminTLSDir" .))) -}}
{{- end -}}
{{- toYaml $c -}}
{{- end -}}
