// Command edgelb-cloud-controller-manager is the upstream cloud-controller-manager
// with the edgelb provider registered: run it with --cloud-provider=edgelb
// --cloud-config=FILE (see configs/ccm/).
package main

import (
	"maps"
	"os"

	"k8s.io/apimachinery/pkg/util/wait"
	k8scloud "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	"k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	"k8s.io/cloud-provider/options"
	"k8s.io/component-base/cli"
	cliflag "k8s.io/component-base/cli/flag"
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/klog/v2"

	"github.com/edgelb/edgelb/cloudprovider"
)

func main() {
	cloudprovider.Register()
	opts, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		klog.Fatalf("initializing options: %v", err)
	}
	// Upstream's controllers, but the service controller's Service informer
	// keeps its handlers, so that the provider can re-queue Services that
	// failed while lbd was unreachable the moment lbd answers again instead
	// of after up to 300 s of backoff (cloudprovider/resync.go).
	ctors := maps.Clone(app.DefaultInitFuncConstructors)
	sc := ctors[names.ServiceLBController]
	sc.Constructor = cloudprovider.StartServiceController
	ctors[names.ServiceLBController] = sc
	cmd := app.NewCloudControllerManagerCommand(opts, initCloud, ctors,
		names.CCMControllerAliases(), cliflag.NamedFlagSets{}, wait.NeverStop)
	os.Exit(cli.Run(cmd))
}

func initCloud(c *config.CompletedConfig) k8scloud.Interface {
	cc := c.ComponentConfig.KubeCloudShared.CloudProvider
	cloud, err := k8scloud.InitCloudProvider(cc.Name, cc.CloudConfigFile)
	if err != nil {
		klog.Fatalf("initializing cloud provider %q: %v", cc.Name, err)
	}
	if cloud == nil {
		klog.Fatalf("cloud provider %q is unknown; this binary serves --cloud-provider=%s", cc.Name, cloudprovider.ProviderName)
	}
	return cloud
}
