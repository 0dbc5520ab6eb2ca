import pytest

from apr_mini import trace_language as tl

from apr_mini import trace_trees as tt
from apr_mini.models import MODEL_PRESETS, build_model, preset_table
from apr_mini.tokenizer import BOS, build_tokenizer, load_tokenizer, save_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_round_trip_is_exact_on_every_reference_trace(tokenizer, reference_cases):
    for case in reference_cases:
        for text in [case["sosp_trace"], *tt.iter_sequences(case["trace_dict"])]:
            ids = tokenizer(text)["input_ids"]
            assert ids[0] == tokenizer.bos_token_id
            assert len(ids) - 1 == tl.count_tokens(text)  # the tokenizer and the trace metrics agree
            assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_markers_are_ordinary_tokens_and_digits_are_split(tokenizer):
    for marker in (tl.SPAWN_OPEN, tl.SPAWN_CLOSE, tl.JOIN_OPEN, tl.JOIN_CLOSE):
        ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] not in tokenizer.all_special_ids
    assert tokenizer.convert_ids_to_tokens(tokenizer("2184", add_special_tokens=False)["input_ids"]) == list("2184")


def test_integer_tokens_variant_round_trips_with_whole_numbers(reference_cases):
    integers = build_tokenizer("integers")
    assert integers.convert_ids_to_tokens(integers("2184 123456", add_special_tokens=False)["input_ids"]) == \
        ["218", "4", " ", "123", "456"]
    for case in reference_cases[:10]:
        text = case["sosp_trace"]
        ids = integers(text)["input_ids"]
        assert integers.unk_token_id not in ids and integers.decode(ids, skip_special_tokens=True) == text
    with pytest.raises(ValueError, match="numbers must be"):
        build_tokenizer("bytes")


def test_root_prompt_is_bos_then_the_reference_prompt(tokenizer):
    prompt = tl.root_prompt(24, [32, 84, 26, 59])
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(prompt)["input_ids"])
    assert tokens[:2] == [BOS, "Moving to Node #"]
    assert tokenizer.decode(tokenizer(prompt)["input_ids"], skip_special_tokens=True) == prompt


def test_saved_tokenizer_loads_with_autotokenizer(tmp_path, tokenizer):
    save_tokenizer(tmp_path)
    loaded = load_tokenizer(tmp_path)
    text = "Moving to Node #0,1\n<End Sub Searches>\n30,30 equal: Goal Reached"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.decode(loaded("héllo")["input_ids"], skip_special_tokens=True) == "hllo"  # unknown chars -> <unk>


def test_stop_strings_work_with_the_domain_tokenizer(tokenizer):
    from transformers.generation.stopping_criteria import StopStringCriteria

    StopStringCriteria(tokenizer, [tl.SPAWN_CLOSE, tl.GOAL])  # raises with tokenizers that lack single characters


def test_presets(tokenizer):
    table = {row["preset"]: row for row in preset_table(tokenizer)}
    assert table["tiny"]["parameters"] < 1_000_000
    assert 200e6 < table["gpu"]["parameters"] < 260e6 and table["gpu"]["context"] == 4096
    assert table["gpu"]["head_dim"] >= 64  # SGLang's attention kernels
    model = build_model("tiny", tokenizer)
    assert model.config.vocab_size == len(tokenizer) and model.config.tie_word_embeddings
    assert set(MODEL_PRESETS) == {"tiny", "cpu", "cpu4", "cpu4-room", "t4", "gpu"}
    # the deep task's model is the cpu model with a longer window, so the cpu models warm-start it; the
    # SoS+ model with room is the same model with a window that fits most of its searches
    assert table["cpu4"]["parameters"] == table["cpu"]["parameters"] and table["cpu4"]["context"] == 1536
    assert table["cpu4-room"]["parameters"] == table["cpu4"]["parameters"] and table["cpu4-room"]["context"] == 4096
    assert table["t4"]["head_dim"] >= 64 and table["t4"]["parameters"] < 30e6  # one T4, SGLang's kernels
