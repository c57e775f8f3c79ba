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
  is not called at all.

The losses are coqui's criteria (``model.get_criterion()``), fed as coqui
feeds them; draws of randomness are the same, so a step here equals coqui's
step where both run the discriminator.
"""

from __future__ import annotations

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


def generator_losses(model, batch: dict, criterion, out: dict, adversarial: bool) -> dict:
    """The generator's losses; the discriminator (frozen or not, the caller decides) runs only if ``adversarial``."""
    from TTS.tts.utils.helpers import segment

    if model.args.encoder_sample_rate:
        raise NotImplementedError("an encoder sample rate apart from the output's (coqui's interpolated VITS)")
    if adversarial:
        scores_fake, feats_fake, _, feats_real = model.disc(out["model_outputs"], out["waveform_seg"])
    else:
        scores_fake, feats_fake, feats_real = [], [], []  # coqui's feature and generator losses are 0 over none
    with torch.autocast(out["model_outputs"].device.type, enabled=False):
        mel = segment(batch["mel"].float(), out["slice_ids"], model.spec_segment_size, pad_short=True)
        return criterion(mel_slice=_mel(model, out["model_outputs"]), mel_slice_hat=mel,
                         z_p=out["z_p"].float(), logs_q=out["logs_q"].float(), m_p=out["m_p"].float(),
                         logs_p=out["logs_p"].float(), z_len=batch["spec_lens"], scores_disc_fake=scores_fake,
                         feats_disc_fake=feats_fake, feats_disc_real=feats_real,
                         loss_duration=out["loss_duration"],
                         use_speaker_encoder_as_loss=model.args.use_speaker_encoder_as_loss,
                         gt_spk_emb=out["gt_spk_emb"], syn_spk_emb=out["syn_spk_emb"])
