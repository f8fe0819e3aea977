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
