package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/edgelb/edgelb/lbctl/output"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/yaml"
)

func (a *app) watchCmd() *cobra.Command {
	var resume uint64
	var allTenants bool
	c := &cobra.Command{
		Use:   "watch",
		Short: "Stream changes to virtual services, pools and members",
		Long: `Stream changes, one line per event, until interrupted or the server ends the
stream. Without --resume (or when that revision is no longer in the member's
history) the stream starts with the complete current state, announced on
stderr as a snapshot. The text line is:

  REVISION TYPE KIND NAME DETAILS [reason=...]

With -o json each event is one line of protojson (an edgelb.v1.Event); with
-o yaml each event is a YAML document. Resume later with --resume set to the
last revision seen.`,
		Example: `  lbctl watch
  lbctl watch --resume 1234 -o json | jq -c 'select(.virtualService)'`,
		Args: cobra.NoArgs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			req := &edgelbv1.WatchRequest{ResumeRevision: resume, Tenant: a.tenant}
			if allTenants {
				req.Tenant = ""
			}
			return a.follow(cmd, req)
		}),
	}
	c.Flags().Uint64Var(&resume, "resume", 0, "continue after this revision")
	c.Flags().BoolVarP(&allTenants, "all-tenants", "A", false, "virtual services of every tenant you may see")
	return c
}

// follow prints the stream. When the member it follows goes away, it
// reconnects (to the first endpoint that answers) and resumes after the last
// revision seen, so a leader failover does not end the watch; it gives up
// when no endpoint answers for --timeout.
func (a *app) follow(cmd *cobra.Command, req *edgelbv1.WatchRequest) error {
	ctx := cmd.Context()
	var lost time.Time
	for {
		err := a.followOnce(cmd, req)
		if err == nil || ctx.Err() != nil {
			return nil // the server ended the stream, or we were interrupted
		}
		if status.Code(err) != codes.Unavailable {
			return err
		}
		if lost.IsZero() {
			lost = time.Now()
		} else if time.Since(lost) > a.timeout {
			return err
		}
		fmt.Fprintf(a.stderr, "# stream lost (%s); reconnecting, resuming after revision %d\n", status.Convert(err).Message(), req.ResumeRevision)
		if a.conn != nil {
			a.conn.Close()
			a.conn = nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// followOnce prints one stream until it ends; req.ResumeRevision tracks
// the last revision seen.
func (a *app) followOnce(cmd *cobra.Command, req *edgelbv1.WatchRequest) error {
	conn, err := a.client(cmd.Context())
	if err != nil {
		return err
	}
	// No --timeout here: a watch runs until interrupted.
	stream, err := conn.Watch.Watch(cmd.Context(), req)
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if resp.GetSnapshot() {
			fmt.Fprintf(a.stderr, "# snapshot of the current state at revision %d (%d objects)\n", resp.GetRevision(), len(resp.GetEvents()))
		}
		for _, ev := range resp.GetEvents() {
			if err := a.printEvent(ev); err != nil {
				return err
			}
		}
		if resp.GetRevision() > req.ResumeRevision {
			req.ResumeRevision = resp.GetRevision()
		}
	}
}

func (a *app) printEvent(ev *edgelbv1.Event) error {
	switch a.format {
	case output.JSON:
		return output.JSONLine(a.stdout, ev)
	case output.YAML:
		b, err := output.MarshalJSON(ev)
		if err != nil {
			return err
		}
		y, err := yaml.JSONToYAML(b)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "---\n%s", y)
		return err
	}
	typ := strings.TrimPrefix(ev.GetType().String(), "EVENT_TYPE_")
	var kind, name, details string
	switch {
	case ev.GetVirtualService() != nil:
		vs := ev.GetVirtualService()
		kind, name = "vip", vs.GetTenant()+"/"+vs.GetName()
		details = fmt.Sprintf("vip=%s ports=%s backends=%s owner=%s gen=%d", orDash(vs.GetVip()), orDash(formatPorts(vs.GetPorts())),
			formatBackendCount(vs.GetBackends()), orDash(vs.GetOwner()), vs.GetGeneration())
	case ev.GetAddressPool() != nil:
		p := ev.GetAddressPool()
		kind, name, details = "pool", p.GetName(), "ranges="+strings.Join(p.GetRanges(), ",")
	case ev.GetMember() != nil:
		m := ev.GetMember()
		kind, name = "member", m.GetId()
		details = fmt.Sprintf("api=%s state=%s", orDash(m.GetApiAddress()), stateName(m.GetState()))
	default:
		kind, name = "unknown", "-"
	}
	line := fmt.Sprintf("%d %s %s %s %s", ev.GetRevision(), typ, kind, name, details)
	if ev.GetReason() != "" {
		line += fmt.Sprintf(" reason=%q", ev.GetReason())
	}
	if r := ev.GetOwnershipReason(); r != edgelbv1.OwnershipReason_OWNERSHIP_REASON_UNSPECIFIED {
		// The enum, for scripts that follow owner changes: the text above is for people.
		line += " ownership=" + strings.ToLower(strings.TrimPrefix(r.String(), "OWNERSHIP_REASON_"))
	}
	_, err := fmt.Fprintln(a.stdout, line)
	return err
}
