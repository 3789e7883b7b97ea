"""LED colours that follow the harmony stage's live key or chord (``palette_follow``)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from beatbus.consumers.led.config import DeviceConfig, LedConfig, resolve_devices
from beatbus.consumers.led.palettes import harmony_hue, rotate_hue
from beatbus.consumers.led.render import DeviceRunner
from beatbus.consumers.led.state import LedState
from beatbus.consumers.led.timing import LightTiming
from beatbus.schemas import ChordEvent, KeyEvent

from support.events import beat_event


def key(tonic: int, mode: str) -> KeyEvent:
    now = time.time()
    return KeyEvent(source="tsrc", timestamp=0.0, system_time=now, detected_time=0.0, emitted_at=now, tonic=tonic,
                    mode=mode, confidence=0.9)


def chord(root: int | None, quality: str) -> ChordEvent:
    now = time.time()
    return ChordEvent(source="tsrc", timestamp=0.0, system_time=now, detected_time=0.0, emitted_at=now, root=root,
                      quality=quality, confidence=0.9)


def test_keys_sit_on_the_circle_of_fifths_and_a_minor_key_on_its_relative_major():
    assert [harmony_hue(pc, False) for pc in (0, 7, 2, 5)] == [0.0, 30.0, 60.0, 330.0]   # C, G, D, F
    assert harmony_hue(9, True) == harmony_hue(0, False)                                 # A minor = C major
    assert harmony_hue(4, True) == harmony_hue(7, False)                                 # E minor = G major


def test_a_hue_rotation_keeps_greys_and_brightness_order_and_turns_colours():
    grey = np.full((4, 3), 0.5, np.float32)
    assert np.allclose(rotate_hue(grey, 90.0), grey, atol=1e-6)
    red = np.array([[1.0, 0.0, 0.0]], np.float32)
    assert rotate_hue(red, 0.0) is red
    assert np.argmax(rotate_hue(red, 120.0)[0]) == 1 and np.argmax(rotate_hue(red, 240.0)[0]) == 2
    pastel = np.array([[0.6, 0.45, 0.45]], np.float32)                   # stays in gamut: no clipping
    assert np.allclose(rotate_hue(rotate_hue(pastel, 90.0), 270.0), pastel, atol=1e-5)
    assert rotate_hue(red, 0.0, dim=0.5)[0, 0] == pytest.approx(0.5)


def test_the_runner_turns_the_effect_to_the_live_key_and_chord_and_leaves_it_when_off():
    st = LedState()
    now = time.time()
    for i in range(4):
        st.apply(beat_event(i, emitted_at=now - 2.0 + 0.5 * i))
    config = {"bpm_sync": False, "speed": 0.0, "pulse": 0.0, "color_palette": "rainbow"}
    runners = {}
    for follow in ("off", "key", "chord"):
        devices = resolve_devices(LedConfig(devices=[DeviceConfig(
            output="ddp://127.0.0.1:9", name=follow, pixels=30, effect="gradient",
            effect_config={**config, "palette_follow": follow})]))
        runners[follow] = DeviceRunner(devices[0], st, LightTiming(), ambient="")
    plain = {f: r.render(now)[0] for f, r in runners.items()}
    assert plain["off"] == plain["key"] == plain["chord"]              # nothing heard yet: as drawn
    st.apply(key(2, "major"))                                           # D major: 60 degrees
    st.apply(chord(7, "min"))                                           # G minor: B flat major's place, dimmer
    turned = {f: np.frombuffer(r.render(now)[0], np.uint8).reshape(-1, 3).astype(float) for f, r in runners.items()}
    base = np.frombuffer(plain["off"], np.uint8).reshape(-1, 3).astype(float) / 255.0
    assert np.array_equal(turned["off"], base * 255.0)
    assert np.abs(turned["key"] - rotate_hue(base.astype(np.float32), 60.0) * 255.0).max() <= 1.0
    assert np.abs(turned["chord"] - rotate_hue(base.astype(np.float32), harmony_hue(7, True), dim=0.8)
                  * 255.0).max() <= 1.0
    st.apply(chord(None, "N"))                                          # no chord: as drawn again
    assert runners["chord"].render(now)[0] == plain["chord"]
