"""Fixtures of the eval tests: a tiny random Llama saved as an HF dir with a real byte-level BPE tokenizer."""

from __future__ import annotations

import pytest
from evalhelpers import TEXTS


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, make_hf_model_module):
    """(HF dir, torch model): Llama, vocab 300, a BPE tokenizer whose BOS is <|endoftext|> (added by hand, as
    GPT-2-style tokenizers do not add it themselves)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS * 5, trainer)
    out = tmp_path_factory.mktemp("tiny")
    model = make_hf_model_module("llama", num_key_value_heads=2, std=0.1)
    model.save_pretrained(out)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                            pad_token="<|endoftext|>").save_pretrained(out)
    return out, model
