"""LED outputs, one module per protocol; :data:`OUTPUTS` maps URL schemes to classes."""
from __future__ import annotations

from .artnet import ArtnetOutput
from .base import MAX_PIXELS, Output, OutputSpec, UdpOutput, check_pixels
from .ddp import DdpOutput
from .opc import OpcOutput
from .sacn import SacnOutput
from .terminal import TerminalOutput
from .web import HUB, FrameHub, PreviewServer, WebOutput
from .wled_udp import WledOutput

__all__ = ["Output", "UdpOutput", "OutputSpec", "OUTPUTS", "MAX_PIXELS", "check_pixels", "create_output",
           "DdpOutput", "SacnOutput", "ArtnetOutput", "OpcOutput", "WledOutput", "TerminalOutput",
           "WebOutput", "FrameHub", "PreviewServer", "HUB"]

OUTPUTS: dict[str, type[Output]] = {
    "ddp": DdpOutput, "sacn": SacnOutput, "e131": SacnOutput, "artnet": ArtnetOutput, "opc": OpcOutput,
    "wled": WledOutput, "terminal": TerminalOutput, "web": WebOutput, "ws": WebOutput,
}


def create_output(spec: OutputSpec, pixels: int, name: str = "") -> Output:
    """The output for a parsed URL (see :func:`consumers.led.config.parse_output_url`)."""
    out = OUTPUTS[spec.scheme](spec, pixels)
    out.device_name = name or out.device_name
    return out
