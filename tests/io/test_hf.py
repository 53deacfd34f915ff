"""HF directory I/O: bit-exact round trips, sharded files, mesh placement, and clear errors on bad input."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

from jaxadapt.cli import main
from jaxadapt.io.hf import load_pretrained, save_pretrained
from jaxadapt.errors import UserError
from jaxadapt.sharding import make_mesh


def _tensors(d):
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.mark.parametrize("name", ["llama_bias_head_dim", "qwen2_tied", "mistral_sliding", "llama3_rope_scaling",
                                  "qwen3", "qwen3_tied", "gemma2", "gemma3"])
def test_round_trip_is_bit_identical(name, hf_dir, tmp_path):
    src, _ = hf_dir(name)
    out = save_pretrained(load_pretrained(src), tmp_path / "out", tokenizer=None)
    a, b = _tensors(src), _tensors(out)
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ca, cb = AutoConfig.from_pretrained(src).to_dict(), AutoConfig.from_pretrained(out).to_dict()
    for key in ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "rope_parameters", "tie_word_embeddings", "rms_norm_eps",
                "sliding_window", "attention_bias", "mlp_bias", "vocab_size", "layer_types", "query_pre_attn_scalar",
                "attn_logit_softcapping", "final_logit_softcapping", "hidden_activation"):
        assert ca.get(key) == cb.get(key), key
    assert json.loads((out / "config.json").read_text())["architectures"] == ca["architectures"]
    assert (out / "generation_config.json").exists()


def test_bfloat16_round_trip_and_sharded_save(tmp_path, make_hf_model):
    model = make_hf_model("llama", num_key_value_heads=2).to(torch.bfloat16)
    src = tmp_path / "src"
    model.save_pretrained(src)
    out = save_pretrained(load_pretrained(src, dtype="bfloat16"), tmp_path / "out", max_shard_bytes=60_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    a, b = _tensors(src), _tensors(out)
    for k in a:
        assert b[k].dtype == torch.bfloat16 and torch.equal(a[k], b[k]), k
    # transformers reads the sharded dir, and so do we.
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    original = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    ids = torch.randint(0, 300, (1, 32))
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, original(ids).logits)
    again = load_pretrained(out, dtype="bfloat16")
    assert np.array_equal(np.asarray(again.model.norm.weight[...]), np.asarray(load_pretrained(src, dtype="bfloat16").model.norm.weight[...]))


def test_load_on_a_mesh_places_each_parameter_and_keeps_logits(hf_dir):
    src, ref = hf_dir("llama_gqa")
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    model = load_pretrained(src, mesh=mesh)
    q = model.model.layers.self_attn.q_proj.kernel[...]
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (3, 32, 32)
    emb = model.model.embed_tokens.embedding[...]
    assert emb.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    ids = np.random.default_rng(0).integers(0, 300, (2, 256))
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    got = np.asarray(jax.jit(lambda m, i: m(i))(model, jnp.asarray(ids)))
    assert np.abs(got - want).max() <= 1e-4


def test_save_into_an_existing_dir_keeps_the_users_files(hf_dir, tmp_path):
    """Writing into an existing dir replaces only what the write produces, and weight files of another sharding."""
    src, _ = hf_dir("llama_mqa")
    model = load_pretrained(src)
    out = tmp_path / "out"
    save_pretrained(model, out, max_shard_bytes=20_000)
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").exists()
    (out / "notes.txt").write_text("mine")
    (out / "data").mkdir()
    save_pretrained(model, out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "data", "generation_config.json",
                                                     "model.safetensors", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert AutoModelForCausalLM.from_pretrained(out) is not None


# ------------------------------------------------------------------------------------------- bad input
def _break(kind, src):
    if kind == "missing_config":
        (src / "config.json").unlink()
        return "config.json: missing"
    if kind == "unsupported_model_type":
        cfg = json.loads((src / "config.json").read_text())
        cfg["model_type"] = "gpt2"
        (src / "config.json").write_text(json.dumps(cfg))
        return "model_type='gpt2' is not supported"
    if kind == "truncated":
        f = src / "model.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        return "truncated safetensors"
    if kind == "shape_mismatch":
        cfg = json.loads((src / "config.json").read_text())
        cfg["intermediate_size"] = 80
        (src / "config.json").write_text(json.dumps(cfg))
        return "mlp.gate_proj.weight' has shape (96, 64), expected (80, 64)"
    if kind == "missing_tensor":
        from safetensors.torch import save_file

        t = load_file(str(src / "model.safetensors"))
        del t["model.layers.1.mlp.up_proj.weight"]
        save_file(t, str(src / "model.safetensors"), metadata={"format": "pt"})
        return "missing tensors ['model.layers.1.mlp.up_proj.weight']"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing_config", "unsupported_model_type", "truncated", "shape_mismatch",
                                  "missing_tensor"])
def test_bad_checkpoint_gives_clear_error_and_no_output(kind, hf_dir, tmp_path, capsys):
    src, _ = hf_dir("llama_gqa")
    expected = _break(kind, src)
    with pytest.raises(UserError) as e:
        load_pretrained(src)
    assert expected in str(e.value) and str(src) in str(e.value)
    out = tmp_path / "converted"
    assert main(["convert", str(src), str(out)]) != 0
    err = capsys.readouterr().err
    assert expected in err and str(src) in err
    assert not out.exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".converted")] == []


def test_multimodal_gemma3_loads_its_text_tower(tmp_path, caplog):
    """A Gemma3ForConditionalGeneration checkpoint (language_model.* beside vision_tower.* and multi_modal_projector.*)
    loads as its text model with the logits transformers gives text-only input, saying the vision tower is left
    out; `convert` writes it as a text-only Gemma3ForCausalLM that transformers loads to the same logits."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from jaxadapt.io.convert import convert_any
    from tinymodels import FAMILIES, TINY

    text = {**TINY, **FAMILIES["gemma3"][1]}
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)
    cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=299,
                       boi_token_index=297, eoi_token_index=298)
    torch.manual_seed(0)
    ref = Gemma3ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.2)
    ref.save_pretrained(tmp_path / "mm")
    names = _tensors(tmp_path / "mm")
    assert any(n.startswith("vision_tower.") for n in names) and not any(n.startswith("model.layers") for n in names)
    ids = np.random.default_rng(0).integers(0, 296, (2, 288))
    with torch.no_grad():
        want = ref(input_ids=torch.tensor(ids)).logits.numpy()
    with caplog.at_level("WARNING"):
        model = load_pretrained(tmp_path / "mm")
    assert "ignores the vision tower" in caplog.text
    assert model.config.model_type == "gemma3_text" and model.config.eos_token_id == 1
    got = np.asarray(jax.jit(lambda m, x: m(x))(model, jnp.asarray(ids)))
    assert np.abs(got - want).max() <= 1e-4

    out = convert_any(tmp_path / "mm", tmp_path / "text")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Gemma3ForCausalLM"]
    assert not any("vision" in n for n in _tensors(out))
    text_model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        assert np.abs(text_model(torch.tensor(ids)).logits.numpy() - want).max() <= 1e-4
