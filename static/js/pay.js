/* The pay page: a Stripe.js card form that sends only a card token to the server, the
 * 3-D Secure step when the server says a payment needs one, and the hold countdown.
 * The server decides every outcome; this script never reports success by itself. */
(function () {
  "use strict";

  function showError(box, message) {
    if (box) {
      box.textContent = message;
    }
  }

  function startCountdown() {
    var clock = document.querySelector("[data-pay-countdown]");
    if (!clock) {
      return;
    }
    var deadline = Date.now() + 1000 * parseInt(clock.dataset.remaining || "0", 10);
    function tick() {
      var left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      var minutes = Math.floor(left / 60);
      var seconds = left % 60;
      clock.textContent = minutes + ":" + (seconds < 10 ? "0" : "") + seconds;
      if (left > 0) {
        window.setTimeout(tick, 1000);
      } else {
        // The server has the last word: reloading shows whether the hold is still there.
        window.setTimeout(function () { window.location.reload(); }, 1500);
      }
    }
    tick();
  }

  function cardForm(stripe) {
    var form = document.getElementById("card-form");
    if (!form) {
      return;
    }
    var errors = document.getElementById("card-errors");
    var button = form.querySelector("[data-pay-button]");
    var card = stripe.elements().create("card");
    card.mount("#card-element");
    if (card.on) {
      card.on("change", function (event) {
        showError(errors, event && event.error ? event.error.message : "");
      });
    }
    var sending = false;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (sending) {
        return;
      }
      sending = true;
      button.disabled = true;
      showError(errors, "");
      stripe.createToken(card).then(function (result) {
        if (result.error || !result.token) {
          sending = false;
          button.disabled = false;
          showError(errors, (result.error && result.error.message) || "Please check your card details.");
          return;
        }
        form.elements.token.value = result.token.id;
        form.submit();
      });
    });
  }

  function authentication(stripe) {
    var action = document.getElementById("payment-action");
    if (!action) {
      return;
    }
    var done = document.getElementById("complete-form");
    // Whatever the dialog's outcome, the server asks Stripe what happened.
    stripe.confirmCardPayment(action.dataset.clientSecret).then(
      function () { done.submit(); },
      function () { done.submit(); }
    );
  }

  startCountdown();
  var holder = document.querySelector("[data-publishable-key]");
  if (!holder) {
    return;
  }
  if (typeof window.Stripe !== "function") {
    showError(document.getElementById("card-errors"), "The card form could not load. Please reload the page.");
    return;
  }
  var stripe = window.Stripe(holder.dataset.publishableKey);
  authentication(stripe);
  cardForm(stripe);
})();
