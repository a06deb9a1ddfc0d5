// Package admin serves kdedup's operational endpoints on admin_addr:
// /healthz (the process is up), /readyz (consuming, with every assigned
// partition's state restored) and /metrics (Prometheus). Metrics implements
// the consumer's Observer.
package admin
