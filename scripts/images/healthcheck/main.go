// Command agentd-healthcheck is the health probe of the locally built images, which have no
// shell, curl or wget: it GETs one URL and exits 0 only on a 2xx answer within the timeout.
//
//	agentd-healthcheck http://127.0.0.1:9902/ready
package main

import (
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: agentd-healthcheck URL")
		os.Exit(2)
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
