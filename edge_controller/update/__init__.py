"""Signed firmware updates: bundles, Ed25519 signatures, the link uploader.

docs/deploy.md describes the bundle format, the signature and the
transfer; the board side is firmware/src/update.py and slots.py.
"""

from edge_controller.update.bundle import Bundle, BundleError, build_bundle, pack, parse
from edge_controller.update.signing import SignatureError, sign, verify
from edge_controller.update.uploader import UpdateError, UpdateTap, Uploader

__all__ = [
    "Bundle",
    "BundleError",
    "SignatureError",
    "UpdateError",
    "UpdateTap",
    "Uploader",
    "build_bundle",
    "pack",
    "parse",
    "sign",
    "verify",
]
