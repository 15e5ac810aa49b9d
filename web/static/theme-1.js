// minigate's colour theme: loaded without defer in <head>, so data-theme is on <html> before the first paint
// (no flash of the wrong theme). "auto" follows the browser (app.css: color-scheme "light dark" and light-dark()).
(function () {
  "use strict";
  var KEY = "minigate-theme", root = document.documentElement;
  function stored() {
    try { return localStorage.getItem(KEY); } catch (e) { return null; } // storage can be blocked
  }
  function apply(theme) {
    root.setAttribute("data-theme", theme === "light" || theme === "dark" ? theme : "auto");
  }
  apply(stored());
  document.addEventListener("DOMContentLoaded", function () {
    var pick = document.getElementById("theme");
    if (!pick) return;
    pick.value = root.getAttribute("data-theme");
    pick.closest(".theme-pick").hidden = false; // without script the picker could do nothing: it stays hidden
    pick.addEventListener("change", function () {
      try { localStorage.setItem(KEY, pick.value); } catch (e) { /* remembered for this page only */ }
      apply(pick.value);
    });
  });
})();
