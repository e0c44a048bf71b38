"""What the controller checks before a byte of an update goes to the board.

- **Pinned key**: the bundle must verify with the city's key from the pole's
  config (`[update] public_key`), never with a key handed over alongside the
  bundle (`pinned_key`).
- **Anti-rollback**: the bundle's counter (in the signed manifest) must be
  above the board's floor, which the board reports as `config_get
  upd_floor`; a recovery image (`downgrade_from` in its signed manifest)
  may go below a floor up to that value, and only when the caller asks for
  a downgrade explicitly (`check_counter`). The board repeats the counter
  check at commit (firmware/src/update.py), so a controller that skipped
  this would still be refused.

docs/security.md, "Firmware updates", says what each side can and cannot
verify.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_controller.config import ConfigError, load
from edge_controller.update import signing
from edge_controller.update.bundle import Bundle


class PolicyError(ValueError):
    """The update is not allowed; `code` names the rule, `hint` the fix."""

    def __init__(self, message: str, hint: str, code: str) -> None:
        super().__init__(message)
        self.hint = hint
        self.code = code


def pinned_key(config_path: Path) -> Ed25519PublicKey:
    """The city's update key as pinned in the pole's config file."""
    try:
        cfg = load(config_path)
    except ConfigError as e:
        raise PolicyError(f"pole config {config_path}: {e}",
                          "fix the config (pole-controller --check-config)", "config") from None
    key = cfg.update.public_key
    if key is None:
        raise PolicyError(f"{config_path} pins no update key ([update] public_key)",
                          "set [update] public_key to the city's public key (64 hex digits or "
                          "a PEM file; `polectl provision --update-key` writes it)", "no_key")
    if not (len(key) == 64 and all(c in "0123456789abcdefABCDEF" for c in key)):
        p = Path(key)
        key = str(p if p.is_absolute() else Path(config_path).parent / p)
    try:
        return signing.load_public(key)
    except (OSError, ValueError) as e:
        raise PolicyError(f"pinned update key {key}: {e}",
                          "point [update] public_key at the city's Ed25519 public key",
                          "no_key") from None


def check_counter(bundle: Bundle, floor: int, *, allow_downgrade: bool = False) -> None:
    """Raise PolicyError unless the board at `floor` may install `bundle`."""
    if bundle.counter > floor:
        return
    what = (f"bundle {bundle.version} has counter {bundle.counter}, the board's floor is "
            f"{floor}")
    if bundle.downgrade_from is None or bundle.downgrade_from < floor:
        raise PolicyError(
            f"rollback refused: {what}" + (
                f" and its recovery covers floors up to {bundle.downgrade_from} only"
                if bundle.downgrade_from is not None else ""),
            "deploy a newer build (firmware/build.py --counter N with N above the floor); "
            "going back needs a recovery bundle signed with --downgrade-from", "rollback")
    if not allow_downgrade:
        raise PolicyError(f"{what}: this signed recovery bundle goes down",
                          "pass --allow-downgrade to install it on purpose", "downgrade")
