package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const project = "triarch-e2e"

// compose runs docker compose (or docker-compose) for the e2e project.
func compose(t *testing.T, args ...string) string {
	t.Helper()
	bin := strings.Fields(os.Getenv("COMPOSE"))
	if len(bin) == 0 {
		bin = []string{"docker-compose"}
	}
	full := append(append(bin[1:], "-p", project, "-f", "../../docker-compose.yml"), args...)
	cmd := exec.Command(bin[0], full...)
	cmd.Env = append(os.Environ(), "TRIARCH_HTTP_PORT=18080", "TRIARCH_GRPC_PORT=19090")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %v: %s", bin[0], full, out)
	return string(out)
}

const base = "http://127.0.0.1:18080"

type sendResult struct {
	Results []struct {
		Seq         string `json:"seq"`
		ClientMsgID string `json:"client_msg_id"`
		Duplicate   bool   `json:"duplicate"`
	} `json:"results"`
}

// send posts one message; the gateway retries across failovers within its deadline.
func send(channel, id string) (string, error) {
	body := fmt.Sprintf(`{"messages":[{"client_msg_id":%q,"sender":"e2e","payload":"%s"}]}`, id, "aGk=")
	resp, err := http.Post(base+"/v1/channels/"+channel+"/messages", "application/json", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("send %s: %d %s", id, resp.StatusCode, b)
	}
	var r sendResult
	if err := json.Unmarshal(b, &r); err != nil {
		return "", err
	}
	return r.Results[0].Seq, nil
}

func getJSON(t *testing.T, path string, into any) {
	t.Helper()
	resp, err := http.Get(base + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	require.NoError(t, json.NewDecoder(bytes.NewReader(b)).Decode(into))
}

func TestComposeClusterSurvivesAReplicaKill(t *testing.T) {
	if os.Getenv("TRIARCH_E2E") != "1" {
		t.Skip("set TRIARCH_E2E=1 (make e2e) to run the docker-compose test")
	}
	_, _ = exec.Command("sh", "-c", os.Getenv("COMPOSE")+" -p "+project+" -f ../../docker-compose.yml down -v").CombinedOutput()
	compose(t, "up", "-d")
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(compose(t, "logs", "--tail", "40"))
		}
		compose(t, "down", "-v")
	})

	// The cluster forms: the first send may wait for registrations and elections.
	acked := map[string]string{} // client_msg_id -> seq
	deadline := time.Now().Add(90 * time.Second)
	for {
		seq, err := send("e2e", "m-0")
		if err == nil {
			acked["m-0"] = seq
			break
		}
		require.True(t, time.Now().Before(deadline), "the cluster never accepted a send: %v", err)
		time.Sleep(500 * time.Millisecond)
	}
	for i := 1; i < 20; i++ {
		id := fmt.Sprintf("m-%d", i)
		seq, err := send("e2e", id)
		require.NoError(t, err)
		acked[id] = seq
	}

	// Kill the replica that leads the channel, and keep sending.
	var ch struct {
		Channel struct {
			Leader string `json:"leader_node_id"`
		} `json:"channel"`
	}
	getJSON(t, "/v1/channels/e2e", &ch)
	require.NotEqual(t, "0", ch.Channel.Leader)
	compose(t, "kill", "replica-"+ch.Channel.Leader)
	for i := 20; i < 60; i++ {
		id := fmt.Sprintf("m-%d", i)
		var (
			seq string
			err error
		)
		// A failover shows as a delay; a send that outlived the gateway's deadline is retried
		// with the same client_msg_id, which makes the retry safe.
		for attempt := 0; attempt < 10; attempt++ {
			if seq, err = send("e2e", id); err == nil {
				break
			}
			time.Sleep(time.Second)
		}
		require.NoError(t, err)
		acked[id] = seq
	}

	// Every acknowledged message is there exactly once, in order.
	var page struct {
		Messages []struct {
			Seq         string `json:"seq"`
			ClientMsgID string `json:"client_msg_id"`
		} `json:"messages"`
	}
	getJSON(t, "/v1/channels/e2e/messages?from_seq=1&limit=1000", &page)
	require.Len(t, page.Messages, len(acked))
	for i, m := range page.Messages {
		require.Equal(t, fmt.Sprint(i+1), m.Seq)
		require.Equal(t, acked[m.ClientMsgID], m.Seq, m.ClientMsgID)
	}
}
