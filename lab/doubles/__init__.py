"""Test doubles of what beatbus talks to: :mod:`.error_generator` (the reference receiver,
``beatbus dev error-generator``) and :mod:`.tiny_models` (tiny random-weight MusicGen and CLAP).
"""
