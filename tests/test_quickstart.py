"""The quickstart end to end on a tiny model and tiny corpora (the real one runs SmolLM2 on Debian text)."""

import json
import random

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from jaxadapt.cli import main

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
EN = "the of and to in is that for it as was with be by on not this are or from at which".split()
NL = "de het een van en in is dat op te zijn met voor niet aan er maar om ook als dan bij nog uit wordt " \
     "kaas fiets gracht molen sneeuw zeeën naïef café boterham gezellig".split()


def test_quickstart_on_a_tiny_model(tmp_path, make_hf_model, capsys):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(0)
    docs = {lang: [" ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) for _ in range(150)]
            for lang, words in (("nl", NL), ("en", EN))}
    for lang, texts in docs.items():
        (tmp_path / f"{lang}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(docs["en"], trainers.BpeTrainer(
        vocab_size=330, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.save(str(tmp_path / "tokenizer.json"))
    model_dir = tmp_path / "model"
    make_hf_model("llama", num_key_value_heads=2, vocab_size=tok.get_vocab_size(), std=0.05).save_pretrained(model_dir)
    PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"), eos_token="<|im_end|>",
                            bos_token="<|endoftext|>", pad_token="<|endoftext|>",
                            chat_template=CHATML).save_pretrained(model_dir)

    out = tmp_path / "qs"
    args = ["quickstart", f"out={out}", f"model={model_dir}", f"target={tmp_path / 'nl.jsonl'}",
            f"replay={tmp_path / 'en.jsonl'}", "add_tokens=40", "steps=6", "batch_size=8", "seq_len=32",
            "eval_docs=4", "eval_seq_len=64", "validation_fraction=0.1", "max_new_tokens=5", "learning_rate=0.01",
            "prompt=hallo"]
    assert main(args) == 0
    summary = json.loads((out / "quickstart.json").read_text())
    bpb = summary["bits_per_byte"]
    assert set(bpb) == {"original", "adapted, step 0", "trained, step 6"}
    assert bpb["trained, step 6"]["target"] < bpb["adapted, step 0"]["target"]
    cpt = summary["chars_per_token"]
    assert cpt["after"]["target"] > 1.2 * cpt["before"]["target"]  # Dutch gets cheaper
    assert abs(cpt["after"]["replay"] - cpt["before"]["replay"]) < 0.1 * cpt["before"]["replay"]
    exported = AutoModelForCausalLM.from_pretrained(summary["paths"]["export"])
    assert exported.config.vocab_size % 128 == 0
    assert len(AutoTokenizer.from_pretrained(summary["paths"]["export"])) == tok.get_vocab_size() + 40
    assert "bits per byte" in capsys.readouterr().out
    # Held-out documents were never trained on (same hash as the trainer's validation split).
    from jaxadapt.data.documents import held_out

    held = [json.loads(line)["text"] for line in (out / "eval_target.jsonl").read_text().splitlines()]
    assert held and all(held_out(t, 0.1) for t in held)
    # A re-run reuses every finished step.
    assert main(args) == 0
