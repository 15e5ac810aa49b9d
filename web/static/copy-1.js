// minigate chat: the Copy buttons of code blocks (rendered by the server around each <pre>) and of messages.
// A code block copies its code; a message copies its Markdown source: a user's text as written, an answer's from
// its inert <template class="msg-source">. No inline script anywhere (CSP).
(function () {
  "use strict";

  // The Clipboard API needs a secure context (https or localhost); on http to a LAN address, a hidden textarea.
  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "copy-buffer";
    var active = document.activeElement;
    document.body.appendChild(area);
    area.focus();
    area.select();
    var done = false;
    try { done = document.execCommand("copy"); } catch (err) { done = false; }
    area.remove();
    if (active && active.focus) active.focus(); // the Copy button keeps the focus
    return done ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return fallbackCopy(text); });
    }
    return fallbackCopy(text);
  }

  function sourceOf(button) {
    var block = button.closest(".code-block");
    if (block) {
      var code = block.querySelector("pre code");
      return code ? code.textContent.replace(/\n$/, "") : ""; // a fence's code ends with one newline: not copied
    }
    var article = button.closest(".msg");
    if (!article) return "";
    var template = article.querySelector("template.msg-source");
    if (template) return template.content.textContent;
    var plain = article.querySelector(".body.plain");
    return plain ? plain.textContent : "";
  }

  function feedback(button, label) {
    var before = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", before);
    button.textContent = label;
    clearTimeout(button._copyTimer);
    button._copyTimer = setTimeout(function () { button.textContent = before; }, 1500);
  }

  document.addEventListener("click", function (evt) {
    var button = evt.target && evt.target.closest && evt.target.closest(".copy-code, .copy-msg");
    if (!button) return;
    copyText(sourceOf(button)).then(
      function () { feedback(button, "Copied"); },
      function () { feedback(button, "Copy failed"); }
    );
  });
})();
