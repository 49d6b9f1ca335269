"""The lean audio forward pass over laion-clap's own modules and weights, its precisions, and the
deterministic input preparation (int16 round trip, ``repeatpad`` to :data:`CLIP_SAMPLES`).

An FFT spectrogram instead of a convolution, fused scaled-dot-product window attention with the
relative-position bias and shift mask precomputed once, and none of the unused outputs.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from ...errors import AudioError, ParameterError
from .checkpoints import CLAP_SAMPLE_RATE, CLIP_SAMPLES

logger = logging.getLogger("clapknn.encoders.clap")

# --------------------------------------------------------------------------------------------------
# The lean audio forward pass
# --------------------------------------------------------------------------------------------------


def _htk_mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float):
    """Triangular HTK-mel filters without normalisation, shape ``(n_fft // 2 + 1, n_mels)``.

    The filterbank laion_clap's fusion models were trained with (torchaudio's ``MelSpectrogram``
    defaults: ``mel_scale='htk'``, ``norm=None``).
    """
    import torch

    n_freqs = n_fft // 2 + 1
    freqs = torch.linspace(0, sr // 2, n_freqs)
    m_min = 2595.0 * math.log10(1.0 + fmin / 700.0)
    m_max = 2595.0 * math.log10(1.0 + fmax / 700.0)
    m_pts = torch.linspace(m_min, m_max, n_mels + 2)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def torch_device_type(device: str) -> str:
    """``"cuda"`` for ``"cuda:1"``, ``"cpu"`` for ``"cpu"``: what :class:`torch.autocast` takes."""
    return str(device).split(":", 1)[0]


def quantize_linear(model) -> None:
    """Replace the linear layers of ``model``'s audio tower and projection, in place, by dynamically
    quantised int8 ones (weights int8, activations quantised per batch; CPU)."""
    import warnings

    import torch

    with warnings.catch_warnings():  # torch >= 2.9 announces a move of this API to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        from torch.ao.quantization import quantize_dynamic

        for name in ("audio_branch", "audio_projection"):
            setattr(model, name, quantize_dynamic(getattr(model, name), {torch.nn.Linear}, dtype=torch.qint8))


class AudioForward:
    """Embeds 480,000-sample waveforms with a laion_clap ``CLAP`` model's audio branch.

    Same computation as ``CLAP.get_audio_embedding`` in eval mode for inputs of exactly
    :data:`CLIP_SAMPLES` samples, reorganised for speed. Built after the weights are loaded.
    """

    def __init__(self, model, cfg: dict[str, Any], fusion: bool) -> None:
        import torch

        self.model = model
        self.branch = model.audio_branch
        acfg = cfg["audio_cfg"]
        self.n_fft = int(acfg["window_size"])
        self.hop = int(acfg["hop_size"])
        device = next(model.parameters()).device
        self.window = torch.hann_window(self.n_fft, periodic=True, device=device)
        lm = self.branch.logmel_extractor
        if fusion:
            fb = _htk_mel_filterbank(int(acfg["sample_rate"]), self.n_fft, int(acfg["mel_bins"]), acfg["fmin"], acfg["fmax"])
            self.mel_fb = fb.to(device)
            self.amin, self.db_offset = 1e-10, 0.0
        else:
            self.mel_fb = lm.melW.detach()
            self.amin = float(lm.amin)
            self.db_offset = 10.0 * math.log10(max(float(lm.amin), float(lm.ref)))
        self.fusion = fusion
        #: device type ("cpu", "cuda") to run the transformer under bfloat16 autocast; None: fp32
        self.autocast: str | None = None
        # The token sequence is kept in the window order of the block about to run, so a block
        # costs one gather instead of a roll + window partition + reverse + roll of copies.
        # Per layer: for each block (block, gather index from the previous order or None, mask);
        # then the index back to row-major order before patch merging (None when not needed).
        self.plan = []
        for li, layer in enumerate(self.branch.layers):
            h, w = layer.blocks[0].input_resolution
            current = torch.arange(h * w)  # stored[j] = token current[j] (row-major index)
            blocks = []
            for blk in layer.blocks:
                order = self._window_order(h, w, blk.window_size, blk.shift_size)
                if torch.equal(order, current):
                    gather = None
                else:
                    inverse = torch.empty_like(current)
                    inverse[current] = torch.arange(h * w)
                    gather = inverse[order].to(device)
                current = order
                blocks.append((blk, gather, self._mask(blk).to(device)))
            restore = None
            if layer.downsample is not None and not torch.equal(current, torch.arange(h * w)):
                restore = torch.empty_like(current)
                restore[current] = torch.arange(h * w)
                restore = restore.to(device)
            self.plan.append((layer, blocks, restore))

    @staticmethod
    def _window_order(h: int, w: int, ws: int, shift: int):
        """Row-major token indices in the order of the (shifted) windows, window by window."""
        import torch

        grid = torch.arange(h * w).view(h, w)
        if shift > 0:
            grid = torch.roll(grid, shifts=(-shift, -shift), dims=(0, 1))
        return grid.view(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(-1)

    @staticmethod
    def _mask(blk):
        """Relative-position bias (+ shift mask) laid out for scaled_dot_product_attention."""
        attn = blk.attn
        n = attn.window_size[0] * attn.window_size[1]
        bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1)  # heads, n, n
        if blk.attn_mask is not None:
            return (bias.unsqueeze(0) + blk.attn_mask.unsqueeze(1)).reshape(1, -1, n, n).contiguous()
        return bias.unsqueeze(0).contiguous()

    def logmel(self, wave):
        import torch

        spec = torch.stft(
            wave, self.n_fft, hop_length=self.hop, win_length=self.n_fft, window=self.window,
            center=True, pad_mode="reflect", return_complex=True,
        )  # (B, F, T)
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(power.transpose(1, 2), self.mel_fb)  # (B, T, M)
        mel = 10.0 * torch.log10(torch.clamp(mel, min=self.amin))
        if self.db_offset:
            mel = mel - self.db_offset
        return mel.unsqueeze(1)  # (B, 1, T, M)

    def _block(self, blk, x, mask):
        """One Swin block on tokens already in its window order."""
        import torch.nn.functional as F

        b, length, c = x.shape
        ws, attn = blk.window_size, blk.attn
        heads, n = attn.num_heads, ws * ws
        hd = c // heads
        bw = b * (length // n)
        qkv = attn.qkv(blk.norm1(x).view(bw, n, c)).reshape(bw, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (bw, heads, n, hd)
        if blk.attn_mask is not None:  # windows of one image share the mask: fold them into heads
            q, k, v = (t.reshape(b, -1, n, hd) for t in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
        o = attn.proj(o.reshape(bw, heads, n, hd).transpose(1, 2).reshape(b, length, c))
        x = x + o
        return x + blk.mlp(blk.norm2(x))

    def __call__(self, wave):
        import torch
        import torch.nn.functional as F

        x = self.logmel(wave)  # always fp32: log10 of small mel energies needs the range
        if self.autocast is None:
            return F.normalize(self._tower(x), dim=-1)
        with torch.autocast(self.autocast, dtype=torch.bfloat16):
            y = self._tower(x)
        return F.normalize(y.float(), dim=-1)  # unit length in fp32

    def _tower(self, x):
        """The audio tower after the log-mel front end: the projected, not yet normalised vector."""
        ab = self.branch
        x = ab.bn0(x.transpose(1, 3)).transpose(1, 3)
        x = ab.reshape_wav2img(x)
        # Fusion models see four identical copies of a 10-s mel and use only the first.
        x = ab.patch_embed(x, longer_idx=[]) if self.fusion else ab.patch_embed(x)
        for layer, blocks, restore in self.plan:
            for blk, gather, mask in blocks:
                if gather is not None:
                    x = x[:, gather]
                x = self._block(blk, x, mask)
            if layer.downsample is not None:
                if restore is not None:
                    x = x[:, restore]
                x = layer.downsample(x)
        # HTSAT's average pool over all tokens (order-free, so the last window order can stay)
        x = ab.norm(x).mean(dim=1)
        return self.model.audio_projection(x)


# --------------------------------------------------------------------------------------------------
# Input preparation
# --------------------------------------------------------------------------------------------------


def prepare_snippets(snippets: np.ndarray) -> np.ndarray:
    """Validate, int16-round-trip and repeat-pad snippets to ``(n, CLIP_SAMPLES)`` float32."""
    x = np.asarray(snippets)
    if x.ndim != 2:
        raise ParameterError(f"snippets must be a 2-D array (n, samples), got shape {x.shape}")
    n, length = x.shape
    if length == 0:
        raise ParameterError("snippets are empty (0 samples)")
    if length > CLIP_SAMPLES:
        raise ParameterError(
            f"CLAP takes snippets of at most {CLIP_SAMPLES} samples (10 s at {CLAP_SAMPLE_RATE} Hz), got "
            f"{length}; use a snippet length of 10 s or less"
        )
    if not np.isfinite(x).all():
        raise AudioError("snippets contain NaN or infinite samples")
    # laion_clap quantises every input to int16 and back (as in training): keep that.
    x = (np.clip(x.astype(np.float32, copy=False), -1.0, 1.0) * 32767.0).astype(np.int16)
    x = (x / 32767.0).astype(np.float32)
    if length < CLIP_SAMPLES:
        # CLAP's "repeatpad": as many whole copies as fit, then zeros.
        reps = CLIP_SAMPLES // length
        out = np.zeros((n, CLIP_SAMPLES), dtype=np.float32)
        out[:, : reps * length] = np.tile(x, (1, reps))
        x = out
    return np.ascontiguousarray(x)
