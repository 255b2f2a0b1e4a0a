// Refreshes a page's live part: asks for it every few seconds with the ETag of what
// the page shows; the server answers 304 when nothing changed. Paused while the tab
// is hidden or a form inside the live part has focus. No dependencies, no build.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) return;
  var etag = live.getAttribute("data-etag") || "";
  var every = Number(live.getAttribute("data-poll")) || 2000;
  var busy = false;
  function tick() {
    if (busy || document.hidden) return;
    if (live.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return;
    busy = true;
    fetch(window.location.href, {
      headers: { "X-Wireframe-Live": "1", "If-None-Match": etag },
      cache: "no-store",
      credentials: "same-origin",
    }).then(function (r) {
      if (r.status !== 200) return null;
      etag = r.headers.get("ETag") || "";
      return r.text();
    }).then(function (html) {
      if (html === null || html === undefined) return;
      live.innerHTML = html;
      live.setAttribute("data-etag", etag);
      document.body.setAttribute("data-updated", String(Date.now()));
    }).catch(function () {}).then(function () { busy = false; });
  }
  window.setInterval(tick, every);
})();
