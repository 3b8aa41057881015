/**
 * A small Chrome DevTools Protocol client for the status page test: it
 * starts Debian's Chromium headless with `--remote-debugging-port=0`, talks
 * to it over a WebSocket, and offers what the test needs (navigate,
 * evaluate, wait for a condition, screenshot). No npm package: playwright
 * cannot be imported under the test task's permissions (it probes
 * `/proc/sys/fs/binfmt_misc`, which only `--allow-all` may read).
 *
 * @module
 */

import { forEachLine } from "../helpers.ts";

/** How long one DevTools command may take before it fails. */
const COMMAND_MS = 30_000;

/** Where Debian installs Chromium. */
export const CHROMIUM = "/usr/bin/chromium";

/**
 * Headless, nothing in the background, and no network but loopback: every
 * host but localhost, 127.0.0.1 and [::1] resolves to nothing, every other
 * request goes to a proxy on the discard port that nothing answers (loopback
 * bypasses any proxy), and WebRTC may not use UDP of its own. Without these, Chromium
 * looks up and contacts Google's hosts at start, whatever the --disable-*
 * flags say. What remains (checked with strace) is its resolver's IPv6
 * reachability probe: a UDP connect() to 2001:4860:4860::8888, which sends
 * no packet.
 */
const FLAGS = [
  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]",
  "--proxy-server=http://127.0.0.1:9",
  "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
  "--no-pings",
  "--disable-domain-reliability",
  "--disable-client-side-phishing-detection",
  "--disable-features=OptimizationHints,OptimizationGuideModelDownloading,MediaRouter,Translate",
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-extensions",
  "--disable-default-apps",
  "--mute-audio",
  "--remote-debugging-port=0",
  "--remote-debugging-address=127.0.0.1",
];

interface Pending {
  resolve: (result: Record<string, unknown>) => void;
  reject: (error: Error) => void;
  method: string;
}

type Listener = (params: Record<string, unknown>, sessionId?: string) => void;

/** A running Chromium driven over the DevTools protocol. */
export class Browser {
  #ws: WebSocket;
  #child: Deno.ChildProcess;
  #userDataDir: string;
  #stderr: Promise<void>;
  #nextId = 1;
  #pending = new Map<number, Pending>();
  #listeners = new Set<{ method: string; fn: Listener }>();
  #closed: Promise<void>;
  /** Chromium's standard error, for diagnostics. */
  readonly log: string[];

  private constructor(
    ws: WebSocket,
    child: Deno.ChildProcess,
    userDataDir: string,
    stderr: Promise<void>,
    log: string[],
  ) {
    this.#ws = ws;
    this.#child = child;
    this.#userDataDir = userDataDir;
    this.#stderr = stderr;
    this.log = log;
    this.#closed = new Promise((resolve) => ws.addEventListener("close", () => resolve()));
    ws.addEventListener("message", (event) => {
      const msg = JSON.parse(String(event.data));
      if (typeof msg.id === "number") {
        const p = this.#pending.get(msg.id);
        if (!p) return;
        this.#pending.delete(msg.id);
        if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}`));
        else p.resolve(msg.result ?? {});
        return;
      }
      for (const l of [...this.#listeners]) {
        if (l.method === msg.method) l.fn(msg.params ?? {}, msg.sessionId);
      }
    });
    this.#closed.then(() => {
      for (const p of this.#pending.values()) p.reject(new Error(`${p.method}: browser closed`));
      this.#pending.clear();
    });
  }

  /** Starts Chromium with a fresh profile; rejects if it does not answer within `timeout` ms. */
  static async launch(options: { timeout?: number } = {}): Promise<Browser> {
    const userDataDir = await Deno.makeTempDir({ prefix: "dualsocks-chromium-" });
    const child = new Deno.Command(CHROMIUM, {
      args: [...FLAGS, `--user-data-dir=${userDataDir}`, "--window-size=1280,800", "about:blank"],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const log: string[] = [];
    let found!: (url: string) => void;
    const wsUrl = new Promise<string>((resolve) => (found = resolve));
    // Keep reading stderr to its end, so that Chromium never blocks on a full pipe.
    const stderr = forEachLine(child.stderr, (line) => {
      log.push(line);
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(line);
      if (m) found(m[1]);
    });
    const timeout = options.timeout ?? 30_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const url = await Promise.race([
        wsUrl,
        child.status.then((s) => {
          throw new Error(`chromium exited with ${s.code} before listening:\n${log.join("\n")}`);
        }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`chromium did not listen within ${timeout} ms`)),
            timeout,
          );
        }),
      ]);
      const ws = new WebSocket(url);
      await new Promise<void>((resolve, reject) => {
        ws.addEventListener("open", () => resolve(), { once: true });
        ws.addEventListener("error", () => reject(new Error(`cannot open ${url}`)), {
          once: true,
        });
      });
      return new Browser(ws, child, userDataDir, stderr, log);
    } catch (error) {
      child.kill("SIGKILL");
      await child.status;
      await stderr;
      await Deno.remove(userDataDir, { recursive: true });
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends one command and resolves to its result; rejects after `timeout` ms without one. */
  send(
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
    timeout = COMMAND_MS,
  ): Promise<Record<string, unknown>> {
    const id = this.#nextId++;
    let timer: ReturnType<typeof setTimeout> | undefined;
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, method });
      timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`${method}: no answer from Chromium within ${timeout} ms`));
      }, timeout);
      this.#ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    }).finally(() => clearTimeout(timer));
  }

  /** Calls `fn` for every event `method`; returns a function that stops it. */
  on(method: string, fn: Listener): () => void {
    const entry = { method, fn };
    this.#listeners.add(entry);
    return () => this.#listeners.delete(entry);
  }

  /** Opens a new tab. */
  async newPage(): Promise<Page> {
    const { targetId } = await this.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.send("Target.attachToTarget", { targetId, flatten: true });
    const page = new Page(this, sessionId as string);
    await page.init();
    return page;
  }

  /** Closes the browser and removes its profile; kills it if it does not go within 10 s. */
  async close(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), 10_000)));
    await this.send("Browser.close", {}, undefined, 5_000).catch(() => {});
    if ((await Promise.race([this.#child.status, late])) === "late") this.#child.kill("SIGKILL");
    clearTimeout(timer);
    await this.#child.status;
    await this.#stderr;
    if (this.#ws.readyState !== WebSocket.CLOSED) {
      this.#ws.close();
      await this.#closed;
    }
    await Deno.remove(this.#userDataDir, { recursive: true });
  }
}

/** One tab. Page errors and dialogs are recorded in {@linkcode Page.problems}. */
export class Page {
  #browser: Browser;
  #sessionId: string;
  /** Uncaught exceptions and dialogs the page produced. */
  readonly problems: string[] = [];

  constructor(browser: Browser, sessionId: string) {
    this.#browser = browser;
    this.#sessionId = sessionId;
  }

  #send(method: string, params: Record<string, unknown> = {}) {
    return this.#browser.send(method, params, this.#sessionId);
  }

  /** Enables the domains the page needs. */
  async init(): Promise<void> {
    this.#browser.on("Runtime.exceptionThrown", (p, sessionId) => {
      if (sessionId !== this.#sessionId) return;
      const details = p.exceptionDetails as { text?: string; exception?: { description?: string } };
      this.problems.push(`exception: ${details.exception?.description ?? details.text}`);
    });
    this.#browser.on("Page.javascriptDialogOpening", (p, sessionId) => {
      if (sessionId !== this.#sessionId) return;
      this.problems.push(`dialog: ${p.message}`);
      this.#send("Page.handleJavaScriptDialog", { accept: false }).catch(() => {});
    });
    await this.#send("Page.enable");
    await this.#send("Runtime.enable");
    await this.#send("Emulation.setDeviceMetricsOverride", {
      width: 1280,
      height: 800,
      deviceScaleFactor: 1,
      mobile: false,
    });
  }

  /** Navigates and waits for the load event. */
  async goto(url: string, timeout = 15_000): Promise<void> {
    let stop = () => {};
    const loaded = new Promise<void>((resolve) => {
      stop = this.#browser.on("Page.loadEventFired", (_, sessionId) => {
        if (sessionId === this.#sessionId) resolve();
      });
    });
    try {
      const result = await this.#send("Page.navigate", { url });
      if (result.errorText) throw new Error(`cannot open ${url}: ${result.errorText}`);
      await withTimeout(loaded, timeout, `load of ${url}`);
    } finally {
      stop();
    }
  }

  /** Evaluates `expression` in the page and returns its (JSON) value. */
  async evaluate<T = unknown>(expression: string): Promise<T> {
    const { result, exceptionDetails } = await this.#send("Runtime.evaluate", {
      expression,
      returnByValue: true,
      awaitPromise: true,
    }) as { result: { value?: T }; exceptionDetails?: { text: string } };
    if (exceptionDetails) {
      throw new Error(`evaluate ${expression}: ${JSON.stringify(exceptionDetails)}`);
    }
    return result.value as T;
  }

  /** Polls `expression` until it is truthy; returns its value. */
  async waitFor<T = unknown>(what: string, expression: string, timeout = 15_000): Promise<T> {
    const deadline = performance.now() + timeout;
    let last: unknown;
    while (performance.now() < deadline) {
      last = await this.evaluate<T>(expression);
      if (last) return last as T;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`${what}: not within ${timeout} ms (last value ${JSON.stringify(last)})`);
  }

  /** Saves a PNG of the whole page. */
  async screenshot(path: string): Promise<void> {
    const { data } = await this.#send("Page.captureScreenshot", {
      format: "png",
      captureBeyondViewport: true,
    });
    const bin = atob(data as string);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    await Deno.writeFile(path, bytes);
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}
