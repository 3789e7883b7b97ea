"""The LED setup routes of the API against LED consumers running on the same real broker.

The API (uvicorn, API keys on) and the consumers run in this process, as `beatbus run` does;
every request goes over HTTP, every change through ``bb:led:commands`` to the consumer, which
applies and saves it.
"""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from beatbus import keys
from beatbus.api.app import create_app
from beatbus.api.auth import KeyStore
from beatbus.api.deps import Guard
from beatbus.api.server import ApiServer
from beatbus.bus import Bus
from beatbus.config import load_settings
from beatbus.consumers.led.effects import load_effects
from beatbus.consumers.led.palettes import PALETTES
from beatbus.consumers.led.service import LedService, plan_led
from beatbus.consumers.led.setup import SetupStore

from support.procs import eventually, free_port

ROUTES = {("get", "/api/led/devices"), ("post", "/api/led/devices"), ("patch", "/api/led/devices/{name}"),
          ("delete", "/api/led/devices/{name}"), ("get", "/api/led/effects"), ("get", "/api/led/presets"),
          ("post", "/api/led/presets"), ("post", "/api/led/presets/{name}/apply"), ("delete", "/api/led/presets/{name}")}
CHANGES = [("post", "/api/led/devices", {"output": "web://x"}), ("patch", "/api/led/devices/a", {"pixels": 3}),
           ("delete", "/api/led/devices/a", None), ("post", "/api/led/presets", {"name": "p"}),
           ("post", "/api/led/presets/p/apply", None), ("delete", "/api/led/presets/p", None)]


@pytest.fixture
def api(broker, bus, tmp_path):
    """The API with two keys: ``control`` (read + control) and ``read``; yields (url, {scope: token})."""
    settings = load_settings({"redis_url": broker.url, "metrics_addr": "off", "block_ms": 50}, env={})
    store = KeyStore(tmp_path / "api-keys.json")
    tokens = {"control": store.create(["read", "control"], name="lights")[1],
              "read": store.create(["read"], name="viewer")[1]}
    api_bus = Bus.connect(broker.url, name="api-led")
    with ApiServer(create_app(api_bus, settings, guard=Guard(store=store)), port=free_port()) as srv:
        yield srv.url, tokens
    api_bus.close()


def client(api, scope: str = "control") -> httpx.Client:
    url, tokens = api
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens[scope]}"}, trust_env=False,
                        timeout=10)


class Consumer:
    """``beatbus consume led --name NAME`` in this process, its setup saved under ``tmp``."""

    def __init__(self, broker_url: str, tmp, name: str = "led", outputs=("web://a",)):
        settings = load_settings({"redis_url": broker_url, "metrics_addr": "off", "block_ms": 50}, env={})
        self.bus = Bus.connect(broker_url, name=f"led-{name}")
        self.store = SetupStore(tmp / f"{name}.json")
        plan = plan_led(settings, outputs=outputs, pixels=10, fps=30, name=name, store=self.store, check="off")
        self.svc = LedService(self.bus, settings=settings, plan=plan)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.svc.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Consumer:
        self.thread.start()
        assert self.svc.ready.wait(5)
        eventually(lambda: self.bus.redis.hexists(keys.LED_SETUP, self.svc.consumer), timeout=5,
                   what="the consumer's setup heartbeat")
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        self.bus.close()


def names(setup: dict) -> list[str]:
    return [d["name"] for d in setup["devices"]]


def test_openapi_lists_the_led_routes_and_a_key_without_the_control_scope_changes_nothing(api, tmp_path, broker):
    with client(api) as c:
        doc = c.get("/openapi.json").json()
    listed = {(m, p) for p, ops in doc["paths"].items() for m in ops if p.startswith("/api/led")}
    assert ROUTES <= listed, ROUTES - listed
    for method, path in ROUTES - {("get", "/api/led/devices"), ("get", "/api/led/effects"), ("get", "/api/led/presets")}:
        assert {"403", "404", "409", "422", "504"} <= set(doc["paths"][path][method]["responses"]), (method, path)
    with Consumer(broker.url, tmp_path), client(api, "read") as reader:
        assert reader.get("/api/led/devices").status_code == 200
        assert reader.get("/api/led/effects").status_code == 200
        assert reader.get("/api/led/presets").status_code == 200
        for method, path, body in CHANGES:
            r = reader.request(method.upper(), path, json=body)
            assert r.status_code == 403 and "lacks the 'control' scope" in r.json()["detail"], (path, r.text)
        assert names(reader.get("/api/led/devices").json()["consumers"][0]) == ["a"]


def test_devices_and_presets_change_live_through_the_routes_with_one_line_refusals(api, tmp_path, broker):
    with Consumer(broker.url, tmp_path) as led, client(api) as c:
        listing = c.get("/api/led/devices").json()
        assert [s["consumer"] for s in listing["consumers"]] == ["led"]
        assert listing["consumers"][0]["saved_to"] == str(led.store.path)
        # add: answered with the consumer's new setup, running, saved; the preview lists it
        r = c.post("/api/led/devices", json={"output": "web://porch", "pixels": 16, "effect": "chase",
                                             "effect_config": {"pulses": 2}, "brightness": 0.5})
        assert r.status_code == 200, r.text
        porch = next(d for d in r.json()["devices"] if d["name"] == "porch")
        assert porch["running"] and porch["effect_config"] == {"pulses": 2} and porch["brightness"] == 0.5
        assert [d.name for d in led.store.load().devices] == ["a", "porch"]
        eventually(lambda: "porch" in c.get("/api/led/devices").json()["devices"], timeout=5,
                   what="the new device's preview")
        # the consumer's refusals, one line each; the route's own checks before any command
        for method, path, body, status, text in [
            ("POST", "/api/led/devices", {"output": "opc://"}, 422, "a host is required"),
            ("POST", "/api/led/devices", {"output": "web://x", "effect": "sparkle"}, 422, "unknown effect 'sparkle'"),
            ("POST", "/api/led/devices", {"output": "web://x", "effect_config": {"nope": 1}}, 422, "unknown key 'nope'"),
            ("POST", "/api/led/devices", {"output": "web://porch"}, 409, "'porch' exists"),
            ("POST", "/api/led/devices", {"output": "web://x", "pixels": 0}, 422, "body.pixels"),
            ("PATCH", "/api/led/devices/porch", {}, 422, "give at least one device key"),
            ("PATCH", "/api/led/devices/nowhere", {"pixels": 3}, 404, "no LED device 'nowhere'"),
            ("PATCH", "/api/led/devices/porch?consumer=other", {"pixels": 3}, 404, "no LED consumer 'other'"),
            ("POST", "/api/led/presets/none/apply", None, 404, "no LED preset 'none'"),
            ("DELETE", "/api/led/presets/none", None, 404, "no LED preset 'none'"),
        ]:
            r = c.request(method, path, json=body)
            assert r.status_code == status and text in r.json()["detail"], (method, path, r.status_code, r.text)
            assert "\n" not in r.json()["detail"]
        # change live: the same render thread takes the new effect and brightness
        runner = next(x for x in led.svc.runners if x.device.name == "porch")
        r = c.patch("/api/led/devices/porch", json={"effect": "strobe", "brightness": 0.8})
        assert r.status_code == 200, r.text
        assert next(x for x in led.svc.runners if x.device.name == "porch") is runner
        eventually(lambda: runner.effect.name == "strobe" and runner.map.scale == pytest.approx(0.8 * 255),
                   timeout=3, what="the running device drawing the change")
        # presets: save, change, apply
        assert c.post("/api/led/presets", json={"name": "show"}).status_code == 200
        assert c.patch("/api/led/devices/porch", json={"effect": "beat_flash"}).status_code == 200
        presets = c.get("/api/led/presets").json()["presets"]
        assert presets == [{"consumer": "led", "name": "show", "devices": {
            "a": {"effect": "beat_flash", "effect_config": {}}, "porch": {"effect": "strobe", "effect_config": {}}}}]
        r = c.post("/api/led/presets/show/apply")
        assert r.status_code == 200 and next(d for d in r.json()["devices"] if d["name"] == "porch")["effect"] == "strobe"
        # delete: gone from the answer, the listing and the consumer's saved file; the devices keep their effects
        assert c.post("/api/led/presets", json={"name": "spare"}).status_code == 200
        assert set(led.store.load().presets) == {"show", "spare"}
        r = c.delete("/api/led/presets/show")
        assert r.status_code == 200 and list(r.json()["presets"]) == ["spare"], r.text
        assert next(d for d in r.json()["devices"] if d["name"] == "porch")["effect"] == "strobe"
        assert [p["name"] for p in c.get("/api/led/presets").json()["presets"]] == ["spare"]
        assert set(led.store.load().presets) == {"spare"}
        r = c.delete("/api/led/presets/show")
        assert r.status_code == 404 and r.json()["detail"] == "no LED preset 'show' (see GET /api/led/presets)", r.text
        # remove
        r = c.delete("/api/led/devices/porch")
        assert r.status_code == 200 and names(r.json()) == ["a"]
        eventually(lambda: "porch" not in c.get("/api/led/devices").json()["devices"], timeout=5,
                   what="the removed device gone from the preview list")
    assert [d.name for d in led.store.load().devices] == ["a"]


def test_the_effect_catalogue_is_the_registry(api):
    with client(api, "read") as c:
        cat = c.get("/api/led/effects").json()
    registry = load_effects()
    assert [e["name"] for e in cat["effects"]] == sorted(registry)
    for effect in cat["effects"]:
        schema = registry[effect["name"]].schema()
        assert [p["name"] for p in effect["params"]] == list(schema)
        for p in effect["params"]:
            param = schema[p["name"]]
            assert (p["default"], p["min"], p["max"], p["type"]) == (param.default, param.min, param.max,
                                                                     param.kind.__name__)
            assert p["choices"] == (list(param.choices) if param.choices else None)
    assert [p["name"] for p in cat["palettes"]] == list(PALETTES)
    assert cat["palettes"][0]["colors"][0] == "#ff0000" and "ddp" in cat["outputs"]


def test_504_when_no_consumer_answers_and_409_until_one_of_several_is_named(api, tmp_path, broker, bus):
    with client(api) as c:
        t = time.monotonic()
        r = c.post("/api/led/devices", json={"output": "web://x"})
        assert r.status_code == 504 and "no LED consumer answered" in r.json()["detail"]
        assert time.monotonic() - t < 1.5, "nothing runs: no need to wait"
        # a consumer that heartbeated a moment ago and died: the wait is bounded
        bus.redis.zadd(keys.LED_CONSUMERS, {"gone": time.time()})
        bus.redis.hset(keys.LED_SETUP, "gone", b'{"consumer": "gone", "source": "default", "devices": [], '
                                               b'"updated_at": 0}')
        t = time.monotonic()
        r = c.post("/api/led/devices", json={"output": "web://x"})
        assert r.status_code == 504 and "gone did not answer within 3 s" in r.json()["detail"], r.text
        assert 2.5 < time.monotonic() - t < 8
        bus.redis.zrem(keys.LED_CONSUMERS, "gone")
        with Consumer(broker.url, tmp_path, "left", ["web://l1"]) as left, \
                Consumer(broker.url, tmp_path, "right", ["web://r1"]):
            r = c.post("/api/led/devices", json={"output": "web://x"})
            assert r.status_code == 409 and "2 LED consumers run (left, right)" in r.json()["detail"], r.text
            r = c.post("/api/led/devices?consumer=right", json={"output": "web://x"})
            assert r.status_code == 200 and r.json()["consumer"] == "right" and names(r.json()) == ["r1", "x"]
            # a device is changed where it is, without naming its consumer
            r = c.patch("/api/led/devices/l1", json={"reverse": True})
            assert r.status_code == 200 and r.json()["consumer"] == "left" and r.json()["devices"][0]["reverse"]
            assert left.svc.runners[0].device.reverse
            consumers = c.get("/api/led/devices").json()["consumers"]
            assert {s["consumer"]: names(s) for s in consumers} == {"left": ["l1"], "right": ["r1", "x"]}
