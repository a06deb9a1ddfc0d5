package helm_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kdedup/kdedup/config"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// sigtermBound is kdedup's SIGTERM contract: it exits 0 within this many
// seconds at any moment (docs/operations.md, "Stopping"; the stop itself is
// bounded at 25 s). The pods' grace period must be above it.
const sigtermBound = 30

// uid is the distroless image's nonroot user (Dockerfile).
const uid = 65532

// A renderCase is one values file and what its release must hold.
type renderCase struct {
	values     string // kdedup/ci/NAME, or "" for the defaults
	partitions int32  // the values' partitions
	replicas   int32  // replicaCount, or autoscaling.minReplicas when scaled
	maxScale   int32  // autoscaling.maxReplicas; 0: autoscaling off
	stateMiB   int64  // memory.stateMiB
	limitMiB   int64  // the container's memory: stateMiB + headroomPercent
	created    []string
}

var renderCases = []renderCase{
	{values: "", partitions: 6, replicas: 3, stateMiB: 1024, limitMiB: 1536},
	{values: "full-values.yaml", partitions: 12, replicas: 3, maxScale: 12, stateMiB: 2048, limitMiB: 3072},
	{values: "created-secrets-values.yaml", partitions: 6, replicas: 2, maxScale: 6, stateMiB: 1024, limitMiB: 1536,
		created: []string{"s3cr3t-sasl-password-from-values", "s3cr3t-admin-token-from-values"}},
}

// TestRender renders the chart with each values case, decodes every
// document strictly and checks the release (checkRelease).
func TestRender(t *testing.T) {
	var files []string
	for _, v := range valuesCases(t)[1:] {
		files = append(files, filepath.Base(v))
	}
	for _, f := range files {
		if !slices.ContainsFunc(renderCases, func(c renderCase) bool { return c.values == f }) {
			t.Errorf("%s/ci/%s has no renderCase: add what its release must hold", chartDir, f)
		}
	}
	for _, tc := range renderCases {
		name := tc.values
		var values []string
		if name == "" {
			name = "default"
		} else {
			values = []string{filepath.Join(chartDir, "ci", tc.values)}
		}
		t.Run(name, func(t *testing.T) {
			out, err := template(t, values...)
			if err != nil {
				t.Fatal(err)
			}
			r, err := decodeRelease(out)
			if err != nil {
				t.Fatal(err)
			}
			checkRelease(t, r, tc)
		})
	}
}

// release is a rendered chart, each document decoded into its type.
type release struct {
	configMaps      []*corev1.ConfigMap
	secrets         []*corev1.Secret
	services        []*corev1.Service
	statefulSets    []*appsv1.StatefulSet
	pdbs            []*policyv1.PodDisruptionBudget
	serviceMonitors []*serviceMonitor
	scaledObjects   []*scaledObject
	triggerAuths    []*triggerAuthentication
	// texts are the documents as rendered, by "Kind/name".
	texts map[string]string
}

// kinds maps each kind the chart may render to its apiVersion.
var kinds = map[string]string{
	"ConfigMap":             "v1",
	"Secret":                "v1",
	"Service":               "v1",
	"StatefulSet":           "apps/v1",
	"PodDisruptionBudget":   "policy/v1",
	"ServiceMonitor":        "monitoring.coreos.com/v1",
	"ScaledObject":          "keda.sh/v1alpha1",
	"TriggerAuthentication": "keda.sh/v1alpha1",
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeRelease splits helm template's output into documents and decodes
// each strictly into the type of its kind; a kind not in kinds, an
// apiVersion other than its kind's, or a field the type lacks is an error.
func decodeRelease(out []byte) (*release, error) {
	r := &release{texts: make(map[string]string)}
	for _, doc := range docSep.Split(string(out), -1) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return nil, fmt.Errorf("a document is not YAML: %w\n%s", err, doc)
		}
		if tm.Kind == "" && tm.APIVersion == "" {
			continue // only comments
		}
		want, ok := kinds[tm.Kind]
		if !ok {
			return nil, fmt.Errorf("unexpected kind %q (apiVersion %s):\n%s", tm.Kind, tm.APIVersion, doc)
		}
		if tm.APIVersion != want {
			return nil, fmt.Errorf("%s has apiVersion %q, want %q", tm.Kind, tm.APIVersion, want)
		}
		var obj metav1.Object
		switch tm.Kind {
		case "ConfigMap":
			o := &corev1.ConfigMap{}
			r.configMaps, obj = append(r.configMaps, o), o
		case "Secret":
			o := &corev1.Secret{}
			r.secrets, obj = append(r.secrets, o), o
		case "Service":
			o := &corev1.Service{}
			r.services, obj = append(r.services, o), o
		case "StatefulSet":
			o := &appsv1.StatefulSet{}
			r.statefulSets, obj = append(r.statefulSets, o), o
		case "PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			r.pdbs, obj = append(r.pdbs, o), o
		case "ServiceMonitor":
			o := &serviceMonitor{}
			r.serviceMonitors, obj = append(r.serviceMonitors, o), o
		case "ScaledObject":
			o := &scaledObject{}
			r.scaledObjects, obj = append(r.scaledObjects, o), o
		case "TriggerAuthentication":
			o := &triggerAuthentication{}
			r.triggerAuths, obj = append(r.triggerAuths, o), o
		}
		if err := decodeStrict([]byte(doc), obj); err != nil {
			return nil, fmt.Errorf("%s: %w\n%s", tm.Kind, err, doc)
		}
		key := tm.Kind + "/" + obj.GetName()
		if _, dup := r.texts[key]; dup {
			return nil, fmt.Errorf("%s is rendered twice", key)
		}
		r.texts[key] = doc
	}
	return r, nil
}

// decodeStrict decodes one YAML document into v as the API server would
// read its JSON, except that a field v's type lacks, or a key given twice,
// is an error rather than dropped.
func decodeStrict(doc []byte, v any) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return fmt.Errorf("YAML to JSON: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("strict decode into %T: %w", v, err)
	}
	if dec.More() {
		return fmt.Errorf("strict decode into %T: more than one value", v)
	}
	return nil
}

func TestDecodeStrict(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		into any
		ok   bool
	}{
		{"known fields", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: a}\nspec: {replicas: 3}\n", &appsv1.StatefulSet{}, true},
		{"misspelt field", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: a}\nspec: {replica: 3}\n", &appsv1.StatefulSet{}, false},
		{"misplaced field", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80, path: /metrics}]}\n", &corev1.Service{}, false},
		{"duplicate key", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: a, k: b}\n", &corev1.ConfigMap{}, false},
		{"CRD field the mirror lacks", "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: a}\nspec: {scaleTargetRef: {name: a}, maxReplicas: 3, triggers: []}\n", &scaledObject{}, false},
		{"KEDA metadata not a string", "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: a}\nspec: {scaleTargetRef: {name: a}, triggers: [{type: kafka, metadata: {allowIdleConsumers: false}}]}\n", &scaledObject{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := decodeStrict([]byte(tc.doc), tc.into)
			if (err == nil) != tc.ok {
				t.Fatalf("decodeStrict: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// one returns the only element of s, failing the test if there is not
// exactly one.
func one[T any](t *testing.T, what string, s []T) T {
	t.Helper()
	if len(s) != 1 {
		t.Fatalf("the release holds %d %s, want 1", len(s), what)
	}
	return s[0]
}

// matches reports whether sel selects a set of labels.
func matches(t *testing.T, sel *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("label selector %v: %v", sel, err)
	}
	return !s.Empty() && s.Matches(labels.Set(set))
}

// pod is what the checks need of the StatefulSet's pod template.
type pod struct {
	sts       *appsv1.StatefulSet
	spec      *corev1.PodSpec
	c         *corev1.Container // the kdedup container
	labels    map[string]string
	adminPort int32
	cfg       *config.Config // the configuration the pod loads
	rawCfg    map[string]any // the ConfigMap's file, as written
	// secretFiles maps each file a Secret volume puts into the container
	// to "secret/key".
	secretFiles map[string]string
}

// checkRelease checks what every kdedup release must hold; each group of
// checks is a subtest named for what it checks.
func checkRelease(t *testing.T, r *release, tc renderCase) {
	sts := one(t, "StatefulSets", r.statefulSets)
	spec := &sts.Spec.Template.Spec
	c := one(t, "containers in the pod", spec.Containers)
	p := &pod{sts: sts, spec: spec, c: &c, labels: sts.Spec.Template.Labels, secretFiles: make(map[string]string)}
	for _, port := range c.Ports {
		if port.Name == "admin" {
			p.adminPort = port.ContainerPort
		}
	}
	if p.adminPort == 0 {
		t.Fatalf("the container has no port named admin: %v", c.Ports)
	}
	if !matches(t, sts.Spec.Selector, p.labels) {
		t.Fatalf("the StatefulSet's selector %v does not select its pods' labels %v", sts.Spec.Selector, p.labels)
	}

	t.Run("config loads with kdedup's config package", func(t *testing.T) { loadConfig(t, r, p) })
	if p.cfg == nil {
		t.Fatal("no configuration to check the rest against")
	}
	for _, check := range []struct {
		name string
		fn   func(*testing.T, *release, *pod, renderCase)
	}{
		{"one PVC per pod at state_dir", checkStateVolume},
		{"instance_id is the pod name", checkInstanceID},
		{"grace period above the SIGTERM bound", checkGracePeriod},
		{"probes", checkProbes},
		{"non-root, read-only root file system", checkSecurity},
		{"secrets in Secrets only", checkSecrets},
		{"memory: state.memory, GOMEMLIMIT, limit", checkMemory},
		{"pod disruption budget", checkPDB},
		{"anti-affinity across nodes", checkAntiAffinity},
		{"services and scrape annotations", checkServices},
		{"service monitor", checkServiceMonitor},
		{"replicas and autoscaling", checkScaling},
	} {
		t.Run(check.name, func(t *testing.T) { check.fn(t, r, p, tc) })
	}
}

// loadConfig finds the ConfigMap the container reads its configuration
// from and loads it with kdedup's config.Load as the pod would: with the
// container's environment (KDEDUP_INSTANCE_ID as the first pod's name) and
// the Secret volumes' files present (under a temporary root, the paths in
// the file rewritten to it).
func loadConfig(t *testing.T, r *release, p *pod) {
	args := p.c.Args
	i := slices.Index(args, "--config")
	if len(args) == 0 || args[0] != "run" || i < 0 || i+1 >= len(args) {
		t.Fatalf("the container's args %q are not run --config FILE", args)
	}
	file := args[i+1]
	mounts := make(map[string]corev1.VolumeMount)
	for _, m := range p.c.VolumeMounts {
		mounts[m.Name] = m
	}
	var text string
	root := t.TempDir()
	var rewrite []string
	for _, v := range p.spec.Volumes {
		m, mounted := mounts[v.Name]
		if !mounted {
			t.Errorf("volume %s is not mounted", v.Name)
			continue
		}
		switch {
		case v.ConfigMap != nil:
			dir := m.MountPath + "/"
			if !strings.HasPrefix(file, dir) {
				continue
			}
			key := strings.TrimPrefix(file, dir)
			cm := findByName(t, "ConfigMap", r.configMaps, v.ConfigMap.Name)
			var ok bool
			if text, ok = cm.Data[key]; !ok {
				t.Fatalf("ConfigMap %s has no key %s for --config %s", cm.Name, key, file)
			}
		case v.Secret != nil:
			if len(v.Secret.Items) == 0 {
				t.Errorf("Secret volume %s lists no items: every file kdedup reads must be named", v.Name)
			}
			for _, it := range v.Secret.Items {
				path := m.MountPath + "/" + it.Path
				p.secretFiles[path] = v.Secret.SecretName + "/" + it.Key
				fake := filepath.Join(root, filepath.FromSlash(path))
				if err := os.MkdirAll(filepath.Dir(fake), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(fake, []byte("from-"+it.Key+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			rewrite = append(rewrite, m.MountPath+"/", filepath.ToSlash(root)+m.MountPath+"/")
		}
	}
	if text == "" {
		t.Fatalf("no ConfigMap volume holds --config %s", file)
	}
	if err := yaml.Unmarshal([]byte(text), &p.rawCfg); err != nil {
		t.Fatalf("the configuration is not YAML: %v\n%s", err, text)
	}
	path := filepath.Join(root, "kdedup.yaml")
	if err := os.WriteFile(path, []byte(strings.NewReplacer(rewrite...).Replace(text)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{config.EnvName("instance_id") + "=" + p.sts.Name + "-0"}
	for _, e := range p.c.Env {
		if e.ValueFrom == nil && strings.HasPrefix(e.Name, config.EnvPrefix) {
			env = append(env, e.Name+"="+e.Value)
		}
	}
	cfg, err := config.Load(config.LoadOptions{File: path, Env: env})
	if err != nil {
		t.Fatalf("kdedup's config.Load refuses the rendered configuration:\n%v\n%s", err, text)
	}
	if len(cfg.Ignored) > 0 {
		t.Errorf("the container sets variables kdedup ignores: %v", cfg.Ignored)
	}
	// The file fields back as the pod sees them.
	unroot := func(s *string) {
		if *s != "" {
			*s = strings.TrimPrefix(filepath.ToSlash(*s), filepath.ToSlash(root))
		}
	}
	for _, s := range []*string{&cfg.SASL.PasswordFile, &cfg.AdminTokenFile, &cfg.TLS.CAFile, &cfg.TLS.CertFile,
		&cfg.TLS.KeyFile, &cfg.AdminTLS.CertFile, &cfg.AdminTLS.KeyFile, &cfg.AdminTLS.CAFile} {
		unroot(s)
	}
	if len(cfg.Brokers) == 0 {
		t.Errorf("the configuration has no brokers: kdedup would start its embedded broker")
	}
	if len(cfg.Streams) == 0 {
		t.Errorf("the configuration has no streams")
	}
	p.cfg = cfg
}

// findByName returns the object of s named name.
func findByName[T metav1.Object](t *testing.T, kind string, s []T, name string) T {
	t.Helper()
	for _, o := range s {
		if o.GetName() == name {
			return o
		}
	}
	t.Fatalf("the release has no %s %s", kind, name)
	var zero T
	return zero
}

// checkStateVolume: exactly one volumeClaimTemplate, mounted at state_dir,
// and no pod volume shadowing it (an emptyDir there would lose the state
// on every restart).
func checkStateVolume(t *testing.T, _ *release, p *pod, _ renderCase) {
	claim := one(t, "volumeClaimTemplates", p.sts.Spec.VolumeClaimTemplates)
	var mount *corev1.VolumeMount
	for i, m := range p.c.VolumeMounts {
		if m.Name == claim.Name {
			mount = &p.c.VolumeMounts[i]
		}
	}
	if mount == nil {
		t.Fatalf("the claim template %s is not mounted in the container", claim.Name)
	}
	if mount.MountPath != p.cfg.StateDir {
		t.Errorf("the claim is mounted at %s, but state_dir is %s", mount.MountPath, p.cfg.StateDir)
	}
	if mount.ReadOnly {
		t.Errorf("the state volume is mounted read-only")
	}
	for _, v := range p.spec.Volumes {
		if v.Name == claim.Name {
			t.Errorf("pod volume %s shadows the claim template of the same name", v.Name)
		}
	}
	if q := claim.Spec.Resources.Requests[corev1.ResourceStorage]; q.Sign() <= 0 {
		t.Errorf("the claim template requests no storage")
	}
	if !slices.Contains(claim.Spec.AccessModes, corev1.ReadWriteOnce) {
		t.Errorf("the claim's access modes %v lack ReadWriteOnce", claim.Spec.AccessModes)
	}
	if pol := p.sts.Spec.PersistentVolumeClaimRetentionPolicy; pol == nil || pol.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		t.Errorf("persistentVolumeClaimRetentionPolicy %v: want whenScaled Retain, so that a scaled-in instance's state waits for its return", pol)
	}
}

// checkInstanceID: KDEDUP_INSTANCE_ID comes from the pod's metadata.name,
// the configuration file sets no instance_id of its own, and the
// transactional id is <group>-<pod name>.
func checkInstanceID(t *testing.T, _ *release, p *pod, _ renderCase) {
	name := config.EnvName("instance_id")
	var env *corev1.EnvVar
	for i, e := range p.c.Env {
		if e.Name == name {
			if env != nil {
				t.Fatalf("%s is set twice", name)
			}
			env = &p.c.Env[i]
		}
	}
	if env == nil {
		t.Fatalf("the container does not set %s", name)
	}
	if env.Value != "" || env.ValueFrom == nil || env.ValueFrom.FieldRef == nil || env.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Fatalf("%s = %+v, want valueFrom.fieldRef.fieldPath metadata.name", name, env)
	}
	if _, ok := p.rawCfg["instance_id"]; ok {
		t.Errorf("the configuration file sets instance_id %v: it must be the pod name alone", p.rawCfg["instance_id"])
	}
	if want := p.sts.Name + "-0"; p.cfg.InstanceID != want {
		t.Errorf("the first pod's instance_id is %q, want %q", p.cfg.InstanceID, want)
	}
}

// checkGracePeriod: terminationGracePeriodSeconds is above kdedup's
// SIGTERM bound, and no preStop hook delays the SIGTERM.
func checkGracePeriod(t *testing.T, _ *release, p *pod, _ renderCase) {
	g := p.spec.TerminationGracePeriodSeconds
	if g == nil || *g <= sigtermBound {
		t.Errorf("terminationGracePeriodSeconds %v, want more than kdedup's SIGTERM bound of %d s", g, sigtermBound)
	}
	if p.c.Lifecycle != nil && p.c.Lifecycle.PreStop != nil {
		t.Errorf("a preStop hook delays kdedup's SIGTERM: %+v", p.c.Lifecycle.PreStop)
	}
}

// checkProbes: readiness on /readyz, liveness and startup on /healthz, all
// on the admin port kdedup listens on (admin_addr), over HTTPS exactly
// when admin_tls is on.
func checkProbes(t *testing.T, _ *release, p *pod, _ renderCase) {
	_, port, err := net.SplitHostPort(p.cfg.AdminAddr)
	if err != nil {
		t.Fatalf("admin_addr %q: %v", p.cfg.AdminAddr, err)
	}
	if port != strconv.Itoa(int(p.adminPort)) {
		t.Fatalf("kdedup listens on %s, the container port admin is %d", p.cfg.AdminAddr, p.adminPort)
	}
	scheme := corev1.URISchemeHTTP
	if p.cfg.AdminTLS.On() {
		scheme = corev1.URISchemeHTTPS
	}
	for _, probe := range []struct {
		name string
		pr   *corev1.Probe
		path string
	}{
		{"readinessProbe", p.c.ReadinessProbe, "/readyz"},
		{"livenessProbe", p.c.LivenessProbe, "/healthz"},
		{"startupProbe", p.c.StartupProbe, "/healthz"},
	} {
		if probe.pr == nil || probe.pr.HTTPGet == nil {
			t.Errorf("%s: want an httpGet of %s", probe.name, probe.path)
			continue
		}
		g := probe.pr.HTTPGet
		if g.Path != probe.path {
			t.Errorf("%s: path %s, want %s", probe.name, g.Path, probe.path)
		}
		if g.Port.String() != "admin" && g.Port.IntValue() != int(p.adminPort) {
			t.Errorf("%s: port %s, want the admin port %d", probe.name, g.Port.String(), p.adminPort)
		}
		if g.Scheme != scheme {
			t.Errorf("%s: scheme %s, want %s", probe.name, g.Scheme, scheme)
		}
	}
}

// checkSecurity: the pod runs as the image's non-root user, on a read-only
// root file system with /tmp an emptyDir, without privilege escalation or
// capabilities, under the runtime's seccomp profile, and without a
// service account token.
func checkSecurity(t *testing.T, _ *release, p *pod, _ renderCase) {
	psc, sc := p.spec.SecurityContext, p.c.SecurityContext
	if psc == nil || sc == nil {
		t.Fatalf("pod securityContext %v, container securityContext %v: want both", psc, sc)
	}
	isTrue := func(b *bool) bool { return b != nil && *b }
	show := func(b *bool) string {
		if b == nil {
			return "unset"
		}
		return strconv.FormatBool(*b)
	}
	is := func(v *int64, want int64) bool { return v != nil && *v == want }
	if !isTrue(sc.RunAsNonRoot) || !isTrue(psc.RunAsNonRoot) {
		t.Errorf("runAsNonRoot: pod %s, container %s, want true", show(psc.RunAsNonRoot), show(sc.RunAsNonRoot))
	}
	if !is(sc.RunAsUser, uid) || !is(psc.RunAsUser, uid) {
		t.Errorf("runAsUser: pod %v, container %v, want %d", psc.RunAsUser, sc.RunAsUser, uid)
	}
	if !is(psc.FSGroup, uid) {
		t.Errorf("fsGroup %v, want %d: the state volume must be writable by the user", psc.FSGroup, uid)
	}
	if !isTrue(sc.ReadOnlyRootFilesystem) {
		t.Errorf("readOnlyRootFilesystem %s, want true", show(sc.ReadOnlyRootFilesystem))
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("allowPrivilegeEscalation %s, want false", show(sc.AllowPrivilegeEscalation))
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("capabilities %+v, want drop ALL and add none", sc.Capabilities)
	}
	for _, sp := range []*corev1.SeccompProfile{psc.SeccompProfile, sc.SeccompProfile} {
		if sp == nil || sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("seccompProfile %+v, want RuntimeDefault", sp)
		}
	}
	if a := p.spec.AutomountServiceAccountToken; a == nil || *a {
		t.Errorf("automountServiceAccountToken %s, want false: kdedup calls no Kubernetes API", show(a))
	}
	var tmp bool
	for _, m := range p.c.VolumeMounts {
		if m.MountPath == "/tmp" {
			for _, v := range p.spec.Volumes {
				tmp = tmp || (v.Name == m.Name && v.EmptyDir != nil)
			}
		}
	}
	if !tmp {
		t.Errorf("/tmp is not an emptyDir: the root file system is read-only")
	}
}

// secretish names environment variables that hold secrets.
var secretish = regexp.MustCompile(`(?i)password|token|secret|credential`)

// checkSecrets: the configuration holds no secret value (no
// sasl.password, no admin_token), every file it names is a Secret volume's
// item (not a ConfigMap's), no variable that holds a secret has a literal
// value, and no value of a rendered Secret appears in any other document.
func checkSecrets(t *testing.T, r *release, p *pod, tc renderCase) {
	if sasl, ok := p.rawCfg["sasl"].(map[string]any); ok {
		if _, ok := sasl["password"]; ok {
			t.Errorf("the ConfigMap holds sasl.password")
		}
	}
	if _, ok := p.rawCfg["admin_token"]; ok {
		t.Errorf("the ConfigMap holds admin_token")
	}
	files := map[string]string{
		"sasl.password_file":  p.cfg.SASL.PasswordFile,
		"admin_token_file":    p.cfg.AdminTokenFile,
		"tls.ca_file":         p.cfg.TLS.CAFile,
		"tls.cert_file":       p.cfg.TLS.CertFile,
		"tls.key_file":        p.cfg.TLS.KeyFile,
		"admin_tls.cert_file": p.cfg.AdminTLS.CertFile,
		"admin_tls.key_file":  p.cfg.AdminTLS.KeyFile,
	}
	for field, path := range files {
		if path != "" && p.secretFiles[path] == "" {
			t.Errorf("%s is %s, which no Secret volume provides (Secret files: %v)", field, path, p.secretFiles)
		}
	}
	if p.cfg.SASL.Mechanism != "" && p.cfg.SASL.PasswordFile == "" {
		t.Errorf("SASL %s without sasl.password_file", p.cfg.SASL.Mechanism)
	}
	for _, e := range p.c.Env {
		if secretish.MatchString(e.Name) && (e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
			t.Errorf("%s holds a secret but does not come from a secretKeyRef: %+v", e.Name, e)
		}
	}
	// What the chart put into Secrets stays there.
	var values []string
	for _, s := range r.secrets {
		for k, v := range s.Data {
			if len(v) == 0 {
				t.Errorf("Secret %s: %s is empty", s.Name, k)
				continue
			}
			values = append(values, string(v))
		}
		for k, v := range s.StringData {
			values = append(values, v)
			t.Errorf("Secret %s: %s is in stringData; want data", s.Name, k)
		}
	}
	for _, want := range tc.created {
		if !slices.Contains(values, want) {
			t.Errorf("no rendered Secret holds the value %q given in %s", want, tc.values)
		}
	}
	if len(r.secrets) != len(tc.created) {
		t.Errorf("the release holds %d Secrets, want %d", len(r.secrets), len(tc.created))
	}
	for key, text := range r.texts {
		if strings.HasPrefix(key, "Secret/") {
			continue
		}
		for _, v := range append(values, tc.created...) {
			if strings.Contains(text, v) {
				t.Errorf("%s holds a secret value %q", key, v)
			}
		}
	}
}

// checkMemory: state.memory is the configured size, the container's
// memory request equals its limit and has room above state.memory, and
// GOMEMLIMIT is not set, so that kdedup derives Go's limit, which then
// lies below state.memory.
func checkMemory(t *testing.T, _ *release, p *pod, tc renderCase) {
	mem := int64(p.cfg.State.Memory)
	if want := tc.stateMiB << 20; mem != want {
		t.Errorf("state.memory is %d bytes, want %d MiB", mem, tc.stateMiB)
	}
	limit, request := p.c.Resources.Limits.Memory(), p.c.Resources.Requests.Memory()
	if limit.IsZero() || limit.Cmp(*request) != 0 {
		t.Fatalf("memory request %s, limit %s: want both, equal", request, limit)
	}
	if got, want := limit.Value(), tc.limitMiB<<20; got != want {
		t.Errorf("the container's memory limit is %s, want %d Mi", limit, tc.limitMiB)
	}
	if limit.Value() < mem+mem/10 {
		t.Errorf("the memory limit %s leaves less than 10%% above state.memory %d: what lives outside Go's limit would get the process OOM-killed", limit, mem)
	}
	for _, e := range p.c.Env {
		if e.Name == "GOMEMLIMIT" {
			t.Errorf("GOMEMLIMIT is set (%+v): it would replace kdedup's own derivation from state.memory", e)
		}
	}
	// kdedup's memoryPlan (cmd/kdedup/run.go): Go's limit is 90% of what
	// the block cache and two memtables leave of state.memory, plus the
	// cache and memtables themselves in the image, which is built without
	// cgo (Pebble then allocates them on Go's heap).
	pebble := int64(p.cfg.State.CacheSize) + 2*int64(p.cfg.State.MemtableSize)
	goLimit := max((mem-pebble)/10*9, 64<<20) + pebble
	if goLimit >= mem || goLimit >= limit.Value() {
		t.Errorf("Go's limit %d is not below state.memory %d and the container's limit %d", goLimit, mem, limit.Value())
	}
}

// checkPDB: one PodDisruptionBudget selects the pods and lets at most one
// go at a time.
func checkPDB(t *testing.T, r *release, p *pod, _ renderCase) {
	pdb := one(t, "PodDisruptionBudgets", r.pdbs)
	if !matches(t, pdb.Spec.Selector, p.labels) {
		t.Errorf("the PDB's selector %v does not select the pods %v", pdb.Spec.Selector, p.labels)
	}
	if mu := pdb.Spec.MaxUnavailable; mu == nil || mu.IntValue() != 1 {
		t.Errorf("maxUnavailable %v, want 1", mu)
	}
}

// checkAntiAffinity: the pods repel each other across nodes.
func checkAntiAffinity(t *testing.T, _ *release, p *pod, _ renderCase) {
	a := p.spec.Affinity
	if a == nil || a.PodAntiAffinity == nil {
		t.Fatal("no podAntiAffinity")
	}
	terms := a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	for _, w := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
		terms = append(terms, w.PodAffinityTerm)
	}
	for _, term := range terms {
		if term.TopologyKey == corev1.LabelHostname && matches(t, term.LabelSelector, p.labels) {
			return
		}
	}
	t.Errorf("no anti-affinity term on %s selects the pods: %+v", corev1.LabelHostname, a.PodAntiAffinity)
}

// adminService returns the Service that is not the StatefulSet's headless
// one, checking that there are exactly these two.
func adminService(t *testing.T, r *release, p *pod) (admin, headless *corev1.Service) {
	t.Helper()
	for _, s := range r.services {
		if s.Spec.ClusterIP == corev1.ClusterIPNone {
			if headless != nil {
				t.Fatalf("two headless Services: %s and %s", headless.Name, s.Name)
			}
			headless = s
		} else {
			if admin != nil {
				t.Fatalf("two admin Services: %s and %s", admin.Name, s.Name)
			}
			admin = s
		}
	}
	if admin == nil || headless == nil {
		t.Fatalf("want an admin Service and a headless one, got %d Services", len(r.services))
	}
	return admin, headless
}

// checkServices: the headless Service governs the StatefulSet and lists
// pods ready or not; the admin Service selects the pods, exposes the admin
// port and carries the Prometheus scrape annotations.
func checkServices(t *testing.T, r *release, p *pod, _ renderCase) {
	admin, headless := adminService(t, r, p)
	if p.sts.Spec.ServiceName != headless.Name {
		t.Errorf("the StatefulSet's serviceName is %s, want the headless Service %s", p.sts.Spec.ServiceName, headless.Name)
	}
	if !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("the headless Service leaves restoring pods out of DNS (publishNotReadyAddresses false)")
	}
	scheme := "http"
	if p.cfg.AdminTLS.On() {
		scheme = "https"
	}
	want := map[string]string{
		"prometheus.io/scrape": "true",
		"prometheus.io/port":   strconv.Itoa(int(p.adminPort)),
		"prometheus.io/path":   "/metrics",
		"prometheus.io/scheme": scheme,
	}
	for k, v := range want {
		if got := admin.Annotations[k]; got != v {
			t.Errorf("Service %s: annotation %s is %q, want %q", admin.Name, k, got, v)
		}
	}
	for _, s := range []*corev1.Service{admin, headless} {
		if !matches(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}, p.labels) {
			t.Errorf("Service %s selects %v, not the pods %v", s.Name, s.Spec.Selector, p.labels)
		}
		var ok bool
		for _, port := range s.Spec.Ports {
			ok = ok || (port.Name == "admin" && port.Port == p.adminPort && port.TargetPort.String() == "admin")
		}
		if !ok {
			t.Errorf("Service %s has no port admin %d to the pods' admin port: %+v", s.Name, p.adminPort, s.Spec.Ports)
		}
	}
}

// checkServiceMonitor: when rendered, it selects the admin Service alone
// (the headless one too would scrape every pod twice) and scrapes /metrics
// on the admin port with the admin listener's scheme.
func checkServiceMonitor(t *testing.T, r *release, p *pod, _ renderCase) {
	if len(r.serviceMonitors) == 0 {
		t.Skip("no ServiceMonitor in this release")
	}
	sm := one(t, "ServiceMonitors", r.serviceMonitors)
	admin, headless := adminService(t, r, p)
	if !matches(t, &sm.Spec.Selector, admin.Labels) {
		t.Errorf("the ServiceMonitor's selector %v does not select Service %s %v", sm.Spec.Selector, admin.Name, admin.Labels)
	}
	if matches(t, &sm.Spec.Selector, headless.Labels) {
		t.Errorf("the ServiceMonitor selects the headless Service %s too", headless.Name)
	}
	if ns := sm.Spec.NamespaceSelector; ns == nil || !ns.Any && !slices.Contains(ns.MatchNames, namespace) {
		t.Errorf("the ServiceMonitor's namespaceSelector %+v leaves out the release's namespace %s", ns, namespace)
	}
	ep := one(t, "ServiceMonitor endpoints", sm.Spec.Endpoints)
	scheme := "http"
	if p.cfg.AdminTLS.On() {
		scheme = "https"
	}
	if ep.Port != "admin" || ep.Path != "/metrics" || ep.Scheme != scheme {
		t.Errorf("endpoint %+v, want port admin, path /metrics, scheme %s", ep, scheme)
	}
}

// checkScaling: without autoscaling, replicas is set and at most the
// partitions; with it, the StatefulSet has no replicas (KEDA owns them),
// and the ScaledObject targets the StatefulSet, scales within 1 and the
// partitions by the lag of kdedup's own group on its brokers, never past
// the partitions (allowIdleConsumers false), with the credentials the
// pods use.
func checkScaling(t *testing.T, r *release, p *pod, tc renderCase) {
	if tc.maxScale == 0 {
		if len(r.scaledObjects) > 0 || len(r.triggerAuths) > 0 {
			t.Fatalf("autoscaling is off, but the release holds a ScaledObject or TriggerAuthentication")
		}
		if n := p.sts.Spec.Replicas; n == nil || *n != tc.replicas || *n > tc.partitions {
			t.Errorf("replicas %v, want %d (at most partitions, %d)", n, tc.replicas, tc.partitions)
		}
		return
	}
	if p.sts.Spec.Replicas != nil {
		t.Errorf("the StatefulSet sets replicas %d while KEDA owns the count: every helm upgrade would reset it", *p.sts.Spec.Replicas)
	}
	so := one(t, "ScaledObjects", r.scaledObjects)
	ref := so.Spec.ScaleTargetRef
	if ref.APIVersion != "apps/v1" || ref.Kind != "StatefulSet" || ref.Name != p.sts.Name {
		t.Errorf("scaleTargetRef %+v, want apps/v1 StatefulSet %s", ref, p.sts.Name)
	}
	lo, hi := so.Spec.MinReplicaCount, so.Spec.MaxReplicaCount
	if lo == nil || hi == nil || *lo != tc.replicas || *hi != tc.maxScale {
		t.Fatalf("min/maxReplicaCount %v/%v, want %d/%d", lo, hi, tc.replicas, tc.maxScale)
	}
	if *lo < 1 || *lo > *hi || *hi > tc.partitions {
		t.Errorf("replicas %d to %d: want 1 <= min <= max <= partitions (%d)", *lo, *hi, tc.partitions)
	}
	if a := so.Spec.Advanced; a == nil || a.HorizontalPodAutoscalerConfig == nil || a.HorizontalPodAutoscalerConfig.Behavior == nil ||
		a.HorizontalPodAutoscalerConfig.Behavior.ScaleDown == nil || len(a.HorizontalPodAutoscalerConfig.Behavior.ScaleDown.Policies) == 0 {
		t.Errorf("no scale-down policy: every change of the count moves partitions, scale in slowly")
	}
	trig := one(t, "triggers", so.Spec.Triggers)
	md := trig.Metadata
	want := map[string]string{
		"bootstrapServers":   strings.Join(p.cfg.Brokers, ","),
		"consumerGroup":      p.cfg.Group,
		"allowIdleConsumers": "false",
		"offsetResetPolicy":  "earliest",
	}
	if trig.Type != "kafka" {
		t.Errorf("trigger type %q, want kafka", trig.Type)
	}
	for k, v := range want {
		if md[k] != v {
			t.Errorf("trigger metadata %s is %q, want %q", k, md[k], v)
		}
	}
	if n, err := strconv.Atoi(md["lagThreshold"]); err != nil || n < 1 {
		t.Errorf("lagThreshold %q, want a number of at least 1", md["lagThreshold"])
	}
	sasl := map[string]string{"": "", config.SASLPlain: "plaintext", config.SASLScramSHA256: "scram_sha256", config.SASLScramSHA512: "scram_sha512"}[p.cfg.SASL.Mechanism]
	if md["sasl"] != sasl {
		t.Errorf("trigger sasl %q, want %q for kdedup's %q", md["sasl"], sasl, p.cfg.SASL.Mechanism)
	}
	if tls := map[bool]string{true: "enable"}[p.cfg.TLS.On()]; md["tls"] != tls {
		t.Errorf("trigger tls %q, want %q", md["tls"], tls)
	}
	if trig.AuthenticationRef == nil {
		if sasl != "" || len(r.triggerAuths) > 0 {
			t.Errorf("SASL %q but no authenticationRef", sasl)
		}
		return
	}
	ta := findByName(t, "TriggerAuthentication", r.triggerAuths, trig.AuthenticationRef.Name)
	// Each credential KEDA reads is the Secret item the pods read.
	params := make(map[string]string)
	for _, ref := range ta.Spec.SecretTargetRef {
		params[ref.Parameter] = ref.Name + "/" + ref.Key
	}
	for param, file := range map[string]string{
		"password": p.cfg.SASL.PasswordFile, "ca": p.cfg.TLS.CAFile,
		"cert": p.cfg.TLS.CertFile, "key": p.cfg.TLS.KeyFile,
	} {
		if params[param] != p.secretFiles[file] {
			t.Errorf("KEDA's %s is %q, the pods' %q", param, params[param], p.secretFiles[file])
		}
	}
	if sasl != "" {
		env := one(t, "env parameters", ta.Spec.Env)
		var literal string
		for _, e := range p.c.Env {
			if e.Name == env.Name {
				literal = e.Value
			}
		}
		if env.Parameter != "username" || env.ContainerName != p.c.Name || literal == "" {
			t.Errorf("KEDA's username comes from %+v, which is not a variable of container %s", env, p.c.Name)
		}
	}
}
