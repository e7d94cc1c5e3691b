// The egress proxy's LLM usage meter: a Lua filter that reads the token usage an LLM API reports
// in its response (one JSON body, or server-sent events when streamed) as the body passes
// through, unbuffered, and writes it to dynamic metadata (LLM_USAGE_NS). From there the global
// rate limit charges it to the sandbox's token budget when the stream ends (../ratelimit.ts),
// and an access logger counts it as the OpenTelemetry GenAI metric gen_ai.client.token.usage.

import type { LlmApi } from '../../../policy/spec.ts';
import { LLM_USAGE_KEYS, LLM_USAGE_NS } from '../ratelimit.ts';
import { EXT_AUTHZ_NS } from './common.ts';
import { TYPE, ext, typed, type TypedConfig, type TypedExtension } from './model.ts';

/** The tokens counted, by OpenTelemetry's GenAI name in the egress scope. */
const TOKEN_USAGE_METRIC = 'gen_ai.client.token.usage';
const TOKEN_USAGE_SCOPE = 'egress';
/** How Prometheus reads it from Envoy's stats (scope and name, dots as underscores). */
export const TOKEN_USAGE_PROMETHEUS_NAME = `envoy_${TOKEN_USAGE_SCOPE}_${TOKEN_USAGE_METRIC.replaceAll('.', '_')}`;
/** Its labels. */
export const TOKEN_USAGE_TAGS = {
  type: 'gen_ai_token_type',
  provider: 'gen_ai_provider_name',
  model: 'gen_ai_response_model',
  service: 'service',
  tier: 'tier',
} as const;

/**
 * The meter's Lua source for one API. It scans each body chunk (with the tail of the one before,
 * so a field split between chunks is still seen) for the usage fields of `api`, keeping the
 * largest value of each: a streamed response repeats or accumulates them (Anthropic's
 * message_delta carries the running output count; OpenAI's last chunk the totals). Only JSON
 * keys match: a key inside a string value is escaped (\"input_tokens\") and is not one.
 * A successful response without a usage report (an OpenAI stream without
 * stream_options.include_usage) is charged an estimate of its size in tokens (bytes / 4), marked
 * `estimated`, so that no call is free.
 */
function usageMeterLua(api: LlmApi): string {
  const input = api === 'openai' ? ['prompt_tokens', 'input_tokens'] : ['input_tokens', 'cache_creation_input_tokens', 'cache_read_input_tokens'];
  const output = api === 'openai' ? ['completion_tokens', 'output_tokens'] : ['output_tokens'];
  const table = (keys: string[]) => `{ ${keys.map((k) => `${k} = true`).join(', ')} }`;
  return [
    `local INPUT = ${table(input)}`,
    `local OUTPUT = ${table(output)}`,
    'local TAIL = 256',
    'function envoy_on_response(handle)',
    '  local seen, bytes, carry, model = {}, 0, "", nil',
    '  for chunk in handle:bodyChunks() do',
    '    local n = chunk:length()',
    '    bytes = bytes + n',
    '    local text = carry .. chunk:getBytes(0, n)',
    '    for key, value in string.gmatch(text, \'"([%a_]+)"%s*:%s*(%d+)\') do',
    '      if INPUT[key] or OUTPUT[key] then',
    '        local v = tonumber(value)',
    '        if seen[key] == nil or v > seen[key] then seen[key] = v end',
    '      end',
    '    end',
    '    if model == nil then model = string.match(text, \'"model"%s*:%s*"([%w%.%-_:/]+)"\') end',
    '    carry = string.sub(text, -TAIL)',
    '  end',
    '  local input, output, found = 0, 0, false',
    '  for key, v in pairs(seen) do',
    '    found = true',
    '    if INPUT[key] then input = input + v else output = output + v end',
    '  end',
    '  local status = tonumber(handle:headers():get(":status")) or 0',
    '  local estimated = "false"',
    '  if not found and status >= 200 and status < 300 and bytes > 0 then',
    '    output = math.ceil(bytes / 4)',
    '    estimated = "true"',
    '  end',
    '  local md = handle:streamInfo():dynamicMetadata()',
    `  md:set("${LLM_USAGE_NS}", "${LLM_USAGE_KEYS.inputTokens}", tostring(math.floor(input)))`,
    `  md:set("${LLM_USAGE_NS}", "${LLM_USAGE_KEYS.outputTokens}", tostring(math.floor(output)))`,
    `  md:set("${LLM_USAGE_NS}", "${LLM_USAGE_KEYS.totalTokens}", tostring(math.floor(input + output)))`,
    `  md:set("${LLM_USAGE_NS}", "${LLM_USAGE_KEYS.model}", string.sub(model or "unknown", 1, 64))`,
    `  md:set("${LLM_USAGE_NS}", "provider", "${api}")`,
    `  md:set("${LLM_USAGE_NS}", "estimated", estimated)`,
    'end',
  ].join('\n');
}

/** The meter in the filter chain: one named source per LLM API, none by default (other services pass untouched). */
export function usageMeterFilter(apis: readonly LlmApi[]): TypedExtension {
  return ext('envoy.filters.http.lua', TYPE.lua, {
    source_codes: Object.fromEntries(apis.map((api) => [api, { inline_string: usageMeterLua(api) }])),
  });
}

/** The virtual host's switch that runs the meter for an LLM service. */
export const usageMeterFor = (api: LlmApi): TypedConfig => typed(TYPE.luaPerRoute, { name: api });

const usage = (key: string) => `%DYNAMIC_METADATA(${LLM_USAGE_NS}:${key})%`;

/**
 * An access logger that counts each metered response's tokens into gen_ai.client.token.usage, by
 * token type, provider, response model, service and sandbox tier (OpenTelemetry GenAI names
 * where they fit; never the sandbox id: unbounded label values). A counter of tokens where
 * OpenTelemetry has a histogram of tokens per call: Envoy's histogram sums are approximations
 * (from its buckets), and a budget's dashboard needs the exact total; calls are counted apart.
 */
export function tokenUsageLog(): object {
  const tags = (type: 'input' | 'output') => [
    { name: TOKEN_USAGE_TAGS.type, value_format: type },
    { name: TOKEN_USAGE_TAGS.provider, value_format: usage('provider') },
    { name: TOKEN_USAGE_TAGS.model, value_format: usage(LLM_USAGE_KEYS.model) },
    { name: TOKEN_USAGE_TAGS.service, value_format: `%DYNAMIC_METADATA(${EXT_AUTHZ_NS}:service)%` },
    { name: TOKEN_USAGE_TAGS.tier, value_format: `%DYNAMIC_METADATA(${EXT_AUTHZ_NS}:tier)%` },
  ];
  return {
    name: 'envoy.access_loggers.stats',
    // Only responses the meter saw (an LLM service's): the others have no usage to count.
    filter: { metadata_filter: { matcher: { filter: LLM_USAGE_NS, path: [{ key: LLM_USAGE_KEYS.totalTokens }], value: { present_match: true } } } },
    typed_config: typed(TYPE.statsAccessLog, {
      stats_scope: { prefix: TOKEN_USAGE_SCOPE },
      counters: (['input', 'output'] as const).map((type) => ({
        stat: { name: TOKEN_USAGE_METRIC, tags: tags(type) },
        value_format: usage(type === 'input' ? LLM_USAGE_KEYS.inputTokens : LLM_USAGE_KEYS.outputTokens),
      })),
    }),
  };
}
