"""GGUF import: the real SmolLM2 (Q4_1) against transformers, synthetic GGUFs of each family, SentencePiece
vocabularies against sentencepiece itself, and bad files."""

import json

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from jaxadapt.assets import mistral_spm, smollm2_dir, smollm2_gguf
from jaxadapt.cli import main
from jaxadapt.config import ModelConfig
from jaxadapt.io.gguf import convert_gguf, unpermute_rope_rows
from jaxadapt.io.hf import load_pretrained, read_config

# Text of each kind the tokenizer must handle. Whitespace directly before a digit is left out: see
# test_digits_split_like_the_real_smollm2_tokenizer for why transformers' GGUF tokenizer is no reference there.
MIXED = [
    "The capital of the Netherlands is Amsterdam. It's 12:30 and I'm sure they'll come!",
    "De hoofdstad van Nederland is Amsterdam; het weer is   prachtig\n\n\tvandaag, zeiden ze.",
    "Столица России — Москва. Привет, мир! Ёлка, щи, объём.",
    "In 2024, 3.14159 * 1,000,000 = 3141590 ... 12345678 and v2.0-rc1 (x86_64)",
    "emoji 😀👍🏽🇳🇱 ❤️ and   spaces    at the end  \n\n\n",
    "<|im_start|>user\nHoi<|im_end|>\n<|endoftext|>",
    "def f(x):\n    return x ** 2  # tabs\tand\r\nCRLF",
]


# ------------------------------------------------------------------------------------------- real SmolLM2
@pytest.fixture(scope="session")
def smollm2():
    return smollm2_dir()


@pytest.fixture(scope="session")
def gguf_tokenizer():
    """transformers' own reading of the GGUF's tokenizer: the reference for ours."""
    f = smollm2_gguf()
    return AutoTokenizer.from_pretrained(str(f.parent), gguf_file=f.name)


@pytest.fixture(scope="session")
def prose_ids(smollm2):
    """256 tokens of real English prose that ships with every CPython (the language reference)."""
    from pydoc_data.topics import topics

    ids = AutoTokenizer.from_pretrained(str(smollm2))(topics["exceptions"])["input_ids"]
    assert len(ids) >= 256
    return ids[:256]


def test_smollm2_config_is_read_from_metadata(smollm2):
    cfg = read_config(smollm2)
    assert cfg == ModelConfig(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                              num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                              rms_norm_eps=1e-5, max_position_embeddings=8192, rope_theta=100000.0,
                              tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)


def test_smollm2_logits_match_transformers_and_the_model_is_sane(smollm2, prose_ids):
    # eager attention: the plain float32 reference. torch's fused CPU sdpa rounds differently: with torch 2.13 /
    # transformers 5.25 ours is 7.7e-5 from eager on these 256 positions but 1.2e-4 from sdpa.
    torch_model = AutoModelForCausalLM.from_pretrained(str(smollm2), dtype=torch.float32,
                                                       attn_implementation="eager").eval()
    with torch.no_grad():
        want = torch_model(torch.tensor([prose_ids])).logits[0].numpy()
    got = np.asarray(load_pretrained(smollm2)(jnp.asarray([prose_ids]))[0])
    assert np.abs(got - want).max() <= 1e-4
    assert np.array_equal(got.argmax(-1), want.argmax(-1))
    # Independent of any reference converter: the model must actually predict English. Mean NLL is ~2.6 nats;
    # Q/K left in llama.cpp's row order gives ~4.9.
    logp = np.asarray(jax.nn.log_softmax(got))
    assert -logp[np.arange(255), prose_ids[1:]].mean() < 3.5


@pytest.mark.slow
def test_smollm2_matches_transformers_reading_the_gguf_itself(smollm2, prose_ids):
    f = smollm2_gguf()
    ref = AutoModelForCausalLM.from_pretrained(str(f.parent), gguf_file=f.name, dtype=torch.float32).eval()
    ours = AutoModelForCausalLM.from_pretrained(str(smollm2), dtype=torch.float32).eval()
    ids = torch.tensor([prose_ids[:64]])
    with torch.no_grad():
        assert (ref(ids).logits - ours(ids).logits).abs().max() <= 1e-4


def test_tokenizer_matches_transformers_gguf_tokenizer(smollm2, gguf_tokenizer):
    ours = AutoTokenizer.from_pretrained(str(smollm2))
    for text in MIXED:
        ids = ours(text)["input_ids"]
        assert ids == gguf_tokenizer(text)["input_ids"], text
        assert ours.decode(ids) == text
    assert (ours.bos_token, ours.eos_token, ours.pad_token, ours.unk_token) == (
        "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    assert ours.model_max_length == 8192 and len(ours) == 49152
    assert ours("<|im_end|>")["input_ids"] == [2]  # special tokens stay whole; no BOS is added


def test_digits_split_like_the_real_smollm2_tokenizer(smollm2):
    """SmolLM2's tokenizer.json (and llama.cpp's 'smollm' pre-tokenizer) isolates every digit *before* the GPT-2
    regex runs, so a whitespace run before a number stays one token. transformers' GGUF loader skips that step."""
    ours = AutoTokenizer.from_pretrained(str(smollm2))
    assert ours.tokenize("a  2024\t\t7") == ["a", "ĠĠ", "2", "0", "2", "4", "ĉĉ", "7"]


def test_chat_template_renders(smollm2):
    ours = AutoTokenizer.from_pretrained(str(smollm2))
    text = ours.apply_chat_template([{"role": "user", "content": "Hoi"}], tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    "<|im_end|>\n<|im_start|>user\nHoi<|im_end|>\n<|im_start|>assistant\n")


# ------------------------------------------------------------------------------------------- Q/K row order
def _rope_hf(v, pos, theta=10000.0):
    """HF rotate-half RoPE of one head vector."""
    d = v.shape[0]
    ang = pos * theta ** (-np.arange(0, d, 2) / d)
    cos, sin = np.tile(np.cos(ang), 2), np.tile(np.sin(ang), 2)
    return v * cos + np.concatenate([-v[d // 2:], v[: d // 2]]) * sin


def _rope_ggml(v, pos, theta=10000.0):
    """ggml's (non-NeoX) RoPE, as llama.cpp runs Llama: rotates adjacent pairs (2j, 2j+1) by angle j."""
    d = v.shape[0]
    ang = pos * theta ** (-np.arange(0, d, 2) / d)
    x0, x1 = v[0::2], v[1::2]
    out = np.empty_like(v)
    out[0::2], out[1::2] = x0 * np.cos(ang) - x1 * np.sin(ang), x0 * np.sin(ang) + x1 * np.cos(ang)
    return out


@pytest.mark.parametrize("n_head", [1, 3])
def test_unpermuted_rows_under_hf_rope_equal_gguf_rows_under_ggml_rope(n_head):
    d, rng = 8, np.random.default_rng(n_head)
    w_gguf, bias_gguf, x = rng.normal(size=(n_head * d, 5)), rng.normal(size=n_head * d), rng.normal(size=5)
    w_hf, bias_hf = unpermute_rope_rows(w_gguf, n_head), unpermute_rope_rows(bias_gguf, n_head)
    for pos in (0, 3, 17):
        ggml = np.concatenate([_rope_ggml(h, pos) for h in np.split(w_gguf @ x + bias_gguf, n_head)])
        hf = np.concatenate([_rope_hf(h, pos) for h in np.split(w_hf @ x + bias_hf, n_head)])
        np.testing.assert_allclose(hf, unpermute_rope_rows(ggml, n_head), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------- synthetic GGUFs
GGUF_BLOCK_NAMES = {  # llama.cpp's names for one decoder layer's tensors
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
}
GEMMA_BLOCK_NAMES = {**GGUF_BLOCK_NAMES, "post_attention_layernorm": "post_attention_norm",
                     "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm"}


def _llama_cpp_permute(w, n_head):
    """What llama.cpp's converter does to Llama's q/k rows (convert_hf_to_gguf.py, LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, model, arch=None, overrides=None, vocab=None):
    """A float32 GGUF of a transformers model as llama.cpp would write it, with a 300-token byte-level vocab, or
    the tokenizer metadata `vocab(writer)` writes.

    `overrides` maps a GGUF tensor name to (raw bytes array, quantization type)."""
    c = model.config
    arch = arch or {"gemma3_text": "gemma3"}.get(c.model_type, c.model_type)
    gemma = arch in ("gemma2", "gemma3")
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    head_dim = getattr(c, "head_dim", None)
    if head_dim and (gemma or head_dim != c.hidden_size // c.num_attention_heads):  # as llama.cpp writes head_dim
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    rope = c.rope_parameters.get("full_attention", c.rope_parameters)
    w.add_rope_freq_base(rope["rope_theta"])
    if rope.get("rope_type") == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    if gemma:  # what llama.cpp's Gemma2Model / Gemma3Model write (newer converters: the layer pattern too)
        w.add_sliding_window(c.sliding_window)
        if arch == "gemma3":
            w.add_sliding_window_pattern([t == "sliding_attention" for t in c.layer_types])
        if c.attn_logit_softcapping is not None:
            w.add_attn_logit_softcapping(c.attn_logit_softcapping)
            w.add_final_logit_softcapping(c.final_logit_softcapping)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    if vocab is not None:
        vocab(w)
    else:
        pairs = [(a, b) for a in "etaoinsh" for b in "etaoinsh"][: c.vocab_size - 259]
        tokens = ["<|endoftext|>", "<s>", "</s>"] + list(bytes_to_unicode().values()) + [a + b for a, b in pairs]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(tokens)
        w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
        w.add_token_merges([f"{a} {b}" for a, b in pairs])
        if c.bos_token_id is not None:
            w.add_bos_token_id(c.bos_token_id)
            w.add_eos_token_id(c.eos_token_id)
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        arr = t.numpy().astype(np.float32)
        if name.startswith("model.layers."):
            _, _, i, rest = name.split(".", 3)
            module, kind = rest.rsplit(".", 1)
            g = f"blk.{i}.{(GEMMA_BLOCK_NAMES if gemma else GGUF_BLOCK_NAMES)[module]}.{kind}"
            if arch == "llama" and module in ("self_attn.q_proj", "self_attn.k_proj"):
                heads = c.num_attention_heads if module == "self_attn.q_proj" else c.num_key_value_heads
                arr = _llama_cpp_permute(arr, heads)
        else:
            g = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                 "lm_head.weight": "output.weight"}[name]
        if gemma and name.endswith("norm.weight"):
            arr = arr + 1  # llama.cpp stores Gemma's zero-centred norm weights plus one
        if g in (overrides or {}):
            raw, qtype = overrides[g]
            w.add_tensor(g, raw, raw_dtype=qtype)
        else:
            w.add_tensor(g, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# What a GGUF can say of a Gemma: llama.cpp derives the attention scale (head_dim below 27B), Gemma-2's layer pattern
# and Gemma-3's local RoPE base from the architecture instead of storing them.
GGUF_GEMMA = {"gemma2": dict(query_pre_attn_scalar=16),
              "gemma3": dict(query_pre_attn_scalar=32, rope_parameters={
                  "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100000.0},
                  "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})}


@pytest.mark.parametrize("name", ["llama_gqa", "qwen2_tied", "qwen3", "gemma2", "gemma3"])
def test_synthetic_gguf_converts_to_the_original_model(name, hf_dir, tmp_path):
    src, model = hf_dir(name, **GGUF_GEMMA.get(name, {}))
    out = convert_gguf(write_gguf(tmp_path / "m.gguf", model), tmp_path / "out")
    assert read_config(out) == read_config(src)
    got = load_file(str(out / "model.safetensors"))
    want = {k: v.numpy() for k, v in model.state_dict().items()
            if not (k == "lm_head.weight" and model.config.tie_word_embeddings)}
    assert sorted(got) == sorted(want)
    for k in want:
        if name.startswith("gemma") and k.endswith("norm.weight"):  # stored as 1 + w: float32 rounding of 1 + w
            assert np.abs(got[k] - want[k]).max() <= 1e-7, k
        else:
            assert np.array_equal(got[k], want[k]), k
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.decode(tok("this is a test </s>")["input_ids"]) == "this is a test </s>"
    assert tok.tokenize("tea") == ["t", "ea"]  # merges apply by rank ("e a" before "t e")


# ------------------------------------------------------------------------------------------- SentencePiece
def _trained_spm(texts):
    """A 3,000-token SentencePiece BPE trained here as Gemma's is set up: no dummy '▁' prefix, byte fallback,
    digits split, no normalisation."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=model, model_type="bpe",
                                   vocab_size=3000, byte_fallback=True, add_dummy_prefix=False, split_digits=True,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   character_coverage=0.9995, max_sentence_length=20000, num_threads=1,
                                   minloglevel=2)
    return model.getvalue()


def _spm_vocab(sp, add_space_prefix: bool):
    """What llama.cpp's converter (convert_hf_to_gguf.py, _set_vocab_sentencepiece) writes of a SentencePiece model."""
    def kind(i):
        return (2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i) else 6 if sp.is_byte(i)
                else 1)

    def write(w):
        n = sp.get_piece_size()
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list([sp.id_to_piece(i) for i in range(n)])
        w.add_token_scores([sp.get_score(i) for i in range(n)])
        w.add_token_types([kind(i) for i in range(n)])
        w.add_bos_token_id(sp.bos_id())
        w.add_eos_token_id(sp.eos_id())
        w.add_unk_token_id(sp.unk_id())
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        w.add_add_space_prefix(add_space_prefix)
    return write


@pytest.mark.parametrize("which", ["mistral", "gemma-style"])
def test_sentencepiece_gguf_tokenizes_like_sentencepiece(which, hf_dir, tmp_path):
    """A GGUF with a SentencePiece vocabulary (tokenizer.ggml.model 'llama': Llama-2, Mistral, Gemma) imports as an
    HF tokenizer that gives SentencePiece's own ids, BOS first, on real English, Dutch, Russian and German help text
    and on MIXED (byte fallback for emoji, runs of spaces, leading spaces, newlines and tabs), and decodes them back:
    Mistral-7B's real model (a '▁' prefix) and one trained here without the prefix, as Gemma's."""
    import sentencepiece as spm

    from jaxadapt.data.debian import corpus

    docs = {lang: [json.loads(line)["text"][:2000] for line in corpus(lang).read_text().splitlines()[:60]]
            for lang in ("en", "nl", "ru", "de")}
    if which == "mistral":
        sp, prefix = spm.SentencePieceProcessor(model_file=str(mistral_spm())), True
    else:
        sp, prefix = spm.SentencePieceProcessor(model_proto=_trained_spm(docs["nl"] + docs["en"])), False
    texts = [t for t in MIXED if "<|" not in t] + [" leading space", " ", "", "a" * 40] + sum(docs.values(), [])
    _, model = hf_dir("llama_gqa", vocab_size=sp.get_piece_size())
    out = convert_gguf(write_gguf(tmp_path / "m.gguf", model, vocab=_spm_vocab(sp, prefix)), tmp_path / "out")
    tok = AutoTokenizer.from_pretrained(str(out))
    wrong = [t[:40] for t in texts if tok(t)["input_ids"] != [sp.bos_id()] + sp.encode(t)]
    assert not wrong, f"{len(wrong)} of {len(texts)} texts tokenized otherwise, e.g. {wrong[:3]}"
    decoded = [tok.decode(tok(t)["input_ids"], skip_special_tokens=True) for t in texts]
    assert [d for d, t in zip(decoded, texts) if d != sp.decode(sp.encode(t))] == []
    assert tok.convert_ids_to_tokens(sp.bos_id()) == tok.bos_token and tok.eos_token == sp.id_to_piece(sp.eos_id())


def test_bfloat16_output(hf_dir, tmp_path):
    _, model = hf_dir("llama_gqa")
    out = convert_gguf(write_gguf(tmp_path / "m.gguf", model), tmp_path / "out", dtype="bfloat16")
    assert read_config(out).to_hf()["model_type"] == "llama"
    assert load_pretrained(out, dtype="bfloat16").model.norm.weight[...].dtype == jnp.bfloat16


# ------------------------------------------------------------------------------------------- bad input
def _bad(kind, tmp_path, model):
    f = tmp_path / "bad.gguf"
    if kind == "missing":
        return f, "no such GGUF file"
    if kind == "not_gguf":
        f.write_text("hello, I am not a model\n")
        return f, "not a readable GGUF file"
    if kind == "truncated":
        write_gguf(f, model)
        f.write_bytes(f.read_bytes()[: f.stat().st_size * 2 // 3])
        return f, "not a readable GGUF file"
    if kind == "unsupported_quant":
        rows, cols = model.config.intermediate_size, model.config.hidden_size
        qtype = gguf.GGMLQuantizationType.Q8_1  # llama.cpp's internal activation format: no dequantizer
        block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
        raw = np.zeros((rows, cols // block * nbytes), np.uint8)
        write_gguf(f, model, overrides={"blk.1.ffn_up.weight": (raw, qtype)})
        return f, "tensor 'blk.1.ffn_up.weight' has quantization type Q8_1"
    if kind == "unsupported_arch":
        write_gguf(f, model, arch="gemma")
        return f, "general.architecture='gemma' is not supported"
    if kind == "wordpiece_vocab":
        def bert(w):
            w.add_tokenizer_model("bert")
            w.add_token_list([f"t{i}" for i in range(model.config.vocab_size)])
        write_gguf(f, model, vocab=bert)
        return f, "tokenizer.ggml.model='bert' is not supported; expected one of ('gpt2', 'llama')"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "not_gguf", "truncated", "unsupported_quant", "unsupported_arch",
                                  "wordpiece_vocab"])
def test_bad_gguf_gives_clear_error_and_no_output(kind, hf_dir, tmp_path, capsys):
    _, model = hf_dir("llama_gqa")
    f, expected = _bad(kind, tmp_path, model)
    out = tmp_path / "converted"
    assert main(["convert", str(f), str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(f) in err
    assert not out.exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".converted")] == []


@pytest.mark.parametrize("change", ["architecture", "tensor_name"])
def test_a_gguf_package_that_does_not_know_the_architecture_is_a_clear_error(change, hf_dir, tmp_path, monkeypatch,
                                                                            capsys):
    """An older gguf package (no qwen3, or other tensor names than jaxadapt.params') fails before writing."""
    _, model = hf_dir("qwen3")
    f = write_gguf(tmp_path / "m.gguf", model)
    if change == "architecture":
        monkeypatch.setattr(gguf, "MODEL_ARCH_NAMES", {k: v for k, v in gguf.MODEL_ARCH_NAMES.items() if v != "qwen3"})
        expected = "the installed gguf package (gguf "
        expected2 = "does not know the architecture 'qwen3'; upgrade it"
    else:
        names = dict(gguf.TENSOR_NAMES)
        names[gguf.MODEL_TENSOR.ATTN_Q_NORM] = "blk.{bid}.attn_q_normalised"
        monkeypatch.setattr(gguf, "TENSOR_NAMES", names)
        expected, expected2 = "does not name the qwen3 tensors ['blk.{i}.attn_q_norm.weight']", "upgrade it"
    out = tmp_path / "converted"
    assert main(["convert", str(f), str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and expected2 in err and str(f) in err
    assert not out.exists()


def test_convert_smollm2_by_name_writes_the_cached_conversion(smollm2, tmp_path):
    """`jaxadapt convert smollm2 DIR` (the experiments' first stage) writes the same weights as the cache."""
    from jaxadapt.cli import main
    from jaxadapt.io.safetensors import open_checkpoint

    assert main(["convert", "smollm2", str(tmp_path / "out")]) == 0
    ours, cached = open_checkpoint(tmp_path / "out"), open_checkpoint(smollm2)
    assert ours.keys() == cached.keys()
    assert all(np.array_equal(ours[k][k], cached[k][k]) for k in ours)
