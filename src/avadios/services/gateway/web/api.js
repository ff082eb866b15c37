// One door to the node's HTTP API: the API key (asked once off loopback, kept in sessionStorage only),
// JSON bodies, and OpenAI-shaped errors turned into one ApiError a page can show.

const KEY_ITEM = "avadios.apiKey";

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status; // 0: the node did not answer at all
    this.code = code || "";
  }
}

// Every 401 in flight waits on the same question to the user.
let keyQuestion = null;

function askForKey(reason) {
  if (keyQuestion) return keyQuestion;
  const dialog = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  const input = document.getElementById("key-input");
  const error = document.getElementById("key-error");
  error.hidden = !reason;
  error.textContent = reason || "";
  input.value = "";
  keyQuestion = new Promise((resolve, reject) => {
    const finish = () => {
      form.removeEventListener("submit", done);
      dialog.removeEventListener("cancel", cancelled);
      keyQuestion = null;
    };
    const done = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      finish();
      dialog.close();
      sessionStorage.setItem(KEY_ITEM, key);
      resolve(key);
    };
    // Escape closes the question: the calls waiting on it fail with the reason, and the next one asks again.
    const cancelled = () => {
      finish();
      reject(new ApiError(401, "this node's API needs its key (the contents of <home>/api.key)", "invalid_api_key"));
    };
    form.addEventListener("submit", done);
    dialog.addEventListener("cancel", cancelled);
    dialog.showModal();
    input.focus();
  });
  return keyQuestion;
}

function withKey(headers) {
  const key = sessionStorage.getItem(KEY_ITEM);
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = "";
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code || "";
    }
  } catch {
    // not JSON: the status line says enough
  }
  return new ApiError(response.status, message, code);
}

// fetch() with the key; a 401 asks the user for the key and tries again. Returns the Response (ok or not).
export async function send(path, { method = "GET", json, body, headers = {}, signal } = {}) {
  let sendHeaders = { ...headers };
  let sendBody = body;
  if (json !== undefined) {
    sendHeaders["Content-Type"] = "application/json";
    sendBody = JSON.stringify(json);
  }
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(path, { method, headers: withKey(sendHeaders), body: sendBody, signal });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "the node did not answer: is it running? (" + err.message + ")", "unreachable");
    }
    if (response.status !== 401 || attempt >= 3) return response;
    const wrong = sessionStorage.getItem(KEY_ITEM) ? "That key was refused; try again." : "";
    sessionStorage.removeItem(KEY_ITEM);
    await askForKey(wrong);
  }
}

// The API's JSON answer, or an ApiError.
export async function api(path, options = {}) {
  const response = await send(path, options);
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

export async function apiText(path, options = {}) {
  const response = await send(path, options);
  if (!response.ok) throw await errorOf(response);
  return response.text();
}

export { errorOf };

// Which routes this node serves, from its OpenAPI description (open, and asked once): a page whose API is
// missing says so without sending a request that would only 404.
// A node that does not answer is not a node without the feature: that throws, and the page says so.
let routes = null;
export async function hasRoute(path) {
  if (!routes) {
    routes = api("/openapi.json").then((spec) => new Set(Object.keys(spec.paths || {})));
    routes.catch(() => (routes = null)); // ask again next time: the node may be back
  }
  return (await routes).has(path);
}
