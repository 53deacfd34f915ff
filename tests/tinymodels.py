"""Tiny real models for the tests: HF configs of every family, random-weight transformers models, and a tiny
Llama with a real BPE tokenizer plus word-salad corpora (the stand-in for SmolLM2 + Debian text). A module of its
own, not conftest.py, so that test files in sub-packages with their own conftest can import it."""

from __future__ import annotations

TINY = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            max_position_embeddings=512, rms_norm_eps=1e-5)

# name -> (model_type, config overrides). Each exercises something the others do not.
FAMILIES = {
    "llama_mha": ("llama", dict(num_key_value_heads=4)),
    "llama_gqa": ("llama", dict(num_key_value_heads=2)),
    "llama_mqa": ("llama", dict(num_key_value_heads=1)),
    "llama3_rope_scaling": ("llama", dict(num_key_value_heads=2, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64})),
    "llama_linear_rope": ("llama", dict(num_key_value_heads=2, rope_scaling={"rope_type": "linear", "factor": 4.0})),
    "llama_tied": ("llama", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "llama_bias_head_dim": ("llama", dict(num_key_value_heads=2, head_dim=24, attention_bias=True, mlp_bias=True)),
    "mistral_sliding": ("mistral", dict(num_key_value_heads=2, sliding_window=40)),
    "qwen2_bias": ("qwen2", dict(num_key_value_heads=2)),
    "qwen2_tied": ("qwen2", dict(num_key_value_heads=1, tie_word_embeddings=True)),
    # Qwen2 with use_sliding_window: layers from max_window_layers on slide, the ones before attend fully
    "qwen2_mixed_sliding": ("qwen2", dict(num_key_value_heads=2, use_sliding_window=True, sliding_window=40,
                                          max_window_layers=1)),
    # Qwen3: per-head q/k RMSNorm, no biases, head_dim != hidden / heads (64 / 4); untied like Qwen3-8B, tied like 0.6B
    "qwen3": ("qwen3", dict(num_key_value_heads=2, head_dim=24)),
    "qwen3_tied": ("qwen3", dict(num_key_value_heads=1, head_dim=32, tie_word_embeddings=True)),
    # Gemma-2: alternating sliding/full layers, soft caps small enough to matter at these logit sizes, a
    # query_pre_attn_scalar that is not head_dim, tied head, GeGLU, (1 + w) norms and sqrt(hidden) embeddings
    "gemma2": ("gemma2", dict(num_key_value_heads=2, head_dim=16, sliding_window=40, query_pre_attn_scalar=24,
                              attn_logit_softcapping=5.0, final_logit_softcapping=10.0)),
    # Gemma-3: per-layer local/global attention with two RoPE bases (linear scaling on the global one), q/k norms
    "gemma3": ("gemma3_text", dict(num_key_value_heads=1, head_dim=32, sliding_window=40,
                                   layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                   rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0,
                                                                       "rope_theta": 100000.0},
                                                    "sliding_attention": {"rope_type": "default",
                                                                          "rope_theta": 1000.0}})),
}


def hf_model(model_type: str, seed: int = 0, std: float = 0.2, **overrides):
    """A real transformers model with random weights (std large enough that logits differ visibly)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(model_type, **{**TINY, **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model


CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
WORDS = {
    "en": "the of and to in is that for it as was with be by on not this are or from at which".split(),
    "nl": "de het een van en in is dat op te zijn met voor niet aan er maar om ook als dan bij nog uit wordt "
          "kaas fiets gracht molen sneeuw zeeën naïef café boterham gezellig".split(),
    "ru": "и в не на что он с как это по но из у за от так же вы для мы быть сказать "
          "снег город река дом книга язык".split(),
}


def build_tiny_lm(root, docs_per_lang: int = 150):
    """A tiny Llama with a real byte-level BPE tokenizer learned on English word salad (ChatML template), and
    JSONL corpora `root/{en,nl,ru}.jsonl` of word salad per language: the stand-in for SmolLM2 + Debian text in
    end-to-end tests of the quickstart and the experiments. Returns the model dir."""
    import json
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    docs = {lang: [" ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) for _ in range(docs_per_lang)]
            for lang, words in WORDS.items()}
    for lang, texts in docs.items():
        (root / f"{lang}.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts),
                                            encoding="utf-8")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(docs["en"], trainers.BpeTrainer(
        vocab_size=330, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.save(str(root / "tokenizer.json"))
    model_dir = root / "model"
    hf_model("llama", num_key_value_heads=2, vocab_size=tok.get_vocab_size(), std=0.05).save_pretrained(model_dir)
    PreTrainedTokenizerFast(tokenizer_file=str(root / "tokenizer.json"), eos_token="<|im_end|>",
                            bos_token="<|endoftext|>", pad_token="<|endoftext|>",
                            chat_template=CHATML).save_pretrained(model_dir)
    return model_dir
