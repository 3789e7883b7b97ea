"""Song structure: intro / verse / chorus / bridge / outro, online and offline (no Redis here
except in ``service``).

Public names
------------
analyze_sections(audio, beats=None) -> list of {"start", "end", "label", "confidence"}
    Whole-file analysis (``beatbus analyze PATH --sections``).
analyze_structure(audio, beats=None) -> Structure
    The same with repetition groups, the beats used and the novelty curve.
section_at(sections, t)
    The section containing time ``t``.
OnlineStructure, SectionUpdate
    Causal analysis of a stream: tentative / confirmed / revised section decisions.
label_segments, Segment
    The labeller both analyses share.
"""
from .labels import LABELS, Segment, label_segments
from .offline import Structure, analyze_sections, analyze_structure, section_at
from .online import OnlineStructure, SectionUpdate

__all__ = ["analyze_sections", "analyze_structure", "section_at", "Structure", "OnlineStructure",
           "SectionUpdate", "label_segments", "Segment", "LABELS"]
