"""`polectl calibrate`: the in-place TOML editor, the save API, and the page driven in
headless Chromium (load, draw a zone, drag a corner, save, config updated)."""

from __future__ import annotations

import json
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from polectl.calibrate import CalibrationServer, calibration_table, open_session
from polectl.tomledit import EditError, apply_edits, set_key, set_zones
from polesim.pole import SAMPLE_VIDEO

from edge_controller.config import load
from tests.tools.conftest import chromium

CONFIG = """\
# Pole by the school: keep this comment.
[pole]
id = "pole-0042"   # inline comment stays too
timezone = "Europe/Berlin"

[[zones]]
name = "mid-road"
kind = "carriageway"
polygon = [
  [300, 190], [560, 175],
  [640, 300],
  [600, 420]
]
clips = ["warn.wav"]

[camera]
enabled = false
source = "file:/nowhere.mp4"

[mqtt]
url = "mqtt://127.0.0.1:1883"
"""


def test_editor_keeps_everything_else() -> None:
    zones = [{"name": "a", "kind": "waiting", "polygon": [[1, 2], [3.5, 4], [5, 6]]}]
    text = set_zones(CONFIG, zones)
    assert "# Pole by the school: keep this comment." in text
    assert "# inline comment stays too" in text
    data = tomllib.loads(text)
    assert data["zones"] == zones
    assert data["camera"] == {"enabled": False, "source": "file:/nowhere.mp4"}
    # The zones stay where they were in the file (before [camera]).
    assert text.index("[[zones]]") < text.index("[camera]")
    text = set_key(text, "signal.camera", "roi", [10, 20, 30, 40])
    text = set_key(text, "camera", "enabled", True)
    data = tomllib.loads(text)
    assert data["signal"]["camera"]["roi"] == [10, 20, 30, 40]
    assert data["camera"]["enabled"] is True and "enabled = false" not in text
    text = set_key(text, "signal.camera", "roi", None)
    assert "roi" not in tomllib.loads(text)["signal"]["camera"]
    assert tomllib.loads(set_zones(text, []))["pole"]["id"] == "pole-0042"
    assert "zones" not in tomllib.loads(set_zones(text, []))


def test_apply_edits_refuses_layouts_it_cannot_edit() -> None:
    inline = '[pole]\nid = "p-1"\n[signal]\ncamera = {roi = [1, 2, 3, 4]}\n'
    with pytest.raises(EditError, match="edit by hand"):
        apply_edits(inline, None, [("signal.camera", "roi", [5, 6, 7, 8])])
    new, data = apply_edits(CONFIG, None, [("signal.camera", "roi", [5, 6, 7, 8])])
    assert data["signal"]["camera"]["roi"] == [5, 6, 7, 8] and "keep this comment" in new


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[CalibrationServer, Path]]:
    import cv2
    from polectl.snapshot import grab_frame

    cfg = tmp_path / "pole.toml"
    cfg.write_text(CONFIG)
    still = tmp_path / "still.png"
    cv2.imwrite(str(still), grab_frame(f"file:{SAMPLE_VIDEO}"))
    server = CalibrationServer(open_session(cfg, image=still), port=0).start()
    TOKEN.clear()
    TOKEN["X-Calibrate-Token"] = server.token
    yield server, cfg
    server.stop()


TOKEN: dict[str, str] = {}


def _post(url: str, body: Any, headers: dict[str, str] | None = None
          ) -> tuple[int, dict[str, Any]]:
    h = {"Content-Type": "application/json", **TOKEN} if headers is None else headers
    req = urllib.request.Request(url + "api/save", json.dumps(body).encode(), h)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _get(url: str) -> Any:
    return urllib.request.urlopen(urllib.request.Request(url, headers=TOKEN), timeout=10)


def test_save_api_validates_before_writing(setup: tuple[CalibrationServer, Path]) -> None:
    server, cfg = setup
    before = cfg.read_text()
    with _get(server.url + "api/state") as r:
        state = json.loads(r.read())
    assert state["frame"] == {"width": 768, "height": 576}
    assert state["zones"][0]["name"] == "mid-road"
    dup = {"zones": [state["zones"][0], state["zones"][0]]}
    code, ans = _post(server.url, dup)
    assert code == 400 and "unique" in ans["problems"][0]["reason"]
    code, ans = _post(server.url, {"zones": [{"name": "Bad Name", "kind": "crosswalk",
                                              "polygon": [[0, 0], [1, 0], [1, 1]]}]})
    assert code == 400 and ans["problems"][0]["key"].startswith("zones.0.name")
    assert cfg.read_text() == before  # nothing written
    # The snapshot is the anonymised frame, never the raw one.
    with _get(server.url + "snapshot.jpg") as r:
        assert r.headers["Content-Type"] == "image/jpeg" and len(r.read()) > 1000


def test_calibration_page_in_headless_chromium(setup: tuple[CalibrationServer, Path],
                                               tmp_path: Path) -> None:
    browser, driver_path = chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    server, cfg = setup
    opts = Options()
    opts.binary_location = browser
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1000",
              f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        drv.get(server.page_url)
        WebDriverWait(drv, 20).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        assert drv.find_element(By.ID, "title").text == "Calibrate pole-0042"
        canvas = drv.find_element(By.ID, "canvas")
        size = drv.execute_script("const r = arguments[0].getBoundingClientRect();"
                                  "return [r.width, r.height, arguments[0].width, "
                                  "arguments[0].height];", canvas)
        sx, sy = size[0] / size[2], size[1] / size[3]

        def at(x: float, y: float) -> tuple[int, int]:
            # Selenium 4 offsets are from the element's centre, in CSS pixels.
            return round(x * sx - size[0] / 2), round(y * sy - size[1] / 2)

        drv.find_element(By.ID, "new-zone").click()
        drv.find_element(By.ID, "zone-name").send_keys("north-crossing")
        Select(drv.find_element(By.ID, "zone-kind")).select_by_visible_text("crosswalk")
        corners = [(100, 400), (300, 400), (300, 500), (100, 500)]
        for x, y in corners:
            ActionChains(drv).move_to_element_with_offset(canvas, *at(x, y)).click().perform()
        drv.find_element(By.ID, "finish").click()
        # Drag the existing zone's corner at (640, 300) to (660, 320).
        (ActionChains(drv).move_to_element_with_offset(canvas, *at(640, 300)).click_and_hold()
         .move_to_element_with_offset(canvas, *at(660, 320)).release().perform())
        # The signal head box.
        drv.find_element(By.ID, "draw-roi").click()
        (ActionChains(drv).move_to_element_with_offset(canvas, *at(700, 20)).click_and_hold()
         .move_to_element_with_offset(canvas, *at(730, 80)).release().perform())
        drv.find_element(By.ID, "save").click()
        WebDriverWait(drv, 20).until(
            lambda d: d.find_element(By.ID, "status").text.startswith(("Saved", "Not saved")))
        status = drv.find_element(By.ID, "status").text
        drv.save_screenshot(str(tmp_path / "calibrate.png"))
        assert status.startswith("Saved 2 zone(s)"), status
    finally:
        drv.quit()
    text = cfg.read_text()
    assert "# Pole by the school: keep this comment." in text
    new = load(cfg)  # valid for the controller
    zones = {z.name: z for z in new.zones}
    assert set(zones) == {"mid-road", "north-crossing"}
    nc = zones["north-crossing"]
    assert nc.kind == "crosswalk" and len(nc.polygon) == 4
    for (x, y), (gx, gy) in zip(corners, nc.polygon, strict=True):
        assert abs(x - gx) <= 2 and abs(y - gy) <= 2, (corners, nc.polygon)
    moved = zones["mid-road"].polygon[2]
    assert abs(moved[0] - 660) <= 2 and abs(moved[1] - 320) <= 2, zones["mid-road"].polygon
    assert [str(c) for c in zones["mid-road"].clips] == ["warn.wav"]  # kept though not shown
    assert new.signal.camera is not None
    x, y, w, h = new.signal.camera.roi
    assert abs(x - 700) <= 2 and abs(y - 20) <= 2 and abs(w - 30) <= 3 and abs(h - 60) <= 3
    assert new.camera.source == "file:/nowhere.mp4" and new.pole.timezone == "Europe/Berlin"
    assert (cfg.parent / "pole.toml.bak").read_text() == CONFIG


def test_calibration_table_is_known_or_absent() -> None:
    assert calibration_table() in (None, "visibility.calibration")


def test_a_foreign_page_cannot_rewrite_zones(setup: tuple[CalibrationServer, Path]) -> None:
    # Before: a page the installer visited (or a DNS-rebinding host name) could post zones.
    server, cfg = setup
    before = cfg.read_text()
    zones = {"zones": [{"name": "evil", "kind": "carriageway",
                        "polygon": [[0, 0], [10, 0], [10, 10]]}]}
    port = server.url.rsplit(":", 1)[1].rstrip("/")
    cases = {
        "no token": {"Content-Type": "application/json"},
        "wrong token": {"Content-Type": "application/json", "X-Calibrate-Token": "x" * 32},
        "foreign origin": {"Content-Type": "application/json", **TOKEN,
                           "Origin": "http://evil.example"},
        "rebinding host": {"Content-Type": "application/json", **TOKEN,
                           "Host": f"evil.example:{port}"},
    }
    for name, headers in cases.items():
        code, ans = _post(server.url, zones, headers)
        assert code == 403, name
        assert ans["ok"] is False and ans["problems"][0]["key"] == "(request)", name
    assert cfg.read_text() == before
    assert sum(server.session.refused.values()) == len(cases)
    # Without the token even the page and the snapshot are refused.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(server.url, timeout=10)
    assert e.value.code == 403
    with urllib.request.urlopen(server.page_url, timeout=10) as r:
        assert "SameSite=Strict" in r.headers["Set-Cookie"] and r.status == 200
