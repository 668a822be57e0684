// trioproxy dashboard: the only script besides htmx. Shows a banner when a refresh fails
// (the gateway stopped or the network is down), so stale numbers never pass for live ones.
(function () {
  "use strict";
  function banner(show) {
    var el = document.getElementById("stale");
    if (el) { el.hidden = !show; }
  }
  document.addEventListener("htmx:sendError", function () { banner(true); });
  document.addEventListener("htmx:timeout", function () { banner(true); });
  document.addEventListener("htmx:responseError", function (e) {
    if (e.detail && e.detail.xhr && e.detail.xhr.status >= 500) { banner(true); }
  });
  document.addEventListener("htmx:afterSwap", function (e) {
    if (e.detail && e.detail.target && e.detail.target.id === "panel") { banner(false); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    if (window.htmx) { window.htmx.config.timeout = 10000; }
  });
})();
