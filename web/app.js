// roomd web client: plain JavaScript, no framework, no build step.
//
// One WebSocket to the page's own host; each text message is one protocol frame (the JSON
// of one line, docs/protocol.md). Everything a server or another user wrote is shown with
// textContent, never as HTML.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;

  const state = {
    ws: null,
    ready: false,        // the welcome of the current connection has arrived
    nick: null,          // our nick as the server knows it
    wantNick: null,      // the nick the person picked (asked again after a reconnect)
    rooms: new Map(),    // name -> room (see addRoom)
    active: null,        // the room shown
    pending: new Map(),  // request id -> what it was, for its reply or error
    nextId: 1,
    attempt: 0,          // reconnects since the last welcome (for the backoff)
    timer: null,
    stopped: false,      // kicked: do not come back on our own
    nickRetries: 0,      // after a reconnect our old connection may still hold the nick
    keys: new Map(),     // room -> the key it was joined with (a rejoin needs it again)
    maxFrame: 65536,     // the welcome's limits.max_frame_bytes: a longer message closes the connection
    lameDuckAt: null,    // the server is draining (system lame_duck): reconnect at this time (Date.now() ms)
    moveTimer: null,     // ... when this page leaves by itself, if the server has not closed it first
    // Says sent and not answered, msg_id -> { room, text }, in the order sent. A connection
    // lost before their ok takes them along: they are sent again, with the same msg_id, after
    // the reconnect's rejoins (and the nick, which the msg_id counts under), and one that had
    // been published is answered `duplicate` instead of being published twice.
    unsaid: new Map(),
    resendAfterNick: false,  // the reconnect asks for the nick first: resend once it is settled
    msgPrefix: Array.from(crypto.getRandomValues(new Uint32Array(2)), (n) => n.toString(16).padStart(8, '0')).join(''),
    nextMsg: 1,
  };

  // ---- sending

  function send(request, context = {}) {
    if (!state.ready) {
      notice('not connected; try again in a moment', 'error');
      return false;
    }
    const id = state.nextId++;
    const frame = JSON.stringify({ ...request, id });
    if (new TextEncoder().encode(frame).length > state.maxFrame) {
      notice(`too long for the server (over ${state.maxFrame} bytes); not sent`, 'error');
      return false;
    }
    state.pending.set(id, { ...context, op: request.op });
    state.ws.send(frame);
    return true;
  }

  function say(room, text, msgId) {
    if (state.resendAfterNick && state.ready) {  // typed while older says wait: after them
      state.unsaid.set(msgId, { room, text });
      return;
    }
    if (send({ op: 'say', room, text, msg_id: msgId }, { room, msgId })) state.unsaid.set(msgId, { room, text });
  }

  // After a reconnect: the says the lost connection left unanswered, in their order.
  function resendUnsaid() {
    state.resendAfterNick = false;
    for (const [msgId, { room, text }] of [...state.unsaid]) say(room, text, msgId);
  }

  // ---- the connection

  function setStatus(kind, text) {
    const el = $('status');
    el.dataset.state = kind;
    el.textContent = text;
  }

  function connect() {
    state.timer = null;
    setStatus('connecting', 'connecting…');
    const ws = new WebSocket(url);
    state.ws = ws;
    ws.onmessage = (ev) => {
      if (state.ws !== ws) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        notice('the server sent something that is not JSON', 'error');
        return;
      }
      handle(msg);
    };
    ws.onclose = (ev) => {
      if (state.ws !== ws) return;
      const wasReady = state.ready;
      state.ws = null;
      state.ready = false;
      state.pending.clear();
      // The server's close code says why: 1001 idle or lame_duck, 4000 + an error's place
      // (4016 slow_consumer, 4017 shutting_down), with the code as the reason.
      const why = ev.reason ? ` (${ev.code} ${ev.reason})` : '';
      const announced = state.lameDuckAt;
      state.lameDuckAt = null;
      clearTimeout(state.moveTimer);
      state.moveTimer = null;
      if (announced !== null && !state.stopped) {
        // A draining server named the time: come back then, to the same URL, where the load
        // balancer (which sees the old server no longer ready) picks another one.
        if (wasReady)
          for (const room of state.rooms.values()) line(room, `moving: the server is draining${why}`, 'notice');
        const delay = Math.max(0, announced - Date.now());
        setStatus('reconnecting', `the server is draining; reconnecting in ${(delay / 1000).toFixed(1)} s`);
        state.timer = setTimeout(connect, delay);
        return;
      }
      const unsaid = state.unsaid.size
        ? ` (${state.unsaid.size} message${state.unsaid.size === 1 ? '' : 's'} unanswered: sent again once back)` : '';
      if (wasReady) for (const room of state.rooms.values()) line(room, `connection lost${why}${unsaid}`, 'notice');
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (state.stopped) {
      setStatus('closed', 'disconnected');
      return;
    }
    // 0.5 s, 1 s, 2 s … up to 15 s, with jitter so a restarted server is not hit by every
    // client at the same instant.
    const base = Math.min(15000, 500 * 2 ** state.attempt);
    const delay = Math.round(base * (0.5 + Math.random() / 2));
    state.attempt++;
    setStatus('reconnecting', `connection lost; reconnecting in ${(delay / 1000).toFixed(1)} s`);
    state.timer = setTimeout(connect, delay);
  }

  // ---- rooms and what they show

  function addRoom(name) {
    const log = document.createElement('ol');
    log.className = 'log';
    log.dataset.room = name;
    log.dataset.testid = 'log';
    log.hidden = true;
    $('logs').appendChild(log);

    const tab = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'tab';
    button.dataset.room = name;
    button.dataset.testid = 'room-tab';
    button.textContent = name;
    button.addEventListener('click', () => activate(name));
    tab.appendChild(button);
    $('rooms').appendChild(tab);

    const room = {
      name, log, tab, button,
      topic: '',
      members: new Set(),   // the pages of members we have (all of them unless `more`)
      count: 0,             // the room's member count (the server's truth)
      more: false,          // members follow the last one we have
      epoch: undefined,     // from the last `joined`; with lastSeq, what a rejoin sends
      lastSeq: 0,           // the last message seq shown
    };
    state.rooms.set(name, room);
    return room;
  }

  function removeRoom(name) {
    const room = state.rooms.get(name);
    if (!room) return;
    state.rooms.delete(name);
    state.keys.delete(name);
    room.log.remove();
    room.tab.remove();
    if (state.active === name) {
      const next = state.rooms.keys().next();
      activate(next.done ? null : next.value);
    }
  }

  function activate(name) {
    state.active = name;
    $('notices').hidden = name !== null;
    for (const room of state.rooms.values()) {
      const on = room.name === name;
      room.log.hidden = !on;
      room.button.classList.toggle('active', on);
      if (on) room.button.classList.remove('unread');
    }
    $('leave-button').disabled = name === null;
    renderRoomHead();
    renderMembers();
    const active = activeRoom();
    if (active) active.log.scrollTop = active.log.scrollHeight;
  }

  function activeRoom() {
    return state.active === null ? null : state.rooms.get(state.active) || null;
  }

  function renderRoomHead() {
    const room = activeRoom();
    $('room-name').textContent = room ? room.name : '';
    $('topic').textContent = room && room.topic ? room.topic : '';
  }

  function renderMembers() {
    const room = activeRoom();
    const list = $('members');
    list.replaceChildren();
    $('member-count').textContent = room ? `(${room.count})` : '';
    $('members-more').hidden = !(room && room.more);
    if (!room) return;
    for (const nick of [...room.members].sort(byBytes)) {
      const li = document.createElement('li');
      li.textContent = nick;
      li.dataset.nick = nick;
      li.title = `whisper to ${nick}`;
      if (nick === state.nick) li.classList.add('me');
      li.addEventListener('click', () => {
        $('say-input').value = `/msg ${nick} `;
        $('say-input').focus();
      });
      list.appendChild(li);
    }
  }

  // The server lists members in byte order of the nick (nicks are ASCII).
  function byBytes(a, b) {
    return a < b ? -1 : a > b ? 1 : 0;
  }

  function clock(ts) {
    const d = ts ? new Date(ts) : new Date();
    return d.toTimeString().slice(0, 5);
  }

  // One line in a room's log (or the notices when there is no room). `parts` is text or a
  // list of [className, text] pairs; all of it goes in as text.
  function line(room, parts, kind, attrs = {}) {
    const li = document.createElement('li');
    li.className = kind;
    for (const [k, v] of Object.entries(attrs)) li.dataset[k] = String(v);
    const time = document.createElement('span');
    time.className = 'time';
    time.textContent = clock(attrs.ts);
    li.appendChild(time);
    for (const [cls, text] of typeof parts === 'string' ? [['text', parts]] : parts) {
      const span = document.createElement('span');
      span.className = cls;
      span.textContent = text;
      li.appendChild(span);
    }
    const log = room ? room.log : $('notices');
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(li);
    if (atBottom) log.scrollTop = log.scrollHeight;
    if (room && room.name !== state.active && kind === 'msg') room.button.classList.add('unread');
    return li;
  }

  // A line for the person: in the room shown, or the notices.
  function notice(text, kind = 'notice') {
    line(activeRoom(), text, kind);
  }

  // ---- frames from the server

  function handle(msg) {
    const context = msg.id !== undefined ? state.pending.get(msg.id) : undefined;
    if (context) state.pending.delete(msg.id);
    if (context && context.msgId) state.unsaid.delete(context.msgId);  // answered (a duplicate ok too)
    switch (msg.op) {
      case 'welcome': return onWelcome(msg);
      case 'ok': return onOk(msg, context || {});
      case 'joined': return onJoined(msg);
      case 'left': return removeRoom(msg.room);
      case 'message': return onMessage(msg);
      case 'presence': return onPresence(msg);
      case 'who': return onWho(msg, context || {});
      case 'whisper': {
        const room = activeRoom();
        return line(room, [['from', `*${msg.from}*`], ['text', msg.text]], 'whisper', { from: msg.from, ts: msg.ts });
      }
      case 'error': return onError(msg, context || {});
      case 'system': return onSystem(msg);
      case 'ping': send({ op: 'ping' }); return;  // any frame counts as alive
      case 'pong':
      case 'bye':
        return;
      default:
        return;  // newer servers may send more; ignore what we do not know
    }
  }

  function onWelcome(msg) {
    state.ready = true;
    state.attempt = 0;
    if (msg.limits && Number.isInteger(msg.limits.max_frame_bytes)) state.maxFrame = msg.limits.max_frame_bytes;
    setMyNick(msg.nick);
    setStatus('open', 'connected');
    state.resendAfterNick = false;
    if (state.wantNick && state.wantNick !== msg.nick) {
      send({ op: 'nick', nick: state.wantNick }, { nick: state.wantNick, again: true });
      state.resendAfterNick = state.unsaid.size > 0;
    }
    // A reconnect: join every room again from the last message shown, so the server replays
    // what we missed (resumed: true) or says that it cannot (resumed: false).
    for (const room of state.rooms.values()) {
      const request = { op: 'join', room: room.name };
      if (state.keys.has(room.name)) request.key = state.keys.get(room.name);
      if (room.epoch !== undefined) {
        request.since = room.lastSeq;
        request.epoch = room.epoch;
      }
      send(request, { room: room.name });
    }
    if (!state.resendAfterNick) resendUnsaid();
  }

  function setMyNick(nick) {
    const old = state.nick;
    state.nick = nick;
    $('me').textContent = nick;
    if (old && old !== nick)
      for (const room of state.rooms.values()) {
        if (room.members.delete(old)) room.members.add(nick);
      }
    renderMembers();
  }

  function onOk(msg, context) {
    if (context.op === 'nick' && typeof msg.nick === 'string') {
      state.nickRetries = 0;
      setMyNick(msg.nick);
      if (!context.again) notice(`you are now known as ${msg.nick}`);
      if (context.again && state.resendAfterNick) resendUnsaid();
    } else if (context.op === 'whisper') {
      line(activeRoom(), [['from', `→ *${context.to}*`], ['text', context.text]], 'whisper sent', { to: context.to });
    }
  }

  function onJoined(msg) {
    let room = state.rooms.get(msg.room);
    const rejoin = room !== undefined;
    if (!room) room = addRoom(msg.room);
    room.topic = msg.topic || '';
    room.members = new Set(msg.members || []);
    room.count = typeof msg.count === 'number' ? msg.count : room.members.size;
    room.more = !!msg.more;
    if ('resumed' in msg) {
      const n = (msg.history || []).filter((m) => m.seq > room.lastSeq).length;
      if (msg.resumed)
        line(room, `resumed: true — back in ${room.name}, nothing missed` +
             (n ? ` (${n} message${n === 1 ? '' : 's'} caught up)` : ''), 'resume', { resumed: true });
      else
        line(room, `resumed: false — back in ${room.name}, but messages may have been missed`, 'resume',
             { resumed: false });
    } else if (!rejoin) {
      line(room, `you joined ${room.name}` + (room.topic ? ` (topic: ${room.topic})` : ''), 'presence');
    }
    if (room.epoch !== undefined && msg.epoch !== room.epoch) {
      // The room started again (a new epoch): its seq counts from 1 again.
      room.lastSeq = 0;
      line(room, 'the room was started again; earlier messages are gone', 'notice');
    }
    if (msg.epoch !== undefined) room.epoch = msg.epoch;
    for (const m of msg.history || []) onMessage({ ...m, room: room.name });
    if (!rejoin || state.active === null) activate(room.name);
    else if (room.name === state.active) { renderRoomHead(); renderMembers(); }
  }

  function onMessage(msg) {
    const room = state.rooms.get(msg.room);
    if (!room || typeof msg.seq !== 'number') return;
    if (msg.seq <= room.lastSeq) return;  // already shown (a replay after a resume)
    room.lastSeq = msg.seq;
    let text = typeof msg.text === 'string' ? msg.text : '';
    if (msg.data !== undefined) text += (text ? ' ' : '') + JSON.stringify(msg.data);
    const from = String(msg.from);
    const li = line(room, [['from', from], ['text', text]], 'msg', { seq: msg.seq, from, ts: msg.ts });
    if (from === state.nick) li.classList.add('mine');
  }

  function onPresence(msg) {
    const room = state.rooms.get(msg.room);
    if (!room) return;
    const add = (nick) => { if (!room.members.has(nick)) { room.members.add(nick); } };
    switch (msg.event) {
      case 'join':
        if (!room.members.has(msg.nick)) room.count++;
        add(msg.nick);
        line(room, `${msg.nick} joined`, 'presence', { event: 'join', nick: msg.nick });
        break;
      case 'leave':
        if (room.members.delete(msg.nick) || room.more) room.count = Math.max(0, room.count - 1);
        line(room, `${msg.nick} left`, 'presence', { event: 'leave', nick: msg.nick });
        break;
      case 'nick':
        if (room.members.delete(msg.old)) add(msg.nick);
        line(room, `${msg.old} is now known as ${msg.nick}`, 'presence', { event: 'nick', nick: msg.nick });
        break;
      case 'topic':
        room.topic = msg.topic || '';
        line(room, `${msg.nick} set the topic: ${room.topic}`, 'presence', { event: 'topic', nick: msg.nick });
        break;
      case 'summary': {
        // A big room: one event per interval, with at most 20 nicks of each kind.
        const joined = msg.joined || [], left = msg.left || [], renamed = msg.renamed || [];
        for (const nick of joined) add(nick);
        for (const nick of left) room.members.delete(nick);
        for (const r of renamed) if (room.members.delete(r.old)) add(r.nick);
        if (typeof msg.count === 'number') room.count = msg.count;
        const parts = [];
        const list = (n, names) => (names.length ? `: ${names.join(', ')}${n > names.length ? ', …' : ''}` : '');
        if (msg.joins) parts.push(`${msg.joins} joined${list(msg.joins, joined)}`);
        if (msg.leaves) parts.push(`${msg.leaves} left${list(msg.leaves, left)}`);
        if (msg.renames) parts.push(`${msg.renames} renamed`);
        line(room, parts.join('; ') || 'members changed', 'presence', { event: 'summary' });
        // The lists were cut short: ask for the first page again rather than guess.
        if (msg.joins > joined.length || msg.leaves > left.length || msg.renames > renamed.length)
          send({ op: 'who', room: room.name }, { room: room.name, reset: true });
        break;
      }
      default:
        return;
    }
    if (room.name === state.active) { renderRoomHead(); renderMembers(); }
  }

  function onWho(msg, context) {
    const room = state.rooms.get(msg.room);
    if (!room) return;
    if (context.reset) room.members = new Set();
    for (const nick of msg.members || []) room.members.add(nick);
    if (typeof msg.count === 'number') room.count = msg.count;
    room.more = !!msg.more;
    if (room.name === state.active) renderMembers();
  }

  function onError(msg, context) {
    const text = `${msg.code}: ${msg.message || ''}`;
    if (context.op === 'nick' && context.again && msg.code === 'nick_taken' && state.nickRetries < 5) {
      // After a reconnect the server may not have seen our old connection end yet.
      state.nickRetries++;
      notice(`nick ${context.nick} is still taken; trying again in 2 s`);
      setTimeout(() => {
        if (state.ready && state.nick !== state.wantNick)
          send({ op: 'nick', nick: state.wantNick }, { nick: state.wantNick, again: true });
      }, 2000);
      return;
    }
    if (context.op === 'nick') {
      // Keep the nick we have; after a reconnect, do not ask for the refused one again.
      state.wantNick = state.nick;
      notice(`nick ${context.nick}: ${text}`, 'error');
      // Sent again under another nick, a message that had been published shows twice (under
      // both nicks) rather than not at all (docs/protocol.md, Resending a say).
      if (context.again && state.resendAfterNick) resendUnsaid();
      return;
    }
    if (context.op === 'join' && !state.rooms.has(context.room)) state.keys.delete(context.room);
    const room = context.room ? state.rooms.get(context.room) : null;
    line(room || activeRoom(), text, 'error', { code: msg.code });
  }

  function onSystem(msg) {
    switch (msg.event) {
      case 'reload':
        if (msg.room) {
          notice(`${msg.room} was removed by the server`);
          removeRoom(msg.room);
        }
        return;
      case 'dropped': {
        const room = state.rooms.get(msg.room) || activeRoom();
        line(room, `${msg.count} message(s) were skipped because this page read too slowly`, 'notice');
        return;
      }
      case 'kicked':
        state.stopped = true;
        notice(`kicked by an operator${msg.reason ? ': ' + msg.reason : ''}`, 'error');
        return;
      case 'shutdown':
        state.lameDuckAt = null;  // stopping now after all: back off as after any loss
        clearTimeout(state.moveTimer);
        notice('the server is restarting or stopping');
        return;
      case 'lame_duck': {
        // The server drains for a restart and will close this connection in reconnect_ms: the
        // page then reconnects at once, and leaves by itself at that time if it is still open.
        const ms = Number.isInteger(msg.reconnect_ms) && msg.reconnect_ms > 0 ? msg.reconnect_ms : 0;
        state.lameDuckAt = Date.now() + ms;
        notice(`the server is draining for a restart; reconnecting in about ${Math.ceil(ms / 1000)} s`);
        clearTimeout(state.moveTimer);
        const ws = state.ws;
        state.moveTimer = setTimeout(() => {
          if (state.ws === ws && ws) ws.close(1000, 'moving');
        }, ms);
        return;
      }
      default:
        notice(`server: ${msg.event}`);
    }
  }

  // ---- what the person does

  // "ROOM" or "ROOM KEY" (a keyed room; the key is kept for rejoins after a reconnect).
  function joinRoom(text) {
    const [name, ...rest] = text.trim().split(' ');
    const key = rest.join(' ');
    if (!name) return;
    if (state.rooms.has(name) && !key) return activate(name);
    if (key) state.keys.set(name, key);
    send(key ? { op: 'join', room: name, key } : { op: 'join', room: name }, { room: name });
  }

  function leaveRoom(name) {
    if (name && state.rooms.has(name)) send({ op: 'leave', room: name }, { room: name });
  }

  function changeNick(nick) {
    nick = nick.trim();
    if (!nick) return;
    state.wantNick = nick;
    send({ op: 'nick', nick }, { nick });
  }

  function whisper(to, text) {
    if (to && text) send({ op: 'whisper', to, text }, { to, text });
  }

  function submitLine(text) {
    if (!text.trim()) return;
    if (text.startsWith('/')) {
      const [cmd, ...rest] = text.slice(1).split(' ');
      const arg = rest.join(' ');
      switch (cmd) {
        case 'msg': {
          const space = arg.indexOf(' ');
          if (space > 0) return whisper(arg.slice(0, space), arg.slice(space + 1));
          return notice('usage: /msg NICK TEXT', 'error');
        }
        case 'join': return joinRoom(arg);
        case 'leave': return leaveRoom(arg.trim() || state.active);
        case 'nick': return changeNick(arg);
        default:
          if (!cmd.startsWith('/')) return notice(`unknown command /${cmd} (start with // to say it)`, 'error');
          text = text.slice(1);
      }
    }
    if (!state.active) return notice('join a room first', 'error');
    say(state.active, text, `${state.msgPrefix}-${state.nextMsg++}`);
  }

  function onSubmit(formId, inputId, action) {
    $(formId).addEventListener('submit', (ev) => {
      ev.preventDefault();
      const input = $(inputId);
      const value = input.value;
      input.value = '';
      action(value);
    });
  }

  onSubmit('nick-form', 'nick-input', changeNick);
  onSubmit('join-form', 'join-input', joinRoom);
  onSubmit('say-form', 'say-input', submitLine);
  $('leave-button').addEventListener('click', () => leaveRoom(state.active));
  $('members-more').addEventListener('click', () => {
    const room = activeRoom();
    if (!room || !room.more) return;
    const after = [...room.members].sort(byBytes).pop();
    send({ op: 'who', room: room.name, after }, { room: room.name });
  });

  activate(null);
  connect();
})();
