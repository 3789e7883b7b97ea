"""The LED consumer follows ``bb:{source}:harmony``: a KeyEvent on a real broker turns a device's colours.

The consumer runs as `beatbus consume led` runs it (LedService on its own thread), its DDP frames
are read by a parser written from the spec (support.led).
"""
from __future__ import annotations

import threading
import time

import numpy as np

from beatbus import keys
from beatbus.config import load_settings
from beatbus.consumers.led.palettes import harmony_hue, rotate_hue
from beatbus.consumers.led.service import LedService, plan_led
from beatbus.schemas import KeyEvent

from support.events import beat_event
from support.led import UdpCapture, parse_ddp
from support.procs import eventually


def test_a_live_key_change_turns_the_strip_on_the_next_frames(broker, bus):
    settings = load_settings({"redis_url": broker.url, "metrics_addr": "off", "block_ms": 50}, env={})
    params = {"bpm_sync": False, "speed": 0.0, "pulse": 0.0, "palette_follow": "key"}
    with UdpCapture() as cap:
        plan = plan_led(settings, outputs=[f"ddp://127.0.0.1:{cap.port}"], pixels=24, fps=30, effect="gradient",
                        effect_config=params, source="tsrc", check="off")
        svc = LedService(bus, settings=settings, plan=plan)
        stop = threading.Event()
        thread = threading.Thread(target=svc.run, args=(stop,), daemon=True)
        thread.start()
        try:
            assert svc.ready.wait(5)
            now = time.time()
            for i in range(40):                    # 20 s of beats at 120 BPM, the last ones still ahead
                bus.publish(keys.stream("tsrc", "beats"), beat_event(i, emitted_at=now - 1.0 + 0.5 * i), maxlen=1000)

            def strip(since: float) -> np.ndarray | None:
                got = [parse_ddp(p)["data"] for t, p in cap.since(since)]
                return np.frombuffer(got[-1], np.uint8).reshape(-1, 3).astype(float) / 255.0 if got else None

            drawn = eventually(lambda: (s := strip(time.time() - 0.2)) is not None and s.max() > 0.3 and [s],
                               timeout=5, what="frames of the gradient")[0]
            t_key = time.time()
            bus.publish(keys.stream("tsrc", "harmony"), KeyEvent(
                source="tsrc", timestamp=1.0, system_time=t_key, detected_time=1.0, emitted_at=t_key, tonic=2,
                mode="major", confidence=0.9), maxlen=1000)
            want = rotate_hue(drawn.astype(np.float32), harmony_hue(2, False))
            eventually(lambda: (s := strip(t_key + 0.05)) is not None and np.abs(s - want).max() <= 2 / 255,
                       timeout=3, what="the strip turned to D major's colours")
        finally:
            stop.set()
            thread.join(10)
