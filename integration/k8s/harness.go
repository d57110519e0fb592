// Package k8se2e runs edgelb's cloud-controller-manager against a real
// kube-apiserver and etcd (built from source by build-k8s-bins.sh) and an lbd
// on loopback. The helpers here are exported so other end-to-end suites (the
// UML data-path test) can start the same pieces and time Service → EXTERNAL-IP.
package k8se2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/edgelb/edgelb/internal/freeport"
)

// Dir is this package's directory (where the scripts are).
func Dir() string {
	_, f, _, _ := runtime.Caller(0)
	return filepath.Dir(f)
}

// RepoRoot is the module root.
func RepoRoot() string { return filepath.Join(Dir(), "..", "..") }

// BuildK8sBins builds (or finds cached) kube-apiserver, etcd and kubectl (not
// with WITH_KUBECTL=0 in the environment) and returns their directory.
func BuildK8sBins(t testing.TB) string {
	t.Helper()
	cmd := exec.Command("bash", filepath.Join(Dir(), "build-k8s-bins.sh"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("building k8s binaries: %v\n%s", err, tail(errb.String(), 3000))
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	dir := lines[len(lines)-1]
	t.Logf("k8s binaries in %s (%s)", dir, time.Since(start).Round(time.Millisecond))
	return dir
}

// GoBuild builds a main package of this module into dir and returns the binary path.
func GoBuild(t testing.TB, dir, pkg, name string) (string, error) {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, tail(string(b), 2000))
	}
	return out, nil
}

// FreePort returns a loopback port that was free a moment ago (see freeport).
func FreePort(t testing.TB) int { return freeport.Loopback(t) }

// StartAPIServer starts etcd and kube-apiserver on loopback in workdir and
// returns a kubeconfig path; both are stopped when the test ends.
func StartAPIServer(t testing.TB, bins, workdir string) string {
	t.Helper()
	// etcd uses the port and the next one (peer): both reserved, or the
	// apiserver's port could be the peer port.
	eport := freeport.LoopbackPair(t)
	aport := FreePort(t)
	t.Cleanup(func() { exec.Command("bash", filepath.Join(Dir(), "stop-cluster.sh"), workdir).Run() })
	cmd := exec.Command("bash", filepath.Join(Dir(), "start-cluster.sh"), bins, workdir, fmt.Sprint(eport), fmt.Sprint(aport))
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("starting apiserver: %v\n%s", err, b)
	}
	t.Logf("%s", strings.TrimSpace(string(b)))
	return filepath.Join(workdir, "kubeconfig")
}

// ServiceAccountKubeconfig applies manifest (ServiceAccount + RBAC) with the
// admin kubeconfig, issues a token for namespace/sa through the TokenRequest
// API (`kubectl create token`; start-cluster.sh runs the apiserver with a
// service-account issuer and signing key) and returns a kubeconfig that
// authenticates as that ServiceAccount alone, so its RBAC is what is enforced.
// It checks that the apiserver sees the token as the ServiceAccount.
func ServiceAccountKubeconfig(t testing.TB, bins, adminKubeconfig, manifest, namespace, sa string) string {
	t.Helper()
	kubectl := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(bins, "kubectl"), append([]string{"--kubeconfig", adminKubeconfig}, args...)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
		return strings.TrimSpace(out.String())
	}
	kubectl("apply", "-f", manifest)
	token := kubectl("create", "token", sa, "-n", namespace, "--duration=2h")
	cfg, err := clientcmd.LoadFromFile(adminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	user := "system:serviceaccount:" + namespace + ":" + sa
	cfg.AuthInfos = map[string]*clientcmdapi.AuthInfo{user: {Token: token}}
	for _, c := range cfg.Contexts {
		c.AuthInfo = user
	}
	path := filepath.Join(filepath.Dir(adminKubeconfig), "kubeconfig-"+sa)
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bins, "kubectl"), "--kubeconfig", path, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != user {
		t.Fatalf("kubectl auth whoami with the ServiceAccount token: %q, %v; want %s", out, err, user)
	}
	return path
}

// Clientset builds a client from a kubeconfig.
func Clientset(t testing.TB, kubeconfig string) *kubernetes.Clientset {
	t.Helper()
	return clientsetFor(t, RestConfig(t, kubeconfig))
}

// RestConfig reads a kubeconfig into a client config.
func RestConfig(t testing.TB, kubeconfig string) *rest.Config {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

func clientsetFor(t testing.TB, rc *rest.Config) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// Start runs a long-lived process with its output in logPath; it is killed
// (its whole process group) when the test ends.
func Start(t testing.TB, logPath, bin string, args ...string) *exec.Cmd {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- %s (tail)\n%s", filepath.Base(logPath), tail(string(b), 4000))
		}
	})
	return cmd
}

// StartCCM runs the edgelb cloud-controller-manager with the given
// controllers (default: the service controller only).
func StartCCM(t testing.TB, bin, kubeconfig, cloudConfig, clusterName, logPath string, controllers ...string) {
	t.Helper()
	StartCCMWith(t, bin, kubeconfig, cloudConfig, clusterName, logPath, nil, controllers...)
}

// StartCCMWith is StartCCM with extra flags (e.g. --concurrent-service-syncs).
func StartCCMWith(t testing.TB, bin, kubeconfig, cloudConfig, clusterName, logPath string, extra []string, controllers ...string) {
	t.Helper()
	if len(controllers) == 0 {
		controllers = []string{"service-lb-controller"}
	}
	args := []string{"--cloud-provider=edgelb", "--cloud-config=" + cloudConfig, "--cluster-name=" + clusterName,
		"--controllers=" + strings.Join(controllers, ","), "--leader-elect=false", "--secure-port=0",
		"--kubeconfig=" + kubeconfig, "--authentication-kubeconfig=" + kubeconfig, "--authorization-kubeconfig=" + kubeconfig,
		"--v=2"}
	Start(t, logPath, bin, append(args, extra...)...)
}

// WaitIngress waits until the Service has an ingress IP and returns them.
func WaitIngress(ctx context.Context, cs kubernetes.Interface, ns, name string) ([]string, error) {
	for {
		s, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && len(s.Status.LoadBalancer.Ingress) > 0 {
			var ips []string
			for _, in := range s.Status.LoadBalancer.Ingress {
				ips = append(ips, in.IP)
			}
			return ips, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for EXTERNAL-IP of %s/%s: %w (last error: %v)", ns, name, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// MeasureServiceToIngress is the benchmark hook: it creates svc and returns
// the time from the create call returning to the EXTERNAL-IP being set, and
// the Service as created (for its UID and node ports).
func MeasureServiceToIngress(ctx context.Context, cs kubernetes.Interface, svc *v1.Service) (time.Duration, *v1.Service, []string, error) {
	created, err := cs.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return 0, nil, nil, fmt.Errorf("creating Service: %w", err)
	}
	start := time.Now()
	ips, err := WaitIngress(ctx, cs, created.Namespace, created.Name)
	return time.Since(start), created, ips, err
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
