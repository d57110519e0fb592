package cli

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/edgelb/edgelb/lbctl/client"
	"github.com/edgelb/edgelb/lbctl/output"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// defaultSilentThreshold is how long a tenant's cloud provider may be silent
// before its VIPs count as orphaned: 20 missed heartbeats (every 30 s), well
// past a CCM restart or a leader election of the cluster's control plane.
const defaultSilentThreshold = 10 * time.Minute

const silentThresholdHelp = "a tenant whose cloud provider sent no heartbeat for this long is silent (its VIPs orphaned)"

// tenantView is one tenant as lbctl shows it; field names are stable (-o json).
type tenantView struct {
	Name string `json:"name"`
	// LastSeen is the last heartbeat (RFC 3339); empty when it never sent one.
	LastSeen string `json:"lastSeen,omitempty"`
	// SilentSeconds is how long ago that was, by the answering member's clock.
	SilentSeconds   int64    `json:"silentSeconds,omitempty"`
	Silent          bool     `json:"silent"`
	VirtualServices int      `json:"virtualServices"`
	Pools           []string `json:"pools"`
	// OrphanedServices are the services its cloud provider last reported
	// orphaned (their Kubernetes Service is gone; it has not deleted them).
	OrphanedServices []string `json:"orphanedServices"`
}

// silentFor is how long the tenant has been silent at now (0: never seen).
func silentFor(t *edgelbv1.Tenant, now time.Time) time.Duration {
	if t.GetLastSeen() == nil {
		return 0
	}
	return max(0, now.Sub(t.GetLastSeen().AsTime()))
}

// isSilent mirrors fsm.TenantInfo.Silent: a tenant that never sent a
// heartbeat is not silent (nothing says its cluster is gone).
func isSilent(t *edgelbv1.Tenant, now time.Time, threshold time.Duration) bool {
	return t.GetLastSeen() != nil && silentFor(t, now) >= threshold
}

func viewTenant(t *edgelbv1.Tenant, now time.Time, threshold time.Duration) tenantView {
	v := tenantView{Name: t.GetName(), VirtualServices: int(t.GetVirtualServices()), Pools: t.GetPools(), Silent: isSilent(t, now, threshold)}
	if v.Pools == nil {
		v.Pools = []string{}
	}
	v.OrphanedServices = t.GetOrphanedServices()
	if v.OrphanedServices == nil {
		v.OrphanedServices = []string{}
	}
	if t.GetLastSeen() != nil {
		v.LastSeen = output.Time(t.GetLastSeen())
		v.SilentSeconds = int64(silentFor(t, now).Seconds())
	}
	return v
}

// listTenants asks for the tenants and the server's time (silence is
// measured by lbd's clock, not this host's).
func (a *app) listTenants(cmd *cobra.Command, conn *client.Conn) ([]*edgelbv1.Tenant, time.Time, error) {
	ctx, cancel := a.rpcCtx(cmd)
	defer cancel()
	resp, err := conn.Tenants.ListTenants(ctx, &edgelbv1.ListTenantsRequest{})
	if err != nil {
		return nil, time.Time{}, err
	}
	now := time.Now()
	if resp.GetServerTime() != nil {
		now = resp.GetServerTime().AsTime()
	}
	return resp.GetTenants(), now, nil
}

// orphanReason says why a service of tenant t is orphaned at now, or ""
// when it is not: its tenant's cloud provider is silent (every service of
// it), or the cloud provider, alive, reported the service's Kubernetes
// Service gone. Silence wins: it covers every service of the tenant.
type orphanReason struct {
	// Reason is "tenantSilent" or "serviceGone" (stable, for -o json).
	Reason        string `json:"reason"`
	SilentSeconds int64  `json:"silentSeconds,omitempty"`
}

func (r orphanReason) String() string {
	if r.Reason == "tenantSilent" {
		return "tenant silent " + humanDuration(time.Duration(r.SilentSeconds)*time.Second)
	}
	return "Service gone"
}

// orphanReasons maps tenant → service → why it is orphaned; a silent
// tenant's entry is under the service name "" (all of them).
func orphanReasons(ts []*edgelbv1.Tenant, now time.Time, threshold time.Duration) map[string]map[string]orphanReason {
	out := map[string]map[string]orphanReason{}
	for _, t := range ts {
		m := map[string]orphanReason{}
		if isSilent(t, now, threshold) {
			m[""] = orphanReason{Reason: "tenantSilent", SilentSeconds: int64(silentFor(t, now).Seconds())}
		}
		for _, n := range t.GetOrphanedServices() {
			m[n] = orphanReason{Reason: "serviceGone"}
		}
		if len(m) > 0 {
			out[t.GetName()] = m
		}
	}
	return out
}

// orphanOf returns why vs is orphaned, if it is.
func orphanOf(reasons map[string]map[string]orphanReason, vs *edgelbv1.VirtualService) (orphanReason, bool) {
	m := reasons[vs.GetTenant()]
	if r, ok := m[""]; ok {
		return r, true
	}
	r, ok := m[vs.GetName()]
	return r, ok
}

// humanDuration renders a silence: 45s, 12m, 5h10m, 3d4h.
func humanDuration(d time.Duration) string {
	switch {
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd%dh", int(d.Hours()/24), int(d.Hours())%24)
	}
}

func (a *app) tenantCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "tenant",
		Aliases: []string{"tenants"},
		Short:   "Tenants (a Kubernetes cluster's cloud provider, a project): last contact, VIPs, removal of a gone one",
		Example: `  lbctl tenant list
  lbctl tenant gc cluster-a --dry-run --force`,
	}
	c.AddCommand(a.tenantListCmd(), a.tenantGCCmd())
	return c
}

func (a *app) tenantListCmd() *cobra.Command {
	threshold := defaultSilentThreshold
	c := &cobra.Command{
		Use:   "list",
		Short: "List tenants with their cloud provider's last contact, VIP count and pools",
		Long: `List every tenant that has virtual services or whose cloud provider sent a
heartbeat. LAST SEEN is the last heartbeat (the edgelb cloud provider renews
it every 30 s while it reaches its Kubernetes API server); "never" means none
came (services made with lbctl, or a cloud provider older than heartbeats).
A tenant silent for --silent-threshold or longer is marked SILENT: its
cluster is probably gone, and lbctl tenant gc removes its VIPs. SERVICE GONE
counts the services its cloud provider reported orphaned (their Kubernetes
Service no longer exists; it has not deleted them yet): lbctl vip list
--orphaned names them.`,
		Example: `  lbctl tenant list
  lbctl tenant list --silent-threshold 1h -o json | jq -r '.items[] | select(.silent) | .name'`,
		Args: cobra.NoArgs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			if err := positive("--silent-threshold", threshold); err != nil {
				return err
			}
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ts, now, err := a.listTenants(cmd, conn)
			if err != nil {
				return err
			}
			views := make([]tenantView, 0, len(ts))
			for _, t := range ts {
				views = append(views, viewTenant(t, now, threshold))
			}
			if a.format.Machine() {
				return output.Value(a.stdout, a.format, map[string]any{"items": views})
			}
			tw := output.TableWriter(a.stdout)
			output.Row(tw, "TENANT", "LAST SEEN", "STATUS", "VIRTUAL SERVICES", "SERVICE GONE", "POOLS")
			for i, v := range views {
				seen, st := "never", "-"
				if ts[i].GetLastSeen() != nil {
					seen = humanDuration(silentFor(ts[i], now)) + " ago"
					st = "alive"
				}
				if v.Silent {
					st = "SILENT"
				}
				output.Row(tw, v.Name, seen, st, strconv.Itoa(v.VirtualServices), strconv.Itoa(len(v.OrphanedServices)), orDash(strings.Join(v.Pools, ",")))
			}
			tw.Flush()
			return nil
		}),
	}
	c.Flags().DurationVar(&threshold, "silent-threshold", defaultSilentThreshold, silentThresholdHelp)
	return c
}

func (a *app) tenantGCCmd() *cobra.Command {
	threshold := defaultSilentThreshold
	var dryRun, yes, force bool
	c := &cobra.Command{
		Use:   "gc TENANT",
		Short: "Delete every virtual service of a tenant whose cluster is gone",
		Long: `Delete every virtual service of TENANT and forget its heartbeat, when its
cloud provider has been silent for --silent-threshold or longer. lbd decides
in one replicated command: if the cloud provider's heartbeat lands first, the
tenant is no longer silent and nothing is deleted (exit code 6,
FailedPrecondition), and no half-deleted tenant is left if this command is
interrupted. A tenant that is not silent, or never sent a heartbeat (its
services were made with lbctl), is refused unless --force.

--dry-run lists what would be deleted and changes nothing. Without --yes,
lbctl shows the list and asks for confirmation on a terminal; elsewhere it
exits 2 without deleting. Operators and admins only.`,
		Example: `  lbctl tenant gc cluster-a --dry-run --force
  lbctl tenant gc cluster-a --silent-threshold 1h --yes
  lbctl tenant gc cluster-a --force --yes   # also when it is not silent`,
		Args: cobra.ExactArgs(1),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			return a.completeNames(cmd, args, func() ([]string, error) {
				conn, err := a.client(cmd.Context())
				if err != nil {
					return nil, err
				}
				ts, _, err := a.listTenants(cmd, conn)
				return names(ts, err)
			})
		},
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			if err := positive("--silent-threshold", threshold); err != nil {
				return err
			}
			tenant := args[0]
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			req := &edgelbv1.DeleteTenantServicesRequest{Tenant: tenant, SilentFor: durationpb.New(threshold), Force: force, DryRun: true}
			plan, err := a.deleteTenant(cmd, conn, req)
			if err != nil {
				return err
			}
			if dryRun {
				return a.printTenantGC(tenant, plan, true)
			}
			if !yes {
				if !stdinIsTerminal() {
					a.printTenantGC(tenant, plan, true)
					return usagef("tenant gc deletes %d virtual services of tenant %s; run again with --yes to do it", len(plan.GetServices()), tenant)
				}
				a.printTenantGC(tenant, plan, true)
				fmt.Fprintf(a.stderr, "Delete these %d virtual services of tenant %s? [y/N] ", len(plan.GetServices()), tenant)
				line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
				if ans := strings.ToLower(strings.TrimSpace(line)); ans != "y" && ans != "yes" {
					return usagef("not confirmed; nothing was deleted")
				}
			}
			req.DryRun = false
			done, err := a.deleteTenant(cmd, conn, req)
			if err != nil {
				return err
			}
			return a.printTenantGC(tenant, done, false)
		}),
	}
	c.Flags().DurationVar(&threshold, "silent-threshold", defaultSilentThreshold, "refuse unless the tenant's cloud provider has been silent this long")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "only list what would be deleted")
	c.Flags().BoolVar(&yes, "yes", false, "delete without asking")
	c.Flags().BoolVar(&force, "force", false, "delete also when the tenant is not silent or never sent a heartbeat")
	return c
}

func (a *app) deleteTenant(cmd *cobra.Command, conn *client.Conn, req *edgelbv1.DeleteTenantServicesRequest) (*edgelbv1.DeleteTenantServicesResponse, error) {
	ctx, cancel := a.rpcCtx(cmd)
	defer cancel()
	return conn.Tenants.DeleteTenantServices(ctx, req)
}

func (a *app) printTenantGC(tenant string, resp *edgelbv1.DeleteTenantServicesResponse, preview bool) error {
	if a.format.Machine() {
		return output.Message(a.stdout, a.format, resp)
	}
	seen := "never"
	if resp.GetLastSeen() != nil {
		seen = output.Time(resp.GetLastSeen())
	}
	verb := "deleted"
	if preview {
		verb = "would delete"
	}
	fmt.Fprintf(a.stdout, "tenant %s (last seen %s): %s %d virtual services\n", tenant, seen, verb, len(resp.GetServices()))
	if len(resp.GetServices()) > 0 {
		a.printVIPTable(resp.GetServices(), nil)
	}
	return nil
}

func stdinIsTerminal() bool { return term.IsTerminal(int(os.Stdin.Fd())) }
