"""Learned Embedding Propagation: the synthetic check of METHODS.md §4, and end to end on tiny real models
(a base, an 'instruct' model tuned from it, a donor with an extended vocabulary and trained new rows)."""

import json
import random

import numpy as np
import pytest
import safetensors.torch
import scipy.sparse as sp
import torch
from safetensors.numpy import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from jaxadapt.cli import main
from jaxadapt.errors import UserError
from jaxadapt.lep.maps import estimate, least_squares
from jaxadapt.lep.propagate import propagate

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
EN = "the of and to in is that for it as was with be by on not this are or from at which".split()
NL = "de het een van en in is dat op te zijn met voor niet aan er maar om ook als dan bij nog uit wordt " \
     "kaas fiets gracht molen sneeuw zeeën naïef café boterham gezellig".split()


class _Averaging:
    """A random averaging transform with Transform.apply's interface (identity on the old rows)."""

    def __init__(self, n_old, n_new, seed=0):
        rng = np.random.default_rng(seed)
        rows, cols = list(range(n_old)), list(range(n_old))
        vals = [1.0] * n_old
        for r in range(n_old, n_new):
            picks = rng.choice(n_old, size=rng.integers(2, 5), replace=False)
            rows += [r] * len(picks)
            cols += list(picks)
            vals += [1.0 / len(picks)] * len(picks)
        self.m = sp.csr_array((vals, (rows, cols)), shape=(n_new, n_old))

    def apply(self, e):
        return self.m @ e


def test_synthetic_conversion_and_overlap_recover_the_map_far_better_than_swap():
    rng = np.random.default_rng(0)
    n_old, n_new, d = 2000, 2600, 64
    e_base = rng.normal(size=(n_old, d))
    true = np.eye(d) + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)
    e_inst = e_base @ true + 0.05 * rng.normal(size=(n_old, d))
    t = _Averaging(n_old, n_new)
    e_donor = t.apply(e_base) + 0.1 * rng.normal(size=(n_new, d))  # new rows trained a little
    want = e_donor @ true
    err = {}
    for method in ("swap", "overlap", "conversion"):
        fit = estimate(method, e_base, e_inst, common=np.arange(n_old), transform=t)
        err[method] = np.linalg.norm(e_donor @ fit.matrix - want) / np.linalg.norm(want)
    assert err["swap"] > 0.2
    assert err["overlap"] < 0.02 and err["conversion"] < 0.02
    assert err["conversion"] < err["swap"] / 20 and err["overlap"] < err["swap"] / 20


def test_least_squares_is_exact_on_a_linear_relation():
    rng = np.random.default_rng(1)
    x, d = rng.normal(size=(50, 8)), rng.normal(size=(8, 8))
    fit = least_squares(x, x @ d)
    assert np.allclose(fit.matrix, d) and fit.residual < 1e-10


@pytest.mark.parametrize("rank", [16, 8])
def test_least_squares_equals_lstsq_over_chunks_and_without_full_rank(rank):
    """Several row chunks of float32 rows; a rank-8 x (half its columns combinations of the others) has many
    solutions, and the normal equations' pseudo-inverse picks lstsq's, the one of least norm."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20000, rank))
    x = np.concatenate([x, x @ rng.normal(size=(rank, 16 - rank))], axis=1) if rank < 16 else x
    y = rng.normal(size=(20000, 16)).astype(np.float32)
    want, *_ = np.linalg.lstsq(x, y.astype(np.float64), rcond=None)
    fit = least_squares(x, y)
    assert np.allclose(fit.matrix, want, atol=1e-6)
    assert abs(fit.residual - np.linalg.norm(x @ want - y) / np.linalg.norm(y.astype(np.float64))) < 1e-9


# ----------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def trio(tmp_path_factory, make_hf_model_module):
    """(base, instruct, donor) dirs of a Llama (make_trio)."""
    return make_trio(tmp_path_factory.mktemp("lep"),
                     lambda vocab: make_hf_model_module("llama", num_key_value_heads=2, vocab_size=vocab, std=0.1))


def make_trio(root, make_base):
    """(base, instruct, donor) dirs, the base being make_base(vocabulary size). instruct = base with E·D, O·D_out and
    a perturbed body; donor = base with an extended vocabulary (mean init, old rows bit-exact) whose new rows were
    then 'trained' (perturbed). A tied base gives a tied instruct model (its head is E·D)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(0)
    en = [" ".join(rng.choice(EN) for _ in range(30)) for _ in range(200)]
    nl = [" ".join(rng.choice(NL) for _ in range(30)) for _ in range(300)]
    (root / "nl.txt").write_text("\n\n".join(nl))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(en, trainers.BpeTrainer(
        vocab_size=330, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.save(str(root / "tokenizer.json"))
    n_vocab = tok.get_vocab_size()
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(root / "tokenizer.json"), eos_token="<|endoftext|>",
                                     bos_token="<|endoftext|>", pad_token="<|endoftext|>")

    base = root / "base"
    make_base(n_vocab).save_pretrained(base)
    hf_tok.save_pretrained(base)

    inst = root / "instruct"
    w = load_file(str(base / "model.safetensors"))
    g = np.random.default_rng(3)
    d_in = (np.eye(64) + 0.2 * g.normal(size=(64, 64)) / 8).astype(np.float32)
    d_out = (np.eye(64) + 0.2 * g.normal(size=(64, 64)) / 8).astype(np.float32)
    for k in w:
        if k == "model.embed_tokens.weight":
            w[k] = w[k] @ d_in
        elif k == "lm_head.weight":
            w[k] = w[k] @ d_out
        elif "layers" in k:
            w[k] = w[k] + 0.01 * g.normal(size=w[k].shape).astype(np.float32)
    inst.mkdir()
    save_file(w, str(inst / "model.safetensors"), metadata={"format": "pt"})
    (inst / "config.json").write_text((base / "config.json").read_text())
    hf_tok.chat_template = CHATML
    hf_tok.save_pretrained(inst)

    assert main(["tokenizer", "extend", "--base", str(base), "--corpus", str(root / "nl.txt"), "--add", "60",
                 "--out", str(root / "nl_tok")]) == 0
    donor = root / "donor"
    assert main(["vocab", "adapt", "--model", str(base), "--tokenizer", str(root / "nl_tok"), "--init", "mean",
                 "--out", str(donor)]) == 0
    dw = load_file(str(donor / "model.safetensors"))
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        if k in dw:
            dw[k][n_vocab:] += 0.05 * g.normal(size=dw[k][n_vocab:].shape).astype(np.float32)
    save_file(dw, str(donor / "model.safetensors"), metadata={"format": "pt"})
    return base, inst, donor, n_vocab


def _logits(model_dir, ids):
    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(model_dir).eval()(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("method", ["swap", "overlap", "conversion"])
def test_each_method_gives_an_instruct_model_with_the_new_vocabulary(trio, tmp_path, method):
    base, inst, donor, n_vocab = trio
    out = tmp_path / method
    assert main(["propagate", "--base", str(base), "--donor", str(donor), "--target", str(inst),
                 "--method", method, "--out", str(out)]) == 0
    report = json.loads((out / "propagation.json").read_text())
    assert set(report) >= {"embed_tokens", "lm_head", "method"}

    tok = AutoTokenizer.from_pretrained(out)
    donor_tok = AutoTokenizer.from_pretrained(donor)
    assert len(tok) == len(donor_tok) and tok.get_vocab() == donor_tok.get_vocab()
    chat = tok.apply_chat_template([{"role": "user", "content": "hallo"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhallo<|im_end|>\n<|im_start|>assistant\n"

    text = " ".join(EN[i % len(EN)] for i in range(60))
    old_ids = AutoTokenizer.from_pretrained(inst)(text)["input_ids"]
    assert max(old_ids) < n_vocab
    diff = np.abs(_logits(out, old_ids)[:, :n_vocab] - _logits(inst, old_ids)).max()
    if method == "swap":
        assert diff > 0.05  # the base's rows, not the instruct model's
    else:
        assert diff < 1e-3, diff  # E_inst = E_base·D exactly here, and the donor's old rows are the base's
        assert report["embed_tokens"]["residual"] < 1e-5 and report["lm_head"]["residual"] < 1e-5
    nl_ids = tok("gezellig boterham bij de gracht")["input_ids"]
    assert max(nl_ids) >= n_vocab  # the new tokens are used, and the model runs on them
    assert np.isfinite(_logits(out, nl_ids)).all()


@pytest.mark.parametrize("family", ["qwen3", "gemma2", "gemma3"])
def test_conversion_propagates_into_the_newer_families(family, tmp_path, make_hf_model):
    """Qwen3 (untied, q/k norms) and Gemma-2/3 (tied: one matrix is both E and O, scaled by sqrt(hidden) on input):
    the converted instruct model keeps the instruct model's logits on old tokens and runs on the new ones."""
    from tinymodels import FAMILIES

    model_type, overrides = FAMILIES[family]
    base, inst, donor, n_vocab = make_trio(
        tmp_path, lambda vocab: make_hf_model(model_type, **{**overrides, "std": 0.1, "vocab_size": vocab}))
    out = tmp_path / "out"
    assert main(["propagate", "--base", str(base), "--donor", str(donor), "--target", str(inst),
                 "--method", "conversion", "--out", str(out)]) == 0
    text = " ".join(EN[i % len(EN)] for i in range(60))
    old_ids = AutoTokenizer.from_pretrained(inst)(text)["input_ids"]
    assert np.abs(_logits(out, old_ids)[:, :n_vocab] - _logits(inst, old_ids)).max() < 1e-3
    nl_ids = AutoTokenizer.from_pretrained(out)("gezellig boterham bij de gracht")["input_ids"]
    assert max(nl_ids) >= n_vocab and np.isfinite(_logits(out, nl_ids)).all()


def test_bad_inputs_name_the_models_and_write_nothing(trio, tmp_path, make_hf_model, capsys):
    base, inst, donor, n_vocab = trio
    other = tmp_path / "wider"
    make_hf_model("llama", num_key_value_heads=2, vocab_size=n_vocab, hidden_size=96).save_pretrained(other)
    AutoTokenizer.from_pretrained(base).save_pretrained(other)
    replaced_tok, replaced = tmp_path / "replaced_tok", tmp_path / "replaced"
    assert main(["tokenizer", "extend", "--base", str(base), "--corpus", str(base.parent / "nl.txt"), "--replace",
                 "--vocab-size", "300", "--out", str(replaced_tok)]) == 0
    assert main(["vocab", "adapt", "--model", str(base), "--tokenizer", str(replaced_tok), "--init", "mean",
                 "--out", str(replaced)]) == 0
    cases = [
        (dict(donor=other), "hidden_size (96 vs 64)"),
        (dict(target=donor), "have different vocabularies"),
        (dict(donor=inst, base=donor), "different vocabularies"),
        (dict(donor=replaced), "vocabulary does not start with the base"),
    ]
    for change, message in cases:
        args = {**dict(base=base, donor=donor, target=inst), **change}
        out = tmp_path / "never"
        with pytest.raises(UserError, match=None) as e:
            propagate(args["base"], args["donor"], args["target"], "conversion", out)
        assert message in str(e.value), str(e.value)
        assert not out.exists()
    assert main(["propagate", "--base", str(base), "--donor", str(other), "--target", str(inst),
                 "--out", str(tmp_path / "never")]) == 2
    assert str(other) in capsys.readouterr().err
    # The same replaced-vocabulary donor is fine once declared.
    out = propagate(base, replaced, inst, "conversion", tmp_path / "ok", vocab="replaced")
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(replaced_tok).get_vocab()


def test_a_lora_run_as_donor_propagates_its_embeddings_and_merges_its_adapters(trio, tmp_path):
    from jaxadapt.config.loader import load_config
    from jaxadapt.io.hf import load_pretrained
    from jaxadapt.train.config import RunConfig
    from jaxadapt.train.export import restore_model
    from jaxadapt.train.loop import train

    base, inst, donor, n_vocab = trio
    corpus = tmp_path / "nl.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in (base.parent / "nl.txt").read_text().split("\n\n")))
    cfg = load_config(RunConfig, None, [
        f"runs_root={tmp_path}", "name=donor_run", f"model.path={donor}", "train.trainable=lora+embeddings",
        "train.steps=3", "train.batch_size=8", "train.seq_len=32", "lora.rank=4", "lora.alpha=8",
        "optim.learning_rate=0.05", "logging.tensorboard=false", "logging.cpu_peak_flops=1e11",
        f"data.sources=[{{name: nl, paths: [{corpus}]}}]", "data.validation_fraction=0"])
    run = train(cfg)
    out = propagate(base, run, inst, "conversion", tmp_path / "lep", lora_scale=0.5)
    report = json.loads((out / "propagation.json").read_text())
    assert sorted(report["lora_merged"]) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                    "down_proj"])
    trained, _, _, _ = restore_model(run)
    lin = trained.model.layers.self_attn.q_proj
    delta = np.einsum("lir,lro->lio", np.asarray(lin.lora_a[...]), np.asarray(lin.lora_b[...]))
    delta *= np.asarray(lin.lora_scale[...])[:, None, None] * 0.5
    assert np.abs(delta).max() > 1e-4  # the adapters did train
    want = np.asarray(load_pretrained(inst).model.layers.self_attn.q_proj.kernel[...]) + delta
    got = np.asarray(load_pretrained(out).model.layers.self_attn.q_proj.kernel[...])
    np.testing.assert_allclose(got, want, atol=1e-6)
    # The propagated rows come from the run's trained embeddings, not the donor dir's.
    run_rows = np.asarray(trained.model.embed_tokens.embedding[...])[n_vocab:n_vocab + 60]
    dir_rows = np.asarray(load_pretrained(donor).model.embed_tokens.embedding[...])[n_vocab:n_vocab + 60]
    assert not np.allclose(run_rows, dir_rows)
    # One of the run's checkpoints is a donor too; --dtype writes the same tensors, rounded.
    half = tmp_path / "lep-bf16"
    assert main(["propagate", "--base", str(base), "--donor", str(run / "checkpoints" / "3"), "--target", str(inst),
                 "--lora-scale", "0.5", "--dtype", "bfloat16", "--out", str(half)]) == 0
    f32, bf16 = (safetensors.torch.load_file(str(d / "model.safetensors")) for d in (out, half))
    assert sorted(f32) == sorted(bf16)
    assert all(bf16[k].dtype == torch.bfloat16 and torch.equal(f32[k].to(torch.bfloat16), bf16[k]) for k in f32)


def test_calibration_tunes_the_student_on_the_teachers_answers(trio, tmp_path):
    base, inst, donor, n_vocab = trio
    student = propagate(base, donor, inst, "conversion", tmp_path / "student")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"vertel iets over {w}" for w in NL[:12]))
    assert main(["calibrate", "--teacher", str(inst), "--student", str(student), "--prompts", str(prompts),
                 "--out", str(tmp_path / "runs"), "--max-new-tokens", "12", "train.steps=12", "train.batch_size=8",
                 "train.seq_len=64", "optim.learning_rate=0.02", "optim.weight_decay=0", "logging.tensorboard=false",
                 "logging.cpu_peak_flops=1e11", "train.log_every=1"]) == 0
    run = tmp_path / "runs" / "calibrate"
    answers = [json.loads(line) for line in (run / "teacher_answers.jsonl").read_text().splitlines()]
    assert answers and all(a["messages"][1]["role"] == "assistant" and a["messages"][1]["content"] for a in answers)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] - 0.1  # the student learns the teacher's answers
    cfg = yaml_load(run / "config.yaml")
    assert cfg["lora"]["rank"] == 8 and cfg["lora"]["layers"] == [0, -1] and cfg["lora"]["alpha"] == 1


def test_calibration_needs_prompts_or_data(trio, tmp_path, capsys):
    base, inst, donor, _ = trio
    assert main(["calibrate", "--student", str(inst), "--out", str(tmp_path)]) == 2
    assert "give --prompts" in capsys.readouterr().err
    assert main(["calibrate", "--student", str(inst), "--prompts", str(tmp_path / "nope.txt"),
                 "--teacher", str(inst), "--out", str(tmp_path)]) == 2
    assert "no such prompts file" in capsys.readouterr().err


def yaml_load(path):
    import yaml

    return yaml.safe_load(path.read_text())
