// approval-gate console: a small script over the public API (docs/console.md).
//
// Safety rule for this file: text an agent controls only ever reaches the page through
// `textContent` and `createTextNode` (the `h` helper below); nothing here uses innerHTML,
// outerHTML, insertAdjacentHTML or document.write, so no markup an agent sends can run.
"use strict";

(function () {
  const state = {
    me: null,
    pending: new Map(), // id -> approval row (list form)
    ended: new Map(), // id -> final approval, shown briefly where it was pending
    mine: new Set(), // ids decided from this page
    skew: 0, // server clock - local clock, ms
    stream: null,
    filter: "", // the pending page's filter, lower case
    haystacks: new Map(), // id -> lower-case text the filter searches
    built: new Map(), // id -> its card, kept while pending (a filter hides and shows it again)
  };
  const ENDED_SHOWN_MS = 6000;
  const CUT = 4000;

  // ---- DOM helpers ---------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "class") el.className = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, ...children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  // Characters that hide or reorder text (controls, zero-width, bidi overrides) shown as
  // visible \u{…} marks, as Telegram and the CLI show them.
  const HIDDEN = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;

  function visible(text) {
    text = String(text);
    const out = [];
    let last = 0;
    for (const match of text.matchAll(HIDDEN)) {
      if (match.index > last) out.push(text.slice(last, match.index));
      const code = match[0].codePointAt(0).toString(16);
      out.push(h("span", { class: "hidden-char", title: "hidden character U+" + code.toUpperCase() }, "\\u{" + code + "}"));
      last = match.index + match[0].length;
    }
    if (last < text.length) out.push(text.slice(last));
    return out;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  function main() {
    return document.getElementById("main");
  }

  function announce(text) {
    document.getElementById("live").textContent = text;
  }

  // ---- API -----------------------------------------------------------------------------------

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && state.me && state.me.csrf) headers["X-CSRF-Token"] = state.me.csrf;
    const response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      window.location.assign("/console/sign-in");
      throw new Error("signed out");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    return { ok: response.ok, status: response.status, data };
  }

  // ---- time ----------------------------------------------------------------------------------

  function now() {
    return Date.now() + state.skew;
  }

  function span(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + "s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m " + String(s % 60).padStart(2, "0") + "s";
    const hrs = Math.floor(m / 60);
    if (hrs < 48) return hrs + "h " + String(m % 60).padStart(2, "0") + "m";
    return Math.floor(hrs / 24) + "d " + (hrs % 24) + "h";
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return d.toLocaleString();
  }

  function tick() {
    for (const el of document.querySelectorAll("[data-deadline]")) {
      const left = Date.parse(el.dataset.deadline) - now();
      el.textContent = left > 0 ? span(left) + " left" : "deadline passed";
      el.classList.toggle("soon", left < 60000);
    }
    for (const el of document.querySelectorAll("[data-since]")) {
      el.textContent = span(now() - Date.parse(el.dataset.since)) + " ago";
    }
  }

  // ---- per-tool rendering ----------------------------------------------------------------------

  function parsed(approval) {
    if (approval.tool_input !== null && approval.tool_input !== undefined) return { input: approval.tool_input, cut: false };
    return { input: null, cut: true };
  }

  function field(name, ...content) {
    return h("div", { class: "field" }, h("div", { class: "field-name" }, name), content);
  }

  // Long text in full behind a visible "Show all": never cut silently.
  function longText(text, cls) {
    text = String(text);
    const pre = h("pre", { class: cls || "" }, visible(text.length > CUT ? text.slice(0, CUT) : text));
    if (text.length <= CUT) return pre;
    const more = h("button", { type: "button", class: "quiet" }, "Show all (" + text.length + " characters)");
    more.addEventListener("click", () => {
      clear(pre);
      append(pre, visible(text));
      more.remove();
    });
    return h("div", {}, pre, more);
  }

  function tree(value) {
    if (value === null || typeof value !== "object") {
      return h("span", { class: "mono" }, visible(JSON.stringify(value)));
    }
    const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
    if (entries.length === 0) return h("span", { class: "mono" }, Array.isArray(value) ? "[]" : "{}");
    return h("ul", { class: "tree" }, entries.map(([k, v]) =>
      h("li", {}, h("span", { class: "tree-key" }, visible(k), ": "),
        typeof v === "string" && v.length > 80 ? longText(v) : tree(v))));
  }

  // Line diff (longest common subsequence); large inputs fall back to all removed, all added.
  function diff(before, after) {
    const a = String(before ?? "").split("\n");
    const b = String(after ?? "").split("\n");
    const lines = [];
    if (a.length * b.length > 250000) {
      a.forEach((l) => lines.push(["del", l]));
      b.forEach((l) => lines.push(["add", l]));
    } else {
      const table = Array.from({ length: a.length + 1 }, () => new Uint32Array(b.length + 1));
      for (let i = a.length - 1; i >= 0; i--)
        for (let j = b.length - 1; j >= 0; j--)
          table[i][j] = a[i] === b[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
      let i = 0, j = 0;
      while (i < a.length || j < b.length) {
        if (i < a.length && j < b.length && a[i] === b[j]) { lines.push(["same", a[i]]); i++; j++; }
        else if (j < b.length && (i === a.length || table[i][j + 1] >= table[i + 1][j])) { lines.push(["add", b[j]]); j++; }
        else { lines.push(["del", a[i]]); i++; }
      }
    }
    const mark = { add: "+ ", del: "- ", same: "  " };
    return h("pre", { class: "diff", "aria-label": "changes: lines starting with + are added, - removed" },
      lines.map(([kind, line]) => h("span", { class: kind === "same" ? "" : kind }, mark[kind], visible(line), "\n")));
  }

  function otherFields(input, shown) {
    if (!input || typeof input !== "object" || Array.isArray(input)) return null;
    const rest = Object.entries(input).filter(([k]) => !shown.includes(k));
    if (rest.length === 0) return null;
    return field("Other fields", tree(Object.fromEntries(rest)));
  }

  function renderInput(approval) {
    const { input, cut } = parsed(approval);
    if (cut) {
      const box = h("div", {});
      const more = h("button", { type: "button", class: "quiet" },
        "Show all (" + (approval.tool_input_bytes || "?") + " bytes)");
      more.addEventListener("click", async () => {
        const full = await api("GET", "/api/approvals/" + encodeURIComponent(approval.id));
        if (full.ok) box.replaceWith(renderInput(full.data));
      });
      append(box, field("Input (first part)", h("pre", {}, visible(approval.tool_input_preview || ""))), more);
      return box;
    }
    const tool = approval.tool_name;
    const obj = input && typeof input === "object" && !Array.isArray(input) ? input : null;
    if (obj && tool === "Bash" && typeof obj.command === "string") {
      return h("div", {}, field("Command", longText(obj.command, "command")),
        obj.description ? field("Description", visible(obj.description)) : null,
        otherFields(obj, ["command", "description"]));
    }
    if (obj && tool === "Write" && "file_path" in obj) {
      return h("div", {}, field("File", h("span", { class: "mono" }, visible(obj.file_path))),
        field("Content", longText(obj.content ?? "")), otherFields(obj, ["file_path", "content"]));
    }
    if (obj && tool === "Edit" && "file_path" in obj) {
      return h("div", {}, field("File", h("span", { class: "mono" }, visible(obj.file_path))),
        field("Change", diff(obj.old_string, obj.new_string)),
        otherFields(obj, ["file_path", "old_string", "new_string"]));
    }
    if (obj && tool === "MultiEdit" && "file_path" in obj && Array.isArray(obj.edits)) {
      return h("div", {}, field("File", h("span", { class: "mono" }, visible(obj.file_path))),
        obj.edits.map((e, i) => field("Change " + (i + 1) + " of " + obj.edits.length, diff(e && e.old_string, e && e.new_string))),
        otherFields(obj, ["file_path", "edits"]));
    }
    if (obj && tool === "WebFetch" && "url" in obj) {
      return h("div", {}, field("URL", h("span", { class: "mono" }, visible(obj.url))),
        obj.prompt ? field("Prompt", visible(obj.prompt)) : null, otherFields(obj, ["url", "prompt"]));
    }
    const mcp = /^mcp__(.+?)__(.+)$/.exec(tool);
    if (mcp) {
      return h("div", {}, field("MCP server", h("span", { class: "mono" }, visible(mcp[1]))),
        field("MCP tool", h("span", { class: "mono" }, visible(mcp[2]))), field("Arguments", tree(input)));
    }
    return field("Input", longText(JSON.stringify(input, null, 2)));
  }

  function who(approval) {
    const parts = [approval.requested_by];
    if (approval.agent && approval.agent !== approval.requested_by) parts.push("(" + approval.agent + ")");
    return parts.join(" ");
  }

  // ---- pending -------------------------------------------------------------------------------

  function haystack(approval) {
    let text = state.haystacks.get(approval.id);
    if (text === undefined) {
      text = [approval.requested_by, approval.agent, approval.tool_name, approval.session_id, approval.reason,
        approval.tool_input === null ? approval.tool_input_preview : JSON.stringify(approval.tool_input)]
        .filter(Boolean).join("\n").toLowerCase();
      state.haystacks.set(approval.id, text);
    }
    return text;
  }

  function sortedPending() {
    const shown = [...state.pending.values()].filter((a) => !state.filter || haystack(a).includes(state.filter));
    return shown.sort((a, b) =>
      Date.parse(a.expires_at) - Date.parse(b.expires_at) || (a.id < b.id ? -1 : 1));
  }

  // Risk above low as a badge; its reasons in a list under the card's head.
  function riskBadge(approval) {
    const level = approval.risk && approval.risk.level;
    if (!level || level === "low") return null;
    const reasons = (approval.risk.reasons || []).map((r) => r.detail).join("; ");
    return h("span", { class: "risk " + level, title: reasons }, level.toUpperCase() + " risk");
  }

  function riskReasons(approval) {
    const reasons = (approval.risk && approval.risk.reasons) || [];
    if (!reasons.length) return null;
    return h("ul", { class: "risk-reasons" }, reasons.map((r) => h("li", {}, visible(r.detail))));
  }

  // "1 of 2 approved (alice)"; null when one approval decides.
  function quorumText(approval) {
    const required = approval.approvals_required || 1;
    if (required <= 1) return null;
    const names = (approval.approvals || []).map((v) => v.by);
    const counted = approval.status === "approved" ? Math.max(names.length, 1) : names.length;
    return counted + " of " + required + " approved" + (names.length ? " (" + names.join(", ") + ")" : "");
  }

  // What changes while an approval stays pending: its quorum ("1 of 2 approved (alice)") and
  // its escalation. Replaced in place when the stream says so, keeping a comment being typed.
  function progress(approval) {
    const parts = [];
    const quorum = quorumText(approval);
    if (quorum) parts.push(h("p", { class: "quorum progress" }, visible(quorum)));
    if (approval.escalations > 0) {
      parts.push(h("p", { class: "quorum progress" }, "Escalated (step " + approval.escalations + "): still undecided"));
    }
    return parts;
  }

  function updateProgress(approval) {
    const card = state.built.get(approval.id);
    if (!card) return;
    card.querySelectorAll(".progress").forEach((p) => p.remove());
    const anchor = card.querySelector(".risk-reasons") || card.querySelector(".card-head");
    if (anchor) anchor.after(...progress(approval));
  }

  function outcomeText(approval) {
    const verb = { approved: "approved", rejected: "rejected", timed_out: "timed out", cancelled: "cancelled" }[approval.status] || approval.status;
    const by = approval.decided_by ? " by " + approval.decided_by : "";
    return (state.mine.has(approval.id) ? verb[0].toUpperCase() + verb.slice(1) : "Already " + verb) + by;
  }

  function pendingCard(approval) {
    const ended = state.ended.get(approval.id);
    const card = h("article", {
      class: "card" + (ended ? " ended" : ""), tabindex: "0", "data-id": approval.id,
      "aria-label": approval.tool_name + " from " + approval.requested_by,
    });
    const head = h("div", { class: "card-head" },
      h("span", { class: "tool" }, visible(approval.tool_name)),
      riskBadge(approval),
      h("span", { class: "meta" }, "agent ", h("strong", {}, visible(who(approval)))),
      h("span", { class: "meta" }, "session ", h("span", { class: "mono" }, visible(approval.session_id))),
      h("span", { class: "meta", "data-since": approval.created_at }, ""),
      ended ? null : h("span", { class: "deadline", "data-deadline": approval.expires_at, title: "deadline " + when(approval.expires_at) }, ""));
    append(card, head);
    const reasons = riskReasons(approval);
    if (reasons) append(card, reasons);
    const quorum = quorumText(approval);
    append(card, progress(approval));
    if (approval.reason) append(card, h("p", { class: "reason" }, visible(approval.reason)));
    append(card, renderInput(approval));
    if (ended) {
      append(card, h("p", { class: "outcome " + ended.status, role: "status" }, visible(outcomeText(ended))));
      return card;
    }
    const result = h("p", { class: "outcome", role: "status" });
    const comment = h("textarea", { id: "comment-" + approval.id, rows: "1", maxlength: "2000" });
    const scope = h("div", { class: "scope", hidden: true });
    const approve = h("button", { type: "button", class: "approve", "data-action": "approve" }, "Approve");
    const reject = h("button", { type: "button", class: "reject", "data-action": "reject" }, "Reject");
    const session = h("button", { type: "button", "data-action": "session" }, "Allow for this session");
    // A session grant would let later requests skip the second operator: not offered.
    const buttons = quorum ? [approve, reject] : [approve, reject, session];
    const decide = async (decision) => {
      buttons.forEach((b) => (b.disabled = true));
      result.className = "outcome";
      result.textContent = "Sending…";
      const body = { decision };
      if (comment.value.trim()) body.comment = comment.value.trim();
      state.mine.add(approval.id);
      let answer;
      try {
        answer = await api("POST", "/api/approvals/" + encodeURIComponent(approval.id) + "/decision", body);
      } catch (e) {
        answer = { ok: false, status: 0, data: { message: String(e) } };
      }
      if (answer.ok && answer.data.status === "pending") {
        // Counted towards a quorum: another operator must approve.
        result.className = "outcome";
        result.textContent = "Your approval is counted: " + quorumText(answer.data) + ". Another operator must approve.";
        reject.disabled = false;
      } else if (answer.ok) {
        endApproval(answer.data);
      } else if (answer.status === 409 && answer.data && answer.data.error === "already_counted") {
        state.mine.delete(approval.id);
        result.className = "outcome";
        result.textContent = answer.data.message;
        reject.disabled = false;
      } else if (answer.status === 409 && answer.data && answer.data.approval) {
        state.mine.delete(approval.id);
        endApproval(answer.data.approval);
      } else {
        state.mine.delete(approval.id);
        buttons.forEach((b) => (b.disabled = false));
        result.className = "outcome error";
        result.textContent = (answer.data && answer.data.message) || "The decision was not recorded (" + answer.status + "); try again.";
      }
    };
    approve.addEventListener("click", () => decide("approve"));
    reject.addEventListener("click", () => decide("reject"));
    session.addEventListener("click", () => {
      const seconds = (state.me && state.me.session_grant_seconds) || 3600;
      const until = new Date(now() + seconds * 1000);
      clear(scope);
      append(scope,
        h("p", {}, "Approve this request and allow ", h("strong", { class: "mono" }, visible(approval.tool_name)),
          " without asking for agent ", h("strong", {}, visible(approval.requested_by)),
          " in session ", h("strong", { class: "mono" }, visible(approval.session_id)),
          " until ", h("strong", {}, until.toLocaleString()), " (" + span(seconds * 1000) + "), whatever its input."),
        h("div", { class: "row-actions" },
          h("button", { type: "button", class: "approve", onclick: () => decide("approve_session") }, "Confirm: allow for this session"),
          h("button", { type: "button", onclick: () => { scope.hidden = true; session.focus(); } }, "Cancel")));
      scope.hidden = false;
      scope.querySelector("button").focus();
    });
    append(card, h("div", { class: "actions" },
      h("div", { class: "comment" }, h("label", { for: "comment-" + approval.id }, "Comment (optional)"), comment),
      buttons), scope, result);
    return card;
  }

  // An approval shown here ended (here or elsewhere): its card says how, then leaves.
  function endApproval(approval) {
    if (!state.pending.has(approval.id) || state.ended.has(approval.id)) return;
    state.ended.set(approval.id, approval);
    announce(approval.tool_name + ": " + outcomeText(approval));
    setTimeout(() => {
      state.ended.delete(approval.id);
      state.pending.delete(approval.id);
      state.haystacks.delete(approval.id);
      refreshPending();
    }, ENDED_SHOWN_MS);
    refreshPending();
  }

  function livePendingCount() {
    let n = 0;
    for (const id of state.pending.keys()) if (!state.ended.has(id)) n++;
    return n;
  }

  function refreshPending() {
    const n = livePendingCount();
    document.getElementById("pending-count").textContent = String(n);
    setTitle();
    if (route().view !== "pending") return;
    const list = document.getElementById("pending-list");
    if (!list) return;
    const cards = new Map([...list.children].filter((c) => c.dataset.id).map((c) => [c.dataset.id, c]));
    const wanted = sortedPending();
    const active = document.activeElement;
    let before = list.firstChild;
    for (const approval of wanted) {
      let card = cards.get(approval.id);
      const isEnded = state.ended.has(approval.id);
      if (card && card.classList.contains("ended") !== isEnded) {
        const fresh = pendingCard(approval);
        state.built.set(approval.id, fresh);
        card.replaceWith(fresh);
        if (active && card.contains(active)) fresh.focus();
        if (before === card) before = fresh;
        card = fresh;
      }
      if (!card) {
        const kept = state.built.get(approval.id);
        card = kept && kept.classList.contains("ended") === isEnded ? kept : pendingCard(approval);
        state.built.set(approval.id, card);
      }
      cards.delete(approval.id);
      if (card !== before) list.insertBefore(card, before);
      before = card.nextSibling;
    }
    for (const id of state.built.keys()) if (!state.pending.has(id)) state.built.delete(id);
    for (const card of cards.values()) {
      const next = card.nextElementSibling || card.previousElementSibling;
      const hadFocus = card.contains(document.activeElement);
      card.remove();
      if (hadFocus && next) next.focus();
    }
    const empty = document.getElementById("pending-empty");
    if (empty) {
      empty.hidden = wanted.length > 0;
      empty.textContent = state.pending.size > 0 ? "No pending approval matches the filter." : "Nothing is waiting for a decision.";
    }
    tick();
  }

  function renderPending(root) {
    append(root, h("h1", {}, "Pending approvals"),
      h("p", { class: "help" }, "Oldest deadline first. Keys on a focused approval: ",
        h("kbd", {}, "j"), "/", h("kbd", {}, "k"), " next/previous, ", h("kbd", {}, "a"), " approve, ",
        h("kbd", {}, "r"), " reject, ", h("kbd", {}, "s"), " allow for this session, ", h("kbd", {}, "c"), " comment, ", h("kbd", {}, "/"), " filter."),
      h("div", { class: "filters" }, h("div", {}, h("label", { for: "pending-filter" }, "Filter"),
        h("input", { id: "pending-filter", type: "search", value: state.filter, placeholder: "agent, tool, session or input text",
          oninput: (e) => { state.filter = e.target.value.trim().toLowerCase(); refreshPending(); } }))),
      h("p", { id: "pending-empty", class: "empty", hidden: true }, "Nothing is waiting for a decision."),
      h("div", { id: "pending-list" }));
    refreshPending();
  }

  // ---- live stream ---------------------------------------------------------------------------

  function connect() {
    if (state.stream) state.stream.close();
    const stream = new EventSource("/console/events");
    state.stream = stream;
    stream.addEventListener("snapshot", (e) => {
      const data = JSON.parse(e.data);
      state.skew = Date.parse(data.server_time) - Date.now();
      const fresh = new Map(data.approvals.map((a) => [a.id, a]));
      // What ended while the stream was away is simply gone from the snapshot.
      for (const id of [...state.pending.keys()]) if (!fresh.has(id) && !state.ended.has(id)) state.pending.delete(id);
      for (const [id, a] of fresh) state.pending.set(id, a);
      announce(data.truncated ? "Showing the first " + data.approvals.length + " pending approvals." : "Live.");
      refreshPending();
    });
    stream.addEventListener("pending", (e) => {
      const approval = JSON.parse(e.data);
      const before = state.pending.get(approval.id);
      state.pending.set(approval.id, approval);
      if (before && (quorumText(before) !== quorumText(approval) || before.escalations !== approval.escalations)) {
        updateProgress(approval);
      }
      refreshPending();
    });
    stream.addEventListener("ended", (e) => endApproval(JSON.parse(e.data)));
    stream.addEventListener("open", () => announce("Live."));
    stream.addEventListener("error", () => {
      announce("Connection lost; reconnecting…");
      // A stream refused for a lost session does not come back: check, and go to sign-in.
      if (stream.readyState === EventSource.CLOSED) {
        setTimeout(async () => {
          const me = await api("GET", "/console/me").catch(() => null);
          if (me && me.ok) connect();
        }, 1000);
      }
    });
  }

  // ---- history -------------------------------------------------------------------------------

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
    return q.toString();
  }

  function localToIso(value) {
    if (!value) return "";
    const t = new Date(value);
    return isNaN(t) ? "" : t.toISOString();
  }

  function summary(approval) {
    const input = approval.tool_input;
    let text;
    if (input && typeof input === "object") {
      text = input.command || input.file_path || input.url || JSON.stringify(input);
    } else {
      text = approval.tool_input_preview || JSON.stringify(input);
    }
    text = String(text);
    return text.length > 140 ? text.slice(0, 140) + "…" : text;
  }

  function renderHistory(root, params) {
    const form = h("form", { class: "filters", role: "search" });
    const input = (name, label, attrs) => {
      const el = h("input", Object.assign({ id: "f-" + name, name, value: params.get(name) || "" }, attrs || {}));
      return h("div", {}, h("label", { for: "f-" + name }, label), el);
    };
    const status = h("select", { id: "f-status", name: "status" },
      ["", "pending", "approved", "rejected", "timed_out", "cancelled"].map((s) =>
        h("option", { value: s, selected: (params.get("status") || "") === s }, s || "any")));
    append(form,
      h("div", {}, h("label", { for: "f-status" }, "Status"), status),
      input("agent", "Agent"), input("tool", "Tool"), input("q", "Text in the input", { type: "search" }),
      input("since", "Created from", { type: "datetime-local", value: params.get("since_local") || "" }),
      input("until", "Created before", { type: "datetime-local", value: params.get("until_local") || "" }),
      h("div", {}, h("button", { type: "submit" }, "Search")));
    const filters = () => ({
      status: status.value, agent: form.agent.value.trim(), tool: form.tool.value.trim(), q: form.q.value.trim(),
      since: localToIso(form.since.value), until: localToIso(form.until.value),
    });
    const exports = h("div", { class: "row-actions" });
    const table = h("tbody");
    const more = h("button", { type: "button", hidden: true }, "Load more");
    const note = h("p", { class: "help", role: "status" });
    let cursor = null;
    const load = async (reset) => {
      const f = filters();
      if (reset) {
        clear(table);
        cursor = null;
        clear(exports);
        append(exports,
          h("a", { class: "button", href: "/api/approvals/export?" + query(Object.assign({}, f, { format: "json" })), download: "" }, "Export JSON"),
          h("a", { class: "button", href: "/api/approvals/export?" + query(Object.assign({}, f, { format: "csv" })), download: "" }, "Export CSV"));
      }
      note.textContent = "Searching…";
      const answer = await api("GET", "/api/approvals?" + query(Object.assign({}, f, { limit: 50, cursor })));
      if (!answer.ok) {
        note.textContent = (answer.data && answer.data.message) || "Search failed (" + answer.status + ").";
        return;
      }
      for (const a of answer.data.approvals) {
        append(table, h("tr", {},
          h("td", {}, h("a", { href: "#/approval/" + encodeURIComponent(a.id) }, when(a.created_at))),
          h("td", {}, h("span", { class: "status " + a.status }, a.status)),
          h("td", {}, visible(who(a))),
          h("td", { class: "mono" }, visible(a.tool_name)),
          h("td", { class: "mono hide-narrow" }, visible(summary(a))),
          h("td", {}, visible(a.decided_by || ""))));
      }
      cursor = answer.data.next_cursor;
      more.hidden = !cursor;
      note.textContent = table.children.length + " shown" + (cursor ? "; more may match." : ".");
    };
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      load(true);
    });
    more.addEventListener("click", () => load(false));
    append(root, h("h1", {}, "History"), form, exports, note,
      h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Created", "Status", "Agent", "Tool"].map((t) => h("th", { scope: "col" }, t)),
          h("th", { scope: "col", class: "hide-narrow" }, "Input"), h("th", { scope: "col" }, "Decided by"))),
        table)), more);
    load(true);
  }

  async function renderApproval(root, id) {
    append(root, h("p", {}, h("a", { href: "#/history" }, "← History")));
    const [one, events] = await Promise.all([
      api("GET", "/api/approvals/" + encodeURIComponent(id)),
      api("GET", "/api/approvals/" + encodeURIComponent(id) + "/events"),
    ]);
    if (!one.ok) {
      append(root, h("p", { class: "error" }, (one.data && one.data.message) || "Not found."));
      return;
    }
    const a = one.data;
    const rows = [
      ["Status", h("span", { class: "status " + a.status }, a.status)],
      ["Risk", h("span", {}, riskBadge(a) || "low", riskReasons(a))],
      ["Approvals", visible(quorumText(a) || "1")],
      ["Escalation", a.escalations ? "step " + a.escalations + (a.escalated_to && a.escalated_to.length ? " (" + a.escalated_to.join(", ") + ")" : "") : "none"],
      ["Route", (a.route && a.route.length) ? visible(a.route.join(", ")) : "default"], ["Agent", visible(who(a))],
      ["Session", h("span", { class: "mono" }, visible(a.session_id))], ["Tool", h("span", { class: "mono" }, visible(a.tool_name))],
      ["Created", when(a.created_at)], ["Deadline", when(a.expires_at)], ["Decided", when(a.decided_at)],
      ["Decided by", visible(a.decided_by || "")], ["Comment", visible(a.comment || "")], ["Reason", visible(a.reason || "")],
    ];
    append(root, h("h1", {}, "Approval ", h("span", { class: "mono" }, a.id)),
      h("div", { class: "table-wrap" }, h("table", {}, h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, v)))))),
      h("h2", {}, "Input"), renderInput(a), h("h2", {}, "Timeline"),
      h("ol", { class: "timeline" }, (events.ok ? events.data.events : []).map((e) =>
        h("li", {}, h("strong", {}, e.kind.replace(/_/g, " ")), " · ", when(e.at),
          e.actor ? [" · ", visible(e.actor)] : null, e.channel ? [" · ", e.channel] : null,
          e.detail ? h("div", { class: "help" }, visible(e.detail)) : null))));
  }

  // ---- operations ----------------------------------------------------------------------------

  async function renderGrants(root) {
    append(root, h("h1", {}, "Session grants"));
    const answer = await api("GET", "/api/grants");
    const grants = answer.ok ? answer.data.grants : [];
    if (grants.length === 0) return append(root, h("p", { class: "empty" }, "No live grants."));
    const body = h("tbody");
    for (const g of grants) {
      const revoke = h("button", { type: "button", class: "reject" }, "Revoke");
      revoke.addEventListener("click", async () => {
        revoke.disabled = true;
        const done = await api("DELETE", "/api/grants/" + encodeURIComponent(g.id));
        announce(done.ok ? "Grant revoked." : "Not revoked: " + ((done.data && done.data.message) || done.status));
        renderView();
      });
      append(body, h("tr", {}, h("td", { class: "mono" }, visible(g.tool_name)), h("td", {}, visible(g.requested_by)),
        h("td", { class: "mono" }, visible(g.session_id)), h("td", {}, visible(g.granted_by)),
        h("td", {}, when(g.expires_at)), h("td", {}, revoke)));
    }
    append(root, h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Tool", "Agent", "Session", "Granted by", "Until", ""].map((t) => h("th", { scope: "col" }, t)))), body)));
  }

  async function renderDeadLetters(root) {
    append(root, h("h1", {}, "Dead letters"),
      h("p", { class: "help" }, "Notifications a channel gave up on. Requeue them once the channel works again."));
    const answer = await api("GET", "/api/admin/dead-letters?limit=200");
    const letters = answer.ok ? answer.data.dead_letters : [];
    if (letters.length === 0) return append(root, h("p", { class: "empty" }, "No dead letters."));
    const channels = [...new Set(letters.map((l) => l.channel))];
    append(root, h("div", { class: "row-actions" }, channels.map((channel) => {
      const all = h("button", { type: "button" }, "Requeue all " + channel);
      all.addEventListener("click", async () => {
        all.disabled = true;
        const done = await api("POST", "/api/admin/dead-letters/requeue", { channel });
        announce(done.ok ? "Requeued " + channel + "." : "Not requeued: " + ((done.data && done.data.message) || done.status));
        renderView();
      });
      return all;
    })));
    const body = h("tbody");
    for (const l of letters) {
      const one = h("button", { type: "button" }, "Requeue");
      one.addEventListener("click", async () => {
        one.disabled = true;
        const done = await api("POST", "/api/admin/dead-letters/" + encodeURIComponent(l.id) + "/requeue");
        announce(done.ok ? "Requeued." : "Not requeued: " + ((done.data && done.data.message) || done.status));
        renderView();
      });
      append(body, h("tr", {}, h("td", {}, l.channel), h("td", {}, when(l.dead_at)),
        h("td", {}, h("a", { href: "#/approval/" + encodeURIComponent(l.approval_id) }, visible(l.tool_name))),
        h("td", {}, visible(l.event)), h("td", {}, visible(l.reason || "")), h("td", {}, one)));
    }
    append(root, h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Channel", "Given up", "Approval", "Event", "Reason", ""].map((t) => h("th", { scope: "col" }, t)))), body)));
  }

  async function renderHealth(root) {
    append(root, h("h1", {}, "Health"));
    const [health, breaker, database] = await Promise.all([
      fetch("/health", { credentials: "same-origin" }).then((r) => r.json()).catch(() => null),
      api("GET", "/api/diagnostics/circuit-breaker").catch(() => null),
      api("GET", "/api/diagnostics/database").catch(() => null),
    ]);
    if (health) {
      append(root, h("p", {}, "Service: ", h("span", { class: "status " + (health.status === "healthy" ? "approved" : "rejected") }, health.status),
        " · version " + health.version + " · up " + span(health.uptime_seconds * 1000)));
      const body = h("tbody");
      for (const [name, a] of Object.entries(health.actors || {})) {
        append(body, h("tr", {}, h("td", { class: "mono" }, name),
          h("td", {}, h("span", { class: "status " + (a.status === "healthy" ? "approved" : "rejected") }, a.status)),
          h("td", {}, a.restarts === null ? "" : String(a.restarts)), h("td", {}, visible(a.detail || ""))));
      }
      append(root, h("h2", {}, "Actors"), h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Actor", "Status", "Restarts", "Detail"].map((t) => h("th", { scope: "col" }, t)))), body)));
    }
    append(root, h("h2", {}, "Telegram circuit breaker"),
      breaker && breaker.ok ? tree(breaker.data) : h("p", { class: "help" }, "Not available on this listener."));
    append(root, h("h2", {}, "Store and queues"),
      database && database.ok ? tree(database.data) : h("p", { class: "help" }, "Not available on this listener."));
  }

  // ---- routing and keys ----------------------------------------------------------------------

  function route() {
    const hash = window.location.hash.replace(/^#\/?/, "");
    const [path, search] = hash.split("?");
    const parts = path.split("/").filter(Boolean);
    return { view: parts[0] || "pending", arg: parts[1] ? decodeURIComponent(parts[1]) : null, params: new URLSearchParams(search || "") };
  }

  const TITLES = { pending: "Pending", history: "History", approval: "Approval", grants: "Grants", "dead-letters": "Dead letters", health: "Health" };

  // The pending count leads the title on every page (a tab in the background shows it).
  function setTitle() {
    const n = livePendingCount();
    const view = route().view;
    document.title = (n > 0 ? "(" + n + ") " : "") + (view === "pending" ? "" : (TITLES[view] || "") + " · ") + "approval-gate";
  }

  function renderView() {
    const { view, arg, params } = route();
    const root = clear(main());
    for (const link of document.querySelectorAll("nav a[data-view]")) {
      if (link.dataset.view === view || (view === "approval" && link.dataset.view === "history")) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    if (view === "history") renderHistory(root, params);
    else if (view === "approval" && arg) renderApproval(root, arg);
    else if (view === "grants") renderGrants(root);
    else if (view === "dead-letters") renderDeadLetters(root);
    else if (view === "health") renderHealth(root);
    else renderPending(root);
    setTitle();
  }

  function cardOf(el) {
    return el && el.closest ? el.closest("article.card") : null;
  }

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const target = e.target;
    if (target && /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)) {
      if (e.key === "Escape") cardOf(target) && cardOf(target).focus();
      return;
    }
    const cards = [...document.querySelectorAll("#pending-list article.card")];
    const card = cardOf(target);
    const at = cards.indexOf(card);
    const press = (action) => {
      const button = card && card.querySelector('button[data-action="' + action + '"]');
      if (button && !button.disabled) { e.preventDefault(); button.click(); }
    };
    switch (e.key) {
      case "j": case "ArrowDown":
        if (cards.length && (card || e.key === "j")) { e.preventDefault(); cards[Math.min(at + 1, cards.length - 1)].focus(); }
        break;
      case "k": case "ArrowUp":
        if (cards.length && card) { e.preventDefault(); cards[Math.max(at - 1, 0)].focus(); }
        break;
      case "a": press("approve"); break;
      case "r": press("reject"); break;
      case "s": press("session"); break;
      case "c":
        if (card) { e.preventDefault(); card.querySelector("textarea").focus(); }
        break;
      case "/": {
        const filter = document.getElementById("pending-filter");
        if (filter) { e.preventDefault(); filter.focus(); }
        break;
      }
    }
  });

  // A failure in this script must not leave a page that looks live but is not: say so.
  function pageError(message) {
    const root = document.documentElement;
    root.dataset.pageErrors = String(Number(root.dataset.pageErrors || 0) + 1);
    announce("This page hit an error (" + message + "); reload it to be sure it is current.");
  }
  window.addEventListener("error", (e) => pageError(e.message || "script error"));
  window.addEventListener("unhandledrejection", (e) => {
    if (e.reason && e.reason.message === "signed out") return;
    pageError(String(e.reason && e.reason.message ? e.reason.message : e.reason));
  });

  async function start() {
    const me = await api("GET", "/console/me");
    if (!me.ok) return;
    state.me = me.data;
    document.getElementById("who").textContent = me.data.name;
    const out = document.getElementById("sign-out");
    if (me.data.open) out.hidden = true;
    out.addEventListener("click", async () => {
      await api("POST", "/console/sign-out").catch(() => null);
      if (state.stream) state.stream.close();
      window.location.assign("/console/sign-in");
    });
    window.addEventListener("hashchange", renderView);
    renderView();
    connect();
    setInterval(tick, 1000);
  }

  start();
})();
