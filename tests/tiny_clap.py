"""Build a tiny, randomly initialised CLAP model (model, tokenizer, feature extractor).

No CLAP weights can be downloaded here, so the CLAP code path is tested with
this model: it has the real architecture and file layout of a
``save_pretrained`` directory, only small and untrained.
"""

from pathlib import Path


def build_tiny_clap(out_dir: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<s>", "</s>"] + "the a of and to in voice speech noise music dog cat".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>")
    config = ClapConfig(
        text_config=dict(vocab_size=len(words) + 2, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=64, pad_token_id=0, bos_token_id=2,
                         eos_token_id=3),
        # HTSAT needs spec_size * (spec_size // num_mel_bins) >= the 1001 frames of a 10 s window.
        audio_config=dict(depths=[1, 1], num_attention_heads=[2, 2], hidden_size=32, patch_embeds_hidden_size=16,
                          window_size=8, spec_size=256, num_mel_bins=64, patch_stride=[4, 4], patch_size=4,
                          projection_hidden_size=32),
        projection_dim=16,
    )
    torch.manual_seed(0)
    ClapModel(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    ClapFeatureExtractor(feature_size=64, truncation="rand_trunc").save_pretrained(out_dir)
    return Path(out_dir)
