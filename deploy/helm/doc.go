// Package helm tests the Helm chart in kdedup/ (deploy/helm/kdedup): it
// has no code of its own, only the chart's tests.
//
// The tests run helm (helm.sh/helm/v3, built once with go install: a
// fresh clone needs only Go) to lint the chart and to render it with the
// default values, with every values file in kdedup/ci, and with every
// testdata/*.bad.yaml, each of which must fail with the message its first
// line names ("# want: ..."). Every rendered document is decoded strictly,
// unknown fields rejected, into the Kubernetes API type of its kind
// (k8s.io/api) or, for the ServiceMonitor, ScaledObject and
// TriggerAuthentication, which k8s.io/api lacks, into structs that mirror
// the fields of their CRDs the chart uses. The tests then check what a
// kdedup deployment needs (see checkRelease), and load the rendered
// configuration with kdedup's own config package as the pod would see it.
//
// The package is a module of its own so that the Kubernetes API types
// stay out of kdedup's dependencies; make test runs it
// (make test-helm). There is no Kubernetes cluster or container engine on
// the machines that run the tests: what a cluster would do with the
// manifests (scheduling, KEDA's scaling, a pod's restart) is not tested
// here.
//
// Environment:
//   - KDEDUP_HELM: a helm binary to use instead of building one;
//   - KDEDUP_HELM_CACHE: the directory the built helm is kept in (make
//     sets the repository's .cache); default: the user's cache directory.
package helm
