// The keys page: ask before revoking (the browser's own dialog; without JavaScript the server asks), and copy
// the new key (the Clipboard API where the page is a secure context, localhost included; else the key is
// selected, for Ctrl+C).
"use strict";
(function () {
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.revoke) return;
    event.preventDefault();
    if (!window.confirm(form.dataset.revoke)) return;
    var post = document.getElementById("revoke-form");
    post.action = form.action;
    post.submit();
  });

  function selectKey(input) {
    input.focus();
    input.setSelectionRange(0, input.value.length);
  }

  function copyKey(button) {
    var input = document.getElementById(button.dataset.copy);
    var status = document.getElementById("copy-status");
    function say(text) { if (status) status.textContent = text; }
    function fallback() {
      selectKey(input);
      var copied = false;
      try { copied = document.execCommand("copy"); } catch (e) { copied = false; }
      say(copied ? "Copied." : "The key is selected: press Ctrl+C (⌘C) to copy it.");
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(function () { say("Copied."); }, fallback);
    } else {
      fallback();
    }
  }

  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () { copyKey(button); });
  });
})();
