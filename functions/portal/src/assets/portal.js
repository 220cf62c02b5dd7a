// Progressive enhancement only: every page works without it. Shows each
// <time> in the admin's own time zone, keeping UTC on hover (its title).
document.addEventListener("DOMContentLoaded", function () {
  var format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var at = new Date(el.getAttribute("datetime"));
    if (!isNaN(at)) { el.textContent = format.format(at); }
  });
});
