"""`jaxadapt predict` on the real SmolLM2: the end-to-end smoke test that a converted model says sensible things."""

from jaxadapt.assets import smollm2_dir, smollm2_gguf
from jaxadapt.cli import main
from jaxadapt.modelref import model_dir


def test_predict_continues_a_sentence_sensibly(capsys):
    assert main(["predict", "smollm2", "--text", "The capital of the Netherlands is", "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].endswith("' Amsterdam'")
    assert 0.3 < float(lines[0].split()[0]) <= 1.0


def test_a_gguf_path_reuses_its_cached_conversion():
    assert model_dir(str(smollm2_gguf())) == smollm2_dir()


def test_bad_arguments_are_user_errors(tmp_path, capsys):
    assert main(["predict", "smollm2", "--top-k", "0"]) == 2
    assert "top_k=0" in capsys.readouterr().err
    missing = tmp_path / "nope.gguf"
    assert main(["predict", str(missing)]) == 2
    assert f"{missing}: no such GGUF file" in capsys.readouterr().err
