"""Training that survives days: checkpoints and resume after SIGKILL, the best checkpoint by what a listener
hears, early stop, precision checks, and data-parallel ranks that agree.

Training here is real (coqui's Vits in our loop) and a few steps long.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO, write_tts_dataset
from tests.pace import patient
from voicemill.errors import VoicemillError
from voicemill.tts.training import TrainOptions, part_of, train




@pytest.fixture(scope="module")
def dataset(tmp_path_factory, piper_voice):
    """Six training clips and six validation clips (the sentences each evaluation speaks)."""
    from voicemill.demo import EPISODES, Line

    texts = [s.text if isinstance(s, Line) else s for e in EPISODES for s in e.sentences]
    texts = [t for t in texts if 4 <= len(t.split()) <= 14][:12]
    return write_tts_dataset(tmp_path_factory.mktemp("train_dataset"), piper_voice, texts, n_train=6)


#: The library's defaults are the demo's (evaluations, checkpoints, early stop); these tests ask for them one by one.
QUIET = {"max_steps": 0, "eval_every": 0, "checkpoint_every": 0, "keep_checkpoints": 2, "patience": 0}


def _tiny(**kw) -> TrainOptions:
    return TrainOptions(**{"preset": "tiny", "init_from": "", "batch_size": 2, "num_threads": 2, **QUIET, **kw})


def _tiny_forward(dataset: Path):
    """A tiny untrained model, a batch of two clips and the generator's forward pass on it (seeded)."""
    from voicemill.tts import steps
    from voicemill.tts.phonemes import dataset_ids
    from voicemill.tts.training import Batches, collate, load_clips, resolve_start

    torch.manual_seed(0)
    start = resolve_start(_tiny())
    model = start.model
    data = load_clips(dataset, "metadata_train.csv", dataset_ids(dataset, start.front), 22050)
    batch = model.format_batch_on_device(model.format_batch(collate(data, Batches(data, 2, 1).next())))
    return model, batch, model.get_criterion()[1], steps.generate(model, batch)


def _tsv_steps(live: Path, name: str) -> list[int]:
    rows = (live / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
    col = rows[0].split("\t").index("step")
    return [int(r.split("\t")[col]) for r in rows[1:] if r]


def _stage(args: list[str], params: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stages.train", "--params", str(params), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_after_a_checkpoint_then_the_rerun_resumes_and_ends_as_an_unbroken_run(dataset, tmp_path,
                                                                                       write_params):
    steps = 12
    # One listening evaluation, at the end: the voice exported is the last step's, as the uninterrupted run's.
    params = write_params({"train": {"preset": "tiny", "init_from": "", "max_steps": steps, "batch_size": 2,
                                     "checkpoint_every": 2, "keep_checkpoints": 2, "eval_every": steps}})
    dirs = {name: tmp_path / name for name in ("tts", "live", "ckpt")}
    args = ["--dataset", str(dataset), "--out", str(dirs["tts"]), "--live", str(dirs["live"]),
            "--checkpoints", str(dirs["ckpt"])]
    # The same run, never interrupted, first: the weights the resumed run must end with, and how long the
    # whole run takes on this machine now, which sizes the limits on waiting for the stage below.
    began = time.monotonic()
    whole = train(dataset, tmp_path / "whole", tmp_path / "whole_live",
                  _tiny(max_steps=steps, checkpoint_every=2, keep_checkpoints=2))
    whole_s = time.monotonic() - began
    assert whole["steps"] == steps

    proc = _stage(args, params)
    limit = patient(whole_s, 300)
    deadline = time.monotonic() + limit
    while not (dirs["ckpt"] / "step-000002").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, f"no checkpoint after {limit:.0f} s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (dirs["tts"] / "model.pth").exists()  # killed mid-run: no voice yet
    killed_at = max(_tsv_steps(dirs["live"], "train/loss_mel"))
    assert killed_at < steps

    rerun = _stage(args, params)
    out, _ = rerun.communicate(timeout=patient(whole_s, 600))
    assert rerun.returncode == 0, out
    assert "resuming from" in out and "step 0 " not in out
    history = _tsv_steps(dirs["live"], "train/loss_mel")
    assert history == list(range(1, steps + 1))  # continuous: nothing repeated, nothing missing
    assert json.loads((dirs["live"] / "metrics.json").read_text())["steps"] == steps
    assert torch.load(dirs["tts"] / "model.pth", weights_only=False)["step"] == steps
    kept = sorted(p.name for p in dirs["ckpt"].glob("step-*"))
    assert kept == [f"step-{steps - 2:06d}", f"step-{steps:06d}"]  # keep_checkpoints: the newest two

    # ... and ends with the weights of the run that was never interrupted.
    resumed = torch.load(dirs["tts"] / "model.pth", weights_only=False)["model"]
    unbroken = torch.load(tmp_path / "whole" / "model.pth", weights_only=False)["model"]
    assert all(torch.equal(resumed[k], unbroken[k]) for k in unbroken)


def test_a_changed_recipe_starts_fresh_and_a_raised_max_steps_continues(dataset, tmp_path, caplog, monkeypatch):
    ckpt = tmp_path / "ckpt"
    first = train(dataset, tmp_path / "a", tmp_path / "la", _tiny(max_steps=2), checkpoints_dir=ckpt)
    assert first["resumed_from"] == -1 and first["steps"] == 2
    more = train(dataset, tmp_path / "a", tmp_path / "la", _tiny(max_steps=4), checkpoints_dir=ckpt)
    assert more["resumed_from"] == 2 and more["steps"] == 4
    assert _tsv_steps(tmp_path / "la", "train/loss_mel") == [1, 2, 3, 4]
    other = train(dataset, tmp_path / "a", tmp_path / "la", _tiny(max_steps=4, lr=1e-4, checkpoint_every=1),
                  checkpoints_dir=ckpt)
    assert other["resumed_from"] == -1
    assert "starting fresh" in caplog.text and "lr: 0.0002 -> 0.0001" in caplog.text
    # A torn checkpoint (a disk that lied) is passed over for the one before it.
    assert sorted(p.name for p in ckpt.glob("step-*")) == ["step-000003", "step-000004"]
    (ckpt / "step-000004" / "state.pth").write_bytes(b"torn")
    again = train(dataset, tmp_path / "a", tmp_path / "la", _tiny(max_steps=4, lr=1e-4, checkpoint_every=1),
                  checkpoints_dir=ckpt)
    assert again["resumed_from"] == 3 and again["steps"] == 4 and "unreadable" in caplog.text
    done = train(dataset, tmp_path / "a", tmp_path / "la", _tiny(max_steps=4, lr=1e-4, checkpoint_every=1),
                 checkpoints_dir=ckpt)  # resumed at its last step: nothing to train, the same summary
    assert done["resumed_from"] == 4 and json.loads((tmp_path / "la" / "metrics.json").read_text())["step"] == 4
    # A folder train did not write is never taken for checkpoints, nor deleted.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(VoicemillError, match="not a checkpoints folder"):
        train(dataset, tmp_path / "a", tmp_path / "la", _tiny(max_steps=1), checkpoints_dir=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").exists()
    # A finished run and new training code (DVC reruns train for it): trained afresh, not re-exported.
    monkeypatch.setattr("voicemill.tts.checkpoints.code_fingerprint", lambda: "other code")
    fresh = train(dataset, tmp_path / "a", tmp_path / "la", _tiny(max_steps=4, lr=1e-4, checkpoint_every=1),
                  checkpoints_dir=ckpt)
    assert fresh["resumed_from"] == -1 and "training code changed" in caplog.text


def test_the_best_checkpoint_by_listening_is_exported_and_patience_stops_early(dataset, tmp_path, measure):
    """The decoder and text encoder at a reckless learning rate: each evaluation sounds worse than the one before."""
    from voicemill.tts.coqui import load_voice

    summary = train(dataset, tmp_path / "tts", tmp_path / "live", TrainOptions(
        init_from="joe", max_steps=12, align_steps=0, warmup_steps=0, batch_size=2, lr_adapt=1e-3, adversarial_ramp_steps=0,
        adapt_parts=("decoder", "flow", "text_encoder", "duration"), eval_every=2, eval_sentences=6, patience=2),
        checkpoints_dir=tmp_path / "ckpt")
    evals = summary["evaluations"]
    first, last = evals[0], evals[-1]
    assert measure("composite_first", first["composite"]) > measure("composite_last", last["composite"]) + 0.1
    best = max(evals, key=lambda e: e["composite"])
    assert summary["chosen_step"] == best["step"] < summary["steps"]
    assert summary["stopped_early"] and summary["steps"] < 12 and len(evals) == 3  # patience 2 after the best
    # The voice written is the best checkpoint's, which the store kept although it is not among the newest.
    saved = torch.load(tmp_path / "tts" / "model.pth", weights_only=False)
    kept = torch.load(tmp_path / "ckpt" / f"step-{best['step']:06d}" / "state.pth", weights_only=False)
    assert saved["step"] == best["step"]
    assert all(torch.equal(saved["model"][k], v) for k, v in kept["loop"]["model"].items())
    assert load_voice(tmp_path / "tts").piper["voicemill"]["steps"] == best["step"]
    # What a user watches: the scores per evaluation, the audio of each, the choice in metrics.json.
    metrics = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert metrics["best"]["step"] == best["step"] and metrics["stopped_early"] == 1
    assert _tsv_steps(tmp_path / "live", "eval/composite") == [e["step"] for e in evals]
    for e in evals:
        assert len(list((tmp_path / "ckpt" / "eval" / f"step-{e['step']:06d}").glob("*.wav"))) == 6


def test_precision_and_option_errors_name_the_param(dataset, tmp_path):
    from voicemill.tts.training import check_precision

    cpu = torch.device("cpu")
    with pytest.raises(VoicemillError, match="fp16 needs a CUDA GPU"):
        check_precision("fp16", cpu)
    with pytest.raises(VoicemillError, match="choose one of fp32, bf16, fp16"):
        check_precision("half", cpu)
    with pytest.raises(VoicemillError, match="train.patience counts evaluations"):
        train(dataset, tmp_path / "x", tmp_path / "lx", _tiny(max_steps=1, patience=2))
    with pytest.raises(VoicemillError, match="train.devices 'x'"):
        train(dataset, tmp_path / "x", tmp_path / "lx", _tiny(max_steps=1, devices="x"))


def test_bf16_and_gradient_accumulation(dataset, tmp_path):
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        with pytest.raises(VoicemillError, match="no bfloat16 instructions"):
            train(dataset, tmp_path / "x", tmp_path / "lx", _tiny(max_steps=1, precision="bf16"))
        pytest.skip("this CPU has no bfloat16: the error is what a user sees")
    s = train(dataset, tmp_path / "tts", tmp_path / "live", _tiny(max_steps=2, precision="bf16",
                                                                   grad_accumulation=2, batch_size=1))
    assert s["steps"] == 2 and len(s["ranks"][0]["clips"]) >= 3  # two micro-batches of one clip per step
    metrics = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert np.isfinite(metrics["train"]["loss_mel"])


def test_two_processes_data_parallel_on_cpu_agree(dataset, tmp_path):
    """train.devices=2 on a machine without CUDA: two gloo processes, each its own batches, the same weights."""
    from voicemill.tts.training import resolve_start

    opts = _tiny(max_steps=2, batch_size=1, devices="2")
    s = train(dataset, tmp_path / "tts", tmp_path / "live", opts)
    assert s["world"] == 2 and s["steps"] == 2
    a, b = s["ranks"]
    assert a["digest"] == b["digest"]  # the ranks' weights agree after the steps...
    assert set(a["clips"]).isdisjoint(b["clips"])  # ... though each rank trained on other clips
    torch.manual_seed(opts.seed)
    initial = resolve_start(opts).model.state_dict()
    trained = torch.load(tmp_path / "tts" / "model.pth", weights_only=False)["model"]
    assert {part_of(k) for k in initial if not torch.equal(initial[k], trained[k])} >= {"decoder", "flow"}


def test_the_align_phase_teaches_the_posterior_joes_latent_and_leaves_the_voice(dataset, measure):
    """Regressed onto the latents joe renders, the posterior hears joe's latent in joe's audio: the frozen decoder
    then renders a recording back (copy-synthesis) far closer to it than through the untrained posterior."""
    from voicemill import scoring
    from voicemill.audio import read_wav
    from voicemill.tts.align import copy_synthesis
    from voicemill.tts.phonemes import dataset_ids
    from voicemill.tts.training import GENERATOR_PARTS, Loop, Phase, load_clips, resolve_start

    torch.manual_seed(0)
    start = resolve_start(TrainOptions(init_from="joe", num_threads=2))
    model = start.model
    data = load_clips(dataset, "metadata_train.csv", dataset_ids(dataset, start.front), 22050)
    voice = {k: v.clone() for k, v in model.state_dict().items() if part_of(k) in GENERATOR_PARTS}
    clip_id = (dataset / "metadata_val.csv").read_text().split("|")[0]
    real, rate = read_wav(dataset / "wavs" / f"{clip_id}.wav")
    enc = scoring.SpeakerEncoder()

    def copy_similarity() -> float:
        return scoring.cosine(enc.embed(copy_synthesis(model, real), rate), enc.embed(real, rate))

    before = copy_similarity()
    loop = Loop(model, data, [Phase("align", 60, {"posterior": 1e-3}, adversarial=False, kind="align")], 4, 1)
    losses = [loop.run_step().losses["loss_align"] for _ in range(60)]
    loop.finish()
    assert measure("align_mse_last", np.mean(losses[-10:])) < 0.6 * measure("align_mse_first", np.mean(losses[:5]))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in voice.items())  # the voice is untouched
    after = copy_similarity()
    assert measure("copy_similarity_aligned", after) > measure("copy_similarity_untrained", before) + 0.1


def test_scales_parts_and_the_generator_average(dataset):
    """``decoder_scales`` moves only the decoder's gains and biases; ``ema_decay`` keeps an average of the
    generator that :meth:`Loop.averaged` swaps in and out, and that a checkpoint's state carries."""
    from voicemill.tts.phonemes import dataset_ids
    from voicemill.tts.training import SCALE_PARAMS, Loop, Phase, load_clips, resolve_start

    torch.manual_seed(0)
    start = resolve_start(_tiny())
    model = start.model
    data = load_clips(dataset, "metadata_train.csv", dataset_ids(dataset, start.front), 22050)
    before = {k: v.clone() for k, v in model.named_parameters()}
    phases = [Phase("adapt", 3, {"decoder_scales": 1e-2, "flow": 1e-3, "disc": 1e-3}, adversarial_ramp_steps=1)]
    loop = Loop(model, data, phases, 2, 1, lr_warmup_steps=0, ema_decay=0.9)
    for _ in range(3):
        loop.run_step()
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    decoder = {k for k in changed if part_of(k) == "decoder"}
    assert decoder and all(k.endswith(SCALE_PARAMS) for k in decoder)
    assert {part_of(k) for k in changed} == {"decoder", "flow", "disc"}
    raw = {k: v.detach().clone() for k, v in model.named_parameters()}
    assert set(loop.ema) == {k for k in raw if part_of(k) in ("text_encoder", "duration", "flow", "decoder")}
    moved = [k for k in changed if k in loop.ema]
    with loop.averaged() as averaged:
        now = dict(averaged.named_parameters())
        assert all(torch.equal(now[k], loop.ema[k]) for k in loop.ema)
        # between where it started and where it is: the average lags the weights
        assert all(not torch.equal(now[k], raw[k]) and not torch.equal(now[k], before[k]) for k in moved)
    assert all(torch.equal(v, raw[k]) for k, v in model.named_parameters())  # swapped back
    again = Loop(model, data, phases, 2, 1, lr_warmup_steps=0, ema_decay=0.9)
    again.load_state_dict(loop.state_dict())
    assert again._ema_steps == 3 and all(torch.equal(again.ema[k], loop.ema[k]) for k in loop.ema)


def test_the_prior_path_mel_loss_trains_what_the_voice_speaks_through(dataset):
    """``prior_mel_weight``: a mel loss through text prior -> reverse flow -> decoder, added to the generator's
    loss. Its gradient reaches the text encoder, the flow and the decoder, and not the posterior encoder (the
    posterior's own mel loss reaches the posterior and the decoder, and never the flow or the text encoder)."""
    from voicemill.tts import steps

    model, batch, criterion, out = _tiny_forward(dataset)
    plain = steps.generator_losses(model, batch, criterion, out, adversarial=False)
    torch.manual_seed(1)
    both = steps.generator_losses(model, batch, criterion, out, adversarial=False, prior_weight=0.5)
    prior = both["loss_prior_mel"]
    assert "loss_prior_mel" not in plain and torch.isfinite(prior) and prior > 0
    assert torch.allclose(both["loss"], plain["loss"] + prior, rtol=1e-5)
    model.zero_grad()
    prior.backward(retain_graph=True)
    reached = {part_of(n) for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {"text_encoder", "flow", "decoder"} <= reached and "posterior" not in reached
    model.zero_grad()
    plain["loss_mel"].backward()
    reached = {part_of(n) for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {"posterior", "decoder"} <= reached and not {"flow", "text_encoder"} & reached


def test_the_stft_loss_holds_the_decoder_to_linear_spectra(dataset):
    """``stft_loss_weight``: a multi-resolution STFT loss on the decoder's output, added to the generator's loss
    at that weight. It is 0 for the recording against itself and grows with the error (a sine against itself
    with a quarter of its amplitude as noise costs more than with a hundredth); its gradient reaches the
    decoder and the posterior (the segment's path), never the flow or the text encoder."""
    from voicemill.tts import steps

    t = torch.arange(8192) / 22050
    tone = (0.3 * torch.sin(2 * torch.pi * 220 * t)).reshape(1, 1, -1)
    noise = torch.randn(1, 1, 8192, generator=torch.Generator().manual_seed(0))
    assert steps.stft_loss(tone, tone) < 1e-3
    assert steps.stft_loss(tone + 0.0075 * noise, tone) < steps.stft_loss(tone + 0.075 * noise, tone)

    model, batch, criterion, out = _tiny_forward(dataset)
    plain = steps.generator_losses(model, batch, criterion, out, adversarial=False)
    both = steps.generator_losses(model, batch, criterion, out, adversarial=False, stft_weight=2.0)
    stft = both["loss_stft"]
    assert "loss_stft" not in plain and torch.isfinite(stft) and stft > 0
    assert torch.allclose(stft, 2.0 * steps.stft_loss(out["model_outputs"], out["waveform_seg"]), rtol=1e-5)
    assert torch.allclose(both["loss"], plain["loss"] + stft, rtol=1e-5)
    model.zero_grad()
    stft.backward()
    reached = {part_of(n) for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {"posterior", "decoder"} <= reached and not {"flow", "text_encoder"} & reached


def test_relative_rates_move_every_tensor_by_the_same_share_of_its_size(dataset):
    """``lr_relative``: the adapting parts learn at a share of each tensor's RMS, so Adam's first step (which
    moves a weight by about the rate whatever its gradient) changes every tensor by about that share, the
    smallest as much as the largest; ``plan`` marks the adapt phase's generator parts relative."""
    import dataclasses

    from voicemill.tts.phonemes import dataset_ids
    from voicemill.tts.training import RELATIVE_RMS_FLOOR, Loop, Phase, load_clips, plan, resolve_start

    opts = dataclasses.replace(_tiny(), adapt_parts=("decoder", "flow"), lr_relative=0.01)
    adapt = plan(opts, "piper", 100)[-1]
    assert adapt.relative == {"decoder", "flow"} and adapt.lrs["decoder"] == 0.01 and "posterior" not in adapt.relative
    assert not plan(_tiny(), "piper", 100)[-1].relative

    torch.manual_seed(0)
    start = resolve_start(_tiny())
    model = start.model
    data = load_clips(dataset, "metadata_train.csv", dataset_ids(dataset, start.front), 22050)
    before = {k: v.detach().clone() for k, v in model.named_parameters() if part_of(k) == "decoder"}
    loop = Loop(model, data, [Phase("adapt", 1, {"decoder": 0.01}, adversarial=False, relative=frozenset({"decoder"}))],
                2, 1, lr_warmup_steps=0)
    loop.run_step()
    now = dict(model.named_parameters())
    shares = {k: float((now[k].detach() - v).pow(2).mean().sqrt() / max(float(v.pow(2).mean().sqrt()),
                                                                         RELATIVE_RMS_FLOOR))
              for k, v in before.items() if v.numel() > 100}
    sizes = {k: float(v.pow(2).mean().sqrt()) for k, v in before.items() if v.numel() > 100}
    assert max(sizes.values()) > 3 * min(sizes.values())  # tensors of different sizes...
    assert all(0.003 < s < 0.015 for s in shares.values()), shares  # ...each moved by about 1 % of its own
