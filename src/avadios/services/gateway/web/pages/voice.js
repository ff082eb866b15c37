// Voice: speech to text (upload a file or record from the microphone → /v1/audio/transcriptions) and text to
// speech (/v1/audio/speech, played back here). Lights up when the node's voice API exists.

import { api, errorOf, hasRoute, send } from "../api.js";
import { errorBox, h, notHere } from "../ui.js";

// GET /v1/audio/voices: {engine, available, detail, default_voice, voices: [{name, language, gender, ...}]}.
function voiceOptions(reply) {
  return (reply.voices || []).map((v) => ({
    id: v.name,
    label: [...new Set([v.name, v.language, v.gender].filter(Boolean))].join(" · "),
    selected: v.name === reply.default_voice,
  }));
}

async function transcribe(blob, name, output) {
  const form = new FormData();
  form.append("file", blob, name);
  form.append("model", "whisper-1");
  output.dataset.state = "working";
  output.replaceChildren(h("p", { class: "muted" }, "Transcribing…"));
  try {
    const reply = await api("/v1/audio/transcriptions", { method: "POST", body: form });
    output.replaceChildren(h("blockquote", { id: "transcript" }, reply.text || "(no speech heard)"));
    output.dataset.state = "done";
  } catch (err) {
    output.replaceChildren(errorBox("Transcription failed", err));
    output.dataset.state = "failed";
  }
}

function recorder(output) {
  const button = h("button", { type: "button", id: "voice-record" }, "● Record");
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    button.disabled = true;
    button.title = "this browser cannot record here (recording needs https or localhost)";
    return button;
  }
  let active = null;
  button.addEventListener("click", async () => {
    if (active) {
      active.stop();
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const chunks = [];
      active = new MediaRecorder(stream);
      active.addEventListener("dataavailable", (e) => chunks.push(e.data));
      active.addEventListener("stop", () => {
        stream.getTracks().forEach((t) => t.stop());
        const type = active.mimeType || "audio/webm";
        active = null;
        button.textContent = "● Record";
        transcribe(new Blob(chunks, { type }), type.includes("ogg") ? "recording.ogg" : "recording.webm", output);
      });
      active.start();
      button.textContent = "■ Stop and transcribe";
      // The previous transcript is gone once a new recording starts: what shows is what is happening now.
      output.dataset.state = "recording";
      output.replaceChildren(h("p", { class: "muted" }, "Recording… press Stop to transcribe."));
    } catch (err) {
      output.replaceChildren(errorBox("Recording failed", err));
    }
  });
  return button;
}

export default {
  title: "Voice",
  async render(root, { signal }) {
    root.append(h("h1", { id: "page-title" }, "Voice"));
    const [canHear, canSpeak] = await Promise.all([hasRoute("/v1/audio/transcriptions"), hasRoute("/v1/audio/speech")]);
    if (!canHear && !canSpeak) {
      root.append(notHere("Voice", "/v1/audio/transcriptions"));
      return null;
    }
    if (canHear) {
      const output = h("div", { id: "voice-output" });
      const fileInput = h("input", { type: "file", id: "voice-file", accept: "audio/*", "aria-label": "audio file" });
      fileInput.addEventListener("change", () => {
        const file = fileInput.files[0];
        if (file) transcribe(file, file.name, output);
      });
      root.append(
        h(
          "article",
          { class: "card" },
          h("h2", {}, "Speech to text"),
          h("div", { class: "row" }, h("label", {}, "Audio file ", fileInput), recorder(output)),
          output,
        ),
      );
    } else {
      root.append(notHere("Speech to text", "/v1/audio/transcriptions"));
    }
    if (canSpeak) {
      const text = h("textarea", { id: "speech-text", rows: 3, placeholder: "Text to speak", required: true });
      const voice = h("select", { id: "speech-voice", "aria-label": "voice" }, h("option", { value: "alloy" }, "alloy (default)"));
      const player = h("audio", { id: "speech-audio", controls: true, hidden: true });
      const status = h("div", { id: "speech-status" });
      const form = h("form", {}, text, h("div", { class: "row" }, h("label", {}, "Voice ", voice), h("button", { type: "submit", class: "primary", id: "speech-button" }, "Speak")), status, player);
      root.append(h("article", { class: "card" }, h("h2", {}, "Text to speech"), form));
      try {
        const reply = await api("/v1/audio/voices", { signal });
        const voices = voiceOptions(reply);
        if (voices.length) voice.replaceChildren(...voices.map((v) => h("option", { value: v.id, selected: v.selected }, v.label)));
        if (reply.available === false) {
          status.replaceChildren(errorBox("No speech engine on this node", new Error(reply.detail || "none installed")));
        }
      } catch (err) {
        if (err.name !== "AbortError") status.replaceChildren(errorBox("Voices", err));
      }
      let lastUrl = null;
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        status.replaceChildren(h("p", { class: "muted" }, "Speaking…"));
        try {
          const response = await send("/v1/audio/speech", {
            method: "POST",
            json: { model: "tts-1", input: text.value, voice: voice.value, response_format: "wav" },
          });
          if (!response.ok) throw await errorOf(response);
          if (lastUrl) URL.revokeObjectURL(lastUrl);
          lastUrl = URL.createObjectURL(await response.blob());
          player.src = lastUrl;
          player.hidden = false;
          status.replaceChildren(h("p", { class: "muted", id: "speech-done" }, `Spoken with ${voice.value}.`));
          player.play().catch(() => {}); // autoplay may be refused until the user interacts; the controls remain
        } catch (err) {
          status.replaceChildren(errorBox("Speech failed", err));
        }
      });
      return () => lastUrl && URL.revokeObjectURL(lastUrl);
    }
    root.append(notHere("Text to speech", "/v1/audio/speech"));
    return null;
  },
};
