"""The page `polectl calibrate` serves: draw and edit zones and the signal box on the
anonymised snapshot, save through the JSON API (stdlib HTML and JavaScript, no build)."""

PAGE = r"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>polectl calibrate</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;display:flex;gap:1em;padding:1em;color:#222}
#view{flex:0 0 auto} canvas{border:1px solid #888;cursor:crosshair;display:block}
#side{flex:1 1 320px;min-width:300px} fieldset{margin:0 0 1em 0}
#zone-list li{margin:.3em 0} #zone-list li.sel{background:#eef} input[type=number]{width:6em}
#status{margin-top:.6em;padding:.4em;white-space:pre-wrap}
.ok{background:#dfd} .bad{background:#fdd}
button{margin:.2em .2em .2em 0} .hint{color:#555;font-size:.9em}
</style></head><body>
<div id=view><canvas id=canvas></canvas>
<p class=hint id=mode-hint>Click "New zone", click the corners on the image, then "Finish zone".
Drag a corner to move it.</p></div>
<div id=side>
<h2 id=title>Calibrate</h2>
<fieldset><legend>Zones</legend>
<label>name <input id=zone-name value="" placeholder="e.g. crosswalk-north"></label>
<label>kind <select id=zone-kind><option>crosswalk</option><option>carriageway</option>
<option>waiting</option></select></label><br>
<button id=new-zone>New zone</button><button id=finish disabled>Finish zone</button>
<button id=cancel disabled>Cancel</button>
<ul id=zone-list></ul></fieldset>
<fieldset><legend>Signal head</legend>
<button id=draw-roi>Draw signal head box</button><button id=clear-roi>Clear</button>
<div id=roi-text class=hint></div></fieldset>
<fieldset id=cal-box><legend>Camera calibration</legend>
<div id=cal-fields>
<label>mounting height (m) <input type=number step=0.1 id=cal-mounting_height_m></label><br>
<label>tilt below horizontal (deg) <input type=number step=0.1 id=cal-tilt_deg></label><br>
<label>vertical field of view (deg) <input type=number step=0.1 id=cal-vfov_deg></label><br>
<label>roll (deg) <input type=number step=0.1 id=cal-roll_deg></label></div>
<div id=cal-none class=hint hidden>This controller's config has no camera calibration
section.</div></fieldset>
<button id=save><b>Save to config</b></button>
<div id=status></div>
</div>
<script>
"use strict";
const cv = document.getElementById("canvas"), ctx = cv.getContext("2d");
const img = new Image();
let S = null, zones = [], drawing = null, roi = null, mode = "idle", drag = null, sel = -1,
    roiStart = null;
const COL = {carriageway: "#e63232", crosswalk: "#ffc800", waiting: "#3cc83c"};
const $ = id => document.getElementById(id);

function pos(ev) {
  const r = cv.getBoundingClientRect();
  return [Math.round((ev.clientX - r.left) * cv.width / r.width),
          Math.round((ev.clientY - r.top) * cv.height / r.height)];
}
function draw() {
  ctx.clearRect(0, 0, cv.width, cv.height);
  if (img.complete) ctx.drawImage(img, 0, 0);
  zones.forEach((z, i) => {
    const c = COL[z.kind] || "#fff";
    ctx.beginPath();
    z.polygon.forEach((p, j) => j ? ctx.lineTo(p[0], p[1]) : ctx.moveTo(p[0], p[1]));
    ctx.closePath(); ctx.globalAlpha = i === sel ? .35 : .2; ctx.fillStyle = c; ctx.fill();
    ctx.globalAlpha = 1; ctx.lineWidth = i === sel ? 3 : 2; ctx.strokeStyle = c; ctx.stroke();
    ctx.fillStyle = c; z.polygon.forEach(p => ctx.fillRect(p[0] - 4, p[1] - 4, 8, 8));
    const p0 = z.polygon[0]; ctx.font = "14px sans-serif"; ctx.fillStyle = "#fff";
    ctx.fillText(z.name + " (" + z.kind + ")", p0[0] + 6, p0[1] - 6);
  });
  if (drawing) {
    ctx.beginPath(); drawing.forEach((p, j) => j ? ctx.lineTo(p[0], p[1]) : ctx.moveTo(p[0], p[1]));
    ctx.strokeStyle = "#0af"; ctx.lineWidth = 2; ctx.stroke();
    ctx.fillStyle = "#0af"; drawing.forEach(p => ctx.fillRect(p[0] - 4, p[1] - 4, 8, 8));
  }
  if (roi) {
    ctx.strokeStyle = "#f0f"; ctx.lineWidth = 2; ctx.strokeRect(roi[0], roi[1], roi[2], roi[3]);
  }
  $("roi-text").textContent = roi ? "roi = [" + roi.join(", ") + "]" : "none";
}
function list() {
  const ul = $("zone-list"); ul.innerHTML = "";
  zones.forEach((z, i) => {
    const li = document.createElement("li"); li.className = i === sel ? "sel" : "";
    li.dataset.name = z.name;
    const name = document.createElement("input"); name.value = z.name; name.className = "zname";
    name.onchange = () => { z.name = name.value.trim(); li.dataset.name = z.name; draw(); };
    const kind = document.createElement("select"); kind.className = "zkind";
    ["crosswalk", "carriageway", "waiting"].forEach(k => {
      const o = document.createElement("option");
      o.text = k; o.selected = k === z.kind; kind.add(o);
    });
    kind.onchange = () => { z.kind = kind.value; draw(); };
    const del = document.createElement("button");
    del.textContent = "Delete"; del.className = "zdel";
    del.onclick = () => { zones.splice(i, 1); sel = -1; list(); draw(); };
    const pts = document.createElement("span"); pts.className = "hint";
    pts.textContent = " " + z.polygon.length + " points";
    li.onclick = ev => { if (ev.target === li || ev.target === pts) { sel = i; list(); draw(); } };
    li.append(name, " ", kind, " ", del, pts); ul.append(li);
  });
}
function setMode(m) {
  mode = m; $("finish").disabled = m !== "draw"; $("cancel").disabled = m === "idle";
  $("mode-hint").textContent = m === "draw" ? "Click the zone's corners, then Finish zone." :
    m === "roi" ? "Drag a box around the signal head." :
    "Click New zone to draw one; drag a corner to move it.";
}
$("new-zone").onclick = () => { drawing = []; setMode("draw"); draw(); };
$("cancel").onclick = () => { drawing = null; setMode("idle"); draw(); };
$("finish").onclick = () => {
  if (!drawing || drawing.length < 3) { status("A zone needs at least 3 points.", false); return; }
  let name = $("zone-name").value.trim() || ("zone-" + (zones.length + 1));
  zones.push({name: name, kind: $("zone-kind").value, polygon: drawing});
  sel = zones.length - 1; drawing = null; $("zone-name").value = "";
  setMode("idle"); list(); draw();
};
$("draw-roi").onclick = () => setMode("roi");
$("clear-roi").onclick = () => { roi = null; draw(); };
cv.addEventListener("mousedown", ev => {
  const p = pos(ev);
  if (mode === "draw") { drawing.push(p); draw(); return; }
  if (mode === "roi") { roiStart = p; roi = [p[0], p[1], 0, 0]; return; }
  const tol = 8 * cv.width / cv.getBoundingClientRect().width;
  zones.forEach((z, i) => z.polygon.forEach((q, j) => {
    if (!drag && Math.abs(q[0] - p[0]) <= tol && Math.abs(q[1] - p[1]) <= tol) {
      drag = [i, j]; sel = i;
    }
  }));
  if (drag) { list(); draw(); }
});
cv.addEventListener("mousemove", ev => {
  const p = pos(ev);
  if (mode === "roi" && roiStart) {
    roi = [Math.min(p[0], roiStart[0]), Math.min(p[1], roiStart[1]),
           Math.abs(p[0] - roiStart[0]), Math.abs(p[1] - roiStart[1])]; draw(); return; }
  if (drag) {
    zones[drag[0]].polygon[drag[1]] = [Math.max(0, Math.min(cv.width - 1, p[0])),
                                       Math.max(0, Math.min(cv.height - 1, p[1]))]; draw(); }
});
window.addEventListener("mouseup", () => {
  if (mode === "roi" && roiStart) {
    roiStart = null; if (roi && (roi[2] < 2 || roi[3] < 2)) roi = null;
    setMode("idle"); draw();
  }
  drag = null;
});
cv.addEventListener("dblclick", () => { if (mode === "draw") $("finish").click(); });
function status(msg, ok) {
  const s = $("status"); s.textContent = msg; s.className = ok ? "ok" : "bad";
}
$("save").onclick = async () => {
  const body = {zones: zones, signal_roi: roi};
  if (S.calibration_table) {
    body.calibration = {};
    ["mounting_height_m", "tilt_deg", "vfov_deg", "roll_deg"].forEach(k => {
      const v = $("cal-" + k).value; body.calibration[k] = v === "" ? null : Number(v); });
  }
  status("saving ...", true);
  const r = await fetch("/api/save", {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify(body)});
  const a = await r.json();
  if (a.ok) status("Saved " + a.zones + " zone(s) to " + a.config + " (config " +
                   a.config_version + "; previous file kept as " + a.backup + ")", true);
  else status("Not saved:\n" + a.problems.map(p => p.key + ": " + p.reason).join("\n"), false);
};
(async () => {
  S = await (await fetch("/api/state")).json();
  $("title").textContent = "Calibrate " + S.pole_id;
  cv.width = S.frame.width; cv.height = S.frame.height;
  zones = S.zones.map(z => ({name: z.name, kind: z.kind,
                             polygon: z.polygon.map(p => [p[0], p[1]])}));
  roi = S.signal_roi;
  if (S.calibration_table) {
    Object.entries(S.calibration).forEach(([k, v]) => {
      if (v !== null && v !== undefined) $("cal-" + k).value = v;
    });
  } else { $("cal-fields").hidden = true; $("cal-none").hidden = false; }
  img.onload = () => { draw(); document.body.dataset.ready = "1"; };
  img.src = "/snapshot.jpg";
  list(); setMode("idle"); draw();
})();
</script></body></html>
"""

