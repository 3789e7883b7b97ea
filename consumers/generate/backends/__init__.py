"""Model backends: :mod:`.musicgen` (transformers), :mod:`.audiocraft` (optional engine),
:mod:`.lstm` and :mod:`.lstm_tokens` (the LSTM + self-attention MIDI composer)."""
__all__: list[str] = []
