// The giftcard console's only script (written for this project): live
// refresh of [data-live] sections and the bulk replay's batch loop. Every
// page works without it (refresh by hand; one batch per "Continue").
"use strict";

(function () {
  var FETCH = { "X-Requested-With": "console" };

  function toLogin() {
    window.location.assign("/console/login?next=" + encodeURIComponent(window.location.pathname));
  }

  // Replaces the content of each [data-live] element with a fresh copy
  // from its data-live URL every data-every seconds, while the tab shows.
  function live(el) {
    var every = Math.max(2, parseInt(el.getAttribute("data-every"), 10) || 5) * 1000;
    var status = document.querySelector("[data-live-status]");
    function say(text) { if (status) { status.textContent = text; } }
    function refresh() {
      if (document.hidden) { return; }
      fetch(el.getAttribute("data-live"), { headers: FETCH, credentials: "same-origin" })
        .then(function (res) {
          if (res.status === 401) { toLogin(); return null; }
          if (!res.ok) { throw new Error("HTTP " + res.status); }
          return res.text();
        })
        .then(function (html) {
          if (html === null) { return; }
          el.innerHTML = html;
          say("Live: refreshed at " + new Date().toLocaleTimeString() + ", every " + every / 1000 + " s.");
        })
        .catch(function (err) {
          say("Live refresh failed (" + err.message + "); retrying in " + every / 1000 + " s.");
        });
    }
    setInterval(refresh, every);
    document.addEventListener("visibilitychange", refresh);
  }

  // Posts the bulk-replay form batch after batch, carrying the position
  // forward, until nothing is left, an error, or Stop.
  function bulk(form) {
    var progress = form.querySelector("progress");
    var status = form.querySelector("#bulk-status");
    var stop = form.querySelector("[data-bulk-stop]");
    var stopped = false;
    stop.addEventListener("click", function () { stopped = true; });

    function field(name) { return form.querySelector("input[name='" + name + "']"); }
    function say(text) { status.textContent = text; }
    function buttons(running) {
      form.querySelector("button[type='submit']").disabled = running;
      stop.hidden = !running;
    }

    function step() {
      var body = new URLSearchParams(new FormData(form));
      fetch(form.action, {
        method: "POST",
        headers: Object.assign({ "Content-Type": "application/x-www-form-urlencoded" }, FETCH),
        credentials: "same-origin",
        body: body
      })
        .then(function (res) {
          if (res.status === 401) { toLogin(); throw new Error("the session has ended"); }
          return res.json().then(function (data) {
            if (!res.ok) { throw new Error(data.error || "HTTP " + res.status); }
            return data;
          });
        })
        .then(function (data) {
          field("after").value = data.after;
          field("replayed").value = data.replayed;
          field("not_authentic").value = data.not_authentic;
          var handled = data.replayed + data.not_authentic;
          progress.max = handled + data.remaining;
          progress.value = handled;
          var text = "Replayed " + data.replayed + "; " + data.not_authentic +
            " left pending (not signed by an api, or past the stream's retention: discard them); " +
            data.remaining + " left.";
          if (data.error) {
            say("Stopped: " + data.error + ". " + text + " Press the button to go on.");
            buttons(false);
          } else if (data.done) {
            say("Done. " + text);
            buttons(false);
            form.querySelector("button[type='submit']").hidden = true;
          } else if (stopped) {
            say("Stopped. " + text + " Press the button to go on.");
            buttons(false);
          } else {
            say(text);
            step();
          }
        })
        .catch(function (err) {
          say("Stopped: " + err.message);
          buttons(false);
        });
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!form.reportValidity()) { return; }
      stopped = false;
      buttons(true);
      say("Replaying…");
      step();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(live);
    document.querySelectorAll("form[data-bulk]").forEach(bulk);
  });
})();
