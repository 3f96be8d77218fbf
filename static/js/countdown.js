/* The hold countdown on the booking page. The server renders the time left; this keeps it
   ticking. It counts from the seconds the server gave (not the visitor's clock, which may be
   wrong) and, at zero, swaps the payment link for the "expired" notice. Without JavaScript
   the page still shows the time left when it was loaded and the expiry time. */
(function () {
  "use strict";

  function pad(n) {
    return n < 10 ? "0" + n : String(n);
  }

  // Same format as bookings.views.hold_clock.
  function clock(seconds, dayOne, dayOther) {
    var s = Math.max(0, Math.floor(seconds));
    var days = Math.floor(s / 86400);
    var hours = Math.floor((s % 86400) / 3600);
    var minutes = Math.floor((s % 3600) / 60);
    var secs = s % 60;
    if (days) {
      var label = (days === 1 ? dayOne : dayOther).replace("%(days)s", String(days));
      return label + " " + pad(hours) + ":" + pad(minutes) + ":" + pad(secs);
    }
    if (hours) {
      return hours + ":" + pad(minutes) + ":" + pad(secs);
    }
    return pad(minutes) + ":" + pad(secs);
  }

  function start(element) {
    var remaining = parseInt(element.getAttribute("data-remaining"), 10);
    if (isNaN(remaining)) {
      return;
    }
    var dayOne = element.getAttribute("data-day-one") || "%(days)s d";
    var dayOther = element.getAttribute("data-day-other") || "%(days)s d";
    var panel = element.closest("[data-hold]");
    var startedAt = Date.now();
    var timer = null;

    function lapse() {
      if (!panel) {
        return;
      }
      var live = panel.querySelector("[data-hold-live]");
      var lapsed = panel.querySelector("[data-hold-lapsed]");
      if (live) {
        live.hidden = true;
      }
      if (lapsed) {
        lapsed.hidden = false;
      }
    }

    function tick() {
      var left = remaining - (Date.now() - startedAt) / 1000;
      element.textContent = clock(left, dayOne, dayOther);
      if (left <= 0) {
        window.clearInterval(timer);
        lapse();
      }
    }

    tick();
    timer = window.setInterval(tick, 1000);
  }

  var clocks = document.querySelectorAll("[data-countdown]");
  for (var i = 0; i < clocks.length; i++) {
    start(clocks[i]);
  }
})();
