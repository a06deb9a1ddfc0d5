package helm_test

import (
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The custom resources the chart renders have no types in k8s.io/api, and
// their projects' Go API modules pull in controller-runtime and much of
// Kubernetes. These structs mirror, with the same JSON names, the fields of
// their CRDs that the chart may set (or lets the user set through values),
// so that a strict decode rejects a misspelt or misplaced field as it does
// for the built-in kinds. A field the chart starts to use must be added
// here, from the CRD, before the tests accept it.

// serviceMonitor is a Prometheus Operator ServiceMonitor
// (monitoring.coreos.com/v1).
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              serviceMonitorSpec `json:"spec"`
}

type serviceMonitorSpec struct {
	Selector          metav1.LabelSelector       `json:"selector"`
	NamespaceSelector *monitoringNamespaceSelect `json:"namespaceSelector,omitempty"`
	Endpoints         []monitoringEndpoint       `json:"endpoints"`
	JobLabel          string                     `json:"jobLabel,omitempty"`
}

type monitoringNamespaceSelect struct {
	Any        bool     `json:"any,omitempty"`
	MatchNames []string `json:"matchNames,omitempty"`
}

type monitoringEndpoint struct {
	Port          string               `json:"port,omitempty"`
	Path          string               `json:"path,omitempty"`
	Scheme        string               `json:"scheme,omitempty"`
	Interval      string               `json:"interval,omitempty"`
	ScrapeTimeout string               `json:"scrapeTimeout,omitempty"`
	TLSConfig     *monitoringTLSConfig `json:"tlsConfig,omitempty"`
}

// monitoringTLSConfig is the operator's TLSConfig, as far as a Secret- or
// ConfigMap-based configuration goes.
type monitoringTLSConfig struct {
	CA                 *monitoringSecretOrConfigMap `json:"ca,omitempty"`
	Cert               *monitoringSecretOrConfigMap `json:"cert,omitempty"`
	KeySecret          *corev1.SecretKeySelector    `json:"keySecret,omitempty"`
	ServerName         string                       `json:"serverName,omitempty"`
	InsecureSkipVerify bool                         `json:"insecureSkipVerify,omitempty"`
}

type monitoringSecretOrConfigMap struct {
	Secret    *corev1.SecretKeySelector    `json:"secret,omitempty"`
	ConfigMap *corev1.ConfigMapKeySelector `json:"configMap,omitempty"`
}

// scaledObject is a KEDA ScaledObject (keda.sh/v1alpha1).
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              scaledObjectSpec `json:"spec"`
}

type scaledObjectSpec struct {
	ScaleTargetRef  kedaScaleTarget `json:"scaleTargetRef"`
	PollingInterval *int32          `json:"pollingInterval,omitempty"`
	CooldownPeriod  *int32          `json:"cooldownPeriod,omitempty"`
	MinReplicaCount *int32          `json:"minReplicaCount,omitempty"`
	MaxReplicaCount *int32          `json:"maxReplicaCount,omitempty"`
	Advanced        *kedaAdvanced   `json:"advanced,omitempty"`
	Triggers        []kedaTrigger   `json:"triggers"`
}

type kedaScaleTarget struct {
	Name                   string `json:"name"`
	APIVersion             string `json:"apiVersion,omitempty"`
	Kind                   string `json:"kind,omitempty"`
	EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
}

type kedaAdvanced struct {
	HorizontalPodAutoscalerConfig *kedaHPAConfig `json:"horizontalPodAutoscalerConfig,omitempty"`
	RestoreToOriginalReplicaCount bool           `json:"restoreToOriginalReplicaCount,omitempty"`
}

type kedaHPAConfig struct {
	Name     string                                         `json:"name,omitempty"`
	Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
}

// kedaTrigger is one trigger; KEDA reads its metadata as strings, so a
// number or a boolean there is a decoding error here too.
type kedaTrigger struct {
	Type              string            `json:"type"`
	Name              string            `json:"name,omitempty"`
	UseCachedMetrics  bool              `json:"useCachedMetrics,omitempty"`
	MetricType        string            `json:"metricType,omitempty"`
	Metadata          map[string]string `json:"metadata"`
	AuthenticationRef *kedaAuthRef      `json:"authenticationRef,omitempty"`
}

type kedaAuthRef struct {
	Name string `json:"name"`
	Kind string `json:"kind,omitempty"`
}

// triggerAuthentication is a KEDA TriggerAuthentication (keda.sh/v1alpha1).
type triggerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              triggerAuthenticationSpec `json:"spec"`
}

type triggerAuthenticationSpec struct {
	SecretTargetRef []kedaSecretTargetRef `json:"secretTargetRef,omitempty"`
	Env             []kedaAuthEnv         `json:"env,omitempty"`
}

type kedaSecretTargetRef struct {
	Parameter string `json:"parameter"`
	Name      string `json:"name"`
	Key       string `json:"key"`
}

type kedaAuthEnv struct {
	Parameter     string `json:"parameter"`
	Name          string `json:"name"`
	ContainerName string `json:"containerName,omitempty"`
}
