"""Search and snippets in every script: accented Latin, CJK, Cyrillic, Arabic, emoji."""

from __future__ import annotations

import json
import re

import pytest

from convstore import Store
from convstore.search import SCHEMA_TOKENIZERS, TEXT_FIELD, SearchHit

MARKED = re.compile("\u00ab(.*?)\u00bb")

MESSAGES = {
    "pt": "Partimos de Belém às nove, depois Alfama e um café com pastéis.",
    "fr": "Le café près de l'Opéra ouvre à sept heures; ensuite le musée.",
    "de": "Die Straße nach München ist gesperrt, nimm die Umleitung.",
    "ja": "東京タワーに行きたいです。日本語の勉強をしています。",
    "zh": "我想学习中文，北京的天气很好，我们去长城吧。",
    "ko": "한국어를 배우고 있어요. 서울은 아름다워요.",
    "ru": "Привет! Я живу в Москве, и погода сегодня хорошая.",
    "ar": "مرحبا بالعالم، كيف حالك اليوم؟ الطقس جميل",
    "emoji": "🎉🥐🇵🇹 party at the 👨‍👩‍👧 house, bring cake 🎂 tonight",
    "fahrenheit": "350 °F is about 175-180 °C; for a fan oven go about 20 °C lower, so 160 °C.",
}


@pytest.fixture
def world(store: Store) -> Store:
    for sid, text in MESSAGES.items():
        store.create_session(sid).append("user", text)
    return store


def marked(hit: SearchHit) -> list[str]:
    return MARKED.findall(hit.snippet)


class TestSnippetsMarkTheMatchedCharacters:
    @pytest.mark.parametrize(
        ("query", "session", "word"),
        [
            ("lower", "fahrenheit", "lower"),  # ° is two bytes in UTF-8
            ("Alfama", "pt", "Alfama"),
            ("pastéis", "pt", "pastéis"),
            ("musée", "fr", "musée"),
            ("Umleitung", "de", "Umleitung"),
            ("Москве", "ru", "Москве"),
            ("الطقس", "ar", "الطقس"),
            ("cake", "emoji", "cake"),  # after 4-byte emoji and a ZWJ family
            ("tonight", "emoji", "tonight"),
            ("北京", "zh", "北京"),
            ("서울은", "ko", "서울은"),
            ("한국어", "ko", "한국어"),  # not the 어 of 있어요 too
            ("日本語", "ja", "日本語"),
        ],
    )
    def test_the_mark_surrounds_the_word_itself(
        self, world: Store, query: str, session: str, word: str
    ) -> None:
        (hit,) = world.search(query, session_id=session)
        assert marked(hit) == [word]
        assert hit.snippet.replace("\u00ab", "").replace("\u00bb", "") in hit.text

    def test_the_demo_fahrenheit_message_marks_lower(self, world: Store) -> None:
        (hit,) = world.search("lower", session_id="fahrenheit")
        assert "go about 20 °C «lower», so 160 °C" in hit.snippet


class TestEveryScriptIsSearchable:
    @pytest.mark.parametrize(
        ("query", "session"),
        [
            ("日本", "ja"),  # a word inside a longer one: CJK has no spaces
            ("日本語", "ja"),
            ("タワー", "ja"),
            ("勉強", "ja"),
            ("北京", "zh"),
            ("长城", "zh"),
            ("中文", "zh"),
            ("한국어", "ko"),  # without its particle 를
            ("서울", "ko"),
            ("Москве", "ru"),
            ("москве", "ru"),  # case-insensitive in Cyrillic too
            ("ПРИВЕТ", "ru"),
            ("بالعالم", "ar"),
            ("Belém", "pt"),
            ("belem", "pt"),  # accents are optional
            ("strasse", "de"),
            ("🎂", "emoji"),
            ("🎉 party", "emoji"),
        ],
    )
    def test_a_word_finds_its_message(self, world: Store, query: str, session: str) -> None:
        assert [h.session_id for h in world.search(query)] == [session]

    def test_cafe_without_its_accent_finds_both_cafes(self, world: Store) -> None:
        assert {h.session_id for h in world.search("cafe")} == {"pt", "fr"}
        assert {h.session_id for h in world.search("café")} == {"pt", "fr"}

    def test_cjk_characters_apart_do_not_match_as_a_word(self, world: Store) -> None:
        assert world.search("京東") == []  # the same characters in another order
        assert [h.session_id for h in world.search("東 京")] == ["ja"]  # both, anywhere

    def test_phrases_work_in_every_script(self, world: Store) -> None:
        assert [h.session_id for h in world.search('"東京タワー"')] == ["ja"]
        assert [h.session_id for h in world.search('"погода сегодня"')] == ["ru"]
        assert world.search('"сегодня погода"') == []
        assert [h.session_id for h in world.search('"كيف حالك"')] == ["ar"]
        assert [h.session_id for h in world.search('"bring cake"')] == ["emoji"]

    def test_operators_mix_scripts(self, world: Store) -> None:
        assert {h.session_id for h in world.search("北京 OR 東京")} == {"zh", "ja"}
        assert [h.session_id for h in world.search("日本 -北京")] == ["ja"]
        assert [h.session_id for h in world.search("Моск*")] == ["ru"]

    def test_english_keeps_its_stemming(self, world: Store) -> None:
        assert [h.session_id for h in world.search("parties")] == ["emoji"]


class TestAnOldIndexIsRebuilt:
    @pytest.mark.parametrize(
        ("field", "tokenizer"),
        [
            pytest.param("text", "en_stem", id="as-convstore-before-the-new-analyzer-wrote-it"),
            pytest.param(TEXT_FIELD, "en_stem", id="same-field-other-analyzer"),
        ],
    )
    def test_an_index_built_with_another_analyzer_is_rebuilt_and_finds_cjk(
        self, world: Store, field: str, tokenizer: str
    ) -> None:
        assert world.search("日本")  # builds the cache
        path = world.path
        world.close()
        (meta,) = (path / ".cache" / "index").glob("*/meta.json")
        body = json.loads(meta.read_text())
        for entry in body["schema"]:
            if entry["name"] == TEXT_FIELD:
                entry["name"] = field
                entry["options"]["indexing"]["tokenizer"] = tokenizer
        meta.write_text(json.dumps(body))
        with Store(path) as again:
            assert [h.session_id for h in again.search("日本")] == ["ja"]
        (meta,) = (path / ".cache" / "index").glob("*/meta.json")
        tokenizers = {
            f["name"]: f["options"].get("indexing", {}).get("tokenizer")
            for f in json.loads(meta.read_text())["schema"]
        }
        assert tokenizers[TEXT_FIELD] == SCHEMA_TOKENIZERS[TEXT_FIELD] != "en_stem"
