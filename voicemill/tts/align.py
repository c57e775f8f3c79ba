"""Teach an untrained posterior encoder the latent language of an imported decoder, before any GAN step.

A Piper voice carries the generator's inference path (text encoder, duration
predictor, flow, decoder) but not the posterior encoder, which in training
turns a recording's linear spectrogram into the latent ``z`` the decoder
renders. Left to learn through the mel loss alone, the posterior invents a
latent of its own that the imported decoder has never rendered, and every
generator step taken meanwhile teaches the decoder that invented latent,
which is not what the flow hands it at inference: the voice breaks.

This module gives the posterior the imported model's own latent instead. The
imported generator speaks sentences (the training texts: free, unlimited
rehearsal data), and for each one the latent it rendered and the audio it
rendered from it are kept; the posterior is then regressed onto that latent
from that audio (mean squared error of its mean, masked). No decoder pass is
needed per step, so a step costs a small fraction of a VITS step.

Measured on the bundled joe voice (``../shared/PIPER_WARM_START.md``): 300
such steps took the MSE from 3.45 to 0.46, and copy-synthesis of held-out
recordings of joe through the aligned posterior and the frozen decoder kept
similarity 0.96 and Distill-MOS 4.0, where a posterior warmed up on the mel
loss hands the decoder latents it renders as noise.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import numpy as np
import torch

_LOGGER = logging.getLogger(__name__)


@dataclass
class Pair:
    """One rehearsal utterance: the latent the generator rendered ``[C, T]`` and the audio it rendered."""

    z: torch.Tensor
    audio: torch.Tensor  # [T * hop] float32


def rehearsal_pairs(model, ids: list[list[int]], noise_scale: float = 0.667, noise_w: float = 0.8,
                    length_scale: float = 1.0, seed: int = 0, max_frames: int = 1000) -> list[Pair]:
    """The generator speaks each id sequence once; returns (latent, audio) pairs (inference mode, CPU or GPU)."""
    from voicemill.tts.coqui import set_scales

    was_training = model.training
    model.eval()
    set_scales(model, noise_scale, length_scale, noise_w)
    device = next(model.parameters()).device
    gen = torch.random.fork_rng(devices=[])
    pairs = []
    with gen, torch.inference_mode():
        torch.manual_seed(seed)
        for x in ids:
            tokens = torch.LongTensor(x).unsqueeze(0).to(device)
            out = model.inference(tokens, aux_input={"x_lengths": torch.LongTensor([len(x)]).to(device)})
            z = out["z"][0, :, :max_frames].float().cpu()
            hop = out["model_outputs"].shape[-1] // out["z"].shape[-1]
            audio = out["model_outputs"][0, 0, : z.shape[1] * hop].float().cpu()
            pairs.append(Pair(z.clone(), audio.clone()))
    model.train(was_training)
    return pairs


def spectrogram(model, wav: torch.Tensor) -> torch.Tensor:
    """The posterior encoder's input: the linear spectrogram ``[B, F, T]`` of ``wav [B, 1, samples]``."""
    from TTS.tts.models.vits import wav_to_spec

    ac = model.config.audio
    return wav_to_spec(wav, ac.fft_size, ac.hop_length, ac.win_length, center=False)


class Aligner:
    """Batches of rehearsal pairs and the posterior's regression loss on them."""

    def __init__(self, model, pairs: list[Pair], batch_size: int, seed: int, frames: int = 96):
        if not pairs:
            raise ValueError("no rehearsal pair to align the posterior encoder on")
        self.model, self.pairs, self.batch_size, self.frames = model, pairs, max(1, batch_size), frames
        self.rng = random.Random(seed)

    def batch(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(linear spectrogram [B, F, T], target latent [B, C, T], lengths [B]) of random crops of ``frames``."""
        hop = self.model.config.audio.hop_length
        picks = [self.pairs[self.rng.randrange(len(self.pairs))] for _ in range(self.batch_size)]
        frames = min(self.frames, max(p.z.shape[1] for p in picks))
        zs, wavs, lens = [], [], []
        for p in picks:
            n = p.z.shape[1]
            start = self.rng.randrange(max(1, n - frames + 1))
            m = min(frames, n - start)
            z = torch.zeros(p.z.shape[0], frames)
            z[:, :m] = p.z[:, start:start + m]
            w = torch.zeros(frames * hop)
            w[: m * hop] = p.audio[start * hop:(start + m) * hop]
            zs.append(z), wavs.append(w), lens.append(m)
        wav = torch.stack(wavs).unsqueeze(1).to(device)
        spec = spectrogram(self.model, wav)[:, :, :frames]
        return spec, torch.stack(zs).to(device), torch.LongTensor(lens).to(device)

    def loss(self, device) -> dict[str, torch.Tensor]:
        """Masked mean squared error between the posterior's mean and the rendered latent, plus the Gaussian
        negative log-likelihood of that latent under the posterior's spread around its (detached) mean.

        The second term matters as much as the first: training samples ``z = m_q + eps * exp(logs_q)``, and an
        untrained spread (about 1) buries the latent in noise the decoder then learns from; fitted here, the
        spread is the regression's own error.
        """
        spec, z, lens = self.batch(device)
        _, m_q, logs_q, mask = self.model.posterior_encoder(spec, lens, g=None)
        n = mask.sum() * z.shape[1]
        mse = (((m_q - z) ** 2) * mask).sum() / n
        nll = ((logs_q + 0.5 * (z - m_q.detach()) ** 2 * torch.exp(-2 * logs_q)) * mask).sum() / n
        return {"loss": mse + nll, "loss_align": mse, "loss_spread": nll}


def copy_synthesis(model, audio: np.ndarray) -> np.ndarray:
    """A recording through the posterior (its mean) and the decoder: what the decoder can render of it."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        wav = torch.from_numpy(np.asarray(audio, np.float32)).view(1, 1, -1).to(device)
        spec = spectrogram(model, wav)
        lens = torch.LongTensor([spec.shape[2]]).to(device)
        _, m_q, _, mask = model.posterior_encoder(spec, lens, g=None)
        out = model.waveform_decoder(m_q * mask, g=None)
    model.train(was_training)
    return out[0, 0].float().cpu().numpy()
