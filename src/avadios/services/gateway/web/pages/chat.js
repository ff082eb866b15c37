// Chat: a conversation with a model of this node (or of the network), streamed token by token over SSE
// from /v1/chat/completions; each answer shows which tier answered it and what it cost.

import { errorOf, send } from "../api.js";
import { listModels } from "../models.js";
import { events } from "../sse.js";
import { autom, errorBox, h } from "../ui.js";

const TIER_NAMES = { 0: "tier 0 · cache", 1: "tier 1 · this node", network: "network" };

// The conversation outlives a visit to another page (not a reload): {role, content, meta} (meta: the line
// shown under an answer; never sent).
const conversation = [];

function bubble(role, text, meta) {
  return h(
    "div",
    { class: `msg ${role}` },
    h("div", { class: "who" }, role === "user" ? "you" : "model"),
    h("div", { class: "text" }, text),
    meta ? h("div", { class: "meta" }, meta) : null,
  );
}

// What the user sees under an answer: tier, tokens, cost (and, from the network, the job and its verdict).
function describe(meta) {
  const parts = [TIER_NAMES[meta.tier] || `tier ${meta.tier}`];
  if (meta.usage) parts.push(`${meta.usage.completion_tokens} tokens`);
  if (meta.cost !== null) parts.push(`cost ${autom(meta.cost)} AUTOM`);
  else parts.push("free (answered on this node)");
  if (meta.verdict) parts.push(`verdict ${meta.verdict}`);
  if (meta.job) parts.push(`job ${meta.job.slice(0, 12)}`);
  parts.push(`${(meta.seconds).toFixed(1)} s`);
  return parts.join(" · ");
}

export default {
  title: "Chat",
  async render(root, { signal }) {
    const log = h("div", { class: "chat-log", id: "chat-log", "aria-live": "polite" });
    const modelSelect = h("select", { id: "chat-model", "aria-label": "model" });
    const network = h("input", { type: "checkbox", id: "chat-network" });
    const maxTokens = h("input", { type: "number", id: "chat-max-tokens", min: 1, max: 4096, value: 128, "aria-label": "max tokens" });
    const temperature = h("input", { type: "number", id: "chat-temperature", min: 0, max: 2, step: 0.1, value: 0.7, "aria-label": "temperature" });
    const input = h("textarea", { id: "chat-input", rows: 3, placeholder: "Ask something… (Enter sends, Shift+Enter a new line)", required: true });
    const sendButton = h("button", { type: "submit", class: "primary", id: "chat-send" }, "Send");
    const stopButton = h("button", { type: "button", id: "chat-stop", hidden: true }, "Stop");
    const status = h("div", { id: "chat-status" });
    const clear = h("button", { type: "button", class: "small", id: "chat-new" }, "New chat");
    let running = null;

    for (const m of conversation) {
      log.append(bubble(m.role, m.content, m.meta));
    }

    const form = h(
      "form",
      { class: "chat-form" },
      input,
      h(
        "div",
        { class: "row" },
        h("label", {}, "Model ", modelSelect),
        h("label", {}, "Max tokens ", maxTokens),
        h("label", { title: "0 answers the same every time (and repeats come from the cache, tier 0)" }, "Temperature ", temperature),
        h("label", { title: "ask several providers of the network, pay them in AUTOM and verify their answers" }, network, " Use the network"),
        h("span", { class: "spacer" }),
        clear,
        stopButton,
        sendButton,
      ),
    );
    root.append(h("h1", { id: "page-title" }, "Chat"), log, status, form);

    try {
      const models = await listModels({ signal });
      for (const m of models.text) {
        modelSelect.append(h("option", { value: m.id, selected: m === models.preferred }, m.id));
      }
    } catch (err) {
      if (err.name === "AbortError") return;
      status.replaceChildren(errorBox("Models", err));
    }

    clear.addEventListener("click", () => {
      conversation.length = 0;
      log.replaceChildren();
      status.replaceChildren();
    });
    stopButton.addEventListener("click", () => running && running.abort());
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        form.requestSubmit();
      }
    });

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text || running) return;
      conversation.push({ role: "user", content: text });
      log.append(bubble("user", text));
      input.value = "";
      const answer = bubble("assistant", "");
      const answerText = answer.querySelector(".text");
      const meta = h("div", { class: "meta" }, "waiting for the first token…");
      answer.append(meta);
      answer.dataset.state = "waiting";
      log.append(answer);
      log.scrollTop = log.scrollHeight;
      status.replaceChildren();
      running = new AbortController();
      sendButton.disabled = true;
      stopButton.hidden = false;
      const started = performance.now();
      const body = {
        model: modelSelect.value,
        messages: conversation.map(({ role, content }) => ({ role, content })),
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: Number(maxTokens.value) || 128,
        temperature: Math.min(2, Math.max(0, Number(temperature.value) || 0)),
      };
      if (network.checked) body.avadios = { tier: "network" };
      let content = "";
      try {
        const response = await send("/v1/chat/completions", { method: "POST", json: body, signal: running.signal });
        if (!response.ok) throw await errorOf(response);
        const info = {
          tier: response.headers.get("X-Avadios-Tier") || "?",
          cost: response.headers.has("X-Avadios-Cost") ? response.headers.get("X-Avadios-Cost") : null,
          verdict: response.headers.get("X-Avadios-Verdict"),
          job: response.headers.get("X-Avadios-Job"),
          usage: null,
          seconds: 0,
        };
        answer.dataset.tier = info.tier;
        answer.dataset.state = "streaming";
        meta.textContent = `${TIER_NAMES[info.tier] || info.tier} · streaming…`;
        for await (const data of events(response)) {
          if (data === "[DONE]") break;
          if (data.error) throw Object.assign(new Error(data.error.message), { code: data.error.code });
          if (data.usage) info.usage = data.usage;
          const delta = data.choices && data.choices[0] && data.choices[0].delta;
          if (delta && delta.content) {
            content += delta.content;
            answerText.textContent = content;
            log.scrollTop = log.scrollHeight;
          }
        }
        info.seconds = (performance.now() - started) / 1000;
        answer.dataset.state = "done";
        meta.textContent = describe(info);
        conversation.push({ role: "assistant", content, meta: meta.textContent });
      } catch (err) {
        answer.dataset.state = "failed";
        meta.textContent = err.name === "AbortError" ? "stopped" : "failed";
        if (err.name === "AbortError") {
          if (content) conversation.push({ role: "assistant", content, meta: "stopped" });
          else conversation.pop(); // nothing came back: the question can be asked again
        } else {
          conversation.pop();
          status.replaceChildren(errorBox("The answer failed", err));
        }
      } finally {
        running = null;
        sendButton.disabled = false;
        stopButton.hidden = true;
        input.focus();
      }
    });
    input.focus();
    return () => running && running.abort();
  },
};
