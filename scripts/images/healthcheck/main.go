// Command agentd-healthcheck is the health probe of the locally built images, which have no
// shell, curl or wget: it GETs one URL and exits 0 only on a 2xx answer within the timeout, or,
// for a tcp:// URL (a server without HTTP, such as Redis), only when a connection opens.
//
//	agentd-healthcheck http://127.0.0.1:9902/ready
//	agentd-healthcheck tcp://127.0.0.1:6379
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
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: agentd-healthcheck URL")
		os.Exit(2)
	}
	if addr, ok := strings.CutPrefix(os.Args[1], "tcp://"); ok {
		conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, "unhealthy:", err)
			os.Exit(1)
		}
		conn.Close()
		return
	}
	client := &http.Client{
		Timeout: 3 * time.Second,
		// A probe answers for this process only: never follow a redirect elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Get(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "unhealthy:", err)
		os.Exit(1)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintln(os.Stderr, "unhealthy: status", resp.StatusCode)
		os.Exit(1)
	}
}
