# Decision-log masking (OPA config `decision_logs.mask_decision: /agentd/log/mask`): API keys,
# authorization headers and sandbox tokens never reach a decision log.
package agentd.log

mask contains "/input/attributes/request/http/headers/x-api-key"

mask contains "/input/attributes/request/http/headers/authorization"

mask contains "/input/attributes/request/http/headers/x-agentd-sandbox-token"

mask contains "/input/attributes/request/http/headers/cookie"

mask contains "/input/attributes/request/http/headers/proxy-authorization"
