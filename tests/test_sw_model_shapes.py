"""Layer-shape tables against the models' published parameter counts."""

import pytest
from sparsecim.sw.model_shapes import MODELS, model_shape


def test_smollm2_linears_plus_embedding_and_norms_is_the_published_total():
    """SmolLM2-135M has 134,515,008 parameters: linears + tied embedding + 61 RMSNorm gains."""
    m = model_shape("smollm2-135m")
    assert m.linear_parameters + 49152 * 576 + (2 * 30 + 1) * 576 == 134_515_008


def test_llama2_7b_linears_plus_embeddings_and_norms_is_the_published_total():
    """Llama-2-7b-hf has 6,738,415,616 parameters: untied embedding and head, 65 norms."""
    m = model_shape("llama-2-7b")
    assert m.linear_parameters + 2 * 32000 * 4096 + 65 * 4096 == 6_738_415_616


@pytest.mark.parametrize("name, per_block, blocks", [
    ("bert-large", 12 * 1024 ** 2, 24), ("gpt2-medium", 12 * 1024 ** 2, 24),
    ("opt-1.3b", 12 * 2048 ** 2, 24)])
def test_standard_blocks(name, per_block, blocks):
    assert model_shape(name).linear_parameters == per_block * blocks


def test_bart_large_has_cross_attention_in_the_decoder():
    m = model_shape("bart-large")
    assert m.linear_parameters == 12 * 12 * 1024 ** 2 + 12 * 16 * 1024 ** 2
    assert m.attention_macs(512) == 3 * 12 * 2 * 1024 * 512


def test_attention_macs():
    assert model_shape("bert-large").attention_macs(512) == 24 * 2 * 16 * 64 * 512
    assert model_shape("smollm2-135m").attention_macs(10) == 30 * 2 * 9 * 64 * 10
    with pytest.raises(ValueError) as info:
        model_shape("bert-large").attention_macs(0)
    assert str(info.value) == "seq must be a positive integer, not 0"


def test_shapes_are_sane():
    for m in MODELS.values():
        assert all(lin.inputs > 0 and lin.outputs > 0 and lin.total > 0 for lin in m.linears)
        assert m.linear_macs == m.linear_parameters
        assert m.source


def test_unknown_model():
    with pytest.raises(ValueError) as info:
        model_shape("bert")
    assert str(info.value) == ("model must be one of 'bart-large', 'bert-large', "
                               "'gpt2-medium', 'llama-2-7b', 'opt-1.3b', 'smollm2-135m', "
                               "not 'bert'")
