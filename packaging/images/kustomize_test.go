package images

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	k8se2e "github.com/edgelb/edgelb/integration/k8s"
)

// render runs kubectl kustomize (kustomize as kubectl v1.36 embeds it) on dir.
func render(t *testing.T, kubectl, dir string) []*unstructured.Unstructured {
	t.Helper()
	var stdout, stderr bytes.Buffer
	c := exec.Command(kubectl, "kustomize", dir)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
	}
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(&stdout, 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatalf("decoding kubectl kustomize %s: %v", dir, err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind, namePrefix string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && strings.HasPrefix(o.GetName(), namePrefix) {
			return o
		}
	}
	t.Fatalf("no %s %s* rendered", kind, namePrefix)
	return nil
}

// podSpec returns the Deployment's container ccm and its projected volume's
// sources as "configMap/NAME" and "secret/NAME".
func podSpec(t *testing.T, d *unstructured.Unstructured) (map[string]any, []string) {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	volumes, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "volumes")
	if len(containers) != 1 || len(volumes) != 1 {
		t.Fatalf("Deployment: %d containers, %d volumes; want one of each", len(containers), len(volumes))
	}
	var sources []string
	srcs, _, _ := unstructured.NestedSlice(volumes[0].(map[string]any), "projected", "sources")
	for _, s := range srcs {
		for kind, v := range s.(map[string]any) {
			sources = append(sources, kind+"/"+v.(map[string]any)["name"].(string))
		}
	}
	slices.Sort(sources)
	return containers[0].(map[string]any), sources
}

func envValue(c map[string]any, name string) string {
	env, _, _ := unstructured.NestedSlice(c, "env")
	for _, e := range env {
		if m := e.(map[string]any); m["name"] == name {
			v, _ := m["value"].(string)
			return v
		}
	}
	return ""
}

// TestKustomizeBaseServerSideDryRun (EDGELB_E2E=1) renders the CCM's
// kustomize base (configs/ccm) and the example overlay (configs/ccm-overlay,
// with its operator files made up) with kubectl kustomize, checks what they
// must say (5 service-sync workers, the RBAC the CCM uses, the generated
// cloud-config and TLS Secret mounted under their hashed names, the overlay's
// image digest and cluster name), and applies every object to a real
// kube-apiserver with server-side apply, dryRun=All: the apiserver validates
// and defaults each one and stores none (checked). A Deployment the apiserver
// must refuse goes the same way, so a path that let everything through would
// fail the test.
func TestKustomizeBaseServerSideDryRun(t *testing.T) {
	if os.Getenv("EDGELB_E2E") != "1" {
		t.Skip("set EDGELB_E2E=1 (builds or finds kube-apiserver, etcd and kubectl: integration/k8s/build-k8s-bins.sh)")
	}
	bins := k8se2e.BuildK8sBins(t)
	kubectl := filepath.Join(bins, "kubectl")
	root := k8se2e.RepoRoot()

	base := render(t, kubectl, filepath.Join(root, "configs", "ccm"))
	cloudConfig, err := os.ReadFile(filepath.Join(root, "configs", "ccm", "cloud-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("base", func(t *testing.T) {
		cm := find(t, base, "ConfigMap", "edgelb-cloud-config-")
		if got, _, _ := unstructured.NestedString(cm.Object, "data", "cloud-config.yaml"); got != string(cloudConfig) {
			t.Errorf("ConfigMap %s does not hold configs/ccm/cloud-config.yaml", cm.GetName())
		}
		c, sources := podSpec(t, find(t, base, "Deployment", "edgelb-cloud-controller-manager"))
		if want := []string{"configMap/" + cm.GetName(), "secret/edgelb-ccm-tls"}; !slices.Equal(sources, want) {
			t.Errorf("the config volume projects %v, want %v", sources, want)
		}
		args, _, _ := unstructured.NestedStringSlice(c, "args")
		for _, want := range []string{"--concurrent-service-syncs=5", "--cloud-config=/etc/edgelb/cloud-config.yaml", "--cluster-name=$(EDGELB_CLUSTER_NAME)", "--leader-elect=true"} {
			if !slices.Contains(args, want) {
				t.Errorf("args %q lack %s", args, want)
			}
		}
		if envValue(c, "EDGELB_CLUSTER_NAME") == "" {
			t.Error("no EDGELB_CLUSTER_NAME for --cluster-name")
		}
		rules, _, _ := unstructured.NestedSlice(find(t, base, "ClusterRole", "system:edgelb-cloud-controller-manager").Object, "rules")
		granted := map[string]bool{}
		for _, r := range rules {
			rs, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources")
			vs, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "verbs")
			for _, res := range rs {
				for _, v := range vs {
					granted[res+":"+v] = true
				}
			}
		}
		for _, need := range []string{"services:list", "services:watch", "services:patch", "services/status:patch", "nodes:list", "nodes:watch",
			"events:create", "events:patch", "leases:get", "leases:create", "leases:update"} {
			if !granted[need] {
				t.Errorf("the ClusterRole does not grant %s", need)
			}
		}
	})

	// The overlay as an operator has it: the base beside it, their files in it.
	work := t.TempDir()
	for _, d := range []string{"ccm", "ccm-overlay"} {
		if out, err := exec.Command("cp", "-r", filepath.Join(root, "configs", d), work).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
	}
	mine := strings.Replace(string(cloudConfig), "10.0.0.11:7700", "10.0.0.21:7700", 1)
	files := map[string]string{"cloud-config.yaml": mine, "ca.crt": "CA PEM\n", "tls.crt": "CERT PEM\n", "tls.key": "KEY PEM\n"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(work, "ccm-overlay", name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	overlay := render(t, kubectl, filepath.Join(work, "ccm-overlay"))
	t.Run("overlay", func(t *testing.T) {
		cm := find(t, overlay, "ConfigMap", "edgelb-cloud-config-")
		if got, _, _ := unstructured.NestedString(cm.Object, "data", "cloud-config.yaml"); got != mine {
			t.Errorf("the overlay's ConfigMap does not hold the overlay's cloud-config.yaml")
		}
		sec := find(t, overlay, "Secret", "edgelb-ccm-tls-")
		data, _, _ := unstructured.NestedStringMap(sec.Object, "data")
		if keys := slices.Sorted(func(yield func(string) bool) {
			for k := range data {
				if !yield(k) {
					return
				}
			}
		}); !slices.Equal(keys, []string{"ca.crt", "tls.crt", "tls.key"}) {
			t.Errorf("Secret keys %v", keys)
		}
		c, sources := podSpec(t, find(t, overlay, "Deployment", "edgelb-cloud-controller-manager"))
		if want := []string{"configMap/" + cm.GetName(), "secret/" + sec.GetName()}; !slices.Equal(sources, want) {
			t.Errorf("the config volume projects %v, want %v", sources, want)
		}
		if img := c["image"]; img != "registry.example.internal/edgelb/edgelb-cloud-controller-manager@sha256:0000000000000000000000000000000000000000000000000000000000000000" {
			t.Errorf("image %v: the overlay's digest was not set", img)
		}
		if v := envValue(c, "EDGELB_CLUSTER_NAME"); v != "prod-eu1" {
			t.Errorf("EDGELB_CLUSTER_NAME %q, want the overlay's prod-eu1", v)
		}
	})

	kc := k8se2e.StartAPIServer(t, bins, filepath.Join(t.TempDir(), "k8s"))
	rc, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := restmapper.GetAPIGroupResources(k8se2e.Clientset(t, kc).Discovery())
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resource := func(o *unstructured.Unstructured) dynamic.ResourceInterface {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(schema.GroupKind{Group: gvk.Group, Kind: gvk.Kind}, gvk.Version)
		if err != nil {
			t.Fatalf("%s %s: %v", gvk.Kind, o.GetName(), err)
		}
		if o.GetNamespace() != "" {
			return dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		return dyn.Resource(m.Resource)
	}
	dryApply := func(o *unstructured.Unstructured) error {
		_, err := resource(o).Apply(ctx, o.GetName(), o, metav1.ApplyOptions{
			FieldManager: "edgelb-install-test", Force: true, DryRun: []string{metav1.DryRunAll}})
		return err
	}
	for _, set := range []struct {
		name string
		objs []*unstructured.Unstructured
	}{{"base", base}, {"overlay", overlay}} {
		t.Run("server-side dry run of the "+set.name, func(t *testing.T) {
			for _, o := range set.objs {
				if err := dryApply(o); err != nil {
					t.Errorf("%s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
					continue
				}
				// dryRun=All validated it and stored nothing.
				if _, err := resource(o).Get(ctx, o.GetName(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Errorf("%s %s after a dry run: %v, want NotFound", o.GetKind(), o.GetName(), err)
				}
			}
			t.Logf("%d objects accepted by kube-apiserver (server-side apply, dryRun=All)", len(set.objs))
		})
	}
	t.Run("a Deployment the apiserver must refuse is refused", func(t *testing.T) {
		bad := find(t, overlay, "Deployment", "edgelb-cloud-controller-manager").DeepCopy()
		if err := unstructured.SetNestedField(bad.Object, int64(-1), "spec", "replicas"); err != nil {
			t.Fatal(err)
		}
		err := dryApply(bad)
		if !apierrors.IsInvalid(err) {
			t.Fatalf("replicas: -1 gave %v, want Invalid", err)
		}
		t.Logf("refused as it should be: %v", err)
	})
}
