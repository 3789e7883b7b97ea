"""The LED consumer's setup changed live through ``bb:led:commands``, on a real broker and real sockets.

Commands are written as the API writes them (a LedCommand, the answer popped from
``bb:led:reply:{id}``); frames are read by a DDP parser written from the spec (support.led).
"""
from __future__ import annotations

import threading
import time
import uuid

import msgspec
import orjson
import pytest

from beatbus import keys
from beatbus.config import load_settings
from beatbus.consumers.led.config import DeviceConfig, LedConfig
from beatbus.consumers.led.metrics import SETUP_COMMANDS
from beatbus.consumers.led.service import LedService, plan_led
from beatbus.consumers.led.setup import SetupStore, seed_setup
from beatbus.errors import ConfigError
from beatbus.metrics import MALFORMED
from beatbus.schemas import LedCommand

from support.led import UdpCapture, parse_ddp
from support.procs import beatbus_cmd, eventually, free_port

FPS = 30


def ask(bus, action: str, *, consumer: str = "led", timeout: float = 3.0, **kw) -> dict | None:
    """Send one command as the API does; the consumer's answer (None: nobody answered)."""
    request_id = uuid.uuid4().hex
    bus.publish(keys.LED_COMMANDS, LedCommand(id=request_id, consumer=consumer, action=action, issued_at=time.time(),
                                              **kw), maxlen=1000)
    reply = bus.redis.blpop([keys.led_reply(request_id)], timeout=timeout)
    return None if reply is None else orjson.loads(reply[1])


def frames(cap: UdpCapture, since: float = 0.0) -> list[tuple[float, dict]]:
    return [(t, parse_ddp(p)) for t, p in cap.since(since)]


@pytest.fixture
def led_settings(broker):
    return load_settings({"redis_url": broker.url, "metrics_addr": "off", "block_ms": 50}, env={})


class Running:
    """An LED consumer service on its own thread (as `beatbus consume led` runs it)."""

    def __init__(self, bus, settings, plan):
        self.svc = LedService(bus, settings=settings, plan=plan)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.svc.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> LedService:
        self.thread.start()
        assert self.svc.ready.wait(5)
        return self.svc

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def test_devices_are_added_changed_and_removed_live_and_the_untouched_device_never_misses_a_frame(
        bus, led_settings, tmp_path):
    store = SetupStore(tmp_path / "led" / "led.json")
    with UdpCapture() as steady, UdpCapture() as added:
        plan = plan_led(led_settings, outputs=[f"ddp://127.0.0.1:{steady.port}?name=steady"], pixels=12, fps=FPS,
                        effect="ambient", store=store)
        with Running(bus, led_settings, plan) as svc:
            steady_runner = svc.runners[0]
            eventually(lambda: len(steady.packets) > 10, timeout=5, what="frames of the steady device")
            t0 = time.time()
            # add: its own render thread starts; the answer is the new setup, already saved
            answer = ask(bus, "add_device", fields={"output": f"ddp://127.0.0.1:{added.port}", "name": "new",
                                                    "pixels": 20, "effect": "ambient", "fps": FPS})
            assert answer["ok"], answer
            assert [d["name"] for d in answer["setup"]["devices"]] == ["steady", "new"]
            assert [d.name for d in store.load().devices] == ["steady", "new"]
            eventually(lambda: len(added.packets) > 5, timeout=5, what="frames of the added device")
            assert {len(f["data"]) for _, f in frames(added)} == {60}
            # brightness, effect and latency change on the fly, by the same thread and output
            new_runner = next(r for r in svc.runners if r.device.name == "new")
            bright = max(max(f["data"]) for _, f in frames(added, time.time() - 0.5))
            assert ask(bus, "update_device", device="new", fields={"brightness": 0.2, "output_latency_ms": 40})["ok"]
            t_dim = time.time() + 0.2
            eventually(lambda: len(frames(added, t_dim)) > 5, timeout=5, what="frames after the change")
            dim = max(max(f["data"]) for _, f in frames(added, t_dim))
            assert dim < 0.35 * bright, (dim, bright)        # no beats: the ambient effect, breathing 0.7-1
            assert ask(bus, "update_device", device="new", fields={"effect": "chase"})["ok"]
            assert next(r for r in svc.runners if r.device.name == "new") is new_runner
            eventually(lambda: new_runner.effect.name == "chase" and new_runner.latency_s == 0.04, timeout=3,
                       what="the running thread drawing the new effect")
            # another pixel count: a new output and thread, frames of the new length
            assert ask(bus, "update_device", device="new", fields={"pixels": 8})["ok"]
            t_px = time.time()
            # a few of them, so that the frames before the growth below are the 8-pixel strip's own
            eventually(lambda: sum(len(f["data"]) == 24 for _, f in frames(added, t_px)) >= 3, timeout=5,
                       what="frames of 8 pixels")
            # a longer strip on the same output: no black frame between the two (a flicker); a shorter one
            # above was cleared first, its last frame black
            assert ask(bus, "update_device", device="new", fields={"pixels": 16})["ok"]
            eventually(lambda: any(len(f["data"]) == 48 for _, f in frames(added, t_px)), timeout=5,
                       what="frames of 16 pixels")
            # the 8- and 16-pixel strips' frames: the 20-pixel strip's clear (black, 60 bytes) may arrive
            # after t_px on a loaded machine, and it is the shrink's, not a flicker of the growth
            around = [f["data"] for _, f in frames(added, t_px) if len(f["data"]) in (24, 48)]
            first_long = next(i for i, d in enumerate(around) if len(d) == 48)
            assert all(max(d) for d in around[first_long - 3:first_long + 3]), "a black frame when the strip grew"
            # disable, then remove: the strip goes dark and nothing more is sent
            assert not ask(bus, "update_device", device="new", fields={"enabled": False})["setup"]["devices"][1]["running"]
            # the black frame is sent before the answer, but the capture thread may take it a moment later
            eventually(lambda: not max(frames(added)[-1][1]["data"]), timeout=2,
                       what="a disabled device's last frame, black")
            quiet = len(added.packets)
            assert ask(bus, "remove_device", device="new")["ok"]
            t1 = time.time()
            eventually(lambda: len(frames(steady, t1)) >= 15, timeout=5, what="half a second of the steady device")
            assert len(added.packets) == quiet, "a disabled device sends nothing"
            # the steady device ran through every change: same thread, every frame (DDP's 4-bit sequence
            # counter never skips), at its frame rate
            assert svc.runners == [steady_runner] and steady_runner._thread.is_alive()
            seen = frames(steady, t0)
            seqs = [f["seq"] for t, f in seen if t <= t1]
            assert all(b == a % 15 + 1 for a, b in zip(seqs, seqs[1:])), seqs
            # a loose floor: a loaded CI machine may make a frame late (the runner then skips its slot,
            # a timing matter for `bench led-timing`); an edit that stalled the device would halve it
            rate = len(seqs) / (t1 - t0)
            assert rate > 0.6 * FPS, f"{rate:.1f} frames/s on the untouched device (fps {FPS})"
    assert [d.name for d in store.load().devices] == ["steady"]


def test_the_saved_setup_is_reloaded_while_the_seed_is_the_same_and_a_new_seed_starts_again(
        bus, led_settings, tmp_path):
    store = SetupStore(tmp_path / "led.json")
    seed = dict(outputs=["ddp://127.0.0.1:4048?name=a"], pixels=10, effect="beat_flash")
    plan = plan_led(led_settings, **seed, store=store, check="off")
    with Running(bus, led_settings, plan):
        assert ask(bus, "add_device", fields={"output": "web://b", "pixels": 5})["ok"]
        assert ask(bus, "update_device", device="a", fields={"effect": "strobe", "reverse": True})["ok"]
        assert ask(bus, "save_preset", preset="show")["ok"]
        assert set(ask(bus, "save_preset", preset="old")["setup"]["presets"]) == {"show", "old"}
        # a deleted preset is gone from the answer and from the saved file at once
        assert set(ask(bus, "delete_preset", preset="old")["setup"]["presets"]) == {"show"}
        assert set(store.load().presets) == {"show"}
    # a restart with the same flags: the saved devices, not the flags' ones
    again = plan_led(led_settings, **seed, store=store, check="off")
    assert [(d.name, d.effect, d.reverse) for d in again.devices] == [("a", "strobe", True), ("b", "beat_flash", False)]
    assert set(again.setup.presets["show"]) == {"a", "b"} and set(again.setup.presets) == {"show"}
    # other flags (a redeploy): seeded again from them, the old file kept beside once the consumer
    # starts, presets kept; a plan alone (a start refused later) changes no file
    other = plan_led(led_settings, outputs=["ddp://127.0.0.1:4049?name=c"], store=store, check="off")
    assert [d.name for d in other.devices] == ["c"] and "show" in other.setup.presets
    assert not (tmp_path / "led.json.prev").exists() and [d.name for d in store.load().devices] == ["a", "b"]
    with Running(bus, led_settings, other):
        assert [d.name for d in store.load().devices] == ["c"]
    previous = msgspec.json.decode((tmp_path / "led.json.prev").read_bytes())
    assert [d["name"] for d in previous["devices"]] == ["a", "b"]
    # a file that is not a setup: one line naming it
    store.path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"led.json is unreadable .*delete it"):
        plan_led(led_settings, **seed, store=store, check="off")


def test_refused_commands_answer_one_line_and_the_daemon_runs_on(bus, led_settings, tmp_path):
    store = SetupStore(tmp_path / "led.json")
    plan = plan_led(led_settings, outputs=["web://a"], pixels=10, store=store, check="off")
    refused = SETUP_COMMANDS.labels("refused")._value.get()
    with Running(bus, led_settings, plan) as svc:
        cases = [
            ("add_device", {"fields": {"output": "ddp//nohost"}}, 422, "is not a URL like ddp://HOST"),
            ("add_device", {"fields": {"output": "wled://10.0.0.9", "pixels": 600}}, 422, "pixels=600 must be 1..490"),
            ("add_device", {"fields": {"output": "web://x", "effect": "sparkle"}}, 422, "unknown effect 'sparkle'"),
            ("add_device", {"fields": {"output": "web://x", "effect": "chase", "effect_config": {"speed": 99}}}, 422,
             "speed=99 is out of range"),
            ("add_device", {"fields": {"output": "web://x", "colour": "red"}}, 422, "unknown field `colour`"),
            ("add_device", {"fields": {"output": "web://a"}}, 409, "LED device 'a' exists"),
            # a taken name is the conflict to report, even when the new device has other faults too
            ("add_device", {"fields": {"output": "web://a", "segments": [{"start": 0, "stop": 6}, {"start": 4, "stop": 8}]}},
             409, "LED device 'a' exists"),
            ("update_device", {"device": "zz", "fields": {"pixels": 3}}, 404, "no LED device 'zz'"),
            ("update_device", {"device": "a", "fields": {"name": "b"}}, 422, "keeps its name"),
            ("update_device", {"device": "a", "fields": {"segments": [{"start": 5, "stop": 20}]}}, 422,
             "segment [5, 20) must satisfy"),
            ("apply_preset", {"preset": "nope"}, 404, "no LED preset 'nope'"),
            ("delete_preset", {"preset": "nope"}, 404, "no LED preset 'nope' (presets: none)"),
            ("delete_preset", {}, 422, "delete_preset: preset is required"),
        ]
        for action, kw, status, text in cases:
            answer = ask(bus, action, **kw)
            assert answer["status"] == status and text in answer["error"], (action, kw, answer)
            assert "\n" not in answer["error"]
        assert SETUP_COMMANDS.labels("refused")._value.get() == refused + len(cases)
        # another consumer's command is not ours: no answer
        assert ask(bus, "remove_device", consumer="other", device="a", timeout=0.5) is None
        # a malformed entry is counted and dead-lettered, like on every stream
        before = MALFORMED.labels("other")._value.get()
        bus.redis.xadd(keys.LED_COMMANDS, {"d": b'{"type":"led_command","action":"explode"}'})
        eventually(lambda: bus.redis.exists(keys.dead_letter(keys.LED_COMMANDS)), timeout=5,
                   what="the malformed command dead-lettered")
        assert MALFORMED.labels("other")._value.get() == before + 1
        # still answering, nothing changed
        assert [d["name"] for d in ask(bus, "save_preset", preset="p")["setup"]["devices"]] == ["a"]
        assert svc.error is None and svc.runners[0]._thread.is_alive()
    assert [d.name for d in store.load().devices] == ["a"]


def test_a_refused_consume_led_leaves_the_saved_setup_as_it_was(tmp_path):
    """`consume led` with new flags but no broker: one line, and neither a new file nor a moved one."""
    state = tmp_path / "state"
    r = beatbus_cmd("consume", "led", "--output", "ddp://127.0.0.1:4048", "--check", "off",
                    env={"BEATBUS_STATE_DIR": str(state), "REDIS_URL": ""}, timeout=60)
    assert r.returncode == 2 and "no broker" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (state / "led").exists()
    # a setup saved from other flags stays where it is (not moved aside to led.json.prev)
    store = SetupStore(state / "led" / "led.json")
    store.save(seed_setup(LedConfig(devices=[DeviceConfig(output="web://kept")])))
    before = store.path.read_bytes()
    r = beatbus_cmd("consume", "led", "--output", "ddp://127.0.0.1:4048", "--check", "off",
                    "--redis-url", f"redis://127.0.0.1:{free_port()}", env={"BEATBUS_STATE_DIR": str(state)},
                    timeout=60)
    assert r.returncode == 2 and "cannot reach broker" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert store.path.read_bytes() == before and sorted(p.name for p in store.path.parent.iterdir()) == ["led.json"]
