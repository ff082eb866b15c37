// Files: what this node stores on the network (erasure-coded shards held by other nodes), each file by its
// capability: upload, download, check health, delete. Lights up when the node's storage API (/api/files) exists.

import { api, errorOf, hasRoute, send } from "../api.js";
import { bytes, confirmDialog, errorBox, fill, h, notHere, short, table } from "../ui.js";

function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: name || "download" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// One line from the audit of GET /api/files/{cap}/health: its verdict, each segment's healthy shards, hosters.
function describeHealth(report) {
  const parts = [report.health || "unknown"];
  if (Array.isArray(report.healthy_per_segment)) {
    parts.push(`healthy shards per segment ${report.healthy_per_segment.join(", ")}`);
  }
  if (Array.isArray(report.hosters)) {
    const answered = report.hosters.filter((x) => !x.unreachable && !x.error).length;
    parts.push(`${answered} of ${report.hosters.length} hosters answered`);
  }
  return parts.join(" · ");
}

export default {
  title: "Files",
  async render(root, { signal }) {
    root.append(h("h1", { id: "page-title" }, "Files"));
    if (!(await hasRoute("/api/files"))) {
      root.append(notHere("Storage", "/api/files"));
      return null;
    }
    const listSlot = h("div", { id: "files-table", "aria-busy": "true" });
    const status = h("div", { id: "files-status" });
    const fileInput = h("input", { type: "file", id: "files-upload", required: true, "aria-label": "file to store" });
    const uploadButton = h("button", { type: "submit", class: "primary" }, "Upload");
    root.append(
      h("article", { class: "card" }, h("h2", {}, "Store a file"), h("form", { class: "row", id: "files-form" }, fileInput, uploadButton), status),
      h("article", { class: "card" }, h("h2", {}, "Stored files"), listSlot),
    );

    const act = async (what, work) => {
      status.replaceChildren(h("p", { class: "muted" }, `${what}…`));
      try {
        const message = await work();
        status.replaceChildren(h("p", { class: "ok" }, message));
      } catch (err) {
        status.replaceChildren(errorBox(`${what} failed`, err));
      }
    };

    const row = (f) =>
      h(
        "tr",
        { dataset: { cap: f.cap } },
        h("td", {}, f.name),
        h("td", { class: "num" }, bytes(f.size)),
        h("td", { class: "num" }, f.segments),
        h("td", { class: "num" }, f.shards),
        h("td", { class: "num" }, f.hosters_alive),
        h("td", {}, h("span", { class: "status", "data-state": f.health }, f.health)),
        h("td", {}, h("code", { title: f.cap, class: "small" }, short(f.cap, 20))),
        h(
          "td",
          {},
          h("button", {
            type: "button",
            class: "small",
            onclick: () =>
              act(`Downloading ${f.name}`, async () => {
                const response = await send(`/api/files/${encodeURIComponent(f.cap)}`);
                if (!response.ok) throw await errorOf(response);
                saveBlob(await response.blob(), f.name);
                return `Downloaded ${f.name}.`;
              }),
          }, "Download"),
          h("button", {
            type: "button",
            class: "small",
            onclick: () =>
              act(`Checking ${f.name}`, async () => {
                const report = await api(`/api/files/${encodeURIComponent(f.cap)}/health`);
                return `${f.name}: ${describeHealth(report)}`;
              }),
          }, "Check"),
          h("button", {
            type: "button",
            class: "small danger",
            onclick: async () => {
              if (!(await confirmDialog("Delete file?", h("p", {}, `Delete ${f.name} from the network?`), "Delete"))) return;
              await act(`Deleting ${f.name}`, async () => {
                await api(`/api/files/${encodeURIComponent(f.cap)}`, { method: "DELETE" });
                return `Deleted ${f.name}.`;
              });
              await load();
            },
          }, "Delete"),
        ),
      );

    const load = () =>
      fill(listSlot, "Files (storage)", async () => {
        const reply = await api("/api/files", { signal });
        return table(["name", "size", "segments", "shards", "hosters alive", "health", "capability", ""], reply.files.map(row), "No files stored yet.");
      });

    root.querySelector("#files-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const file = fileInput.files[0];
      if (!file) return;
      uploadButton.disabled = true;
      await act(`Uploading ${file.name}`, async () => {
        const form = new FormData();
        form.append("file", file, file.name);
        const reply = await api("/api/files", { method: "POST", body: form });
        fileInput.value = "";
        return reply && reply.cap ? `Stored ${file.name} as ${short(reply.cap, 24)}` : `Stored ${file.name}.`;
      });
      uploadButton.disabled = false;
      await load();
    });

    await load();
    const timer = setInterval(() => signal.aborted || load(), 10000);
    return () => clearInterval(timer);
  },
};
