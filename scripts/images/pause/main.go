// Command agentd-pause is the sandbox ("pause") container of the one-node test cluster
// (scripts/kube-node.sh): the first process of every pod, which holds the pod's namespaces while
// the pod's containers come and go. It does nothing but wait for SIGTERM or SIGINT and exit 0.
// Built here because the node reaches no registry (scripts/images.ts puts it in an image).
//
// It does not reap zombies: the kubelet shares no process namespace between a pod's containers
// (shareProcessNamespace is off in every pod of the platform), so none is ever re-parented to it.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
