// chatlab in a browser: the chat over one WebSocket, with every message the JSON object of frames mode.
//
// docs/protocol.md is the contract (section 3 for the messages, "WebSocket" for the socket).  Everything
// the server sends is shown with textContent, never as HTML: a message "<img src=x onerror=...>" is
// those characters, on screen.  The page's Content-Security-Policy would stop an injected script anyway.
"use strict";
(() => {
  const CHUNK = 32 * 1024; // bytes of a file in one file_chunk (the server's size)
  const MAX_FILE = 64 * 1024 * 1024; // the page will not read a larger file into memory
  const HISTORY_PAGE = 50; // messages asked for when scrolling back
  const BACKOFF_FIRST = 1000, BACKOFF_MAX = 30000; // ms between reconnection attempts: doubling, with jitter
  const PING_EVERY = 25000, DEAD_AFTER = 60000; // ms: a silent socket is asked, and given up after a minute

  // Why someone left, in words (the same as chatlab.protocol.REASON_WORDS; a test keeps them equal).
  const REASON_WORDS = {
    left: "left the room",
    quit: "said goodbye",
    disconnected: "lost the connection",
    shutdown: "the server stopped",
    too_slow: "was not reading, so the server let go",
    protocol_error: "sent something too long to be a message",
    register_timeout: "never gave a name",
    idle: "was silent too long",
    flooding: "sent too many messages too fast",
    auth_failed: "gave too many wrong passwords",
    server_error: "met a fault in the server",
    kicked: "was removed",
  };

  const $ = (id) => document.getElementById(id);
  const log = $("log");
  const state = {
    ws: null, // the WebSocket, while one is open or opening
    name: null, password: null, // as accepted by the server; kept in memory only, for reconnecting
    welcomed: false, // registered on the current socket
    joinedOnce: false, // registered at least once: from then on a dropped socket is reconnected
    stopped: false, // the person quit, or the server said not to come back
    attempts: 0, timer: null, heardAt: 0,
    views: new Map(), current: null, // conversations: rooms and private chats
    lastId: 0, // the newest message id seen, in the server's one order
    missedAfter: null, // after a reconnection: messages above this id arrived while we were away
    rejoin: new Set(), // rooms being joined again after a reconnection (not switched to)
    autoHistory: null, // the room whose history may come next, unasked (right after welcome or joined)
    roomsNext: false, // the next rooms answer is a further page of the listing
    uploads: new Map(), // sha256 or file id -> {bytes, name}
    downloads: new Map(), // file id -> the offer, and the chunks received so far
  };
  let noticeSeq = 0;

  // ---------------------------------------------------------------- conversations

  const key = (name) => name.normalize("NFKC").toLowerCase();

  function view(kind, name) {
    const id = `${kind}:${key(name)}`;
    let v = state.views.get(id);
    if (!v) {
      v = { id, kind, name, items: [], ids: new Set(), unread: 0, oldest: null, newest: 0, complete: false,
            asked: [], // the history requests sent for this room, in order: "older", "since" or "plain"
            catchUp: false, missed: 0, tab: document.createElement("button") };
      v.tab.type = "button";
      v.tab.setAttribute("role", "tab");
      v.tab.setAttribute("aria-controls", "log");
      v.tab.addEventListener("click", () => show(v));
      state.views.set(id, v);
      $("tabs").append(v.tab);
      drawTab(v);
    }
    return v;
  }
  const roomView = (room) => view("room", room || "lobby");
  const current = () => state.current || roomView("lobby");

  function drawTab(v) {
    v.tab.textContent = v.kind === "dm" ? `@${v.name}` : v.name;
    v.tab.setAttribute("aria-selected", String(v === state.current));
    if (v.unread) {
      const badge = el("span", "badge", String(v.unread));
      badge.prepend(el("span", "sr", " unread: "));
      v.tab.append(badge);
    }
  }

  function show(v) {
    const old = state.current;
    state.current = v;
    v.unread = 0;
    if (old) drawTab(old);
    drawTab(v);
    log.replaceChildren(...v.items.map((item) => item.node));
    log.setAttribute("aria-label", `Messages in ${v.kind === "dm" ? "private chat with " : ""}${v.name}`);
    log.scrollTop = log.scrollHeight;
    $("leave").hidden = v.kind !== "room" || v.id === "room:lobby"; // the lobby is home: /leave still works
    $("older").hidden = v.kind !== "room";
  }

  function drop(v) {
    state.views.delete(v.id);
    v.tab.remove();
    if (state.current === v) show(roomView("lobby"));
  }

  // Items are kept in the server's order: a message by its id, a notice right after the newest message
  // the conversation had when it happened.  So history fetched later slots in above, where it belongs.
  function place(v, item) {
    let i = v.items.length;
    while (i > 0 && before(item.order, v.items[i - 1].order)) i--;
    v.items.splice(i, 0, item);
    if (v !== state.current) {
      if (item.counts) { v.unread++; drawTab(v); }
      return;
    }
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    const next = v.items[i + 1];
    const height = log.scrollHeight;
    log.insertBefore(item.node, next ? next.node : null);
    if (next && !atBottom) log.scrollTop += log.scrollHeight - height; // older lines added above: stay put
    else if (atBottom) log.scrollTop = log.scrollHeight;
  }
  const before = (a, b) => a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text; // text, never HTML
    return node;
  }

  function notice(text, v = current(), cls = "") {
    const node = el("p", `notice ${cls}`, text);
    place(v, { order: [v.newest, ++noticeSeq], node, counts: cls === "error" });
    return node;
  }

  // A list of names the server may have cut to fit one message: "count" says how many there are.
  const names = (list, count) => list.join(", ") + (count > list.length ? ` and ${count - list.length} more` : "");

  const clock = (ts) => new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

  function addMessage(m, old, catchUp = false) {
    const other = m.to !== undefined ? (key(m.from) === key(state.name) ? m.to : m.from) : null;
    const v = other !== null ? view("dm", other) : roomView(m.room);
    if (v.ids.has(m.id)) return false; // already shown (history overlaps what we saw)
    v.ids.add(m.id);
    if (v.oldest === null || m.id < v.oldest) v.oldest = m.id;
    if (m.id > v.newest) v.newest = m.id;
    const missed = catchUp && m.id > state.missedAfter;
    const node = el("div", "msg");
    if (key(m.from) === key(state.name || "")) node.classList.add("mine");
    if (old) node.classList.add(missed ? "missed" : "old");
    const time = el("time", "", clock(m.ts));
    time.dateTime = new Date(m.ts * 1000).toISOString();
    node.append(time, " ");
    if (other !== null) node.append(el("span", "private", m.to === state.name ? "private" : `private to ${m.to}`), " ");
    node.append(el("span", "from", m.from), el("span", "sr", ":"), " ", el("span", "text", m.text));
    if (m.id > state.lastId) state.lastId = m.id;
    place(v, { order: [m.id, 0], node, counts: !old || missed });
    if (!old && other !== null && v !== state.current && key(m.from) !== key(state.name)) {
      status(`Private message from ${m.from}`);
    }
    return missed;
  }

  // ---------------------------------------------------------------- the socket

  function connect() {
    clearTimeout(state.timer);
    if (state.ws) return;
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/chat`);
    state.ws = ws;
    state.welcomed = false;
    status(state.joinedOnce ? "Reconnecting..." : "Connecting...");
    ws.onopen = () => {
      state.heardAt = Date.now();
      status(state.joinedOnce ? "Connected; joining again..." : "Connected; joining...");
      hello();
    };
    ws.onmessage = (event) => {
      state.heardAt = Date.now();
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (e) {
        return; // not ours to show
      }
      // A history right after welcome or joined is the server's own, unasked; any other answers a request.
      const auto = state.autoHistory;
      state.autoHistory = null;
      if (msg.type === "history") msg.asked = auto === key(msg.room) ? "auto" : roomView(msg.room).asked.shift();
      (handlers[msg.type] || unknown)(msg);
    };
    ws.onclose = (event) => {
      if (state.ws !== ws) return;
      state.ws = null;
      state.welcomed = false;
      $("reconnect").hidden = false;
      if (!state.joinedOnce) {
        status("Not connected");
        if (!$("join-error").textContent) joinError(`The connection closed (${event.code || "no answer"}).`);
        return;
      }
      // Everything said from here on, above this id, was missed: it is asked for on reconnecting.
      state.missedAfter = state.lastId;
      for (const v of state.views.values()) Object.assign(v, { catchUp: true, missed: 0, asked: [] });
      if (state.stopped) {
        status("Disconnected");
        return;
      }
      const delay = Math.min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** state.attempts) * (0.5 + Math.random() / 2);
      state.attempts++;
      status(`Disconnected; trying again in ${Math.ceil(delay / 1000)} s (attempt ${state.attempts})`);
      state.timer = setTimeout(connect, delay);
    };
  }

  function send(msg) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      notice("Not connected: that was not sent.", current(), "error");
      return false;
    }
    state.ws.send(JSON.stringify(msg));
    return true;
  }

  function hello() {
    const msg = { type: "hello", name: state.name };
    if (state.password) msg.password = state.password;
    send(msg);
  }

  function status(text) {
    $("status").textContent = text;
  }

  // Ask a quiet socket for a sign of life; one that stays silent is dead (a laptop closed, Wi-Fi lost).
  setInterval(() => {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - state.heardAt > DEAD_AFTER) state.ws.close();
    else if (Date.now() - state.heardAt > PING_EVERY) send({ type: "ping", id: "page" });
  }, PING_EVERY / 2);
  // A socket does not survive a change of network (a new address): give it up at once, and come back online.
  window.addEventListener("offline", () => { if (state.ws) state.ws.close(); });
  window.addEventListener("online", () => { if (state.joinedOnce && !state.ws && !state.stopped) connect(); });

  // ---------------------------------------------------------------- what the server says

  const handlers = {
    welcome(m) {
      const again = state.joinedOnce;
      state.name = m.name;
      state.welcomed = state.joinedOnce = true;
      state.attempts = 0;
      $("reconnect").hidden = true;
      $("join-view").hidden = true;
      $("chat-view").hidden = false;
      status(`Connected as ${m.name}`);
      const lobby = roomView(m.room || "lobby");
      if (!state.current) show(lobby);
      state.autoHistory = key(lobby.name);
      const online = names(m.users, m.count);
      if (again) notice(`Reconnected as ${m.name}. Online: ${online}.`, current());
      else notice(`Welcome, ${m.name}! Online: ${online}.`, lobby);
      if (!again) $("message").focus();
      // Back in the rooms we were in, and what was said there meanwhile.
      if (again) catchUp(lobby);
      for (const v of state.views.values()) {
        if (v.kind === "room" && v.id !== lobby.id) {
          state.rejoin.add(key(v.name));
          send({ type: "join", room: v.name });
        }
      }
    },
    message(m) {
      addMessage(m, false);
    },
    history(m) {
      const v = roomView(m.room);
      for (const msg of m.messages) if (addMessage(msg, true, v.catchUp)) v.missed++;
      if (m.asked === "older" && !m.more) {
        v.complete = true;
        notice(v.oldest === null ? `Nothing was said in ${v.name} before.` : `That is the start of ${v.name}'s history.`, v);
      } else if (m.asked === "since") {
        // One page of what was missed: ask for the next, until the server says there is no more.
        if (m.more && m.messages.length) since(v, m.messages[m.messages.length - 1].id);
        else caughtUp(v);
      }
    },
    joined(m) {
      const v = roomView(m.room);
      if (m.members) { // our own join, confirmed
        const again = state.rejoin.delete(key(m.room));
        v.name = m.room;
        drawTab(v);
        state.autoHistory = key(m.room);
        notice(`You are in ${m.room}: ${names(m.members, m.count)}`, v);
        if (again) catchUp(v);
        else show(v);
      } else {
        notice(`${m.name} joined`, v);
      }
    },
    left(m) {
      const v = roomView(m.room);
      if (key(m.name) === key(state.name)) {
        notice(`You left ${m.room}.`, roomView("lobby"));
        if (v.id !== roomView("lobby").id) drop(v);
      } else {
        notice(`${m.name} left (${REASON_WORDS[m.reason] || m.reason})${m.text ? `: ${m.text}` : ""}`, v);
      }
    },
    users(m) {
      notice(`${m.room ? `In ${m.room}` : "Online"}: ${names(m.users, m.count)}`);
      const list = $("people-list");
      list.replaceChildren(...m.users.map((name) => {
        const item = el("li");
        const me = key(name) === key(state.name);
        item.append(el("span", "", me ? `${name} (you)` : name));
        if (!me) {
          const talk = el("button", "", "Private chat");
          talk.type = "button";
          talk.setAttribute("aria-label", `Private chat with ${name}`);
          talk.addEventListener("click", () => { show(view("dm", name)); togglePanel("people", false); $("message").focus(); });
          item.append(talk);
        }
        return item;
      }));
    },
    rooms(m) {
      // A long listing comes a page at a time (docs/protocol.md, section 6.2): "more" asks for the next.
      const list = $("room-list");
      if (!state.roomsNext) list.replaceChildren(); // a first page: the listing starts again
      state.roomsNext = false;
      list.querySelector(".more-rooms")?.remove();
      notice(`Rooms: ${m.rooms.map((r) => `${r.name} (${r.count || r.members.length})`).join(", ")}${m.more ? ", ..." : ""}`);
      list.append(...m.rooms.map((r) => {
        const item = el("li");
        item.append(el("span", "", `${r.name}: ${names(r.members, r.count)}`));
        const join = el("button", "", "Join");
        join.type = "button";
        join.setAttribute("aria-label", `Join ${r.name}`);
        join.addEventListener("click", () => { send({ type: "join", room: r.name }); togglePanel("rooms", false); });
        item.append(join);
        return item;
      }));
      if (m.more && m.rooms.length) {
        const item = el("li", "more-rooms"), next = el("button", "", "More rooms");
        next.type = "button";
        const last = m.rooms[m.rooms.length - 1].name;
        next.addEventListener("click", () => { state.roomsNext = send({ type: "rooms", after: last }); });
        item.append(next);
        list.append(item);
      }
    },
    pong(m) {
      if (m.id !== "page") notice("pong");
    },
    help(m) {
      notice(`${m.text}. In this page: the tabs switch conversations, File sends a file.`);
    },
    error(m) {
      if (m.code === "auth_required") {
        $("password-row").hidden = false;
        $("password").focus();
        joinError(`${m.name || "That name"} has an account: type its password.`);
        return;
      }
      if (!state.welcomed) {
        if (state.joinedOnce && m.code === "name_taken") {
          // The server still holds our old connection (it has not noticed it is gone): try again soon.
          status("The server still holds the old connection; trying again");
          state.ws.close();
          return;
        }
        joinError(`${m.message}`);
        return;
      }
      notice(`${m.message}`, current(), "error");
    },
    closing(m) {
      const text = `Server closing the connection: ${m.message}`;
      if (["quit", "auth_failed", "flooding", "kicked"].includes(m.reason)) state.stopped = true;
      if (state.welcomed) notice(text, current(), "error");
      else joinError(text);
    },
    file_upload(m) {
      const upload = state.uploads.get(m.file) || state.uploads.get(m.sha256);
      if (!upload) return;
      state.uploads.delete(m.sha256);
      state.uploads.set(m.file, upload);
      send({ type: "file_chunk", file: m.file, seq: m.seq,
             data: toBase64(upload.bytes.subarray(m.seq * CHUNK, (m.seq + 1) * CHUNK)) });
    },
    file_sent(m) {
      const upload = state.uploads.get(m.file);
      state.uploads.delete(m.file);
      const who = m.recipients.length ? m.recipients.join(", ") : "nobody (no one else is there)";
      notice(`${upload ? upload.name : "Your file"} is uploaded and offered to ${who}.`, upload ? upload.view : current());
    },
    file_accepted(m) { notice(`${m.by} accepted file ${m.file}.`); },
    file_declined(m) { notice(`${m.by} declined file ${m.file}.`); },
    file_offer(m) {
      const v = m.room !== undefined ? roomView(m.room) : view("dm", m.from);
      const node = notice(`${m.from} offers the file ${m.name} (${m.size.toLocaleString()} bytes).`, v);
      const accept = el("button", "", "Accept"), decline = el("button", "", "Decline");
      accept.type = decline.type = "button";
      accept.setAttribute("aria-label", `Accept ${m.name}`);
      decline.setAttribute("aria-label", `Decline ${m.name}`);
      accept.addEventListener("click", () => {
        if (!send({ type: "file_accept", file: m.file })) return;
        state.downloads.set(m.file, { offer: m, parts: [], node });
        accept.remove(); decline.remove();
        node.append(el("span", "", " Receiving..."));
      });
      decline.addEventListener("click", () => {
        if (!send({ type: "file_decline", file: m.file })) return;
        accept.remove(); decline.remove();
        node.append(el("span", "", " Declined."));
      });
      node.append(accept, decline);
    },
    async file_chunk(m) {
      const download = state.downloads.get(m.file);
      if (!download) return;
      download.parts.push(fromBase64(m.data));
      if (!m.last) {
        send({ type: "file_get", file: m.file, seq: m.seq + 1 });
        return;
      }
      state.downloads.delete(m.file);
      const { offer, parts, node } = download;
      const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const part of parts) { bytes.set(part, at); at += part.length; }
      const [digest, how] = await sha256(bytes);
      node.lastChild.remove(); // "Receiving..."
      if (digest !== offer.sha256) {
        node.append(el("span", "error", ` It arrived damaged (SHA-256 mismatch): not saved.`));
        return;
      }
      const link = el("a", "", `Save ${offer.name}`);
      link.href = URL.createObjectURL(new Blob([bytes]));
      link.download = offer.name; // a name only: the browser asks where, and never climbs folders
      node.append(el("span", "", ` Received, SHA-256 checked (${how}).`), link);
    },
  };
  // After a reconnection: every message of the room since the last one seen, a page at a time
  // (docs/protocol.md, section 6.2), marked as missed.
  function catchUp(v) {
    since(v, v.newest || state.missedAfter);
  }
  function since(v, id) {
    if (send({ type: "history", room: v.name, since: id, limit: 100 })) v.asked.push("since");
  }
  function caughtUp(v) {
    if (v.missed) {
      const text = `${v.missed} message${v.missed === 1 ? "" : "s"} arrived in ${v.name} while you were away.`;
      place(v, { order: [state.missedAfter, noticeSeq + 0.5], node: el("p", "notice", text), counts: false });
    }
    Object.assign(v, { catchUp: false, missed: 0 });
  }

  function unknown(m) {
    notice(`(${m.type}) ${JSON.stringify(m)}`);
  }

  // ---------------------------------------------------------------- files

  async function sha256(bytes) {
    // crypto.subtle exists only in a secure context (https, or localhost); elsewhere, sha256.js.
    if (globalThis.crypto && crypto.subtle) {
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
      return [Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(""), "by the browser"];
    }
    return [globalThis.chatlabSha256(bytes), "by this page's own SHA-256: not a secure context"];
  }

  function toBase64(bytes) {
    let text = "";
    for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
    return btoa(text);
  }
  function fromBase64(text) {
    const raw = atob(text);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  async function sendFile(file) {
    const v = current();
    if (file.size > MAX_FILE) {
      notice(`${file.name} is ${file.size.toLocaleString()} bytes: too large to send from this page.`, v, "error");
      return;
    }
    const bytes = new Uint8Array(await file.arrayBuffer());
    const [digest] = await sha256(bytes);
    const offer = { type: "file_offer", name: file.name, size: bytes.length, sha256: digest };
    if (v.kind === "dm") offer.to = v.name; else offer.room = v.name;
    state.uploads.set(digest, { bytes, name: file.name, view: v });
    if (send(offer)) notice(`Offering ${file.name} (${bytes.length.toLocaleString()} bytes)...`, v);
  }

  // ---------------------------------------------------------------- what the person does

  function joinError(text) {
    $("join-error").textContent = text;
  }

  $("join").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("name").value.trim();
    if (!name) return;
    state.name = name;
    state.password = $("password-row").hidden ? null : $("password").value;
    state.stopped = false;
    joinError("");
    if (state.ws && state.ws.readyState === WebSocket.OPEN) hello();
    else if (!state.ws) connect();
  });

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("message");
    const text = input.value;
    if (!text.trim()) return;
    if (text.startsWith("/") && !text.startsWith("//") ? command(text) : say(text.startsWith("//") ? text.slice(1) : text)) {
      input.value = "";
    }
    input.focus();
  });

  function say(text) {
    const v = current();
    return send(v.kind === "dm" ? { type: "dm", to: v.name, text } : { type: "say", room: v.name, text });
  }

  // The terminal's commands work here too (docs/protocol.md, section 4).
  function command(line) {
    const [word, ...rest] = line.trim().split(/\s+/);
    const arg = rest[0];
    const v = current();
    switch (word.toLowerCase()) {
      case "/join": return arg ? send({ type: "join", room: arg }) : usage("/join ROOM");
      case "/leave": return send({ type: "leave", room: arg || v.name });
      case "/msg": {
        const text = line.trim().split(/\s+/).slice(2).join(" ");
        if (!arg || !text) return usage("/msg NAME TEXT");
        show(view("dm", arg));
        return send({ type: "dm", to: arg, text });
      }
      case "/who": return send(arg ? { type: "who", room: arg } : { type: "who" });
      case "/rooms": return send({ type: "rooms" });
      case "/history": {
        const room = v.kind === "room" ? v : roomView("lobby");
        if (!send({ type: "history", room: room.name, limit: Number(arg) || 20 })) return false;
        room.asked.push("plain");
        return true;
      }
      case "/ping": return send({ type: "ping", id: "user" });
      case "/help": return send({ type: "help" });
      case "/quit": quit(); return true;
      default:
        notice(`Not understood: ${word} (try /help)`, v, "error");
        return false;
    }
  }
  function usage(text) {
    notice(`usage: ${text}`, current(), "error");
    return false;
  }

  function quit() {
    state.stopped = true;
    send({ type: "bye" });
  }

  function older() {
    const v = current();
    if (v.kind !== "room" || v.complete || v.asked.includes("older")) return;
    const msg = { type: "history", room: v.name, limit: HISTORY_PAGE };
    if (v.oldest !== null) msg.before = v.oldest;
    if (send(msg)) v.asked.push("older");
  }
  $("older").addEventListener("click", older);
  // Scrolling up to the top asks for older messages (our own scrolling to the bottom never does).
  let scrolledTo = 0, atEnd = true;
  log.addEventListener("scroll", () => {
    const up = log.scrollTop < scrolledTo;
    scrolledTo = log.scrollTop;
    atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    if (up && log.scrollTop < 40) older();
  });
  // When the log shrinks (a phone's on-screen keyboard opens), the newest lines stay in sight.
  new ResizeObserver(() => { if (atEnd) log.scrollTop = log.scrollHeight; }).observe(log);

  function togglePanel(which, open) {
    const panel = $(`${which}-panel`), button = $(`${which}-button`);
    const opening = open === undefined ? panel.hidden : open;
    panel.hidden = !opening;
    button.setAttribute("aria-expanded", String(opening));
    return opening;
  }
  $("rooms-button").addEventListener("click", () => {
    if (togglePanel("rooms")) { send({ type: "rooms" }); $("room-name").focus(); }
  });
  $("people-button").addEventListener("click", () => { if (togglePanel("people")) send({ type: "who" }); });
  $("join-room").addEventListener("submit", (event) => {
    event.preventDefault();
    const room = $("room-name").value.trim();
    if (room && send({ type: "join", room })) { $("room-name").value = ""; togglePanel("rooms", false); }
  });
  $("leave").addEventListener("click", () => send({ type: "leave", room: current().name }));
  $("quit").addEventListener("click", quit);
  $("reconnect").addEventListener("click", () => { state.stopped = false; state.attempts = 0; connect(); });
  $("file").addEventListener("change", (event) => {
    const [file] = event.target.files;
    event.target.value = "";
    if (file) sendFile(file).catch((e) => notice(`Could not send ${file.name}: ${e}`, current(), "error"));
  });
  $("name").focus();
})();
