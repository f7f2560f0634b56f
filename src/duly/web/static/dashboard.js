// duly dashboard: the only script. It refreshes live regions and the schedule preview;
// every page works without it (reload by hand, press Preview).
"use strict";

function swapLive(region) {
  // Fetch this page again and replace the live region with its new content.
  fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "refresh" } })
    .then(function (response) {
      if (response.redirected || !response.ok) { return null; }
      return response.text();
    })
    .then(function (html) {
      if (html === null) { return; }
      var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(region.id);
      if (!fresh) { return; }
      region.innerHTML = fresh.innerHTML;
      var every = fresh.getAttribute("data-refresh");
      if (every) { schedule(region, every); } else { region.removeAttribute("data-refresh"); }
    })
    .catch(function () { schedule(region, region.getAttribute("data-refresh") || "10"); });
}

function schedule(region, seconds) {
  window.setTimeout(function () { swapLive(region); }, Math.max(1, Number(seconds)) * 1000);
}

function watchPreview(form) {
  var target = document.getElementById("preview");
  var url = form.getAttribute("data-preview");
  if (!target || !url) { return; }
  var pending = null;
  function refresh() {
    var params = new URLSearchParams();
    ["name", "job", "kind", "time", "timezone"].forEach(function (field) {
      var input = form.elements.namedItem(field);
      if (input) { params.append(field, input.value); }
    });
    form.querySelectorAll("input[name=days]:checked").forEach(function (box) { params.append("days", box.value); });
    fetch(url + "?" + params.toString(), { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("preview");
        if (fresh) { target.innerHTML = fresh.innerHTML; }
      });
  }
  form.addEventListener("input", function () {
    window.clearTimeout(pending);
    pending = window.setTimeout(refresh, 250);
  });
  refresh();
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-refresh]").forEach(function (region) {
    schedule(region, region.getAttribute("data-refresh"));
  });
  var form = document.getElementById("new-schedule");
  if (form) { watchPreview(form); }
});
