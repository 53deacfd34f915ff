"""Fixtures of the training tests: a tiny real model + tokenizer + corpus + run config on disk."""

import json
import random

import pytest
import yaml

WORDS = ("de het een van en in is dat op te zijn met voor niet aan er maar om ook als dan bij nog uit wordt "
         "kaas fiets gracht molen sneeuw zeeën naïef café").split()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_hf_model_module):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("run")
    rng = random.Random(0)
    docs = [f"{i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60))) for i in range(400)]
    (root / "corpus.jsonl").write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                      show_progress=False))
    tok.save(str(root / "tokenizer.json"))
    model_dir = root / "model"
    make_hf_model_module("llama", num_key_value_heads=2, vocab_size=512, std=0.05).save_pretrained(model_dir)
    PreTrainedTokenizerFast(tokenizer_file=str(root / "tokenizer.json"), eos_token="<|endoftext|>",
                            bos_token="<|endoftext|>").save_pretrained(model_dir)
    cfg = {
        "runs_root": str(root / "runs"),
        "model": {"path": str(model_dir)},
        "train": {"trainable": "lora+embeddings", "steps": 12, "batch_size": 8, "seq_len": 32, "log_every": 1},
        "optim": {"learning_rate": 0.01, "warmup_steps": 2},
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.1},
        "checkpoint": {"every": 3, "keep": 2},
        "logging": {"tensorboard": True, "cpu_peak_flops": 1e11},
        "data": {"sources": [{"name": "nl", "paths": [str(root / "corpus.jsonl")]}], "validation_fraction": 0.05,
                 "prefetch": 0},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(cfg))
    return root
