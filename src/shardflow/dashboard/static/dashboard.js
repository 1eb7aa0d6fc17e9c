// shardflow dashboard: the only script. It reloads a running job's page every few
// seconds while the "live" box is ticked (remembered per browser). Pages work without it.
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  var box = document.getElementById("live");
  if (!seconds || !box) { return; }
  var key = "shardflow.live";
  box.checked = window.localStorage.getItem(key) !== "off";
  var timer = null;
  function schedule() {
    if (timer) { window.clearTimeout(timer); timer = null; }
    if (box.checked) { timer = window.setTimeout(function () { window.location.reload(); }, seconds * 1000); }
  }
  box.addEventListener("change", function () {
    window.localStorage.setItem(key, box.checked ? "on" : "off");
    schedule();
  });
  schedule();
}());
