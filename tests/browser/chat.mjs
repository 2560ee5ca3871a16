// Drives Debian's chromium for tests/integration/test_browser.py.
//
// A line protocol on stdin/stdout so the Python test stays in charge (it also runs roomd and
// a plain TCP client): each stdin line is one JSON command with an `id`; each reply is one
// stdout line {"id", "ok": true, ...} or {"id", "ok": false, "error"}. Commands run as they
// arrive, so commands for two pages can run at once (never two at once for one page).
// The first line, {"ready": true, "version"}, says that chromium is up. stdin's EOF closes
// the browser and exits. Every wait is bounded by CHAT_TIMEOUT_MS.
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const timeout = Number(process.env.CHAT_TIMEOUT_MS || 15000);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

const browser = await chromium.launch({
  executablePath,
  timeout: timeout * 4,  // a first start on a loaded machine may be slow
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
         '--no-first-run', '--disable-component-update', '--disable-sync'],
});

const pages = new Map();  // name -> { page, errors }

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function get(name) {
  const p = pages.get(name);
  if (!p) throw new Error(`no page ${name}`);
  return p.page;
}

const logSel = (room) => `ol.log[data-room=${JSON.stringify(room)}]`;

// What a page shows of a room: its message lines, in the order shown.
function messages(page, room) {
  return page.$$eval(`${logSel(room)} li.msg`, (lis) => lis.map((li) => ({
    seq: Number(li.dataset.seq), from: li.dataset.from, text: li.querySelector('.text').textContent,
  })));
}

const commands = {
  async open({ page: name, url }) {
    const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
    const page = await context.newPage();
    page.setDefaultTimeout(timeout);
    const errors = [];
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
    pages.set(name, { page, errors });
    await page.goto(url, { timeout });
    await page.waitForSelector('#status[data-state="open"]');
    return {};
  },

  async nick({ page: name, nick }) {
    const page = get(name);
    await page.fill('#nick-input', nick);
    await page.press('#nick-input', 'Enter');
    await page.waitForFunction((n) => document.getElementById('me').textContent === n, nick, { timeout });
    return {};
  },

  // `room` is what the person types: "ROOM" or "ROOM KEY".
  async join({ page: name, room }) {
    const page = get(name);
    await page.fill('#join-input', room);
    await page.press('#join-input', 'Enter');
    await page.waitForSelector(`button.tab.active[data-room=${JSON.stringify(room.split(' ')[0])}]`);
    return {};
  },

  async activate({ page: name, room }) {
    const page = get(name);
    await page.click(`button.tab[data-room=${JSON.stringify(room)}]`);
    await page.waitForSelector(`button.tab.active[data-room=${JSON.stringify(room)}]`);
    return {};
  },

  // Types each line into the message box and presses Enter (a say, or a /command).
  async type({ page: name, lines }) {
    const page = get(name);
    for (const text of lines) {
      await page.fill('#say-input', text);
      await page.press('#say-input', 'Enter');
    }
    return {};
  },

  async leave({ page: name, room }) {
    const page = get(name);
    await commands.activate({ page: name, room });
    await page.click('#leave-button');
    await page.waitForSelector(`button.tab[data-room=${JSON.stringify(room)}]`, { state: 'detached' });
    return {};
  },

  // Waits until the room shows at least `count` messages; returns them.
  async messages({ page: name, room, count = 0 }) {
    const page = get(name);
    await page.waitForFunction(([sel, n]) => document.querySelectorAll(`${sel} li.msg`).length >= n,
      [logSel(room), count], { timeout });
    return { messages: await messages(page, room) };
  },

  // Waits for a line of `kind` (a class: presence, resume, whisper, error, notice) whose text
  // contains `text` (and whose data attributes match `data`); returns every such line's text.
  async line({ page: name, room, kind, text = '', data = {} }) {
    const page = get(name);
    const sel = room === undefined ? `ol.log:not([hidden]) li.${kind}` : `${logSel(room)} li.${kind}`;
    await page.waitForFunction((args) => {
      const [s, t, d] = args;
      return [...document.querySelectorAll(s)].some((li) =>
        li.textContent.includes(t) && Object.entries(d).every(([k, v]) => li.dataset[k] === v));
    }, [sel, text, data], { timeout });
    const lines = await page.$$eval(sel, (lis, [t, d]) => lis.filter((li) =>
      li.textContent.includes(t) && Object.entries(d).every(([k, v]) => li.dataset[k] === v))
      .map((li) => li.textContent), [text, data]);
    return { lines };
  },

  // Waits until the members list (of the room shown) is exactly `nicks` (any order) and,
  // when given, the count shown is `count`.
  async members({ page: name, nicks, count }) {
    const page = get(name);
    await page.waitForFunction(([want, c]) => {
      const have = [...document.querySelectorAll('#members li')].map((li) => li.dataset.nick).sort();
      const shown = document.getElementById('member-count').textContent;
      return JSON.stringify(have) === JSON.stringify([...want].sort()) && (c === null || shown === `(${c})`);
    }, [nicks, count ?? null], { timeout });
    return {};
  },

  async click({ page: name, selector }) {
    await get(name).click(selector);
    return {};
  },

  async status({ page: name, state }) {
    await get(name).waitForSelector(`#status[data-state=${JSON.stringify(state)}]`);
    return {};
  },

  // Counts elements matching a selector (to check that user text never became markup).
  async count({ page: name, selector }) {
    return { count: await get(name).locator(selector).count() };
  },

  async screenshot({ page: name, path }) {
    await get(name).screenshot({ path, fullPage: true });
    return { path };
  },

  async errors({ page: name }) {
    return { errors: pages.get(name)?.errors ?? [] };
  },
};

// For a failure's message: what the page shows (status, and the last lines of each room).
async function shows(name) {
  const p = pages.get(name);
  if (!p) return '';
  try {
    return await p.page.evaluate(() => {
      const out = [`page status: ${document.getElementById('status').textContent}`];
      for (const log of document.querySelectorAll('ol.log')) {
        out.push(`-- ${log.dataset.room || 'notices'}${log.hidden ? '' : ' (shown)'}`);
        for (const li of [...log.children].slice(-15)) out.push(`   ${li.className}: ${li.textContent}`);
      }
      return out.join('\n');
    });
  } catch (e) {
    return `(page not readable: ${e.message})`;
  }
}

reply({ ready: true, version: browser.version() });

const rl = createInterface({ input: process.stdin });
const running = new Set();
rl.on('line', (text) => {
  if (!text.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(text);
  } catch (e) {
    reply({ ok: false, error: `bad command: ${e.message}` });
    return;
  }
  const run = commands[cmd.cmd];
  const task = (run ? run(cmd) : Promise.reject(new Error(`unknown command ${cmd.cmd}`)))
    .then((r) => reply({ id: cmd.id, ok: true, ...r }),
          async (e) => reply({ id: cmd.id, ok: false,
                               error: `${JSON.stringify(cmd)}: ${(e && e.stack) || e}\n${await shows(cmd.page)}` }));
  running.add(task);
  task.finally(() => running.delete(task));
});
rl.on('close', async () => {
  await Promise.allSettled([...running]);
  await browser.close();
  process.exit(0);
});
