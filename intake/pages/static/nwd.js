// Progressive enhancement only: every page works without this file.
document.documentElement.classList.remove("no-js");

// apply: move focus to the error summary (or an alert) so screen readers announce it first.
(function () {
  var target = document.querySelector("[data-nwd-focus]");
  if (target && !document.querySelector("[autofocus]")) { target.focus(); }
  // a form sent once (a submission) is not sent again by a second click while it loads
  document.querySelectorAll("form[data-nwd-once]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.nwdSent && !(event.submitter && event.submitter.formAction !== form.action)) {
        event.preventDefault();
        return;
      }
      if (!event.submitter || event.submitter.formAction === form.action) { form.dataset.nwdSent = "1"; }
    });
  });
})();

// track: the status page follows its request live. The server sends the re-rendered timeline
// ("timeline" events) into the aria-live region; "finished" and "timeout" end the stream.
// Without JavaScript (or EventSource) the Refresh button does the same.
(function () {
  var region = document.querySelector("[data-nwd-live]");
  if (!region || typeof EventSource === "undefined") { return; }
  var source = new EventSource(region.getAttribute("data-nwd-live"));
  source.addEventListener("timeline", function (event) { region.innerHTML = event.data; });
  ["finished", "timeout"].forEach(function (name) {
    source.addEventListener(name, function () { source.close(); });
  });
})();
