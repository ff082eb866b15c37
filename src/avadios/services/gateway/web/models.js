// The node's models from /v1/models: text models (what Chat and routing use) apart from the voice service's
// transcription and speech models, which the same list carries with `avadios.kind`.

import { api } from "./api.js";

const VOICE_KINDS = new Set(["transcription", "speech"]);

export function isTextModel(model) {
  return !(model.avadios && VOICE_KINDS.has(model.avadios.kind));
}

// { all, text, preferred }: preferred is the default text model, else the first one.
export async function listModels(options = {}) {
  const reply = await api("/v1/models", options);
  const text = reply.data.filter(isTextModel);
  const preferred = text.find((m) => m.avadios && m.avadios.default) || text[0] || null;
  return { all: reply.data, text, preferred };
}
