"""Tiny random-weight models with the real architectures, saved with ``save_pretrained``.

No hub access here, so tests and benchmarks build models from configs and load them back
through the same ``from_pretrained`` code a real checkpoint uses:

- :func:`build_tiny_musicgen`: T5 text encoder, EnCodec 32 kHz / 50 Hz / 4 codebooks and a
  2-layer decoder (~0.2 M parameters), plus a real ``MusicgenProcessor`` whose T5 tokenizer
  is a small Unigram vocabulary built here (the T5 sentencepiece model is not available
  offline; transformers 5's ``T5Tokenizer`` takes a ``vocab`` list and saves ``tokenizer.json``).
- :func:`build_tiny_musicgen_melody`: the same with MusicGen-Melody's chroma conditioning.
- :func:`build_tiny_clap`: HTS-AT audio tower + RoBERTa text tower, 512-d projections (~0.6 M).
- :func:`musicgen_small_config`: the full musicgen-small architecture (random weights), for
  speed benchmarks: weights do not change the cost of a decoding step.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["build_tiny_musicgen", "build_tiny_musicgen_melody", "build_tiny_clap", "musicgen_small_config",
           "tiny_t5_tokenizer"]

_WORDS = ("music beat bpm chorus verse bridge intro outro calm mellow steady energetic intense "
          "major minor drums bass piano guitar synth lofi rock jazz pop ambient with and in a the").split()


def tiny_t5_tokenizer():
    """A T5 (Unigram) tokenizer over a few dozen music words plus single characters."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -3.0) for w in _WORDS]
    vocab += [(c, -6.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789#/,.-"]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _sub_configs(codebook_size: int = 64):
    from transformers import EncodecConfig, T5Config

    text = T5Config(vocab_size=128, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
                    relative_attention_num_buckets=8)
    # 32 kHz, hop 640 -> 50 frames/s as in musicgen-small; 4 codebooks of 6 bits at 1.2 kbps.
    audio = EncodecConfig(sampling_rate=32000, audio_channels=1, num_filters=4, codebook_size=codebook_size,
                          codebook_dim=16, hidden_size=16, upsampling_ratios=[8, 5, 4, 4], num_lstm_layers=1,
                          target_bandwidths=[1.2], normalize=False, num_residual_layers=1, compress=2,
                          chunk_length_s=None, overlap=None)
    return text, audio


def _random_codebooks(codec) -> None:
    """EnCodec's codebooks start as zeros (training fills them): give the tiny codec random ones,
    so that different codes decode to different audio, as with trained weights."""
    import torch

    with torch.no_grad():
        for layer in codec.quantizer.layers:
            layer.codebook.embed.normal_(0.0, 1.0)
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
            layer.codebook.cluster_size.fill_(1.0)


def build_tiny_musicgen(path: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny MusicGen (model + processor) to ``path``; returns the path."""
    import torch
    from transformers import (
        EncodecFeatureExtractor,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
    )

    path = Path(path)
    text, audio = _sub_configs()
    pad = audio.codebook_size
    dec = MusicgenDecoderConfig(vocab_size=audio.codebook_size, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, ffn_dim=64, num_codebooks=4, max_position_embeddings=2048,
                                audio_channels=1, pad_token_id=pad, bos_token_id=pad)
    cfg = MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=dec.to_dict(),
                         pad_token_id=pad, decoder_start_token_id=pad)
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(cfg)
    _random_codebooks(model.audio_encoder)
    model.generation_config.do_sample = True
    model.generation_config.guidance_scale = 3.0
    model.generation_config.max_length = 1500
    model.save_pretrained(path)
    MusicgenProcessor(feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=32000),
                      tokenizer=tiny_t5_tokenizer()).save_pretrained(path)
    return path


def build_tiny_musicgen_melody(path: str | Path, *, seed: int = 0, chroma_length: int = 40) -> Path:
    """Save a tiny MusicGen-Melody; ``chroma_length`` chroma frames (~5 s) instead of 235 (30 s)."""
    import torch
    from transformers import MusicgenMelodyConfig, MusicgenMelodyDecoderConfig, MusicgenMelodyForConditionalGeneration

    path = Path(path)
    text, audio = _sub_configs()
    pad = audio.codebook_size
    dec = MusicgenMelodyDecoderConfig(vocab_size=audio.codebook_size, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, ffn_dim=64, num_codebooks=4,
                                      max_position_embeddings=2048, audio_channels=1, pad_token_id=pad,
                                      bos_token_id=pad)
    cfg = MusicgenMelodyConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=dec.to_dict(),
                               pad_token_id=pad, decoder_start_token_id=pad, num_chroma=12,
                               chroma_length=chroma_length)
    torch.manual_seed(seed)
    model = MusicgenMelodyForConditionalGeneration(cfg)
    _random_codebooks(model.audio_encoder)
    model.save_pretrained(path)
    tiny_t5_tokenizer().save_pretrained(path)
    return path


def build_tiny_clap(path: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny CLAP (laion/clap-htsat-unfused layout: 48 kHz, 64 mels, 10 s, 512-d) to ``path``."""
    import torch
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig

    path = Path(path)
    audio = ClapAudioConfig(window_size=8, num_mel_bins=64, spec_size=256, patch_size=4, patch_stride=(4, 4),
                            patch_embeds_hidden_size=16, hidden_size=32, depths=[1, 1], num_attention_heads=[1, 2],
                            mlp_ratio=2.0, projection_dim=512, projection_hidden_size=32, enable_fusion=False,
                            num_classes=10)
    text = ClapTextConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=64, projection_dim=512,
                          projection_hidden_size=32)
    cfg = ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=512)
    torch.manual_seed(seed)
    ClapModel(cfg).save_pretrained(path)
    ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=480, max_length_s=10,
                         fft_window_size=1024, truncation="rand_trunc", padding="repeatpad").save_pretrained(path)
    return path


def musicgen_small_config():
    """The facebook/musicgen-small architecture (T5-base text encoder, EnCodec 32 kHz, 24-layer 1024-d decoder)."""
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    text = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
    audio = EncodecConfig(sampling_rate=32000, audio_channels=1, num_filters=64, codebook_size=2048,
                          codebook_dim=128, hidden_size=128, upsampling_ratios=[8, 5, 4, 4], num_lstm_layers=2,
                          target_bandwidths=[2.2], normalize=False, compress=2, residual_kernel_size=3,
                          chunk_length_s=None, overlap=None)
    dec = MusicgenDecoderConfig(vocab_size=2048, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                ffn_dim=4096, num_codebooks=4, max_position_embeddings=2048, audio_channels=1,
                                pad_token_id=2048, bos_token_id=2048)
    return MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=dec.to_dict(),
                          pad_token_id=2048, decoder_start_token_id=2048)
