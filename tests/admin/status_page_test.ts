/**
 * The status page in a real headless Chromium (Debian's `chromium`, driven
 * over the DevTools protocol by `./cdp.ts`; no browser download): it loads,
 * takes its token from the address, shows a relay this test opened, its
 * counters move with the traffic, client-controlled strings stay text, and
 * its close button cuts the relay. A screenshot is left in a temporary
 * directory, and its path printed.
 *
 * Without /usr/bin/chromium the test is skipped with one line, except under
 * CI (`CI=true`), where it fails.
 */
import assert from "node:assert/strict";
import { serve } from "../../src/server/gateway.ts";
import type { Resolver } from "../../src/server/resolver.ts";
import { encodeGreeting, encodeRequest, toSocksAddress } from "../../src/protocol/codec.ts";
import { echoServer, gatewayAddr, recordingLogger, socksConnect, writeAll } from "../helpers.ts";
import { Browser, CHROMIUM, type Page } from "./cdp.ts";
import { echo, eof, serveAdmin, until } from "./helpers.ts";

const hasChromium = (() => {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
})();
const inCi = Deno.env.get("CI") === "true";
if (!hasChromium && !inCi) {
  console.error(`status page test skipped: ${CHROMIUM} not found (apt-get install chromium)`);
}

const TOKEN = "status-page-token-0123456789";
const HOSTILE = "<img src=x onerror=alert(1)>.test";

/** The cells of the table row whose destination is exactly `destination`, or null. */
function row(page: Page, destination: string) {
  return page.evaluate<Record<string, string> | null>(`(() => {
    const td = [...document.querySelectorAll('#sessions tbody td[data-field="destination"]')]
      .find((td) => td.textContent === ${JSON.stringify(destination)});
    if (!td) return null;
    const out = { id: td.parentElement.dataset.sessionId };
    for (const cell of td.parentElement.querySelectorAll("td[data-field]")) {
      out[cell.dataset.field] = cell.textContent;
      if (cell.title) out[cell.dataset.field + "Title"] = cell.title;
    }
    return out;
  })()`);
}

/** A counter of a type card: `active`, `total`, or the exact bytes of `up` / `down`. */
function card(page: Page, type: string, field: string) {
  return page.evaluate<string>(`(() => {
    const dd = document.querySelector('.type[data-type="${type}"] [data-field="${field}"]');
    return ${JSON.stringify(field)} === "up" || ${JSON.stringify(field)} === "down"
      ? dd.title : dd.textContent;
  })()`);
}

Deno.test({
  name: "status page: live relays and counters in headless Chromium",
  ignore: !hasChromium && !inCi,
  async fn() {
    assert.ok(hasChromium, `${CHROMIUM} is required under CI (apt-get install chromium)`);
    const dest = echoServer("127.0.0.1");
    // A name that never resolves keeps its session in the table, destination and all.
    const resolver: Resolver = (name, { signal }) =>
      name === "v4.test"
        ? Promise.resolve([{ address: "127.0.0.1", family: 4 }])
        : new Promise((_, reject) =>
          signal?.addEventListener("abort", () => reject(signal.reason))
        );
    const gw = serve({
      listen: ["127.0.0.1:0", "[::1]:0"],
      logger: recordingLogger(),
      resolver,
      timeouts: { connect: 60_000 },
    });
    const shots = await Deno.makeTempDir({ prefix: "dualsocks-status-page-" });
    await using admin = serveAdmin(gw, { token: TOKEN });
    let browser: Browser | undefined;
    let relay: Awaited<ReturnType<typeof socksConnect>> | undefined;
    let hostile: Deno.TcpConn | undefined;
    try {
      browser = await Browser.launch();
      relay = await socksConnect(gatewayAddr(gw, 6), "v4.test", dest.addr.port);
      // Greeting and request only: the reply would wait for the name that never resolves.
      hostile = await Deno.connect(gatewayAddr(gw, 4));
      await writeAll(hostile, encodeGreeting({ methods: [0] }));
      await writeAll(
        hostile,
        encodeRequest({ command: 1, address: toSocksAddress(HOSTILE), port: 80 }),
      );
      assert.equal(relay.reply?.reply, 0);
      await echo(relay.conn, "x".repeat(1000));
      const page = await browser.newPage();
      await page.goto(`${admin.base}/?token=${TOKEN}`);
      assert.equal(await page.evaluate("location.search"), "", "the token leaves the address bar");

      // The relay this test opened, with its type and resolved address.
      const destination = `v4.test:${dest.addr.port}`;
      const cells = await until("the relay's row", () => row(page, destination));
      assert.equal(cells.type, "C");
      assert.equal(cells.phase, "relay");
      assert.equal(cells.resolved, `127.0.0.1:${dest.addr.port}`);
      assert.equal(cells.bytesUpTitle, "1000 bytes");
      await until("type C active 1", async () => (await card(page, "C", "active")) === "1");
      assert.equal(await page.evaluate(`document.getElementById("state").textContent`), "ready");
      assert.equal(await page.evaluate(`document.getElementById("login").hidden`), true);

      // The counters follow the traffic without a reload.
      await echo(relay.conn, "y".repeat(200_000));
      await until("type C up 201000", async () => (await card(page, "C", "up")) === "201000 bytes");
      await until(
        "the row's down 201000",
        async () => (await row(page, destination))?.bytesDownTitle === "201000 bytes",
      );
      // Successive byte totals draw the sparkline.
      const points = async () =>
        Number(await page.evaluate(`document.getElementById("sparkline").dataset.points`));
      await until("two sparkline points", async () => (await points()) >= 2);
      await echo(relay.conn, "z".repeat(100_000));
      await until("four sparkline points", async () => (await points()) >= 4);
      assert.match(
        await page.evaluate<string>(`document.getElementById("rate").textContent`),
        /\/s$/,
      );

      // Client-controlled text stays text.
      const evil = await until("the hostile destination", () => row(page, `${HOSTILE}:80`));
      assert.equal(evil.phase, "connect");
      assert.equal(await page.evaluate(`document.querySelectorAll("#sessions img").length`), 0);

      const shot = `${shots}/status.png`;
      await page.screenshot(shot);
      console.log(`status page screenshot: ${shot}`);
      assert.ok((await Deno.stat(shot)).size > 1000);

      // The close button cuts the relay: the client sees EOF and the row goes.
      await page.evaluate(`(() => {
        const td = [...document.querySelectorAll('#sessions tbody td[data-field="destination"]')]
          .find((td) => td.textContent === ${JSON.stringify(destination)});
        td.parentElement.querySelector("button").click();
      })()`);
      assert.equal(await eof(relay.conn), null);
      await until("the row gone", async () => (await row(page, destination)) === null);
      await until("type C active 0", async () => (await card(page, "C", "active")) === "0");
      assert.deepEqual(page.problems, []);
    } finally {
      relay?.conn.close();
      hostile?.close();
      await browser?.close();
      await gw.shutdown({ grace: 0 });
      await dest.close();
    }
  },
});
