"""Configuration: output URLs, TOML devices, segments, and bad input refused before start."""
import numpy as np
import pytest

from beatbus.consumers.led.config import DeviceConfig, LedConfig, SegmentConfig, load_led_toml, parse_output_url, resolve_devices
from beatbus.consumers.led.render import PixelMap
from beatbus.consumers.led.service import plan_led
from beatbus.errors import ConfigError

from support.procs import beatbus_cmd, free_port


@pytest.mark.parametrize("url, scheme, host, port, params, device", [
    ("ddp://10.0.0.5", "ddp", "10.0.0.5", 4048, {"dest": 1}, {}),
    ("ddp://wled.local:5000?pixels=300&fps=90", "ddp", "wled.local", 5000, {"dest": 1}, {"pixels": 300, "fps": 90.0}),
    ("sacn://10.0.0.6?universe=3", "sacn", "10.0.0.6", 5568,
     {"universe": 3, "priority": 100, "source_name": "beatbus"}, {}),
    ("artnet://10.0.0.7?universe=0&reverse=1", "artnet", "10.0.0.7", 6454, {"universe": 0}, {"reverse": True}),
    ("opc://127.0.0.1:7890", "opc", "127.0.0.1", 7890, {"channel": 0}, {}),
    ("wled://10.0.0.8:21324?mode=dnrgb&timeout=5", "wled", "10.0.0.8", 21324, {"mode": "dnrgb", "timeout": 5}, {}),
    ("terminal://", "terminal", "", None, {"width": 0}, {}),
    ("web://desk?brightness=0.5", "web", "desk", None, {"max_fps": 30.0}, {"brightness": 0.5}),
    ("ws://127.0.0.1", "ws", "127.0.0.1", 8765, {"max_fps": 30.0}, {}),
    ("ddp://[::1]:4049?output_latency_ms=25&name=desk", "ddp", "::1", 4049, {"dest": 1},
     {"output_latency_ms": 25.0, "name": "desk"}),
])
def test_output_urls_parse(url, scheme, host, port, params, device):
    spec, dev = parse_output_url(url)
    assert (spec.scheme, spec.host, spec.port, spec.params, dev) == (scheme, host, port, params, device)


@pytest.mark.parametrize("url, message", [
    ("192.168.1.5", "is not a URL"),
    ("dmx://10.0.0.1", "unknown scheme 'dmx'"),
    ("ddp://", "a host is required"),
    ("ddp://10.0.0.1:99999", "Port out of range"),
    ("ddp://10.0.0.1:abc", "Port could not be cast"),
    ("sacn://10.0.0.1?universe=0", "universe='0' is out of range 1 .. 63999"),
    ("sacn://10.0.0.1?universes=2", "unknown parameter 'universes'"),
    ("wled://10.0.0.1?mode=rgb", "mode='rgb' must be one of warls | drgb | drgbw | dnrgb"),
    ("ddp://10.0.0.1?pixels=many", "pixels='many' must be a number"),
    ("ddp://10.0.0.1/strip", "unexpected path"),
    ("ddp://10.0.0.1?fps=500", "fps='500' is out of range"),
])
def test_malformed_output_urls_are_one_line_errors(url, message):
    with pytest.raises(ConfigError, match=message.replace("|", r"\|").replace("?", r"\?")) as exc:
        parse_output_url(url)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("device, message", [
    (dict(output="wled://10.0.0.1?mode=drgb", pixels=491), "pixels=491 must be 1..490 for wled"),
    (dict(output="wled://10.0.0.1?mode=warls", pixels=256), "must be 1..255"),
    (dict(output="opc://10.0.0.1", pixels=21846), "must be 1..21845"),
    (dict(output="sacn://10.0.0.1?universe=63999", pixels=171), "must be 1..170"),
    (dict(output="ddp://10.0.0.1", effect="sparkle"), "unknown effect 'sparkle'"),
    (dict(output="ddp://10.0.0.1", effect_config={"color_palette": "plaid"}), "color_palette='plaid'"),
    (dict(output="ddp://10.0.0.1", pixels=10, segments=[SegmentConfig(0, 11)]), "segment \\[0, 11\\)"),
    (dict(output="ddp://10.0.0.1", pixels=10, segments=[SegmentConfig(0, 6), SegmentConfig(5, 9)]), "overlap"),
])
def test_devices_out_of_limits_are_refused(device, message):
    with pytest.raises(ConfigError, match=message):
        resolve_devices(LedConfig(devices=[DeviceConfig(**device)]))


def test_bad_values_refused_before_start(settings):
    with pytest.raises(ConfigError, match=r"\$.pixels"):
        plan_led(settings, outputs=["ddp://127.0.0.1"], pixels=0, check=False)
    with pytest.raises(ConfigError, match="no LED outputs"):
        plan_led(settings, check=False)
    with pytest.raises(ConfigError, match="cannot resolve host 'nowhere.invalid'"):
        plan_led(settings, outputs=["ddp://nowhere.invalid"], check="strict")
    with pytest.raises(ConfigError, match="cannot connect to 127.0.0.1"):
        plan_led(settings, outputs=[f"opc://127.0.0.1:{free_port()}"], check="strict")
    with pytest.raises(ConfigError, match="check 'loose' must be one of warn, strict, off"):
        plan_led(settings, outputs=["ddp://127.0.0.1"], check="loose")


def test_an_unreachable_controller_is_a_warning_by_default(settings, caplog):
    # a controller that boots after the host must not stop the daemon (the render thread retries it)
    plan = plan_led(settings, outputs=["ddp://nowhere.invalid", f"opc://127.0.0.1:{free_port()}"])
    assert len(plan.devices) == 2
    warned = [r for r in caplog.records if "not reachable yet" in r.getMessage()]
    assert [r.device for r in warned] == ["ddp:nowhere.invalid", "opc:127.0.0.1"]
    with pytest.raises(ConfigError, match="'beats_per_cycle' is not a key of any device's effect"):
        plan_led(settings, outputs=["ddp://127.0.0.1"], effect_config={"beats_per_cycle": 8}, check=False)
    with pytest.raises(ConfigError, match="ambient"):
        plan_led(settings, outputs=["ddp://127.0.0.1"], config=LedConfig(ambient_effect="dark"), check=False)


def test_toml_devices_with_segments_and_cli_defaults(tmp_path, settings):
    path = tmp_path / "devices.toml"
    path.write_text("""
[beatbus]
log_level = "warning"

[led]
effect = "chase"
offset_ms = 12
[led.effect_config]
color_palette = "fire"

[[led.devices]]
output = "ddp://127.0.0.1"
name = "desk"
pixels = 10
fps = 90
brightness = 0.5
output_latency_ms = 25
segments = [{start = 0, stop = 4}, {start = 6, stop = 10, reverse = true}]
[led.devices.effect_config]
pulses = 2

[[led.devices]]
output = "sacn://127.0.0.1?universe=2&pixels=200"
effect = "beat_flash"
""")
    plan = plan_led(settings, config=path, outputs=["wled://127.0.0.1?mode=dnrgb"], pixels=30, check=False)
    desk, sacn, wled = plan.devices
    assert plan.config.offset_ms == 12 and plan.source == settings.source
    assert (desk.name, desk.pixels, desk.fps, desk.effect, desk.brightness, desk.output_latency_ms, desk.length) == \
        ("desk", 10, 90.0, "chase", 0.5, 25.0, 8)
    assert desk.effect_config["pulses"] == 2 and desk.effect_config["color_palette"] == "fire"
    assert (sacn.name, sacn.pixels, sacn.effect, sacn.fps) == ("sacn:127.0.0.1", 200, "beat_flash", 60.0)
    assert sacn.effect_config["color_palette"] == "fire" and "pulses" not in sacn.effect_config
    assert (wled.pixels, wled.effect) == (30, "chase")
    # segments: effect pixel i lands on the device in segment order, the second reversed, gaps dark
    rgb = np.zeros((8, 3), dtype=np.float32)
    rgb[:, 0] = np.arange(1, 9) / 8
    frame = np.frombuffer(PixelMap(desk).frame(rgb), dtype=np.uint8).reshape(10, 3)
    expect = np.round(np.array([1, 2, 3, 4, 0, 0, 8, 7, 6, 5]) / 8 * 0.5 * 255 + 1e-9)
    assert frame[:, 0].tolist() == expect.astype(int).tolist() and not frame[:, 1:].any()

    bad = tmp_path / "bad.toml"
    bad.write_text('[led]\n[[led.devices]]\noutput = "ddp://127.0.0.1"\npixels = "ten"\n')
    with pytest.raises(ConfigError, match=r"Expected `int.*devices\[0\].pixels"):
        load_led_toml(bad)
    bad.write_text('[led]\nbrightnes = 1\n')
    with pytest.raises(ConfigError, match="unknown field `brightnes`"):
        load_led_toml(bad)


def test_reverse_and_brightness_without_segments():
    (dev,) = resolve_devices(LedConfig(devices=[DeviceConfig(output="ddp://127.0.0.1", pixels=3, reverse=True,
                                                             brightness=0.2)]))
    rgb = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    assert PixelMap(dev).frame(rgb) == bytes([0, 0, 51, 0, 51, 0, 51, 0, 0])


def test_cli_prints_one_line_errors_and_lists_effects(tmp_path):
    r = beatbus_cmd("consume", "led", "--output", "ddp://127.0.0.1", "--effect", "sparkle")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("beatbus: error: unknown effect 'sparkle'")
    flat = tmp_path / "mixed.toml"   # flat beatbus keys beside an [led] table: both are read
    flat.write_text('log_level = "debug"\n[led]\neffect = "sparkle"\n')
    r = beatbus_cmd("consume", "led", "--output", "ddp://127.0.0.1", "--config", str(flat))
    assert r.returncode == 2 and "unknown effect 'sparkle'" in r.stderr
    r = beatbus_cmd("consume", "led", "--list-effects")
    assert r.returncode == 0 and "beat_flash:" in r.stdout and "beat_sensitivity = 0.8" in r.stdout
