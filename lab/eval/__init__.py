"""Evaluation against annotations: :mod:`.beats` (``beatbus eval beats``), :mod:`.sections`
(``beatbus eval sections``, ``beatbus structure eval``), :mod:`.intensity` (``beatbus intensity eval``),
:mod:`.harmony` (``beatbus eval harmony``, ``beatbus harmony eval``).
"""
