from lora_assets.captioning.text import assemble, clean_generated, has_repeated_ngram, word_count


def test_prompt_junk_and_repeated_ngrams_are_stripped():
    raw = "a picture of arafed man sitting on a bench sitting on a bench in the park"
    cleaned = clean_generated(raw, "a picture of", ngram=3, max_words=100)
    assert cleaned == "man sitting on a bench in the park"
    assert not has_repeated_ngram(cleaned, 3)


def test_max_words_cuts_at_a_clause_boundary_when_one_is_near():
    raw = "one two three, four five six seven eight nine ten"
    assert clean_generated(raw, "", ngram=0, max_words=5) == "one two three"
    assert word_count(clean_generated(raw, "", ngram=0, max_words=9)) <= 9


def test_assembly_puts_the_trigger_first_and_tags_last():
    assert assemble("ohwx", "man", "a man on a bench", ["blurry", "", "jpeg artifacts"]) == (
        "ohwx man, a man on a bench, blurry, jpeg artifacts"
    )
    assert assemble("ohwx", "man", "ohwx man, smiling", []) == "ohwx man, smiling"
    assert word_count("ohwx man, a man") == 4
