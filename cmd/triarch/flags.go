package main

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/tlsx"
)

// commonFlags are the flags every service takes (docs/ARCHITECTURE.md, "The contract"), plus logging.
type commonFlags struct {
	process.Common
	tls       tlsx.Files
	logLevel  string
	logFormat string
}

// addCommonFlags registers the common flags with the service's default ports.
func addCommonFlags(fs *pflag.FlagSet, c *commonFlags, listen, admin string) {
	fs.Uint64Var(&c.NodeID, "node-id", 1, "this node's id in its tier (positive, unique per tier)")
	fs.StringVar(&c.Listen, "listen", listen, "gRPC address to listen on (host:port; port 0 picks one)")
	fs.StringVar(&c.Advertise, "advertise", "", "address peers dial to reach this node (default: the bound --listen address)")
	fs.StringVar(&c.DataDir, "data-dir", "", "directory for this node's data (default ./triarch-data/<service>-<node-id>)")
	fs.StringSliceVar(&c.Arbiters, "arbiters", []string{"127.0.0.1:7400"}, "comma-separated gRPC addresses of the arbiter members")
	fs.StringVar(&c.AdminAddr, "admin-addr", admin, "address of /healthz, /readyz, /metrics (and /debug/pprof/ with --pprof)")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve Go's profiles at /debug/pprof/ on --admin-addr (off by default: they expose the process's internals)")
	addTLSFlags(fs, &c.tls)
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
}

// addTLSFlags registers --tls-ca, --tls-cert and --tls-key.
func addTLSFlags(fs *pflag.FlagSet, f *tlsx.Files) {
	fs.StringVar(&f.CA, "tls-ca", "", "PEM file of the cluster's CA; with --tls-cert and --tls-key every gRPC connection is mutual TLS "+
		"and plaintext is refused (files are read again when they change; `triarch certs init` makes them)")
	fs.StringVar(&f.Cert, "tls-cert", "", "PEM file of this node's certificate, naming spiffe://triarch/<role>/<node-id>")
	fs.StringVar(&f.Key, "tls-key", "", "PEM file of this node's private key")
}

// resolve fills defaults that depend on other flags.
func (c *commonFlags) resolve(service string) (process.Common, slog.Level, error) {
	out := c.Common
	if out.DataDir == "" {
		out.DataDir = fmt.Sprintf("./triarch-data/%s-%d", service, out.NodeID)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.logLevel)); err != nil {
		return out, lvl, fmt.Errorf("--log-level %q: %w", c.logLevel, err)
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return out, lvl, fmt.Errorf("--log-format %q: want text or json", c.logFormat)
	}
	return out, lvl, nil
}

// parsePeers parses "1=host:port,2=host:port" into a member map.
func parsePeers(s string) (map[uint64]string, error) {
	peers := make(map[uint64]string)
	if strings.TrimSpace(s) == "" {
		return peers, nil
	}
	for _, part := range strings.Split(s, ",") {
		idStr, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("peer %q: want id=host:port", part)
		}
		id, err := strconv.ParseUint(idStr, 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("peer %q: id must be a positive integer", part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("peer %q: %w", part, err)
		}
		if _, dup := peers[id]; dup {
			return nil, fmt.Errorf("peer id %d given twice", id)
		}
		peers[id] = addr
	}
	return peers, nil
}
