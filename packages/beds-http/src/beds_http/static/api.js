// The beds-http edge as the page uses it: JSON in, {"data", "meta"} or problem+json out.
// The session token lives in sessionStorage (this tab only) and travels only in the
// Authorization header, never in a URL.

const TOKEN_KEY = "spew.session";

export class ApiError extends Error {
  constructor(status, problem) {
    const detail = problem.detail || problem.title || `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.code = problem.code || `HTTP-${status}`;
    this.title = problem.title || "";
    this.detail = detail;
  }

  // One line for the page's alert: what went wrong, and the catalogue code to look up.
  describe() {
    return this.title && this.title !== this.detail
      ? `${this.title}: ${this.detail} (${this.code})`
      : `${this.detail} (${this.code})`;
  }
}

export class Api {
  constructor(base = "/v1") {
    this.base = base;
    const saved = sessionStorage.getItem(TOKEN_KEY);
    this.session = saved ? JSON.parse(saved) : null;
  }

  get handle() {
    return this.session ? this.session.handle : null;
  }

  headers(extra = {}) {
    const headers = { Accept: "application/json", ...extra };
    if (this.session) headers.Authorization = `Bearer ${this.session.token}`;
    return headers;
  }

  // params: an object; arrays become repeated query parameters (list params, http_api.md).
  async request(method, path, { body, params, headers } = {}) {
    let url = this.base + path;
    if (params) {
      const query = new URLSearchParams();
      for (const [name, value] of Object.entries(params)) {
        if (value === undefined || value === null) continue;
        for (const item of Array.isArray(value) ? value : [value]) query.append(name, String(item));
      }
      const text = query.toString();
      if (text) url += `?${text}`;
    }
    const init = { method, headers: this.headers(headers), credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (exc) {
      throw new ApiError(0, { code: "NETWORK", detail: `the server did not answer (${exc.message})` });
    }
    if (response.status === 204) return { data: null, meta: {} };
    const text = await response.text();
    let payload = {};
    try {
      payload = text ? JSON.parse(text) : {};
    } catch {
      payload = { detail: text.slice(0, 200) };
    }
    if (!response.ok) {
      if (response.status === 401 && this.session && !path.startsWith("/auth/login")) {
        this.forget(); // the token expired or was revoked: the page shows the login form again
      }
      throw new ApiError(response.status, payload);
    }
    return { data: payload.data, meta: payload.meta || {} };
  }

  async signup(handle, password, displayName) {
    const body = { handle, password };
    if (displayName) body.display_name = displayName;
    return (await this.request("POST", "/auth/signup", { body })).data;
  }

  async login(handle, password) {
    const { data } = await this.request("POST", "/auth/login", { body: { handle, password } });
    this.session = { token: data.token, handle: data.handle || handle, roles: data.roles || [] };
    sessionStorage.setItem(TOKEN_KEY, JSON.stringify(this.session));
    return this.session;
  }

  async logout() {
    try {
      await this.request("POST", "/auth/logout");
    } finally {
      this.forget();
    }
  }

  forget() {
    this.session = null;
    sessionStorage.removeItem(TOKEN_KEY);
  }

  create(template, record, idempotencyKey) {
    const headers = idempotencyKey ? { "Idempotency-Key": idempotencyKey } : {};
    return this.request("POST", `/${template}`, { body: record, headers });
  }

  fetch(template, query, params = {}, { limit, cursor } = {}) {
    return this.request("GET", `/${template}/${query}`, {
      params: { ...params, limit, cursor },
    });
  }

  remove(template, key) {
    return this.request("DELETE", `/${template}`, { params: key });
  }
}
