"""`polectl config check`'s security warnings: settings that are valid but permissive, each
with how to migrate (docs/security.md, "Upgrading a pole")."""

from __future__ import annotations

from dataclasses import dataclass

from edge_controller.config import Config
from edge_controller.configbase import is_loopback


@dataclass(frozen=True)
class Warning:
    key: str
    problem: str
    fix: str


def permissive(cfg: Config) -> list[Warning]:
    out: list[Warning] = []
    c = cfg.commands
    if c.public_key is None or not c.require_signature:
        what = ("no city key: commands are not verified at all" if c.public_key is None
                else "require_signature is off: unsigned commands run")
        out.append(Warning(
            "commands.require_signature", f"{what}; anyone who can publish to the pole's cmd "
            "topic can switch lamps off, reboot it or write on its screen",
            "copy the city's command public key to the pole (e.g. /etc/smartpole/"
            "commands.pub) and set [commands] public_key = \"/etc/smartpole/commands.pub\" and "
            "require_signature = true; make sure the backend signs with pole_id and expires_at "
            "first (docs/security.md, 'Upgrading a pole')"))
    if c.max_lifetime_s > 3600:
        out.append(Warning("commands.max_lifetime_s", f"a signed command may live "
                           f"{c.max_lifetime_s:.0f} s: a captured one stays usable that long",
                           "keep it at minutes (default 900)"))
    m = cfg.mqtt
    if not m.tls and not is_loopback(m.host):
        out.append(Warning("mqtt.url", f"{m.url} is plain MQTT over the network: commands, "
                           "telemetry and any password travel in clear",
                           "use mqtts:// with the pole's certificate (ca_file, cert_file, "
                           "key_file; polectl provision writes them)"))
    if m.password:
        out.append(Warning("mqtt.password", "the broker password is written in the config "
                           "file", "move it to a file (mqtt.password_file, mode 0640 "
                           "root:smartpole) or an environment variable (mqtt.password_env)"))
    if cfg.update.public_key is None:
        out.append(Warning("update.public_key", "no update key is pinned: deploy refuses "
                           "every firmware bundle", "polectl provision --update-key, or set "
                           "[update] public_key to the city's update key"))
    sig = cfg.signal
    own = f"{m.topic_root}/{cfg.pole.id}/signal"
    if sig.source == "mqtt" and sig.mqtt_topic not in (None, own):
        out.append(Warning("signal.mqtt_topic", f"the signal feed is read from "
                           f"{sig.mqtt_topic}, outside the pole's own {own}: the shipped ACL "
                           "does not restrict who writes there",
                           f"leave mqtt_topic unset ({own}), which only the signal-feed "
                           "identity may write (deploy/mosquitto/acl)"))
    return out
