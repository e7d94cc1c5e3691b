module agentd.local/healthcheck

go 1.24
