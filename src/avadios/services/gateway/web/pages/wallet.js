// Wallet: the home wallet's address (with copy), balance (spendable, held, pending), its blocks, and a send
// that asks for confirmation before it signs. Amounts travel as AUTOM text and come back as micro-AUTOM.

import { api } from "../api.js";
import { autom, confirmDialog, copyButton, errorBox, fill, h, short, table } from "../ui.js";

const REFRESH_MS = 4000;
const AMOUNT = /^\d+(\.\d{1,6})?$/;

function historyRows(entries) {
  return entries.map((e) =>
    h(
      "tr",
      { dataset: { hash: e.hash } },
      h("td", {}, new Date(e.timestamp_ms).toLocaleString()),
      h("td", {}, e.kind),
      h("td", { class: `num ${e.delta < 0 ? "neg" : e.delta > 0 ? "pos" : ""}` }, (e.delta > 0 ? "+" : "") + autom(e.delta)),
      h("td", { class: "num" }, autom(e.balance)),
      h("td", {}, e.to ? h("code", { title: e.to }, short(e.to, 18)) : e.source ? h("code", { title: e.source }, "from " + short(e.source)) : ""),
      h("td", {}, h("code", { title: e.hash }, short(e.hash))),
    ),
  );
}

export default {
  title: "Wallet",
  async render(root, { signal }) {
    const balanceSlot = h("div", { id: "wallet-balance", "aria-busy": "true" });
    const historySlot = h("div", { id: "wallet-history", "aria-busy": "true" });
    const to = h("input", { id: "send-to", placeholder: "autom_…", required: true, spellcheck: "false", "aria-label": "recipient address" });
    const amount = h("input", { id: "send-amount", placeholder: "1.5", required: true, inputmode: "decimal", "aria-label": "amount in AUTOM" });
    const sendButton = h("button", { type: "submit", class: "primary", id: "send-button" }, "Send…");
    const sendStatus = h("div", { id: "send-status" });
    root.append(
      h("h1", { id: "page-title" }, "Wallet"),
      h("article", { class: "card" }, h("h2", {}, "Balance"), balanceSlot),
      h(
        "article",
        { class: "card" },
        h("h2", {}, "Send AUTOM"),
        h("form", { class: "row", id: "send-form" }, h("label", { class: "grow" }, "To ", to), h("label", {}, "Amount (AUTOM) ", amount), sendButton),
        sendStatus,
      ),
      h("article", { class: "card" }, h("h2", {}, "History"), historySlot),
    );

    const load = () =>
      Promise.all([
        fill(balanceSlot, "Wallet (ledger)", async () => {
          const w = await api("/api/wallet", { signal });
          return [
            h("p", {}, "Address ", h("code", { id: "wallet-address", class: "wrap" }, w.address), " ", copyButton(w.address)),
            h(
              "div",
              { class: "tiles" },
              h("div", { class: "tile" }, h("div", { class: "tile-label" }, "spendable"), h("div", { class: "tile-value", id: "wallet-spendable", dataset: { micro: w.spendable } }, autom(w.spendable))),
              h("div", { class: "tile" }, h("div", { class: "tile-label" }, "held"), h("div", { class: "tile-value", id: "wallet-held", dataset: { micro: w.held } }, autom(w.held))),
              h("div", { class: "tile" }, h("div", { class: "tile-label" }, "pending"), h("div", { class: "tile-value", id: "wallet-pending", dataset: { micro: w.pending } }, autom(w.pending))),
            ),
            h("p", { class: "muted" }, `AUTOM · confirmed height ${w.confirmed_height} · pending payments are claimed by the node by itself`),
          ];
        }),
        fill(historySlot, "History (ledger)", async () => {
          const history = await api("/api/wallet/history?limit=50", { signal });
          return table(["time", "kind", "change", "balance", "counterparty", "block"], historyRows(history.entries), "No blocks yet.");
        }),
      ]);

    root.querySelector("#send-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const destination = to.value.trim();
      const value = amount.value.trim();
      if (!destination.startsWith("autom_")) {
        sendStatus.replaceChildren(errorBox("Not sent", new Error("the recipient must be an autom_… address")));
        return;
      }
      if (!AMOUNT.test(value) || Number(value) === 0) {
        sendStatus.replaceChildren(errorBox("Not sent", new Error("the amount must be a positive number of AUTOM with at most 6 decimals")));
        return;
      }
      const yes = await confirmDialog(
        "Send AUTOM?",
        h("p", {}, "Send ", h("strong", { id: "confirm-amount" }, `${value} AUTOM`), " to ", h("code", { class: "wrap" }, destination), "? This cannot be undone."),
        "Send",
      );
      if (!yes) {
        sendStatus.replaceChildren(h("p", { class: "muted" }, "Not sent."));
        return;
      }
      sendButton.disabled = true;
      sendStatus.replaceChildren(h("p", { class: "muted" }, "Signing and waiting for the ledger to confirm…"));
      try {
        const reply = await api("/api/wallet/send", { method: "POST", json: { to: destination, amount: value, wait_confirmed: true } });
        sendStatus.replaceChildren(
          h("p", { class: "ok", id: "send-result" }, `Sent ${autom(reply.amount)} AUTOM${reply.confirmed ? ", confirmed" : " (not confirmed yet)"}. Block `, h("code", {}, short(reply.hash, 16))),
        );
        amount.value = "";
      } catch (err) {
        sendStatus.replaceChildren(errorBox("Not sent", err));
      } finally {
        sendButton.disabled = false;
      }
      await load();
    });

    await load();
    const timer = setInterval(() => signal.aborted || load(), REFRESH_MS);
    return () => clearInterval(timer);
  },
};
