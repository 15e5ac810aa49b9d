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

  function scrollDown() {
    var composer = byId("composer");
    if (composer) composer.scrollIntoView({block: "end"});
  }

  document.addEventListener("htmx:before:request", function (evt) {
    var elt = evt.target;
    if (elt && elt.hasAttribute && elt.hasAttribute("data-stream")) {
      streaming = elt;
      setBusy(true);
    }
  });

  document.addEventListener("htmx:after:swap", function (evt) {
    if (streaming) {
      var regenerate = byId("regenerate");
      if (regenerate) regenerate.hidden = false;
      if (streaming.id === "composer") {
        var content = byId("content");
        if (content && content.value) content.value = "";
      }
      scrollDown();
    }
  });

  document.addEventListener("htmx:sse:after:message", function () {
    if (streaming) scrollDown();
    document.querySelectorAll(".import-log").forEach(function (log) { log.scrollTop = log.scrollHeight; });
  });

  document.addEventListener("htmx:finally:request", function (evt) {
    if (evt.target === streaming) {
      streaming = null;
      setBusy(false);
      var content = byId("content");
      if (content) content.focus();
    }
  });

  document.addEventListener("click", function (evt) {
    var target = evt.target;
    if (target && target.id === "stop" && streaming) {
      htmx.trigger(streaming, "htmx:abort");
    }
  });

  // Enter sends, Shift+Enter adds a line (as in most chat apps).
  document.addEventListener("keydown", function (evt) {
    var target = evt.target;
    if (target && target.id === "content" && evt.key === "Enter" && !evt.shiftKey && !evt.isComposing) {
      evt.preventDefault();
      if (!streaming && target.value.trim()) target.form.requestSubmit();
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    if (window.matchMedia("(min-width: 900px)").matches) {
      document.querySelectorAll("details.side-panel").forEach(function (d) { d.open = true; });
    }
    scrollDown();
  });
})();
