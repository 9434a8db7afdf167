// Refreshes the overview's figures in place: fetches the same-origin fragment
// every data-refresh-seconds and swaps it in. No inline script anywhere (CSP).
"use strict";
(function () {
  const box = document.getElementById("figures");
  if (!box) {
    return;
  }
  const url = box.dataset.refreshUrl;
  const seconds = Math.max(1, Number(box.dataset.refreshSeconds) || 15);

  async function refresh() {
    try {
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (response.redirected && new URL(response.url).pathname === "/ui/login") {
        window.location.assign("/ui/login");
        return;
      }
      if (response.ok) {
        const html = await response.text();
        const fresh = new DOMParser().parseFromString(html, "text/html");
        box.replaceChildren(...fresh.body.childNodes);
        box.dataset.refreshed = String(Number(box.dataset.refreshed || 0) + 1);
      }
    } catch (error) {
      // Offline or restarting: keep the figures shown, try again later.
    }
    window.setTimeout(refresh, seconds * 1000);
  }

  window.setTimeout(refresh, seconds * 1000);
})();
