// The instructor view: the server's numbers (chatlab/instructor.py), fetched every two seconds.
// The key in this page's address is what lets it see them; every value is shown as text, never HTML.
"use strict";
(() => {
  const EVERY = 2000; // ms between two looks
  // What each dialect is, for someone who did not write the server.
  const KINDS = { websocket: "browsers (WebSocket)", frames: "chatlab chat and programs (frames)",
                  lines: "people at nc or telnet (lines)", irc: "IRC clients", http: "HTTP requests in flight",
                  detecting: "just connected (no byte yet)" };
  const $ = (id) => document.getElementById(id);
  const key = new URLSearchParams(location.search).get("key") || "";

  function rows(id, list, cells) {
    $(id).replaceChildren(...list.map((item) => {
      const row = document.createElement("tr");
      for (const text of cells(item)) {
        const cell = document.createElement("td");
        cell.textContent = String(text);
        row.append(cell);
      }
      return row;
    }));
  }

  async function look() {
    try {
      const answer = await fetch(`/status?key=${encodeURIComponent(key)}`, { cache: "no-store" });
      if (!answer.ok) throw new Error(answer.status === 404 ? "this address's key is not the server's" : `HTTP ${answer.status}`);
      const s = await answer.json();
      $("rate").textContent = s.messages_per_second.toFixed(1);
      $("total").textContent = String(s.messages);
      rows("connections", Object.entries(s.connections).sort(), ([name, n]) => [KINDS[name] || name, n]);
      rows("users", s.users, (u) => [u.name, KINDS[u.dialect] || u.dialect, u.rooms.join(", ")]);
      rows("rooms", s.rooms, (r) => [r.name, r.members]);
      $("status").textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      $("status").textContent = `No answer from the server: ${e.message}`;
    }
  }
  look();
  setInterval(look, EVERY);
})();
