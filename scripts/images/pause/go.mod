module agentd.local/pause

go 1.24
