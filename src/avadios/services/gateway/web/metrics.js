// Reads the gateway's Prometheus text into what the Overview shows: answers and tokens by tier.

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+([0-9.eE+-]+|NaN|\+Inf|-Inf)/;

function labelsOf(text) {
  const labels = {};
  for (const m of (text || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]] = m[2];
  return labels;
}

export function samples(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = SAMPLE.exec(line);
    if (m) out.push({ name: m[1], labels: labelsOf(m[3]), value: Number(m[4]) });
  }
  return out;
}

// Answered requests (status 200) and completion tokens, per tier ("0", "1", "network").
export function tierCounters(text) {
  const requests = {};
  const tokens = {};
  for (const s of samples(text)) {
    if (s.name === "avadios_requests_total" && s.labels.status === "200" && s.labels.tier) {
      requests[s.labels.tier] = (requests[s.labels.tier] || 0) + s.value;
    } else if (s.name === "avadios_tokens_total" && s.labels.kind === "completion") {
      tokens[s.labels.tier] = (tokens[s.labels.tier] || 0) + s.value;
    }
  }
  return { requests, tokens };
}
