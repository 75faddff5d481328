package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"
)

// Header is what every scenario's result starts with: which scenario, which build, which
// machine, when. Its JSON fields are inlined into the result's.
type Header struct {
	Scenario  string    `json:"scenario"`
	Version   string    `json:"triarch_version"`
	GoVersion string    `json:"go_version"`
	NumCPU    int       `json:"num_cpu"`
	OS        string    `json:"os"`
	Arch      string    `json:"arch"`
	Started   time.Time `json:"started"`
}

// NewHeader describes a run of scenario by triarch version started at started on this machine.
func NewHeader(scenario, version string, started time.Time) Header {
	return Header{Scenario: scenario, Version: version, GoVersion: runtime.Version(), NumCPU: runtime.NumCPU(),
		OS: runtime.GOOS, Arch: runtime.GOARCH, Started: started.UTC()}
}

// devTarget names the in-process suite in tables.
const devTarget = "in-process dev suite (3 replicas)"

// targetName is the table's target line: the gateway, or the dev suite.
func targetName(dev bool, gateway string) string {
	if dev {
		return devTarget
	}
	return gateway
}

// writeHead prints the lines every table starts with.
func (h Header) writeHead(w io.Writer, target string) {
	fmt.Fprintf(w, "scenario\t%s\n", h.Scenario)
	fmt.Fprintf(w, "target\t%s\n", target)
	fmt.Fprintf(w, "machine\t%d CPU, %s/%s, %s, triarch %s\n", h.NumCPU, h.OS, h.Arch, h.GoVersion, h.Version)
}

// writeJSON writes v, indented, to path.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
