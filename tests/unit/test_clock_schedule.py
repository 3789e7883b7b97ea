"""The beat clock's scheduler and MIDI message stream, on a virtual clock (issue #20 item 5).

The ALSA sequencer is unavailable on this machine (no ``/dev/snd``), so no virtual MIDI port can be
opened here: the MIDI clock stream is checked through :class:`RecordingSink`, which records mido's own
``Message`` objects with the (virtual) time the scheduler sent them. The port itself is the one
place not covered; ``tests/integration/test_clock.py`` checks that asking for it here is one line.
"""
from __future__ import annotations

import numpy as np
import pytest

from beatbus.consumers.clock.config import load_clock_config
from beatbus.consumers.clock.midi import RecordingSink, midi_messages
from beatbus.consumers.clock.osc import osc_message, parse_target, section_message
from beatbus.consumers.clock.schedule import ClockScheduler, Cue, Plan
from beatbus.errors import ConfigError
from beatbus.schemas import BeatEvent

T0 = 1_000.0                      # wall time of the first beat (virtual)
DELAY = 0.08                      # the tracker reports a beat this long after it


def _event(k: int, t: float, bpm: float, nxt: float, bib: int, bar: int, meter: int = 4) -> BeatEvent:
    return BeatEvent(source="s", timestamp=1.0, system_time=t, is_downbeat=bib == 1, bpm=bpm, confidence=0.9,
                     beat=k, beat_in_bar=bib, bar=bar, meter=meter, next_beat_time=2.0, next_beat_system_time=nxt,
                     emitted_at=t + DELAY)


def _beats(n: int, bpm=120.0, *, start=T0, jitter=0.0, seed=0, meter=4, shift_bib_at: int | None = None):
    """``n`` beats as the tracker reports them: (index, time, bpm, predicted next, beat in bar, bar).

    ``bpm`` may be a function of the beat index (tempo changes); ``shift_bib_at``: from that beat on the
    tracker puts the downbeat one beat later (a downbeat correction)."""
    rng = np.random.default_rng(seed)
    out, t = [], start
    for k in range(n):
        tempo = bpm(k) if callable(bpm) else bpm
        p = 60.0 / tempo
        j = rng.normal(0.0, jitter) if jitter else 0.0
        pos = k - (1 if shift_bib_at is not None and k >= shift_bib_at else 0)
        out.append((k, t + j, tempo, t + j + p, pos % meter + 1, pos // meter))
        t += p
    return out


def drive(sched: ClockScheduler, beats, until: float, sink: RecordingSink | None = None, end_at: float | None = None):
    """Run the scheduler on virtual time: each beat event arrives ``DELAY`` after its beat, every cue
    is taken at its send time; MIDI messages go to ``sink`` stamped with that time. Returns the cues
    with their send times."""
    now_box = [0.0]
    if sink is not None:
        sink.clock = lambda: now_box[0]
    arrivals = [(t + DELAY, _event(k, t, bpm, nxt, bib, bar)) for k, t, bpm, nxt, bib, bar in beats]
    i, out = 0, []
    while True:
        candidates = [x for x in (sched.next_send(), arrivals[i][0] if i < len(arrivals) else None, end_at)
                      if x is not None]
        if not candidates or min(candidates) > until:
            return out
        now = now_box[0] = min(candidates)
        if i < len(arrivals) and arrivals[i][0] == now:
            sched.on_beat(arrivals[i][1], now)
            i += 1
        if end_at is not None and now == end_at:
            sched.on_end(now)
            end_at = None
        for cue in sched.due(now):
            out.append((now, cue))
            for msg in midi_messages(cue) if sink is not None else ():
                sink.send(msg)


def test_midi_clock_24_per_beat_starts_on_a_downbeat_on_an_absolute_schedule_and_stops_after_silence():
    """Steady 120 BPM, predictions exact: after 3 beats the transport starts on the next downbeat; then 24
    clocks per beat, each exactly at start + k * period / 24 (no drift after 400 beats), song position
    on each later downbeat, and a stop ``silence_timeout_s`` after the last beat."""
    sched, sink = ClockScheduler(lock_beats=3, silence_timeout_s=3.0), RecordingSink()
    beats = _beats(400)
    drive(sched, beats, until=T0 + 400, sink=sink)
    types = [m.type for _, m in sink.messages]
    assert types[0] == "start" and types[1] == "clock" and types[-1] == "stop" and types.count("start") == 1
    start = sink.of_type("start")[0][0]
    assert start == pytest.approx(T0 + 4 * 0.5)                  # beat 4: the first downbeat after locking at beat 2
    clocks = np.array([t for t, _ in sink.of_type("clock")])
    k = np.arange(len(clocks))
    assert np.abs(clocks - (start + k * 0.5 / 24)).max() < 1e-6   # absolute: the 9000th tick is still on time
    last_beat = beats[-1][1]
    assert clocks[-1] <= last_beat + 3.0 and sink.of_type("stop")[0][0] == pytest.approx(last_beat + 3.0)
    assert len(clocks) == 24 * round((last_beat + 3.0 - start) / 0.5)     # 24 per beat up to the stop
    # song position: 16ths since the start in whole bars, before the downbeat's clock
    spp = sink.of_type("songpos")
    assert [m.pos for _, m in spp[:3]] == [16, 32, 48]
    assert [t for t, _ in spp[:3]] == pytest.approx([start + 2.0, start + 4.0, start + 6.0])
    first = types.index("songpos")
    assert types[first + 1] == "clock" and (first - 1) % 24 == 0     # right before the bar's first clock


def test_output_latency_sends_every_cue_early():
    late, early = ClockScheduler(), ClockScheduler(lead_s=0.03)
    a = drive(late, _beats(20), until=T0 + 12)
    b = drive(early, _beats(20), until=T0 + 12)
    ticks_a = [(now, c.due) for now, c in a if c.kind == "tick"]
    ticks_b = [(now, c.due) for now, c in b if c.kind == "tick"]
    assert all(now == due for now, due in ticks_a)
    assert all(now == pytest.approx(due - 0.03) for now, due in ticks_b)
    assert [d for _, d in ticks_a[:100]] == pytest.approx([d for _, d in ticks_b[:100]])


def test_jittery_predictions_are_smoothed_and_stay_on_the_beat():
    """The tracker's beats quantised to 20 ms frames (+/-10 ms): clock intervals change by a few
    percent at most and every clock beat stays within 15 ms of a true beat."""
    sched = ClockScheduler()
    beats = _beats(120, jitter=0.006, seed=3)
    out = drive(sched, beats, until=T0 + 60)
    ticks = np.array([now for now, c in out if c.kind == "tick"])
    assert len(ticks) > 24 * 100 and sched.stats["resyncs"] == 0
    assert np.abs(np.diff(ticks) / (0.5 / 24) - 1).max() < 0.15          # never more than max_adjust
    true = T0 + 0.5 * np.arange(120)
    beat_times = np.array([c.due for _, c in out if c.kind == "beat" and c.due < true[-1]])
    assert np.abs(beat_times - true[np.searchsorted(true, beat_times - 0.25)]).max() < 0.015


def test_a_tempo_change_is_followed_smoothly_and_announced():
    """120 -> 140 BPM at beat 40: the clock takes the new tempo within a few beats, its ticks never jump
    (no interval off by more than max_adjust from the tempo in force), a /beatbus/tempo cue says 140."""
    sched = ClockScheduler()
    beats = _beats(100, bpm=lambda k: 120.0 if k < 40 else 140.0)
    out = drive(sched, beats, until=T0 + 60)
    ticks = np.array([now for now, c in out if c.kind == "tick"])
    change = beats[40][1]
    before, after = np.diff(ticks[ticks < change - 0.6]), np.diff(ticks[ticks > change + 4.0])
    assert before == pytest.approx(0.5 / 24, abs=1e-9)
    assert after == pytest.approx(60 / 140 / 24, rel=1e-3)
    d = np.diff(ticks)
    assert d.min() > (60 / 140 / 24) * 0.84 and d.max() < 0.5 / 24 * 1.16
    tempos = [c.bpm for _, c in out if c.kind == "tempo"]
    assert tempos[0] == pytest.approx(120.0) and tempos[-1] == pytest.approx(140.0)
    assert sched.stats["tempo_changes"] == 1
    true = np.array([t for _, t, *_ in beats])
    late = [c.due for _, c in out if c.kind == "beat" and c.due > change + 3.0 and c.due < true[-1]]
    assert np.abs(np.array(late) - true[np.searchsorted(true, np.array(late) - 0.2)]).max() < 0.002


def test_a_phase_jump_resyncs_ticks_stay_in_order_and_a_moved_downbeat_realigns_the_song_position():
    sched, sink = ClockScheduler(), RecordingSink()
    beats = _beats(60, shift_bib_at=30)
    jumped = [(k, t + (0.2 if k >= 45 else 0.0), b, n + (0.2 if k >= 45 else 0.0), bib, bar)
              for k, t, b, n, bib, bar in beats]      # from beat 45 on the tracker hears the beat 200 ms later
    drive(sched, jumped, until=T0 + 40, sink=sink)
    assert sched.stats["resyncs"] == 1
    clocks = np.array([t for t, _ in sink.of_type("clock")])
    assert (np.diff(clocks) >= 0).all()
    # bars of 4 beats, then one bar of 5 clock beats (the downbeat moved): song position counts whole bars,
    # so the receiver's bar lines move to the music's downbeats
    spp = [m.pos for _, m in sink.of_type("songpos")]
    assert spp == list(range(16, 16 * (len(spp) + 1), 16))
    downbeats = [c_t for c_t, _ in sink.of_type("songpos")]
    assert np.diff(downbeats)[:5] == pytest.approx([2.0] * 5)
    assert 2.5 in np.round(np.diff(downbeats), 3)


def test_bar_numbers_are_the_clocks_own_count_whatever_the_tracker_says():
    """The tracker renumbers bars (a moved downbeat, a meter it changes its mind about): bar cues still
    count up by one from the tracker's bar at the start, and every beat cue carries its bar's number."""
    sched = ClockScheduler()
    beats = _beats(80, shift_bib_at=30)
    renumbered = [(k, t, b, n, bib, bar + (7 if k >= 50 else 0) - (3 if 60 <= k < 65 else 0))
                  for k, t, b, n, bib, bar in beats]
    cues = [c for _, c in drive(sched, renumbered, until=T0 + 40)]
    bars = [c.bar for c in cues if c.kind == "bar"]
    assert len(bars) > 10 and bars == list(range(bars[0], bars[0] + len(bars)))
    assert bars[0] == next(c for c in cues if c.kind == "beat").bar
    current = None
    for c in cues:
        if c.kind == "bar":
            current = c.bar
        elif c.kind == "beat":
            assert c.bar == current


def test_the_stream_end_stops_at_once_and_the_next_lock_starts_again():
    sched, sink = ClockScheduler(), RecordingSink()
    first = _beats(20)
    drive(sched, first, until=T0 + 8.3, sink=sink, end_at=T0 + 8.3)
    assert sink.of_type("stop")[0][0] == T0 + 8.3 and not sched.running
    again = _beats(20, start=T0 + 20)
    drive(sched, again, until=T0 + 30, sink=sink)
    assert [m.type for _, m in sink.messages if m.type in ("start", "stop")] == ["start", "stop", "start"]


def test_impossible_and_stale_events_are_ignored():
    sched = ClockScheduler()
    assert not sched.on_beat(_event(0, T0, 0.0, T0 + 0.5, 1, 0), T0 + 0.1)                # bpm 0
    assert not sched.on_beat(_event(0, T0, 120.0, T0 + 0.5, 1, 0), T0 + 60)               # a minute old
    assert sched.on_beat(_event(1, T0, 120.0, T0 + 0.5, 2, 0), T0 + 0.1)
    assert not sched.on_beat(_event(2, T0 - 1, 120.0, T0 - 0.5, 3, 0), T0 + 0.1)          # out of order
    assert sched.stats["ignored"] == 3 and sched.plan is None


def test_plan_maps_positions_and_times_both_ways():
    p = Plan(10.0, 100.0, 0.55, 12.0, 0.5)
    assert p.time(11.0) == pytest.approx(100.55) and p.time(13.0) == pytest.approx(101.6)
    for pos in (9.0, 10.5, 12.0, 14.25):
        assert p.pos(p.time(pos)) == pytest.approx(pos)


def test_osc_messages_are_python_osc_datagrams():
    from pythonosc.osc_message import OscMessage

    m = OscMessage(osc_message(Cue(0.0, "beat", beat=17, beat_in_bar=2, bpm=120.0, confidence=0.8)))
    assert (m.address, m.params) == ("/beatbus/beat", [17, 2, 120.0, pytest.approx(0.8)])
    assert OscMessage(osc_message(Cue(0.0, "bar", bar=4, meter=3))).params == [4, 3]
    assert OscMessage(osc_message(Cue(0.0, "tempo", bpm=128.5))).params == [128.5]
    assert OscMessage(section_message("chorus", 0.7)).params == ["chorus", pytest.approx(0.7)]
    assert OscMessage(osc_message(Cue(0.0, "start"))).address == "/beatbus/start"
    assert osc_message(Cue(0.0, "tick")) is None


def test_targets_and_config(tmp_path):
    assert str(parse_target("127.0.0.1:9000")) == "127.0.0.1:9000" and parse_target("[::1]:57120").port == 57120
    for bad in ("127.0.0.1", "host:0", ":9000", "127.0.0.1:http"):
        with pytest.raises(ConfigError, match="HOST:PORT|is not 1-65535"):
            parse_target(bad)
    toml = tmp_path / "b.toml"
    toml.write_text('[beatbus]\nsource = "stage"\n[clock]\nosc = ["127.0.0.1:9000"]\noutput_latency_ms = 20\n')
    cfg = load_clock_config(config_file=toml, env={})
    assert (cfg.osc, cfg.output_latency_ms, cfg.midi) == (["127.0.0.1:9000"], 20.0, None)
    cfg = load_clock_config({"midi": "beatbus"}, config_file=toml,
                            env={"BEATBUS_CLOCK_OSC": "10.0.0.7:8000, 127.0.0.1:9001",
                                 "BEATBUS_CLOCK_OUTPUT_LATENCY_MS": "35"})
    assert (cfg.osc, cfg.output_latency_ms, cfg.midi) == (["10.0.0.7:8000", "127.0.0.1:9001"], 35.0, "beatbus")
    assert load_clock_config({"osc": ["127.0.0.1:1"]}, config_file=toml, env={}).osc == ["127.0.0.1:1"]
    with pytest.raises(ConfigError, match="output_latency_ms"):
        load_clock_config({"output_latency_ms": -5}, env={})
    toml.write_text("[clock]\nlatency = 3\n")
    with pytest.raises(ConfigError, match="latency"):
        load_clock_config(config_file=toml, env={})
