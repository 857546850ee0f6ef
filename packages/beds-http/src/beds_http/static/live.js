// Live updates: the edge's Server-Sent Events stream (GET /v1/events), read with fetch() and a
// stream reader rather than EventSource, because EventSource cannot send the Authorization
// header and the token must never be put in a URL. Reconnects with Last-Event-ID, so the
// edge replays what was missed while the connection was down.

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 15000;

// Parses text/event-stream chunks into {id, event, data} objects (the WHATWG rules the page
// needs: fields, comments, multi-line data, a blank line ends an event).
export class EventStreamParser {
  constructor() {
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.event = "";
    this.data = [];
    this.id = null;
  }

  *push(chunk) {
    this.buffer += chunk;
    let end;
    while ((end = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      // A CR that ends the chunk may be the first half of a CRLF split across two chunks.
      if (end === this.buffer.length - 1 && this.buffer[end] === "\r") break;
      const line = this.buffer.slice(0, end);
      const width = this.buffer.startsWith("\r\n", end) ? 2 : 1;
      this.buffer = this.buffer.slice(end + width);
      if (line === "") {
        if (this.data.length) {
          yield { id: this.id, event: this.event || "message", data: this.data.join("\n") };
        }
        this.reset();
        continue;
      }
      if (line.startsWith(":")) continue; // a keep-alive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") this.data.push(value);
      else if (field === "event") this.event = value;
      else if (field === "id") this.id = value;
    }
  }
}

export class LiveStream {
  // onEvent(name, payload) for each event; onState(text) for the page's status line.
  constructor(api, templates, { onEvent, onState }) {
    this.api = api;
    this.templates = templates;
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastId = null;
    this.controller = null;
    this.stopped = true;
  }

  start() {
    this.stopped = false;
    this.run();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
    this.controller = null;
  }

  async run() {
    let delay = RETRY_MIN_MS;
    while (!this.stopped) {
      try {
        await this.connect();
        delay = RETRY_MIN_MS; // the stream ended normally: reconnect at once-ish
      } catch (exc) {
        if (this.stopped) return;
        this.onState(`Live updates: reconnecting (${exc.message})`);
      }
      if (this.stopped) return;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }

  async connect() {
    this.controller = new AbortController();
    const query = new URLSearchParams();
    for (const template of this.templates) query.append("template", template);
    const headers = this.api.headers({ Accept: "text/event-stream" });
    if (this.lastId) headers["Last-Event-ID"] = this.lastId;
    const response = await fetch(`${this.api.base}/events?${query}`, {
      headers,
      signal: this.controller.signal,
      cache: "no-store",
    });
    if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
    this.onState("Live updates: on");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new EventStreamParser();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      for (const message of parser.push(value)) {
        if (message.id) this.lastId = message.id;
        let payload;
        try {
          payload = JSON.parse(message.data);
        } catch {
          continue; // not ours to show
        }
        this.onEvent(message.event, payload);
      }
    }
  }
}
