// Small helpers every page uses: building elements, numbers and money, and the error banner.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const MICRO = 1000000n;

// Micro-AUTOM (an integer) as AUTOM text, exactly: "1.5", "0.000123", "-2".
export function autom(micro) {
  const value = BigInt(micro);
  const sign = value < 0n ? "-" : "";
  const abs = value < 0n ? -value : value;
  const whole = abs / MICRO;
  const frac = (abs % MICRO).toString().padStart(6, "0").replace(/0+$/, "");
  return sign + whole.toLocaleString("en-US") + (frac ? "." + frac : "");
}

export function short(id, size = 12) {
  return id && id.length > size + 2 ? id.slice(0, size) + "…" : id || "";
}

export function ago(unixSeconds) {
  if (!unixSeconds) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - unixSeconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

export function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

// A section's error line: says what failed and why, and leaves the rest of the page working.
export function errorBox(what, err) {
  const status = err && err.status ? ` (HTTP ${err.status}${err.code ? ", " + err.code : ""})` : "";
  return h("p", { class: "error", role: "alert" }, `${what}: ${err && err.message ? err.message : err}${status}`);
}

export function notHere(feature, route) {
  return h(
    "div",
    { class: "notice", "data-feature-missing": route },
    h("strong", {}, `${feature} is not on this node yet.`),
    ` This node's API has no ${route}: the service that provides it is not part of this version or not installed.`,
  );
}

export function table(headers, rows, empty = "nothing yet") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h("table", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))), h("tbody", {}, rows)),
  );
}

// Fills `slot` with what `load()` builds, or with the error; never throws, so one failing part of a page
// leaves the others alone.
export async function fill(slot, what, load) {
  try {
    const content = await load();
    slot.replaceChildren(...[content].flat().filter(Boolean));
    slot.removeAttribute("aria-busy");
    return true;
  } catch (err) {
    if (err && err.name === "AbortError") return false;
    slot.replaceChildren(errorBox(what, err));
    slot.removeAttribute("aria-busy");
    return false;
  }
}

export function copyButton(text, label = "Copy") {
  const button = h("button", { type: "button", class: "small" }, label);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // no clipboard API outside a secure context (plain http off loopback): copy through a selection
      const area = h("textarea", { class: "offscreen" });
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = label), 1500);
  });
  return button;
}

// A yes/no question in a modal dialog; resolves true on confirm.
export function confirmDialog(title, body, yes = "Confirm") {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "confirm" },
      h(
        "form",
        { method: "dialog" },
        h("h2", {}, title),
        body,
        h(
          "menu",
          {},
          h("button", { value: "no", type: "submit" }, "Cancel"),
          h("button", { value: "yes", type: "submit", class: "primary", "data-confirm": "yes" }, yes),
        ),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "yes");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
