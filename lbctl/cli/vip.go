package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgelb/edgelb/lbctl/output"
	"github.com/edgelb/edgelb/lbctl/spec"
	"github.com/edgelb/edgelb/lbctl/wait"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func (a *app) vipCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "vip",
		Aliases: []string{"vips", "virtualservice", "vs"},
		Short:   "Manage virtual services (a VIP with its ports and backends)",
		Example: `  lbctl vip create web --port tcp/80:30080 --backend 10.0.0.11 --backend 10.0.0.12
  lbctl vip list
  lbctl vip get web -o yaml`,
	}
	c.AddCommand(a.vipCreateCmd(), a.vipGetCmd(), a.vipStatsCmd(), a.vipListCmd(), a.vipUpdateCmd(), a.vipDeleteCmd(), a.vipMoveCmd())
	return c
}

// vipFlags are the spec flags shared by create and update.
type vipFlags struct {
	vip, pool, family                          string
	ports, backends, sourceRanges, labels      []string
	scheduler, mode, persistence               string
	check, healthPath                          string
	healthPort, rise, fall                     uint32
	healthInterval, healthTimeout, waitTimeout time.Duration
	sharingKey, pin                            string
	wait                                       bool
}

func (f *vipFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.vip, "vip", "", "the VIP address (IPv4 or IPv6); omit to allocate one from a pool")
	fs.StringVar(&f.pool, "pool", "", "address pool to allocate the VIP from")
	fs.StringVar(&f.family, "family", "", "family of the VIP to allocate: ipv4|ipv6 (default ipv6 when every --backend is IPv6, else ipv4)")
	fs.StringArrayVar(&f.ports, "port", nil, "port, repeatable: "+spec.PortSyntax)
	fs.StringArrayVar(&f.backends, "backend", nil, "backend, repeatable: "+spec.BackendSyntax)
	fs.StringVar(&f.scheduler, "scheduler", "", "IPVS scheduler: mh|rr|wrr|lc|wlc|sh (server default mh; a bgp pool takes only mh; only mh and sh keep a connection opened just before a takeover, see docs/OPERATIONS.md)")
	fs.StringVar(&f.mode, "mode", "", "forwarding mode: nat|dr (server default nat, dr in a bgp pool, which takes only dr)")
	fs.StringVar(&f.persistence, "persistence", "", "client-IP affinity timeout, e.g. 3h or 10800 (seconds); 0 disables")
	fs.StringVar(&f.check, "health-check", "", "health check type: tcp|sctp|http|https|none")
	fs.Uint32Var(&f.healthPort, "health-port", 0, "port to probe (default: the backend's port)")
	fs.StringVar(&f.healthPath, "health-path", "", "HTTP(S) path to probe (default /)")
	fs.DurationVar(&f.healthInterval, "health-interval", 0, "time between probes, e.g. 2s")
	fs.DurationVar(&f.healthTimeout, "health-timeout", 0, "time limit of one probe, e.g. 1s")
	fs.Uint32Var(&f.rise, "rise", 0, "consecutive successes before a backend is healthy")
	fs.Uint32Var(&f.fall, "fall", 0, "consecutive failures before a backend is unhealthy")
	fs.StringArrayVar(&f.sourceRanges, "source-range", nil, "client CIDR allowed to reach the VIP, repeatable or comma-separated (default: all)")
	fs.StringArrayVar(&f.labels, "label", nil, "label, repeatable: "+spec.LabelSyntax+" (on update, KEY- removes a label)")
	fs.StringVar(&f.sharingKey, "sharing-key", "", "services with the same key may share one VIP on distinct ports")
	fs.StringVar(&f.pin, "pin", "", "member that must own the VIP (empty: the leader chooses)")
	fs.BoolVar(&f.wait, "wait", false, "wait until a member owns (serves) the VIP; progress goes to stderr")
	fs.DurationVar(&f.waitTimeout, "wait-timeout", 60*time.Second, "time limit of --wait")
}

// apply sets on vs the fields whose flags were given. On update, a list flag
// replaces the whole list; labels are merged (KEY- removes).
func (f *vipFlags) apply(fs *pflag.FlagSet, vs *edgelbv1.VirtualService, update bool) error {
	// Checked before anything is sent: a write must not happen when its
	// --wait could only fail at once.
	if err := positive("--wait-timeout", f.waitTimeout); err != nil {
		return err
	}
	if changed(fs, "vip") {
		vs.Vip = f.vip
	}
	if changed(fs, "pool") {
		vs.Pool = f.pool
	}
	if changed(fs, "family") {
		v, err := spec.ParseFamily(f.family)
		if err != nil {
			return usagef("--family: %w", err)
		}
		vs.IpFamily = v
	}
	if changed(fs, "port") {
		vs.Ports = nil
		for _, s := range f.ports {
			p, err := spec.ParsePort(s)
			if err != nil {
				return usagef("--port: %w", err)
			}
			vs.Ports = append(vs.Ports, p)
		}
	}
	if changed(fs, "backend") {
		bs, err := parseBackends(f.backends)
		if err != nil {
			return err
		}
		vs.Backends = bs
		// A new VIP of IPv6 backends is an IPv6 VIP: the API's default
		// family is IPv4, which would only refuse them.
		if !update && !changed(fs, "family") && !changed(fs, "vip") && allIPv6(bs) {
			vs.IpFamily = edgelbv1.IPFamily_IP_FAMILY_IPV6
		}
	}
	if changed(fs, "scheduler") {
		v, err := spec.ParseScheduler(f.scheduler)
		if err != nil {
			return usagef("--scheduler: %w", err)
		}
		vs.Scheduler = v
	}
	if changed(fs, "mode") {
		v, err := spec.ParseMode(f.mode)
		if err != nil {
			return usagef("--mode: %w", err)
		}
		vs.ForwardingMode = v
	}
	if changed(fs, "persistence") {
		secs, err := spec.ParsePersistence(f.persistence)
		if err != nil {
			return usagef("--persistence: %w", err)
		}
		vs.Persistence = nil
		if secs > 0 {
			vs.Persistence = &edgelbv1.Persistence{TimeoutSeconds: secs}
		}
	}
	if err := f.applyHealth(fs, vs); err != nil {
		return err
	}
	if changed(fs, "source-range") {
		vs.SourceRanges = splitList(strings.Join(f.sourceRanges, ","))
	}
	if changed(fs, "label") {
		if err := applyLabels(vs, f.labels, update); err != nil {
			return err
		}
	}
	if changed(fs, "sharing-key") {
		vs.SharingKey = f.sharingKey
	}
	if changed(fs, "pin") {
		vs.PinnedMember = f.pin
	}
	return nil
}

func (f *vipFlags) applyHealth(fs *pflag.FlagSet, vs *edgelbv1.VirtualService) error {
	names := []string{"health-check", "health-port", "health-path", "health-interval", "health-timeout", "rise", "fall"}
	any := false
	for _, n := range names {
		any = any || changed(fs, n)
	}
	if !any {
		return nil
	}
	hc := vs.HealthCheck
	if hc == nil {
		hc = &edgelbv1.HealthCheck{}
		vs.HealthCheck = hc
	}
	if changed(fs, "health-check") {
		v, err := spec.ParseHealthCheck(f.check)
		if err != nil {
			return usagef("--health-check: %w", err)
		}
		hc.Type = v
	}
	if changed(fs, "health-port") {
		if f.healthPort > 65535 {
			return usagef("--health-port %d: want a port in 1-65535 (0: the backend's port)", f.healthPort)
		}
		hc.Port = f.healthPort
	}
	if changed(fs, "health-path") {
		hc.Path = f.healthPath
	}
	if changed(fs, "health-interval") {
		hc.Interval = durationpb.New(f.healthInterval)
	}
	if changed(fs, "health-timeout") {
		hc.Timeout = durationpb.New(f.healthTimeout)
	}
	if changed(fs, "rise") {
		hc.Rise = f.rise
	}
	if changed(fs, "fall") {
		hc.Fall = f.fall
	}
	return nil
}

func applyLabels(vs *edgelbv1.VirtualService, in []string, update bool) error {
	if vs.Labels == nil {
		vs.Labels = map[string]string{}
	}
	for _, item := range in {
		for _, pair := range strings.Split(item, ",") {
			if update && strings.HasSuffix(pair, "-") && !strings.Contains(pair, "=") {
				delete(vs.Labels, strings.TrimSuffix(pair, "-"))
				continue
			}
			k, v, err := spec.ParseLabel(pair)
			if err != nil {
				return usagef("--label: %w", err)
			}
			vs.Labels[k] = v
		}
	}
	return nil
}

// allIPv6 reports whether bs is not empty and every backend's address is
// IPv6 (an unparsable one is left to the server to refuse).
func allIPv6(bs []*edgelbv1.Backend) bool {
	for _, b := range bs {
		a, err := netip.ParseAddr(b.GetAddress())
		if err != nil || !a.Is6() || a.Is4In6() {
			return false
		}
	}
	return len(bs) > 0
}

func parseBackends(in []string) ([]*edgelbv1.Backend, error) {
	var out []*edgelbv1.Backend
	for _, s := range in {
		b, err := spec.ParseBackend(s)
		if err != nil {
			return nil, usagef("--backend: %w", err)
		}
		out = append(out, b)
	}
	return out, nil
}

// registerCompletions offers the enum values of the spec flags.
func (f *vipFlags) registerCompletions(c *cobra.Command) {
	fixed := func(flag string, vals ...string) {
		c.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(vals, cobra.ShellCompDirectiveNoFileComp))
	}
	fixed("family", "ipv4", "ipv6")
	fixed("scheduler", "mh", "rr", "wrr", "lc", "wlc", "sh")
	fixed("mode", "nat", "dr")
	fixed("health-check", "tcp", "sctp", "http", "https", "none")
	fixed("port", "tcp/", "udp/", "sctp/")
}

func (a *app) vipCreateCmd() *cobra.Command {
	var f vipFlags
	c := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a virtual service",
		Long: `Create a virtual service. Without --vip the server allocates an address from
--pool, or from a pool the tenant may use. With --wait, lbctl returns once a
member owns (serves) the VIP.

A pool in bgp mode (its MODE in lbctl pool list) has every member serve its
VIPs at once (ECMP), which works only with --scheduler mh and --mode dr: there
they are the defaults, and any other scheduler, or --mode nat, is refused
(FailedPrecondition, exit 6, reason BGP_POOL_NEEDS_MH_DR). Direct routing
cannot change ports, so give --port without :BACKEND_PORT, or use a pool in
l2 mode.`,
		Example: `  # A web service on an allocated IPv4 address, NodePort 30080 on three nodes:
  lbctl vip create web --port tcp/80:30080 --backend 10.0.0.11 --backend 10.0.0.12 --backend 10.0.0.13 --wait

  # A fixed VIP, HTTP health checks, client affinity for 3 hours:
  lbctl vip create api --vip 192.0.2.10 --port tcp/443:30443 --backend 10.0.0.11,weight=2 \
      --health-check http --health-path /healthz --health-port 30256 --persistence 3h

  # DNS over UDP and TCP from an IPv6 pool, direct routing (which cannot
  # change ports: the backends answer on port 53 themselves):
  lbctl vip create dns --pool v6 --family ipv6 --port udp/53 --port tcp/53 --mode dr`,
		Args: cobra.ExactArgs(1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			vs := &edgelbv1.VirtualService{Name: args[0], Tenant: a.tenant}
			if err := f.apply(cmd.Flags(), vs, false); err != nil {
				return err
			}
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.VirtualServices.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: vs})
			if err != nil {
				return err
			}
			return a.finishWrite(cmd, resp.GetService(), "created", f)
		}),
	}
	f.register(c.Flags())
	f.registerCompletions(c)
	return c
}

// finishWrite waits for an owner when asked, then prints the service.
func (a *app) finishWrite(cmd *cobra.Command, vs *edgelbv1.VirtualService, verb string, f vipFlags) error {
	if f.wait && vs.GetOwner() == "" {
		conn, err := a.client(cmd.Context())
		if err != nil {
			return err
		}
		tenant := pick(vs.GetTenant(), a.tenant)
		got, err := wait.ForOwner(cmd.Context(), conn.VirtualServices, conn.Watch, tenant, vs.GetName(), f.waitTimeout, a.stderr)
		if err != nil {
			// The write itself succeeded: say so, so a script does not retry it.
			fmt.Fprintf(a.stderr, "virtualservice %s/%s %s (generation %d), but not yet served\n", vs.GetTenant(), vs.GetName(), verb, vs.GetGeneration())
			return err
		}
		vs = got
	}
	if a.format.Machine() {
		return output.Message(a.stdout, a.format, vs)
	}
	fmt.Fprintf(a.stdout, "virtualservice %s/%s %s: vip %s, generation %d", vs.GetTenant(), vs.GetName(), verb, orDash(vs.GetVip()), vs.GetGeneration())
	if vs.GetOwner() != "" {
		fmt.Fprintf(a.stdout, ", owner %s", vs.GetOwner())
	}
	fmt.Fprintln(a.stdout)
	return nil
}

func (a *app) getVIP(cmd *cobra.Command, name string) (*edgelbv1.VirtualService, error) {
	conn, err := a.client(cmd.Context())
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.rpcCtx(cmd)
	defer cancel()
	resp, err := conn.VirtualServices.GetVirtualService(ctx, &edgelbv1.GetVirtualServiceRequest{Tenant: a.tenant, Name: name})
	if err != nil {
		return nil, err
	}
	return resp.GetService(), nil
}

func (a *app) vipGetCmd() *cobra.Command {
	var stats bool
	c := &cobra.Command{
		Use:   "get NAME",
		Short: "Show one virtual service, with live traffic per backend",
		Long: `Show one virtual service: its spec, owner, backends with their health, and
live traffic per port and backend (connections, rates, bytes) read from the
IPVS table of the member that owns it. -o json|yaml prints the stored service
only; lbctl vip stats NAME -o json gives the traffic in machine form.`,
		Example: `  lbctl vip get web
  lbctl vip get web -o json | jq -r .vip
  lbctl vip get web --tenant cluster-a -o yaml`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVIPs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			vs, err := a.getVIP(cmd, args[0])
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.Message(a.stdout, a.format, vs)
			}
			printVIPDetail(a.stdout, vs)
			if stats && vs.GetOwner() != "" {
				st, err := a.serviceStats(cmd, args[0], "")
				fmt.Fprintln(a.stdout, "Traffic:")
				if err != nil {
					fmt.Fprintf(a.stdout, "  unavailable: %s\n", status.Convert(err).Message())
					return nil
				}
				printServiceStats(a.stdout, st, "  ")
			}
			return nil
		}),
	}
	c.Flags().BoolVar(&stats, "stats", true, "read live traffic from the owner's kernel (--stats=false skips it)")
	return c
}

func (a *app) serviceStats(cmd *cobra.Command, name, member string) (*edgelbv1.GetServiceStatsResponse, error) {
	conn, err := a.client(cmd.Context())
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.rpcCtx(cmd)
	defer cancel()
	return conn.VirtualServices.GetServiceStats(ctx, &edgelbv1.GetServiceStatsRequest{Tenant: a.tenant, Name: name, Member: member})
}

func (a *app) vipStatsCmd() *cobra.Command {
	var member string
	c := &cobra.Command{
		Use:   "stats NAME",
		Short: "Live traffic of a virtual service, per port and backend, from the kernel",
		Long: `Read a virtual service's IPVS counters: per port and per backend the
connections (total, active, inactive), connections per second and bytes in and
out (totals and per second; IPVS's estimator updates rates every 2 s). They
come from the owner's kernel, the one carrying the traffic; --member reads a
standby's instead (its counters show only connections synced to it).`,
		Example: `  lbctl vip stats web
  lbctl vip stats web -o json | jq '.ports[].backends[] | {address, activeConnections}'
  lbctl vip stats web --member edge2`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVIPs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			st, err := a.serviceStats(cmd, args[0], member)
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.Message(a.stdout, a.format, st)
			}
			printServiceStats(a.stdout, st, "")
			return nil
		}),
	}
	c.Flags().StringVar(&member, "member", "", "read this member's kernel instead of the owner's")
	return c
}

func printServiceStats(w io.Writer, st *edgelbv1.GetServiceStatsResponse, indent string) {
	fmt.Fprintf(w, "%sfrom %s at %s\n", indent, st.GetMember(), output.Time(st.GetTime()))
	tw := output.TableWriter(w)
	output.Row(tw, indent+"PORT", "BACKEND", "WEIGHT", "ACTIVE", "INACTIVE", "CONNECTIONS", "CONN/S", "BYTES IN", "BYTES OUT", "IN/S", "OUT/S")
	for _, p := range st.GetPorts() {
		port := strings.ToLower(strings.TrimPrefix(p.GetProtocol().String(), "PROTOCOL_")) + "/" + strconv.FormatUint(uint64(p.GetPort()), 10)
		c := p.GetCounters()
		var active, inactive uint64
		for _, b := range p.GetBackends() {
			active += uint64(b.GetActiveConnections())
			inactive += uint64(b.GetInactiveConnections())
		}
		output.Row(tw, indent+port, "(all)", "-", u64(active), u64(inactive), u64(c.GetConnections()), u64(c.GetConnectionsPerSecond()),
			u64(c.GetBytesIn()), u64(c.GetBytesOut()), u64(c.GetBytesInPerSecond()), u64(c.GetBytesOutPerSecond()))
		for _, b := range p.GetBackends() {
			bc := b.GetCounters()
			addr := b.GetAddress()
			if strings.Contains(addr, ":") {
				addr = "[" + addr + "]"
			}
			output.Row(tw, indent+"", addr+":"+strconv.FormatUint(uint64(b.GetPort()), 10), strconv.FormatUint(uint64(b.GetWeight()), 10),
				strconv.FormatUint(uint64(b.GetActiveConnections()), 10), strconv.FormatUint(uint64(b.GetInactiveConnections()), 10),
				u64(bc.GetConnections()), u64(bc.GetConnectionsPerSecond()), u64(bc.GetBytesIn()), u64(bc.GetBytesOut()),
				u64(bc.GetBytesInPerSecond()), u64(bc.GetBytesOutPerSecond()))
		}
	}
	tw.Flush()
}

func printVIPDetail(w io.Writer, vs *edgelbv1.VirtualService) {
	tw := output.TableWriter(w)
	kv := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, orDash(v)) }
	kv("Name", vs.GetName())
	kv("Tenant", vs.GetTenant())
	kv("VIP", vs.GetVip())
	kv("Pool", vs.GetPool())
	kv("Owner", vs.GetOwner())
	kv("Pinned member", vs.GetPinnedMember())
	kv("Ports", formatPorts(vs.GetPorts()))
	kv("Scheduler", spec.SchedulerName(vs.GetScheduler()))
	kv("Forwarding", spec.ModeName(vs.GetForwardingMode()))
	if t := vs.GetPersistence().GetTimeoutSeconds(); t > 0 {
		kv("Persistence", (time.Duration(t) * time.Second).String())
	} else {
		kv("Persistence", "off")
	}
	kv("Health check", formatHealth(vs.GetHealthCheck()))
	switch {
	case vs.GetDenyAllSources():
		kv("Source ranges", "none: every client denied")
	case len(vs.GetSourceRanges()) == 0:
		kv("Source ranges", "all")
	default:
		kv("Source ranges", strings.Join(vs.GetSourceRanges(), ","))
	}
	kv("Labels", formatLabels(vs.GetLabels()))
	kv("Sharing key", vs.GetSharingKey())
	kv("Generation", strconv.FormatUint(vs.GetGeneration(), 10))
	kv("Created", output.Time(vs.GetCreateTime()))
	kv("Updated", output.Time(vs.GetUpdateTime()))
	tw.Flush()
	fmt.Fprintln(w, "Backends:")
	printBackends(w, vs.GetBackends(), "  ")
}

func printBackends(w io.Writer, bs []*edgelbv1.Backend, indent string) {
	if len(bs) == 0 {
		fmt.Fprintln(w, indent+"(none)")
		return
	}
	tw := output.TableWriter(w)
	output.Row(tw, indent+"ADDRESS", "PORT", "WEIGHT", "STATE", "HEALTH", "LAST ERROR")
	for _, b := range bs {
		port := "-"
		if b.GetPort() != 0 {
			port = strconv.FormatUint(uint64(b.GetPort()), 10)
		}
		weight := uint64(b.GetWeight())
		if weight == 0 {
			weight = 1
		}
		state := "active"
		if b.GetDrained() {
			state = "drained"
		}
		output.Row(tw, indent+b.GetAddress(), port, strconv.FormatUint(weight, 10), state,
			healthName(b.GetHealth().GetState()), b.GetHealth().GetLastError())
	}
	tw.Flush()
}

func healthName(s edgelbv1.BackendHealthState) string {
	switch s {
	case edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY:
		return "healthy"
	case edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY:
		return "unhealthy"
	default:
		return "unknown"
	}
}

func formatHealth(hc *edgelbv1.HealthCheck) string {
	if hc == nil {
		return "tcp (defaults)"
	}
	parts := []string{spec.HealthCheckName(hc.GetType())}
	if hc.GetPort() != 0 {
		parts = append(parts, fmt.Sprintf("port=%d", hc.GetPort()))
	}
	if hc.GetPath() != "" {
		parts = append(parts, "path="+hc.GetPath())
	}
	if hc.GetInterval() != nil {
		parts = append(parts, "interval="+hc.GetInterval().AsDuration().String())
	}
	if hc.GetTimeout() != nil {
		parts = append(parts, "timeout="+hc.GetTimeout().AsDuration().String())
	}
	if hc.GetRise() != 0 {
		parts = append(parts, fmt.Sprintf("rise=%d", hc.GetRise()))
	}
	if hc.GetFall() != 0 {
		parts = append(parts, fmt.Sprintf("fall=%d", hc.GetFall()))
	}
	return strings.Join(parts, " ")
}

func formatPorts(ps []*edgelbv1.Port) string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, spec.FormatPort(p))
	}
	return strings.Join(out, ",")
}

func formatLabels(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + l[k]
	}
	return strings.Join(keys, ",")
}

func formatBackendCount(bs []*edgelbv1.Backend) string {
	drained := 0
	for _, b := range bs {
		if b.GetDrained() {
			drained++
		}
	}
	if drained > 0 {
		return fmt.Sprintf("%d (%d drained)", len(bs), drained)
	}
	return strconv.Itoa(len(bs))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (a *app) vipListCmd() *cobra.Command {
	var selector []string
	var pool, vip string
	var allTenants, orphaned bool
	threshold := defaultSilentThreshold
	c := &cobra.Command{
		Use:   "list",
		Short: "List virtual services",
		Long: `List virtual services of the tenant (--tenant), or of every tenant you may
see (--all-tenants). --orphaned lists, of every tenant unless --tenant is
given, exactly the services of tenants whose cloud provider has been silent
for --silent-threshold or longer (VIPs of a Kubernetes cluster that is gone:
lbctl tenant gc removes them), and the services a live cloud provider
reported orphaned because their Kubernetes Service no longer exists (its
deletes fail, or its sweep has not deleted them yet). The ORPHANED column
(-o json/yaml: "orphaned") says which.`,
		Example: `  lbctl vip list
  lbctl vip list -l app=web,env=prod -o wide
  lbctl vip list --all-tenants --pool public
  lbctl vip list --vip 192.0.2.10 -o json | jq -r '.items[].name'
  lbctl vip list --orphaned --silent-threshold 1h`,
		Args: cobra.NoArgs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			labels, err := spec.ParseLabels(selector)
			if err != nil {
				return usagef("--selector: %w", err)
			}
			req := &edgelbv1.ListVirtualServicesRequest{Tenant: a.tenant, Labels: labels, Pool: pool, Vip: vip}
			if allTenants || orphaned && !changed(cmd.Flags(), "tenant") {
				req.Tenant = ""
			}
			if err := positive("--silent-threshold", threshold); err != nil {
				return err
			}
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			var reasons map[string]map[string]orphanReason
			if orphaned {
				ts, now, err := a.listTenants(cmd, conn)
				if err != nil {
					return err
				}
				reasons = orphanReasons(ts, now, threshold)
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.VirtualServices.ListVirtualServices(ctx, req)
			if err != nil {
				return err
			}
			items := resp.GetServices()
			if orphaned {
				var keep []*edgelbv1.VirtualService
				for _, vs := range items {
					if _, ok := orphanOf(reasons, vs); ok {
						keep = append(keep, vs)
					}
				}
				items = keep
			}
			sort.SliceStable(items, func(i, j int) bool {
				if items[i].GetTenant() != items[j].GetTenant() {
					return items[i].GetTenant() < items[j].GetTenant()
				}
				return items[i].GetName() < items[j].GetName()
			})
			if a.format.Machine() {
				if orphaned {
					return a.printOrphanedList(items, reasons)
				}
				return output.List(a.stdout, a.format, items)
			}
			a.printVIPTable(items, reasons)
			return nil
		}),
	}
	c.Flags().StringArrayVarP(&selector, "selector", "l", nil, "only services with these labels: "+spec.LabelSyntax)
	c.Flags().StringVar(&pool, "pool", "", "only services whose VIP comes from this pool")
	c.Flags().StringVar(&vip, "vip", "", "only services on this VIP")
	c.Flags().BoolVarP(&allTenants, "all-tenants", "A", false, "list every tenant you may see")
	c.Flags().BoolVar(&orphaned, "orphaned", false, "only orphaned services: of tenants whose cloud provider is silent, or whose Kubernetes Service is gone (every tenant unless --tenant)")
	c.Flags().DurationVar(&threshold, "silent-threshold", defaultSilentThreshold, silentThresholdHelp)
	return c
}

// printOrphanedList is -o json/yaml of vip list --orphaned: each service
// as usual, with "orphaned" saying why ({"reason": "tenantSilent",
// "silentSeconds": N} or {"reason": "serviceGone"}).
func (a *app) printOrphanedList(items []*edgelbv1.VirtualService, reasons map[string]map[string]orphanReason) error {
	raw := make([]json.RawMessage, 0, len(items))
	for _, vs := range items {
		b, err := output.MarshalJSON(vs)
		if err != nil {
			return err
		}
		r, _ := orphanOf(reasons, vs)
		rb, err := json.Marshal(r)
		if err != nil {
			return err
		}
		// Appended to the service's own object, so its fields keep their order.
		sep := ","
		if len(b) == 2 {
			sep = ""
		}
		raw = append(raw, json.RawMessage(string(b[:len(b)-1])+sep+`"orphaned":`+string(rb)+"}"))
	}
	return output.Value(a.stdout, a.format, map[string]any{"items": raw})
}

// printVIPTable prints services; with reasons (vip list --orphaned) an
// ORPHANED column says why each is.
func (a *app) printVIPTable(items []*edgelbv1.VirtualService, reasons map[string]map[string]orphanReason) {
	tw := output.TableWriter(a.stdout)
	wide := a.format == output.Wide
	head := []string{"TENANT", "NAME", "VIP", "PORTS", "BACKENDS", "OWNER", "AGE"}
	if reasons != nil {
		head = append(head, "ORPHANED")
	}
	if wide {
		head = append(head, "POOL", "SCHEDULER", "MODE", "GEN", "LABELS")
	}
	output.Row(tw, head...)
	now := time.Now()
	for _, vs := range items {
		row := []string{vs.GetTenant(), vs.GetName(), vs.GetVip(), formatPorts(vs.GetPorts()),
			formatBackendCount(vs.GetBackends()), vs.GetOwner(), output.Age(vs.GetCreateTime(), now)}
		if reasons != nil {
			r, _ := orphanOf(reasons, vs)
			row = append(row, r.String())
		}
		if wide {
			row = append(row, vs.GetPool(), spec.SchedulerName(vs.GetScheduler()), spec.ModeName(vs.GetForwardingMode()),
				strconv.FormatUint(vs.GetGeneration(), 10), formatLabels(vs.GetLabels()))
		}
		output.Row(tw, row...)
	}
	tw.Flush()
}

func (a *app) vipUpdateCmd() *cobra.Command {
	var f vipFlags
	var ifGen uint64
	c := &cobra.Command{
		Use:   "update NAME",
		Short: "Change a virtual service (only the fields whose flags are given)",
		Long: `Change a virtual service. lbctl reads it, changes the fields whose flags are
given and writes it back with the generation it read: if someone else changed
it in between, the update is refused (exit code 6) and nothing changes; run the
command again. --port, --backend and --source-range replace their whole list;
--label adds or changes labels and KEY- removes one.`,
		Example: `  lbctl vip update web --scheduler wrr --backend 10.0.0.11,weight=3 --backend 10.0.0.12
  lbctl vip update web --label env=prod --label old-
  lbctl vip update web --persistence 0 --if-generation 7`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVIPs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			vs, err := a.getVIP(cmd, args[0])
			if err != nil {
				return err
			}
			read := vs.GetGeneration()
			upd := proto.Clone(vs).(*edgelbv1.VirtualService)
			if err := f.apply(cmd.Flags(), upd, true); err != nil {
				return err
			}
			expected := read
			if changed(cmd.Flags(), "if-generation") {
				expected = ifGen
			}
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.VirtualServices.UpdateVirtualService(ctx, &edgelbv1.UpdateVirtualServiceRequest{Service: upd, ExpectedGeneration: expected})
			if err != nil {
				return conflictHint(err, args[0], expected)
			}
			return a.finishWrite(cmd, resp.GetService(), "updated", f)
		}),
	}
	f.register(c.Flags())
	f.registerCompletions(c)
	c.Flags().Uint64Var(&ifGen, "if-generation", 0, "update only if the stored generation is this one (default: the generation just read)")
	return c
}

// conflictHint explains an Aborted write, keeping its code for the exit status.
func conflictHint(err error, name string, gen uint64) error {
	if status.Code(err) != codes.Aborted {
		return err
	}
	return status.Errorf(codes.Aborted, "conflict: %s was changed by someone else since generation %d (%s); nothing was changed, run the command again",
		name, gen, status.Convert(err).Message())
}

func (a *app) vipDeleteCmd() *cobra.Command {
	var ifGen uint64
	c := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a virtual service and release its VIP",
		Example: `  lbctl vip delete web
  lbctl vip delete web --if-generation 4   # only if nobody changed it since generation 4`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVIPs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.VirtualServices.DeleteVirtualService(ctx, &edgelbv1.DeleteVirtualServiceRequest{Tenant: a.tenant, Name: args[0], ExpectedGeneration: ifGen})
			if err != nil {
				return conflictHint(err, args[0], ifGen)
			}
			if a.format.Machine() {
				return output.Message(a.stdout, a.format, resp)
			}
			fmt.Fprintf(a.stdout, "virtualservice %s/%s deleted\n", a.tenant, args[0])
			return nil
		}),
	}
	c.Flags().Uint64Var(&ifGen, "if-generation", 0, "delete only if the stored generation is this one")
	return c
}

// completeVIPs offers the tenant's service names for shell completion.
func (a *app) completeVIPs(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	return a.completeNames(cmd, args, func() ([]string, error) {
		conn, err := a.client(cmd.Context())
		if err != nil {
			return nil, err
		}
		ctx, cancel := a.rpcCtx(cmd)
		defer cancel()
		resp, err := conn.VirtualServices.ListVirtualServices(ctx, &edgelbv1.ListVirtualServicesRequest{Tenant: a.tenant})
		return names(resp.GetServices(), err)
	})
}
