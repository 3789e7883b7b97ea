"""Training: :mod:`.beat_small` (``beatbus train beat-small``: the ``small`` beat activation model on
synthetic songs and annotated recordings), :mod:`.label` (``beatbus label beats``: pseudo-labels of
recordings, confident stretches only) and :mod:`.hls` (``beatbus hls train|csim``: its QKeras twin,
checked in C simulation).
"""
