// Jobs: this node's network requests, newest first: providers, each answer's score and outcome, who was paid
// what, where the time went, and the hold and settle blocks.

import { api, hasRoute } from "../api.js";
import { autom, fill, h, notHere, short, table } from "../ui.js";

function providerList(job) {
  return h(
    "ul",
    { class: "plain small" },
    job.providers.map((p) =>
      h(
        "li",
        {},
        h("code", { title: p.node_id }, short(p.node_id)),
        ` ${p.outcome}`,
        p.reason ? ` (${p.reason})` : "",
        ` · score ${p.score.toFixed(3)} · paid ${autom(p.paid_micro)} of ${autom(p.quoted_micro)} · ${p.latency_ms.toFixed(0)} ms`,
      ),
    ),
  );
}

function timings(t) {
  if (!t) return "";
  const parts = [["route", t.route_ms], ["hold", t.hold_ms], ["answers", t.answers_ms], ["verify", t.verify_ms], ["settle", t.settle_ms]];
  return parts.map(([name, ms]) => `${name} ${Math.round(ms)} ms`).join(" · ");
}

function jobRows(jobs) {
  return jobs.map((j) =>
    h(
      "tr",
      { dataset: { job: j.job_id } },
      h("td", {}, new Date(j.started_unix_ms).toLocaleString()),
      h("td", {}, j.model),
      h("td", {}, h("span", { class: "status", "data-state": j.accepted ? "serving" : "unavailable" }, j.verdict || (j.accepted ? "accepted" : "failed"))),
      h("td", { class: "num" }, autom(j.cost_micro)),
      h("td", { class: "num" }, autom(j.held_micro)),
      h(
        "td",
        { title: "where the time went" },
        `${(j.duration_ms / 1000).toFixed(2)} s`,
        h("div", { class: "small muted" }, timings(j.timings)),
      ),
      h("td", {}, providerList(j)),
      h("td", { class: "small" }, h("div", {}, "hold ", h("code", {}, short(j.hold))), h("div", {}, "settle ", h("code", {}, j.settle ? short(j.settle) : "waiting"))),
    ),
  );
}

export default {
  title: "Jobs",
  async render(root, { signal }) {
    root.append(h("h1", { id: "page-title" }, "Jobs"));
    if (!(await hasRoute("/api/jobs"))) {
      root.append(notHere("Paid network inference", "/api/jobs"));
      return null;
    }
    const slot = h("div", { id: "jobs-table", "aria-busy": "true" });
    root.append(h("p", { class: "muted" }, "Requests this node sent to the network (Chat with “Use the network”, or avadios ask --network)."), slot);
    const load = () =>
      fill(slot, "Jobs (verifier)", async () => {
        const reply = await api("/api/jobs?limit=50", { signal });
        return table(["started", "model", "verdict", "cost (AUTOM)", "held", "took", "providers", "blocks"], jobRows(reply.jobs), "No network requests yet.");
      });
    await load();
    const timer = setInterval(() => signal.aborted || load(), 5000);
    return () => clearInterval(timer);
  },
};
