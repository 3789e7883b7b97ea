"""Synthetic songs with exact annotations: music21 scores rendered by FluidSynth.

A :class:`SongPlan` fixes the form (intro/verse/chorus/... with per-label progressions,
instrumentation and loudness), meter (3/4, 4/4, 6/8), tempo curve (steps and ramps), swing and
build-ups; :func:`render_song` writes the audio with its beats, sections, chords (one per bar,
:func:`chord_truth`), key, transitions and tempo curve. Used for training data ([beats]) and for
measuring the intensity, structure and harmony processors ([sections], [adaptive]).
``beatbus synth songs OUT_DIR --count N --seed S`` renders a batch.
"""
from .plan import ENERGY, FORMS, LABELS, METERS, BeatGrid, Section, SongPlan, beat_grid, random_plan, section_times, transitions
from .render import DEFAULT_SOUNDFONT, SongFiles, render_offset, render_song
from .score import build_score, chord_truth, key_truth

__all__ = ["Section", "SongPlan", "BeatGrid", "SongFiles", "LABELS", "METERS", "ENERGY", "FORMS",
           "random_plan", "beat_grid", "section_times", "transitions", "build_score", "chord_truth", "key_truth",
           "render_song", "render_offset", "render_songs", "DEFAULT_SOUNDFONT"]


def render_songs(out_dir, *, count: int, seed: int, meters=(3, 4, 6), tempo_range=(60.0, 200.0),
                 duration_range=(30.0, 90.0), prefix: str = "synth", first: int = 0, progress=None,
                 plan_kw: dict | None = None, **render_kw) -> list[SongFiles]:
    """Render ``count`` random songs named ``<prefix>_<seed>_<i>``, i from ``first``.

    Song ``i`` is reproducible from ``(seed, i)`` (and ``plan_kw``) alone; ``plan_kw`` goes to
    :func:`random_plan` (e.g. ``step_prob``, ``ramp_prob``); ``progress(files)`` is called after each.

    Returns
    -------
    list of SongFiles
    """
    import numpy as np

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count={count!r} must be a positive integer")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    out = []
    for i in range(first, first + count):
        song_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        plan = random_plan(np.random.default_rng(song_seed), name=f"{prefix}_{seed}_{i:04d}", meters=meters,
                           tempo_range=tempo_range, duration_range=duration_range, **(plan_kw or {}))
        out.append(render_song(plan, seed=song_seed, out_dir=out_dir, **render_kw))
        if progress is not None:
            progress(out[-1])
    return out
