"""Generate the default crossing-warning clips with espeak-ng (English and Mandarin).

    python tools/make_warning_clips.py            # writes edge_controller/assets/audio/

espeak-ng is GPL-3.0-or-later; the speech it synthesises is program output, not a
derivative work, and carries no licence restriction of its own (see
edge_controller/assets/audio/README.md). Clips are 16 kHz mono 16-bit WAV.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "edge_controller" / "assets" / "audio"
CLIPS = {
    "warning_en.wav": ("en", "Stop. The pedestrian signal is red. Please wait for green."),
    "warning_cmn.wav": ("cmn", "请注意，行人信号灯为红灯，请等待绿灯。"),  # noqa: RUF001
}


def synth(voice: str, text: str, out: Path, rate: int = 16000) -> None:
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as d:
        raw = Path(d) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
        if shutil.which("sox"):
            subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out),
                            "norm", "-1"], check=True)
        else:
            shutil.copy(raw, out)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (voice, text) in CLIPS.items():
        synth(voice, text, OUT / name)
        print(f"{OUT / name}: {voice}: {text}")


if __name__ == "__main__":
    main()
