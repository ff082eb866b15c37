// The dashboard's shell: a hash router over the pages in pages/, the menu, and the node's health pill.
// A page is a module whose default export is { title, render(root, { signal }) → optional cleanup }.

import { send } from "./api.js";
import chat from "./pages/chat.js";
import files from "./pages/files.js";
import jobs from "./pages/jobs.js";
import overview from "./pages/overview.js";
import peers from "./pages/peers.js";
import voice from "./pages/voice.js";
import wallet from "./pages/wallet.js";
import { errorBox, h } from "./ui.js";

// Every page is loaded with the shell (a few KB), not when first opened: a node that stops answering leaves a
// dashboard whose every page still opens and says so.
const PAGES = { overview, chat, peers, wallet, jobs, files, voice };
const HEALTH_EVERY_MS = 5000;

const main = document.getElementById("page");
let current = { cleanup: null, controller: null };

async function show(name) {
  if (!Object.hasOwn(PAGES, name)) name = "overview";
  if (current.controller) current.controller.abort();
  if (current.cleanup) current.cleanup();
  current = { cleanup: null, controller: new AbortController() };
  const mine = current;
  for (const link of document.querySelectorAll("#nav a[data-page]")) {
    link.classList.toggle("active", link.dataset.page === name);
    link.toggleAttribute("aria-current", link.dataset.page === name);
  }
  document.getElementById("nav").classList.remove("open");
  main.dataset.page = name;
  main.removeAttribute("data-ready");
  try {
    const page = PAGES[name];
    document.title = `${page.title} · AVADIOS node`;
    const root = h("section", { class: "page", "aria-labelledby": "page-title" });
    main.replaceChildren(root);
    const cleanup = await page.render(root, { signal: mine.controller.signal });
    if (mine !== current) {
      if (cleanup) cleanup();
      return;
    }
    mine.cleanup = cleanup || null;
    main.dataset.ready = name; // tests and screen readers: the page has its first content
  } catch (err) {
    main.replaceChildren(errorBox(`The ${name} page failed to load`, err));
    main.dataset.ready = name;
  }
}

function route() {
  show((location.hash.replace(/^#\/?/, "") || "overview").split("/")[0]);
}

// The pill in the header: ok / loading / unavailable from /health (open, so it never asks for the key),
// or "unreachable" when the node does not answer; polled while the tab is visible.
async function pollHealth() {
  const pill = document.getElementById("node-health");
  if (document.visibilityState !== "hidden") {
    try {
      const response = await send("/health");
      const body = await response.json();
      pill.dataset.state = body.status;
      pill.textContent = `node ${body.status}`;
      pill.title = `node ${body.node_id} · version ${body.version}`;
    } catch {
      pill.dataset.state = "unreachable";
      pill.textContent = "node unreachable";
      pill.title = "the node did not answer /health";
    }
  }
  setTimeout(pollHealth, HEALTH_EVERY_MS);
}

document.getElementById("menu-toggle").addEventListener("click", (event) => {
  const nav = document.getElementById("nav");
  nav.classList.toggle("open");
  event.currentTarget.setAttribute("aria-expanded", nav.classList.contains("open"));
});
window.addEventListener("hashchange", route);
route();
pollHealth();
