"""The halves of a VITS training step, with the discriminator only where a phase needs it.

coqui's ``Vits.train_step(batch, criterion, optimizer_idx)`` runs the
discriminator on both halves of every step: on the generated and the real
segment for its own loss, and again, with features, for the generator's
adversarial and feature-matching losses. A phase that neither trains the
discriminator nor uses it against the generator (the warm-up's generator
half, any non-adversarial phase) pays for it anyway, and on a CPU the
multi-period discriminator is most of a step. These functions are the same
step with that cost optional:

- :func:`generate`: the generator's training forward pass (posterior encoder,
  flow, duration, decoder on a random segment);
- :func:`discriminator_losses`: the discriminator on the detached generated
  segment and the real one (least squares, as coqui's);
- :func:`generator_losses`: mel, KL and duration always; the adversarial and
  feature-matching terms only when ``adversarial``, else the discriminator
  is not called at all; with ``prior_weight``, :func:`prior_mel_loss` too,
  and with ``stft_weight``, :func:`stft_loss`.

The losses are coqui's criteria (``model.get_criterion()``), fed as coqui
feeds them; draws of randomness are the same, so a step here equals coqui's
step where both run the discriminator.
"""

from __future__ import annotations

import functools

import torch


def generate(model, batch: dict) -> dict:
    """The generator's training forward pass on a formatted batch; its outputs feed both losses."""
    return model.forward(batch["tokens"], batch["token_lens"], batch["spec"], batch["spec_lens"], batch["waveform"],
                         aux_input={"d_vectors": batch["d_vectors"], "speaker_ids": batch["speaker_ids"],
                                    "language_ids": batch["language_ids"]})


def discriminator_losses(model, criterion, out: dict) -> dict:
    """The discriminator's loss on the generated segment (detached: no gradient reaches the generator) and the real."""
    scores_fake, _, scores_real, _ = model.disc(out["model_outputs"].detach(), out["waveform_seg"])
    with torch.autocast(out["model_outputs"].device.type, enabled=False):  # the criterion in float32
        return criterion(scores_real, scores_fake)


def _mel(model, wav: torch.Tensor) -> torch.Tensor:
    from TTS.tts.models.vits import wav_to_mel

    ac = model.config.audio
    return wav_to_mel(y=wav.float(), n_fft=ac.fft_size, sample_rate=ac.sample_rate, num_mels=ac.num_mels,
                      hop_length=ac.hop_length, win_length=ac.win_length, fmin=ac.mel_fmin, fmax=ac.mel_fmax,
                      center=False)


PRIOR_NOISE_SCALE = 0.667  # Piper's inference noise_scale: the prior is sampled as the voice speaks


def prior_mel_loss(model, batch: dict, out: dict, mel: torch.Tensor) -> torch.Tensor:
    """L1 between the mel of the voice speaking the batch's text and the recording's, on the step's segment.

    VITS trains its decoder on the posterior's latent of the recording, and the
    flow only through the KL term; the voice speaks through the other path,
    the text's prior sampled and run backwards through the flow. On a voice's
    own recordings the two meet; fine-tuning toward another speaker, the
    posterior's latents of the new voice lie where the imported decoder never
    read, and what the decoder learns there need not be what the prior path
    feeds it. This loss trains the path the listener hears: the prior, laid
    on the recording by the step's alignment (``m_p``, ``logs_p`` as
    ``forward`` expanded them), sampled at the inference noise scale (the
    noise's spread detached: the loss should not learn to shrink it), the
    flow reversed, and the decoder on the same segment as the posterior's.
    """
    from TTS.tts.utils.helpers import segment, sequence_mask

    g = model._get_speaker_conditioning({"d_vectors": batch["d_vectors"], "speaker_ids": batch["speaker_ids"]},
                                        "emb_g", normalize_embedding=False)
    m_p, logs_p = out["m_p"], out["logs_p"]
    y_mask = sequence_mask(batch["spec_lens"], m_p.size(2)).unsqueeze(1).to(m_p.dtype)
    z_p = m_p + torch.randn_like(m_p) * torch.exp(logs_p).detach() * PRIOR_NOISE_SCALE
    z = model.flow(z_p * y_mask, y_mask, g=g, reverse=True)
    z_slice = segment(z, out["slice_ids"], model.spec_segment_size, pad_short=True)
    wav = model.waveform_decoder(z_slice, g=g)
    with torch.autocast(wav.device.type, enabled=False):
        return torch.nn.functional.l1_loss(_mel(model, wav), mel)


#: (FFT size, hop, window) of :func:`stft_loss`'s resolutions, in samples at 22.05 kHz: about 46, 93 and 23 ms
#: windows (Parallel WaveGAN's three, as coqui's vocoder losses use them).
STFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))


def stft_loss(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT loss of the generated segment against the real one: spectral convergence plus the
    L1 of log magnitudes, averaged over :data:`STFT_RESOLUTIONS` (coqui's ``MultiScaleSTFTLoss``).

    The mel loss sees 80 bands on one 1024-sample window; a decoder can lower
    it while losing the harmonics between the bands and the timing within the
    window, which the adversarial loss of a trained discriminator would catch
    and a fine-tune's young discriminator does not. Linear-frequency
    magnitudes at three window lengths hold the decoder to both, from the
    first step, with nothing to learn first.
    """
    mag, sc = _stft_criterion(generated.device)(generated.float().squeeze(1), real.float().squeeze(1))
    return mag + sc


@functools.cache
def _stft_criterion(device: torch.device):
    """coqui's ``MultiScaleSTFTLoss`` at :data:`STFT_RESOLUTIONS`, built once per device (its windows are
    buffers), not at every step."""
    from TTS.vocoder.layers.losses import MultiScaleSTFTLoss

    n_ffts, hops, wins = zip(*STFT_RESOLUTIONS)
    return MultiScaleSTFTLoss(n_ffts, hops, wins).to(device)


def generator_losses(model, batch: dict, criterion, out: dict, adversarial: bool, prior_weight: float = 0.0,
                     stft_weight: float = 0.0) -> dict:
    """The generator's losses; the discriminator (frozen or not, the caller decides) runs only if ``adversarial``.

    ``prior_weight`` > 0 adds :func:`prior_mel_loss` at that share of the mel
    loss's weight (``loss_prior_mel``, already weighted, is in the result);
    ``stft_weight`` > 0 adds :func:`stft_loss` times that weight (``loss_stft``).
    """
    from TTS.tts.utils.helpers import segment

    if model.args.encoder_sample_rate:
        raise NotImplementedError("an encoder sample rate apart from the output's (coqui's interpolated VITS)")
    if adversarial:
        scores_fake, feats_fake, _, feats_real = model.disc(out["model_outputs"], out["waveform_seg"])
    else:
        scores_fake, feats_fake, feats_real = [], [], []  # coqui's feature and generator losses are 0 over none
    with torch.autocast(out["model_outputs"].device.type, enabled=False):
        mel = segment(batch["mel"].float(), out["slice_ids"], model.spec_segment_size, pad_short=True)
        losses = criterion(mel_slice=_mel(model, out["model_outputs"]), mel_slice_hat=mel,
                         z_p=out["z_p"].float(), logs_q=out["logs_q"].float(), m_p=out["m_p"].float(),
                         logs_p=out["logs_p"].float(), z_len=batch["spec_lens"], scores_disc_fake=scores_fake,
                         feats_disc_fake=feats_fake, feats_disc_real=feats_real,
                         loss_duration=out["loss_duration"],
                         use_speaker_encoder_as_loss=model.args.use_speaker_encoder_as_loss,
                         gt_spk_emb=out["gt_spk_emb"], syn_spk_emb=out["syn_spk_emb"])
    if prior_weight:
        prior = prior_mel_loss(model, batch, out, mel) * criterion.mel_loss_alpha * prior_weight
        losses["loss_prior_mel"] = prior
        losses["loss"] = losses["loss"] + prior
    if stft_weight:
        with torch.autocast(out["model_outputs"].device.type, enabled=False):
            stft = stft_loss(out["model_outputs"], out["waveform_seg"]) * stft_weight
        losses["loss_stft"] = stft
        losses["loss"] = losses["loss"] + stft
    return losses
