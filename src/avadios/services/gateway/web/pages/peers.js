// Network · Peers: the peers this node knows (RTT, reliability, models, price), its bootstrap list (add a
// multiaddr, remove one) and how the network would route a model, with every part of each score.

import { api } from "../api.js";
import { listModels } from "../models.js";
import { ago, autom, confirmDialog, errorBox, fill, h, short, table } from "../ui.js";

const REFRESH_MS = 5000;

function peerRows(list) {
  return list.peers.map((p) =>
    h(
      "tr",
      { dataset: { node: p.node_id } },
      h("td", {}, h("code", { title: p.node_id }, short(p.node_id)), p.bootstrap ? h("span", { class: "tag" }, "bootstrap") : null),
      h("td", {}, p.addresses.map((a) => h("div", {}, h("code", { class: "wrap small" }, a)))),
      h("td", { class: "num" }, `${p.rtt_ms.toFixed(1)} ms`),
      h("td", { class: "num" }, p.reliability.toFixed(2)),
      h("td", {}, p.models.join(", ")),
      h("td", { class: "num" }, autom(p.price_micro_autom_per_1k)),
      h("td", {}, `${p.verified} ✓ / ${p.rejected} ✗`),
      h("td", {}, ago(p.last_seen_unix)),
    ),
  );
}

function routeTable(route) {
  const rows = [...route.ranked, ...route.excluded].map((c, i) =>
    h(
      "tr",
      { class: c.excluded ? "excluded" : "", dataset: { node: c.node_id } },
      h("td", { class: "num" }, c.excluded ? "–" : i + 1),
      h("td", {}, h("code", { title: c.node_id }, short(c.node_id))),
      h("td", { class: "num" }, c.score.toFixed(4)),
      h("td", { class: "num" }, c.parts.rtt.toFixed(4)),
      h("td", { class: "num" }, c.parts.reliability.toFixed(4)),
      h("td", { class: "num" }, c.parts.price.toFixed(4)),
      h("td", { class: "num" }, c.parts.load.toFixed(4)),
      h("td", { class: "num" }, `${c.rtt_ms.toFixed(1)} ms · ${c.reliability.toFixed(2)} · ${autom(c.price_micro_autom_per_1k)}`),
      h("td", {}, c.excluded || "ranked"),
    ),
  );
  return [
    h("p", { class: "muted" }, "score = ", h("code", {}, route.formula)),
    table(
      ["#", "provider", "score", "rtt part", "reliability part", "price part", "load part", "rtt · reliability · price/1k", "status"],
      rows,
      `No provider of ${route.model} is known to this node.`,
    ),
  ];
}

export default {
  title: "Network · Peers",
  async render(root, { signal }) {
    const peersSlot = h("div", { id: "peers-table", "aria-busy": "true" });
    const bootSlot = h("div", { id: "bootstrap-list", "aria-busy": "true" });
    const addInput = h("input", {
      id: "bootstrap-add",
      placeholder: "/ip4/203.0.113.7/tcp/4001/p2p/NODE_ID",
      required: true,
      "aria-label": "multiaddr of a peer",
      spellcheck: "false",
    });
    const addStatus = h("div", { id: "bootstrap-status" });
    const addButton = h("button", { type: "submit", class: "primary" }, "Add peer");
    const routeInput = h("input", { id: "route-model", "aria-label": "model", placeholder: "model name", required: true });
    const routeSlot = h("div", { id: "route-table" });
    let dhtLine = h("p", { class: "muted" });

    root.append(
      h("h1", { id: "page-title" }, "Network · Peers"),
      dhtLine,
      h("article", { class: "card" }, h("h2", {}, "Known peers"), peersSlot),
      h(
        "article",
        { class: "card" },
        h("h2", {}, "Bootstrap peers"),
        bootSlot,
        h("form", { class: "row", id: "bootstrap-form" }, addInput, addButton),
        addStatus,
      ),
      h(
        "article",
        { class: "card" },
        h("h2", {}, "Route a model"),
        h("form", { class: "row", id: "route-form" }, routeInput, h("button", { type: "submit" }, "Rank providers")),
        routeSlot,
      ),
    );

    const load = () =>
      fill(peersSlot, "Peers (discovery)", async () => {
        const list = await api("/api/peers", { signal });
        dhtLine.textContent = `This node ${short(list.node_id, 16)} · DHT ${list.dht_address} · ${list.peers.length} peer(s)`;
        bootSlot.replaceChildren(
          list.bootstrap.length
            ? h(
                "ul",
                { class: "plain" },
                list.bootstrap.map((address) =>
                  h(
                    "li",
                    { dataset: { address } },
                    h("code", { class: "wrap" }, address),
                    " ",
                    h("button", { type: "button", class: "small danger", onclick: () => remove(address) }, "Remove"),
                  ),
                ),
              )
            : h("p", { class: "muted" }, "No bootstrap peers."),
        );
        bootSlot.removeAttribute("aria-busy");
        return table(
          ["node", "addresses", "RTT", "reliability", "models", "price / 1k tokens", "verified work", "last seen"],
          peerRows(list),
          "No peers yet: add a bootstrap peer below.",
        );
      });

    async function remove(address) {
      const nodeId = address.split("/p2p/")[1] || "";
      const yes = await confirmDialog("Remove bootstrap peer?", h("p", {}, h("code", { class: "wrap" }, address)), "Remove");
      if (!yes) return;
      try {
        await api(`/api/peers/${encodeURIComponent(nodeId)}`, { method: "DELETE" });
        addStatus.replaceChildren(h("p", { class: "ok" }, `Removed peer ${short(nodeId)}`));
      } catch (err) {
        addStatus.replaceChildren(errorBox("Remove failed", err));
      }
      await load();
    }

    root.querySelector("#bootstrap-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      addButton.disabled = true;
      addStatus.replaceChildren(h("p", { class: "muted" }, "Saying hello to the peer…"));
      try {
        const reply = await api("/api/peers", { method: "POST", json: { multiaddr: addInput.value.trim() } });
        addStatus.replaceChildren(h("p", { class: "ok" }, `Added peer ${short(reply.node_id)}`));
        addInput.value = "";
      } catch (err) {
        addStatus.replaceChildren(errorBox("Could not add that peer", err));
      } finally {
        addButton.disabled = false;
      }
      await load();
    });

    root.querySelector("#route-form").addEventListener("submit", (event) => {
      event.preventDefault();
      routeSlot.setAttribute("aria-busy", "true");
      routeSlot.replaceChildren(h("p", { class: "muted" }, "Asking the DHT for providers…"));
      fill(routeSlot, "Route", async () => routeTable(await api(`/api/route/${encodeURIComponent(routeInput.value.trim())}`)));
    });

    try {
      const { preferred } = await listModels({ signal });
      if (preferred) routeInput.value = preferred.id;
    } catch {
      // the model list only prefills the route form
    }
    await load();
    const timer = setInterval(() => signal.aborted || document.activeElement === addInput || load(), REFRESH_MS);
    return () => clearInterval(timer);
  },
};
