"""The LED consumer's own setup: its devices (enabled or not) and presets, changed live, saved.

The consumer owns it. At start it loads ``<state dir>/led/<consumer name>.json``
(:func:`setup_path`), else seeds it from the flags / TOML devices and saves it. The seed's digest
is saved too: when the flags or TOML name other devices than the ones the file was seeded from
(a redeploy), the consumer starts again from them (the old file is kept as ``.json.prev``);
with the same seed the saved edits win.

Changes arrive as :class:`~beatbus.schemas.LedCommand` on ``bb:led:commands`` (written by the
API); :func:`apply_command` validates one against the current setup and returns the new one, or
raises :class:`SetupError` (one line, with the HTTP status the API answers). A preset keeps the
effect and effect parameters of every device; applying it sets them on the devices that still
exist; deleting it drops it from the saved setup.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import orjson

from beatbus.config import state_dir
from beatbus.errors import ConfigError
from beatbus.schemas import LedCommand

from .config import Device, DeviceConfig, LedConfig, device_name, device_record, resolve_device, resolve_devices

__all__ = ["LedSetup", "PresetLook", "SetupError", "SetupStore", "setup_path", "seed_digest", "seed_setup",
           "resolve_setup", "apply_command"]

SETUP_VERSION = 1


class PresetLook(msgspec.Struct, forbid_unknown_fields=True):
    """What a preset keeps of one device: its effect and the effect values that differ from the defaults."""
    effect: str
    effect_config: dict[str, Any] = {}


class LedSetup(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Everything the consumer saves: devices in order, and presets (name -> device name -> look)."""
    version: int = SETUP_VERSION
    seed: str = ""
    devices: list[DeviceConfig] = []
    presets: dict[str, dict[str, PresetLook]] = {}

    def find(self, name: str) -> DeviceConfig | None:
        return next((d for d in self.devices if d.name == name), None)


class SetupError(ConfigError):
    """A command the consumer refuses; ``status`` is what the API answers (404, 409, 422)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def setup_path(consumer: str, env: dict[str, str] | None = None) -> Path:
    """``<state dir>/led/<consumer>.json``."""
    return state_dir(env) / "led" / f"{consumer}.json"


class SetupStore:
    """The saved setup of one consumer: read at start, written atomically after every change."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> LedSetup | None:
        """The saved setup; None when nothing is saved yet.

        Raises
        ------
        ConfigError
            The file exists but is not a setup (one line naming it, and how to start again).
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"LED setup {self.path}: cannot read it ({exc.strerror or exc})") from None
        try:
            return msgspec.json.decode(data, type=LedSetup)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ConfigError(f"LED setup {self.path} is unreadable ({exc}); delete it to start again from "
                              "the flags / TOML") from None

    def save(self, setup: LedSetup) -> None:
        """Write ``setup`` (temporary file + rename: a crash leaves the old or the new file, never half)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(orjson.dumps(msgspec.to_builtins(setup), option=orjson.OPT_INDENT_2))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def keep_previous(self) -> Path | None:
        """Move the saved file aside (``.json.prev``) before a reseed replaces it."""
        prev = self.path.with_suffix(self.path.suffix + ".prev")
        try:
            os.replace(self.path, prev)
        except FileNotFoundError:
            return None
        return prev


def seed_digest(config: LedConfig) -> str:
    """Digest of what the flags / TOML say about devices (as given, not as resolved: an upgrade that
    changes a default does not count as a new seed)."""
    doc = {"devices": msgspec.to_builtins(config.devices), "effect": config.effect,
           "effect_config": config.effect_config, "pixels": config.pixels, "fps": config.fps,
           "output_latency_ms": config.output_latency_ms}
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def seed_setup(config: LedConfig, *, presets: dict | None = None) -> LedSetup:
    """The setup the flags / TOML describe (every device resolved, none required)."""
    devices = resolve_devices(config, allow_empty=True)
    return LedSetup(seed=seed_digest(config), presets=dict(presets or {}),
                    devices=[device_record(d, enabled=dc.enabled) for d, dc in zip(devices, config.devices)])


def _resolve(record: DeviceConfig, config: LedConfig) -> Device:
    return resolve_device(record, config, name=record.name, shared=False)


def resolve_setup(setup: LedSetup, config: LedConfig) -> list[Device]:
    """The enabled devices of ``setup``, validated (a disabled one is validated too).

    Raises
    ------
    ConfigError
        The first device that is not valid (any more), named.
    """
    devices = []
    for record in setup.devices:
        device = _resolve(record, config)
        if record.enabled:
            devices.append(device)
    return devices


# -- commands ------------------------------------------------------------------------------
def _convert(doc: dict[str, Any], name: str | None) -> DeviceConfig:
    """A document of device keys as a DeviceConfig (SetupError 422 naming the device)."""
    try:
        return msgspec.convert(doc, DeviceConfig)
    except msgspec.ValidationError as exc:
        raise SetupError(422, f"device {name}: {exc}" if name else f"device: {exc}") from None


def _record(dc: DeviceConfig, config: LedConfig, *, name: str | None, shared: bool) -> DeviceConfig:
    """A device record, resolved against the config (SetupError 422)."""
    try:
        device = resolve_device(dc, config, name=name, shared=shared)
    except ConfigError as exc:
        raise SetupError(422, str(exc)) from None
    return device_record(device, enabled=dc.enabled)


def _device_or_404(setup: LedSetup, name: str | None) -> DeviceConfig:
    record = setup.find(name or "")
    if record is None:
        raise SetupError(404, f"no LED device {name!r} (devices: {', '.join(d.name for d in setup.devices) or 'none'})")
    return record


def _merge_effect_config(old: dict[str, Any], patch: Any) -> dict[str, Any]:
    """JSON merge patch: given keys replace, ``null`` resets a key to its default."""
    if not isinstance(patch, dict):
        raise SetupError(422, f"effect_config must be an object, not {type(patch).__name__}")
    out = dict(old)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _add(setup: LedSetup, fields: dict[str, Any], config: LedConfig) -> list[DeviceConfig]:
    if "output" not in fields:
        raise SetupError(422, "device: output is required (e.g. ddp://192.168.1.50)")
    # the name first: a taken one is a conflict (409), whatever else is wrong with the new device
    given = fields.get("name") or None
    try:
        dc: DeviceConfig | None = msgspec.convert(dict(fields), DeviceConfig)
    except msgspec.ValidationError:
        dc = None  # _record says what is wrong, after the name check
    name = given
    if name is None and dc is not None:
        with contextlib.suppress(ConfigError):  # a bad URL: _record says so
            name = device_name(dc)
    if name and setup.find(name) is not None:
        raise SetupError(409, f"LED device {name!r} exists: give the new one another name")
    return [*setup.devices, _record(dc or _convert(dict(fields), given), config, name=given, shared=True)]


def _update(setup: LedSetup, name: str | None, fields: dict[str, Any], config: LedConfig) -> list[DeviceConfig]:
    old = _device_or_404(setup, name)
    if fields.get("name", old.name) != old.name:
        raise SetupError(422, f"device {old.name}: a device keeps its name (remove it and add it again to rename it)")
    doc = msgspec.to_builtins(old)
    changes = {k: v for k, v in fields.items() if k not in ("name", "effect_config")}
    new_effect = changes.get("effect", old.effect) != old.effect
    doc.update(changes)
    # a new effect starts from its own defaults: the old effect's values are not its keys
    base = {} if new_effect else old.effect_config
    doc["effect_config"] = _merge_effect_config(base, fields.get("effect_config", {}))
    record = _record(_convert(doc, old.name), config, name=old.name, shared=False)
    return [record if d.name == old.name else d for d in setup.devices]


def _preset_or_404(setup: LedSetup, preset: str | None) -> dict[str, PresetLook]:
    looks = setup.presets.get(preset or "")
    if looks is None:
        raise SetupError(404, f"no LED preset {preset!r} (presets: {', '.join(sorted(setup.presets)) or 'none'})")
    return looks


def _apply_preset(setup: LedSetup, preset: str | None, config: LedConfig) -> list[DeviceConfig]:
    looks = _preset_or_404(setup, preset)
    if not any(setup.find(n) for n in looks):
        raise SetupError(409, f"none of the devices of preset {preset!r} exists any more ({', '.join(looks)})")
    out = []
    for d in setup.devices:
        look = looks.get(d.name)
        if look is not None:
            doc = {**msgspec.to_builtins(d), "effect": look.effect, "effect_config": look.effect_config}
            try:
                d = _record(_convert(doc, d.name), config, name=d.name, shared=False)
            except SetupError as exc:
                raise SetupError(422, f"preset {preset}: {exc}") from None
        out.append(d)
    return out


def apply_command(setup: LedSetup, cmd: LedCommand, config: LedConfig) -> LedSetup:
    """The setup after ``cmd``, every device in it valid.

    Raises
    ------
    SetupError
        404 unknown device or preset (to apply or delete), 409 a name taken (or nothing to save), 422 a
        value that is not valid (bad URL, pixels out of the protocol's range, unknown effect or parameter...).
    """
    devices, presets = setup.devices, setup.presets
    if cmd.action in ("save_preset", "apply_preset", "delete_preset") and not cmd.preset:
        raise SetupError(422, f"{cmd.action}: preset is required")
    if cmd.action in ("update_device", "remove_device") and not cmd.device:
        raise SetupError(422, f"{cmd.action}: device is required")
    if cmd.action == "add_device":
        devices = _add(setup, cmd.fields, config)
    elif cmd.action == "update_device":
        devices = _update(setup, cmd.device, cmd.fields, config)
    elif cmd.action == "remove_device":
        _device_or_404(setup, cmd.device)
        devices = [d for d in setup.devices if d.name != cmd.device]
    elif cmd.action == "save_preset":
        if not setup.devices:
            raise SetupError(409, "no LED devices: a preset keeps the effects of the devices, add one first")
        presets = {**presets, cmd.preset: {d.name: PresetLook(effect=d.effect, effect_config=dict(d.effect_config))
                                           for d in setup.devices}}
    elif cmd.action == "apply_preset":
        devices = _apply_preset(setup, cmd.preset, config)
    elif cmd.action == "delete_preset":
        _preset_or_404(setup, cmd.preset)
        presets = {k: v for k, v in presets.items() if k != cmd.preset}
    return msgspec.structs.replace(setup, devices=devices, presets=presets)

