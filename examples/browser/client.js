// authsvc reference browser client: no dependencies, no build step.
//
// AuthClient is the part to copy into an app:
//   - logs in with the cookie transport: the refresh token lives only in authsvc's
//     HttpOnly cookie, which this code never sees;
//   - keeps the access token in memory only (never localStorage or sessionStorage);
//   - refreshes before a request once the access token has expired by its `expires_in`,
//     and, should the service still answer 401 `token_expired` (clocks differ), refreshes
//     once and retries the request once;
//   - makes refreshes single-flight across the tabs of this origin with the Web Locks API,
//     so two tabs never present the same refresh token (authsvc would take the second
//     presentation for theft and revoke the session);
//   - shares a new access token and a logout with the other tabs over a BroadcastChannel;
//   - restores a session from the refresh cookie when the page loads.
// The rest of the file wires it to index.html.

export class AuthError extends Error {
  constructor(code, detail, status) {
    super(detail || code);
    this.code = code; // authsvc's `error` code, or "network_error"
    this.status = status;
  }
}

const LOCK_NAME = "authsvc-refresh";
const CHANNEL_NAME = "authsvc-session";

export class AuthClient {
  #api;
  #accessToken = null; // memory only
  #expiresAt = 0; // ms since the epoch, from the token response's expires_in
  #generation = 0; // bumped whenever the access token changes, here or from another tab
  #inTab = null; // this tab's refresh in progress, if any
  #channel;

  /** @param {string} api the service's base URL, e.g. https://auth.example.com */
  constructor(api, { onLogout = () => {}, onEvent = () => {} } = {}) {
    this.#api = api.replace(/\/+$/, "");
    this.onLogout = onLogout;
    this.onEvent = onEvent; // (text) => void: what happened, for humans
    this.#channel = new BroadcastChannel(CHANNEL_NAME);
    this.#channel.onmessage = ({ data }) => {
      if (data.type === "token") {
        this.#setToken(data.accessToken, data.expiresAt);
        this.onEvent("got a fresh access token from another tab");
      } else if (data.type === "logout") {
        this.#setToken(null, 0);
        this.onEvent("another tab logged out");
        this.onLogout();
      }
    };
  }

  get loggedIn() {
    return this.#accessToken !== null;
  }

  get #expired() {
    return Date.now() >= this.#expiresAt;
  }

  /** Password login; the refresh token goes into the HttpOnly cookie. */
  async login(username, password) {
    const body = await this.#post("/login?transport=cookie", { username, password });
    this.#setToken(body.access_token, expiry(body), { share: true });
    this.onEvent("logged in");
  }

  /** A fetch to the service with a live access token: refreshed first if it has expired,
   * and once more (then the request retried once) on a 401 `token_expired`. */
  async fetch(path, init = {}) {
    if (this.loggedIn && this.#expired) {
      this.onEvent("access token expired: refreshing");
      await this.refresh();
    } else if (!this.loggedIn) {
      await this.refresh();
    }
    let response = await this.#authorized(path, init);
    if (response.status === 401 && (await errorOf(response)).code === "token_expired") {
      this.onEvent("401 token_expired: refreshing, then retrying");
      await this.refresh();
      response = await this.#authorized(path, init);
    }
    // Still 401: the session is over (logged out elsewhere, revoked, user disabled).
    if (response.status === 401) this.#setToken(null, 0);
    return response;
  }

  /** GET /me: the signed-in user, or an AuthError. */
  async me() {
    const response = await this.fetch("/me");
    if (!response.ok) throw await errorOf(response);
    return response.json();
  }

  /** Rotate the refresh cookie for a new access token: one refresh at a time across every
   * tab of this origin. A tab that waited while another refreshed uses that tab's token. */
  refresh() {
    const seen = this.#generation;
    this.#inTab ??= singleFlight(async () => {
      if (this.#generation !== seen && this.loggedIn && !this.#expired) {
        this.onEvent("another tab refreshed meanwhile: using its token");
        return;
      }
      try {
        const body = await this.#post("/refresh?transport=cookie");
        this.#setToken(body.access_token, expiry(body), { share: true });
        this.onEvent("refreshed the access token");
      } catch (error) {
        this.#setToken(null, 0);
        throw error;
      }
    }).finally(() => {
      this.#inTab = null;
    });
    return this.#inTab;
  }

  /** On page load: a session from the refresh cookie, if there is one. */
  async restore() {
    try {
      await this.refresh();
      this.onEvent("restored the session from the refresh cookie");
      return true;
    } catch (error) {
      // 422: no refresh cookie (nobody is logged in); anything else: the session ended.
      if (error.code === "validation_error") return false;
      throw error;
    }
  }

  /** Revoke the session and clear the cookie, in this tab and the others. */
  async logout() {
    try {
      await this.#post("/logout");
    } finally {
      this.#setToken(null, 0);
      this.#channel.postMessage({ type: "logout" });
      this.onEvent("logged out");
    }
  }

  #setToken(token, expiresAt, { share = false } = {}) {
    this.#accessToken = token;
    this.#expiresAt = expiresAt;
    this.#generation += 1;
    if (share) this.#channel.postMessage({ type: "token", accessToken: token, expiresAt });
  }

  #authorized(path, init) {
    const headers = new Headers(init.headers);
    if (this.#accessToken) headers.set("Authorization", `Bearer ${this.#accessToken}`);
    // No cookies on bearer calls: only login, refresh and logout need the refresh cookie.
    return request(`${this.#api}${path}`, { ...init, headers, credentials: "omit" });
  }

  async #post(path, json) {
    const init = { method: "POST", credentials: "include" };
    if (json !== undefined) {
      init.headers = { "Content-Type": "application/json" };
      init.body = JSON.stringify(json);
    }
    const response = await request(`${this.#api}${path}`, init);
    if (!response.ok) throw await errorOf(response);
    return response.status === 204 ? null : response.json();
  }
}

function expiry(tokenResponse) {
  return Date.now() + tokenResponse.expires_in * 1000;
}

function singleFlight(task) {
  if (navigator.locks) return navigator.locks.request(LOCK_NAME, task);
  // Web Locks need a secure context (HTTPS, or localhost); without them refreshes are
  // single-flight only within this tab.
  console.warn("authsvc: no Web Locks here; tabs may refresh at the same time");
  return task();
}

async function request(url, init) {
  try {
    return await fetch(url, init);
  } catch (error) {
    // Unreachable, or refused by CORS: the browser does not say which.
    throw new AuthError("network_error", String(error), 0);
  }
}

async function errorOf(response) {
  let body = {};
  try {
    body = await response.clone().json();
  } catch {
    // not JSON
  }
  const detail = typeof body.detail === "string" ? body.detail : response.statusText;
  return new AuthError(body.error || `http_${response.status}`, detail, response.status);
}

// --- index.html ---------------------------------------------------------------------------

function byTestId(id) {
  return document.querySelector(`[data-testid="${id}"]`);
}

/** The service's URL from `?api=`. A real app hard-codes it: a link could point this page
 * at any server, which would then receive the password typed here. */
function serviceUrl() {
  const given = new URLSearchParams(location.search).get("api") || "http://localhost:8000";
  const url = new URL(given);
  if (url.protocol !== "https:" && url.protocol !== "http:") throw new Error("?api= must be http(s)");
  return url.origin + url.pathname.replace(/\/+$/, "");
}

function main() {
  const whoami = byTestId("whoami");
  const status = byTestId("status");
  const log = document.getElementById("log");
  const note = (text) => {
    const item = document.createElement("li");
    item.textContent = `${new Date().toISOString().slice(11, 23)} ${text}`;
    log.append(item);
  };
  const show = (outcome, username) => {
    status.textContent = outcome;
    if (username !== undefined) whoami.textContent = username;
  };
  const failed = (error) => {
    const code = error instanceof AuthError ? error.code : "error";
    if (code === "validation_error" && !auth.loggedIn) {
      // The refresh found no cookie: nobody is logged in here.
      note("no session: log in first");
      show("logged out", "");
      return;
    }
    note(
      code === "network_error"
        ? "failed: network_error (the service is unreachable, or CORS refused this origin)"
        : `failed: ${code}`,
    );
    show(code, auth.loggedIn ? undefined : "");
  };

  let api;
  try {
    api = serviceUrl();
  } catch (error) {
    show("bad_api_url", "");
    return;
  }
  document.getElementById("api").textContent = api;
  const auth = new AuthClient(api, {
    onLogout: () => show("logged out", ""),
    onEvent: note,
  });

  // aria-busy on <body> while an action runs: for people (and test harnesses) to wait on.
  const action = (task) => async (...args) => {
    document.body.setAttribute("aria-busy", "true");
    try {
      await task(...args);
    } finally {
      document.body.setAttribute("aria-busy", "false");
    }
  };

  const callMe = async () => {
    try {
      const me = await auth.me();
      note(`GET /me: ${me.username}`);
      show("ok", me.username);
    } catch (error) {
      failed(error);
    }
  };

  byTestId("login").closest("form").addEventListener("submit", (event) => {
    event.preventDefault();
    logIn();
  });
  const logIn = action(async () => {
    try {
      await auth.login(byTestId("username").value, byTestId("password").value);
      byTestId("password").value = "";
      await callMe();
    } catch (error) {
      failed(error);
    }
  });
  byTestId("call-me").addEventListener("click", action(callMe));
  byTestId("logout").addEventListener(
    "click",
    action(async () => {
      try {
        await auth.logout();
        show("logged out", "");
      } catch (error) {
        failed(error);
      }
    }),
  );

  action(async () => {
    try {
      if (await auth.restore()) await callMe();
      else show("logged out", "");
    } catch (error) {
      failed(error);
    }
  })();
}

if (byTestId("login")) main();
