// minigate web UI: the few behaviours htmx attributes do not cover. No inline script anywhere (CSP).
(function () {
  "use strict";
  var streaming = null; // the element whose request is streaming an answer

  function byId(id) { return document.getElementById(id); }

  function setBusy(busy) {
    var send = byId("send"), stop = byId("stop"), messages = byId("messages");
    if (send) send.disabled = busy;
    if (stop) stop.hidden = !busy;
    if (messages) messages.setAttribute("aria-busy", busy ? "true" : "false");
    var status = byId("chat-status"); // announced by screen readers (role=status)
    if (status) status.textContent = busy ? "Writing the answer…" : "Answer finished.";
    var regenerate = byId("regenerate");
    if (regenerate) regenerate.disabled = busy;
  }

  // The chat follows the newest message while the reader is at the bottom; scrolling up to read stops that.
  // (Scrolling the sticky composer into view did nothing: it always counts as visible.)
  var follow = true;
  function atBottom() {
    var root = document.documentElement;
    return root.scrollHeight - (window.scrollY + window.innerHeight) < 120;
  }
  function scrollDown() {
    if (byId("messages")) window.scrollTo(0, document.documentElement.scrollHeight);
  }
  window.addEventListener("scroll", function () { follow = atBottom(); }, {passive: true});

  function conversationId() {
    var field = byId("conversation-id");
    return field && field.value ? field.value : "";
  }

  // The composer's next message follows the last message shown (the branch on screen, not another tab's).
  function syncParent() {
    var field = byId("parent-id"), all = document.querySelectorAll("#messages > .msg");
    if (!field) return;
    var last = all.length ? all[all.length - 1].id.replace("msg-", "") : "";
    field.value = /^\d+$/.test(last) ? last : "";
  }

  // A new chat (/chat) becomes a conversation with its first message: its address follows.
  function followConversation() {
    var id = conversationId();
    if (id && window.location.pathname !== "/chat/" + id) window.history.replaceState(null, "", "/chat/" + id);
  }

  // How full the context window is: the last answer's tokens against the picked model's window.
  function updateContext() {
    var box = byId("context"), meter = byId("context-meter"), text = byId("context-text");
    if (!box || !meter || !text) return;
    var answers = document.querySelectorAll("#messages .msg-assistant[data-context-tokens]");
    var used = answers.length ? parseInt(answers[answers.length - 1].getAttribute("data-context-tokens"), 10) : 0;
    var picker = byId("model"), option = picker && picker.selectedOptions[0];
    var size = option && option.getAttribute("data-context") ? parseInt(option.getAttribute("data-context"), 10) : 0;
    box.hidden = !used;
    meter.hidden = !size;
    var n = function (v) { return v.toLocaleString("en-US"); };
    if (size) {
      meter.max = size; meter.low = Math.floor(size * 0.7); meter.high = Math.floor(size * 0.9); meter.value = used;
      text.textContent = "Context " + n(used) + " of " + n(size) + " tokens (" + Math.round(100 * used / size) + "%)";
    } else {
      text.textContent = n(used) + " tokens in context";
    }
  }
  document.addEventListener("change", function (evt) { if (evt.target && evt.target.id === "model") updateContext(); });

  // After Stop the answer's stream is gone before its end: ask for the stored (stopped) answer, rendered.
  function renderStopped() {
    var messages = byId("messages"), raw = messages && messages.querySelector(".streaming[aria-busy=true]");
    var article = raw && raw.closest(".msg");
    var id = conversationId();
    if (!article || !id) return;
    fetch("/chat/" + id + "/messages/" + article.id.replace("msg-", ""), {credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html || !article.isConnected) return;
        var template = document.createElement("template");
        template.innerHTML = html.trim();
        var fresh = template.content.firstElementChild;
        if (fresh && fresh.id === article.id) article.replaceWith(fresh);
        updateContext();
        if (follow) scrollDown();
      });
  }
  var stopped = null; // the streaming element the Stop button aborted

  document.addEventListener("htmx:before:request", function (evt) {
    var elt = evt.target;
    if (elt && elt.hasAttribute && elt.hasAttribute("data-stream")) {
      streaming = elt;
      stopped = null;
      follow = true; // sending shows the answer
      setBusy(true);
    }
  });

  document.addEventListener("htmx:after:swap", function (evt) {
    syncParent(); // a version flip or an answer changes which message is last
    if (streaming) {
      var regenerate = byId("regenerate");
      if (regenerate) regenerate.hidden = false;
      if (streaming.id === "composer") {
        var content = byId("content");
        if (content && content.value) content.value = "";
      }
      followConversation();
      if (follow) scrollDown();
    }
  });

  // A streaming answer's update (web/chat_stream.py block_update): hx-swap="blocks keep:K" keeps the body's first
  // K blocks (its top-level elements) and replaces the rest with the update's blocks, so a long answer's earlier
  // blocks are neither sent nor swapped again.
  if (window.htmx) htmx.registerExtension("answer-blocks", {
    handle_swap: function (style, target, fragment, spec) {
      if (style !== "blocks") return false;
      var stale = target.children[parseInt(spec.keep, 10) || 0]; // the first block that changed
      while (stale && stale.nextSibling) target.removeChild(stale.nextSibling);
      if (stale) target.removeChild(stale);
      var added = Array.prototype.slice.call(fragment.childNodes);
      target.appendChild(fragment);
      return added;
    }
  });

  document.addEventListener("htmx:sse:after:message", function () {
    if (streaming && follow) scrollDown();
    document.querySelectorAll(".import-log").forEach(function (log) { log.scrollTop = log.scrollHeight; });
  });

  document.addEventListener("htmx:finally:request", function (evt) {
    if (evt.target === streaming) {
      if (stopped === streaming) renderStopped();
      streaming = stopped = null;
      setBusy(false);
      updateContext();
      syncParent();
      var content = byId("content");
      if (content) content.focus();
    }
  });

  document.addEventListener("click", function (evt) {
    var target = evt.target;
    if (target && target.id === "stop" && streaming) {
      stopped = streaming;
      htmx.trigger(streaming, "htmx:abort");
    }
  });

  // Enter sends, Shift+Enter adds a line (as in most chat apps). On a touch screen, whose keyboard has no
  // Shift, Enter adds a line and the Send button sends; the placeholder says which.
  var touch = window.matchMedia("(pointer: coarse)");
  document.addEventListener("keydown", function (evt) {
    var target = evt.target;
    if (target && target.id === "content" && evt.key === "Enter" && !evt.shiftKey && !evt.isComposing
        && !touch.matches) {
      evt.preventDefault();
      if (!streaming && target.value.trim()) target.form.requestSubmit();
    }
  });
  document.addEventListener("DOMContentLoaded", function () {
    var content = byId("content");
    if (content && touch.matches) content.placeholder = "Write a message (tap Send to send)";
  });

  document.addEventListener("DOMContentLoaded", function () {
    if (window.matchMedia("(min-width: 900px)").matches) {
      document.querySelectorAll("details.side-panel").forEach(function (d) { d.open = true; });
    }
    updateContext();
    syncParent();
    scrollDown();
  });
})();
