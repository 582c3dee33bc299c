/* Kong: refresh the live parts of a page in place.
 *
 * An element with data-kong-refresh="N" turns it on: every N seconds the
 * page's own URL is fetched with ?partial=1, and each element of the answer
 * that has data-kong-live and an id replaces the element with that id.
 * Without JavaScript the page still works: a <noscript> meta refresh
 * reloads it instead.
 */
(function () {
  "use strict";
  var root = document.querySelector("[data-kong-refresh]");
  if (!root || !window.fetch || !window.DOMParser) return;
  var seconds = parseInt(root.getAttribute("data-kong-refresh"), 10);
  if (!(seconds > 0)) return;
  var timer = null;
  var busy = false;

  function schedule() {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, seconds * 1000);
  }

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    fresh.querySelectorAll("[data-kong-live][id]").forEach(function (node) {
      var current = document.getElementById(node.id);
      if (current && current.innerHTML !== node.innerHTML) {
        current.replaceWith(document.importNode(node, true));
      }
    });
    document.documentElement.setAttribute("data-kong-refreshed", String(Date.now()));
  }

  function refresh() {
    if (busy) return;
    if (document.hidden) return schedule();
    busy = true;
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    fetch(url.toString(), { credentials: "same-origin", cache: "no-store", headers: { "X-Requested-With": "kong" } })
      .then(function (response) {
        // A login page (expired session) is not a fragment: keep what is shown.
        if (!response.ok || response.headers.get("X-Kong-Partial") !== "1") return null;
        return response.text();
      })
      .then(function (html) { if (html) swap(html); })
      .catch(function () { /* offline for a moment: try again next time */ })
      .then(function () { busy = false; schedule(); });
  }

  document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
  schedule();
})();
