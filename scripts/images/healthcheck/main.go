// Command agentd-healthcheck is the health probe of the locally built images, which have no
// shell, curl or wget: it GETs one URL and exits 0 only on a 2xx answer within the timeout, or,
// for a tcp:// URL (a server without HTTP, such as Redis), only when a connection opens.
//
//	agentd-healthcheck http://127.0.0.1:9902/ready
//	agentd-healthcheck tcp://127.0.0.1:6379
//
// With --wait DURATION it tries once a second until the check passes or DURATION is over: what a
// Kubernetes init container runs to hold a workload until a peer it cannot start without answers
// (the rate-limit service exits when Redis does not answer at start).
//
//	agentd-healthcheck --wait 120s tcp://redis.agentd.svc.cluster.local:6379
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	args := os.Args[1:]
	var wait time.Duration
	if len(args) == 3 && args[0] == "--wait" {
		d, err := time.ParseDuration(args[1])
		if err != nil || d <= 0 {
			fmt.Fprintln(os.Stderr, "--wait takes a duration like 120s, not", args[1])
			os.Exit(2)
		}
		wait, args = d, args[2:]
	}
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: agentd-healthcheck [--wait DURATION] URL")
		os.Exit(2)
	}
	deadline := time.Now().Add(wait)
	for {
		err := check(args[0])
		if err == nil {
			return
		}
		if !time.Now().Before(deadline) {
			fmt.Fprintln(os.Stderr, "unhealthy:", err)
			os.Exit(1)
		}
		time.Sleep(time.Second)
	}
}

// check connects (tcp://) or GETs the URL once: nil when it answers as healthy.
func check(url string) error {
	if addr, ok := strings.CutPrefix(url, "tcp://"); ok {
		conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	client := &http.Client{
		Timeout: 3 * time.Second,
		// A probe answers for this process only: never follow a redirect elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
