// Overview: the node's id, health and services (every replica), its models, what each tier answered
// (from /metrics), its bootstrap peers and its wallet balance. Refreshed every few seconds.

import { api, apiText, send } from "../api.js";
import { autom, fill, h, short, table } from "../ui.js";
import { tierCounters } from "../metrics.js";
import { isTextModel, listModels } from "../models.js";

const REFRESH_MS = 5000;

function servicesTable(health) {
  const rows = [];
  for (const [service, replicas] of Object.entries(health.services).sort()) {
    for (const r of replicas) {
      rows.push(
        h(
          "tr",
          { dataset: { service } },
          h("td", {}, service),
          h("td", { class: "num" }, r.replica),
          h("td", { class: "num" }, r.pid),
          h("td", {}, h("span", { class: "status", "data-state": r.status }, r.status)),
          h("td", { class: "num" }, r.requests_served),
          h("td", { class: "num" }, r.in_flight),
          h("td", {}, r.loaded_model || r.detail || ""),
        ),
      );
    }
  }
  for (const service of health.missing || []) {
    rows.push(
      h(
        "tr",
        { dataset: { service, missing: "" } },
        h("td", {}, service),
        h("td", { class: "num" }, "–"),
        h("td", { class: "num" }, "–"),
        h("td", {}, h("span", { class: "status", "data-state": "down" }, "down")),
        h("td", { class: "num" }, "–"),
        h("td", { class: "num" }, "–"),
        h("td", {}, "no heartbeat lately: stopped, starting, or not answering"),
      ),
    );
  }
  return table(["service", "replica", "pid", "status", "served", "in flight", "model / detail"], rows, "no service has reported yet");
}

async function nodeCard() {
  const response = await send("/health");
  const health = await response.json();
  return [
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Node id"),
      h("dd", {}, h("code", { id: "node-id", class: "wrap" }, health.node_id)),
      h("dt", {}, "Health"),
      h("dd", {}, h("span", { class: "status", "data-state": health.status, id: "health-state" }, health.status)),
      h("dt", {}, "Version"),
      h("dd", {}, health.version),
      h("dt", {}, "OpenAI base URL"),
      h("dd", {}, h("code", {}, `${location.origin}/v1`)),
    ),
    h("h3", {}, "Services"),
    servicesTable(health),
  ];
}

async function modelsCard() {
  const { all } = await listModels();
  const rows = all.map((m) => {
    const d = m.avadios || {};
    const kind = isTextModel(m) ? "text" : d.kind;
    const about = kind === "text" ? [d.quantization, d.context_length && `${d.context_length} ctx`, d.chat_format] : [d.means && `= ${d.means}`, d.english_only && "English only"];
    return h(
      "tr",
      { dataset: { kind } },
      h("td", {}, h("code", { class: "model-id" }, m.id), d.default ? h("span", { class: "tag" }, "default") : null),
      h("td", {}, kind),
      h("td", {}, about.filter(Boolean).join(" · ")),
    );
  });
  return table(["model", "kind", "details"], rows, "no models");
}

async function tiersCard() {
  const counters = tierCounters(await apiText("/metrics"));
  const names = { 0: "tier 0 · cache", 1: "tier 1 · this node", network: "network" };
  return h(
    "div",
    { class: "tiles" },
    ["0", "1", "network"].map((tier) =>
      h(
        "div",
        { class: "tile", dataset: { tier } },
        h("div", { class: "tile-label" }, names[tier]),
        h("div", { class: "tile-value" }, counters.requests[tier] || 0),
        h("div", { class: "tile-sub" }, `answers · ${counters.tokens[tier] || 0} tokens out`),
      ),
    ),
  );
}

async function peersCard() {
  const peers = await api("/api/peers");
  const list = peers.bootstrap.length
    ? h("ul", { class: "plain" }, peers.bootstrap.map((a) => h("li", {}, h("code", { class: "wrap" }, a))))
    : h("p", { class: "muted" }, "No bootstrap peers: this node joins no network until you add one (Network · Peers).");
  return [list, h("p", { class: "muted" }, `${peers.peers.length} known peer(s) · DHT ${peers.dht_address}`)];
}

async function walletCard() {
  const w = await api("/api/wallet");
  return h(
    "div",
    {},
    h("div", { class: "big", id: "overview-balance" }, autom(w.spendable), h("small", {}, " AUTOM")),
    h("p", { class: "muted" }, `held ${autom(w.held)} · pending ${autom(w.pending)} · `, h("code", {}, short(w.address, 18))),
  );
}

export default {
  title: "Overview",
  async render(root, { signal }) {
    const slot = (id) => h("div", { id, "aria-busy": "true" }, h("p", { class: "muted" }, "loading…"));
    const parts = {
      node: slot("ov-node"),
      models: slot("ov-models"),
      tiers: slot("ov-tiers"),
      peers: slot("ov-peers"),
      wallet: slot("ov-wallet"),
    };
    root.append(
      h("h1", { id: "page-title" }, "Overview"),
      h(
        "div",
        { class: "grid" },
        h("article", { class: "card wide" }, h("h2", {}, "Node"), parts.node),
        h("article", { class: "card" }, h("h2", {}, "Answers by tier"), parts.tiers),
        h("article", { class: "card" }, h("h2", {}, "Balance"), parts.wallet),
        h("article", { class: "card" }, h("h2", {}, "Models"), parts.models),
        h("article", { class: "card" }, h("h2", {}, "Bootstrap peers"), parts.peers),
      ),
    );
    const refresh = () =>
      Promise.all([
        fill(parts.node, "Health", nodeCard),
        fill(parts.models, "Models", modelsCard),
        fill(parts.tiers, "Metrics", tiersCard),
        fill(parts.peers, "Peers (discovery)", peersCard),
        fill(parts.wallet, "Wallet (ledger)", walletCard),
      ]);
    await refresh();
    const timer = setInterval(() => signal.aborted || refresh(), REFRESH_MS);
    return () => clearInterval(timer);
  },
};
