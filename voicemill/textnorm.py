"""Text normalisation: one module, used to build the dataset and to score ASR.

``normalize(text, language)`` spells out what a speaker says aloud: money
("$4.75" -> "four dollars and seventy-five cents"), percentages, times
("4:30" -> "four thirty"), years ("1987" -> "nineteen eighty-seven"),
ordinals ("3rd" -> "third"), grouped and decimal numbers, and common
abbreviations ("Dr." -> "Doctor"). Case and sentence punctuation are kept,
because the TTS model learns prosody from them.

``for_scoring(text, language)`` additionally lowercases and drops punctuation,
so that two transcripts that sound the same compare equal (WER, CER).
"""

from __future__ import annotations

import re
import unicodedata

from num2words import num2words

# Abbreviations a reader expands; keys are matched case-sensitively with the dot.
ABBREVIATIONS: dict[str, dict[str, str]] = {
    "en": {
        "Dr.": "Doctor", "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miss", "Prof.": "Professor",
        "St.": "Street", "Ave.": "Avenue", "Rd.": "Road", "Jr.": "Junior", "Sr.": "Senior",
        "vs.": "versus", "etc.": "et cetera", "e.g.": "for example", "i.e.": "that is",
        "a.m.": "a m", "p.m.": "p m", "No.": "number",
    },
}

CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
              "£": ("pound", "pounds", "penny", "pence")}

PERCENT_WORD = {"en": "percent", "de": "Prozent", "da": "procent", "pt": "por cento", "es": "por ciento",
                "fr": "pour cent"}

_NUM = r"\d{1,3}(?:,\d{3})+|\d+"
_MONEY_RE = re.compile(rf"([$€£])\s?({_NUM})(?:\.(\d{{1,2}}))?")
_PERCENT_RE = re.compile(rf"({_NUM})(?:\.(\d+))?\s?%")
_TIME_RE = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_DECIMAL_RE = re.compile(rf"\b({_NUM})\.(\d+)\b")
_NUMBER_RE = re.compile(rf"\b({_NUM})\b")


def _n2w(value, language: str, **kwargs) -> str:
    try:
        words = num2words(value, lang=language, **kwargs)
    except NotImplementedError:
        words = num2words(value, lang="en", **kwargs)
    # num2words writes "one thousand, five hundred"; a comma there would teach
    # the voice a pause that a reader does not make.
    return words.replace(",", "")


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _money(m: re.Match, language: str) -> str:
    one, many, cent, cents = CURRENCIES[m.group(1)]
    whole = _int(m.group(2))
    frac = int((m.group(3) or "0").ljust(2, "0"))
    words = f"{_n2w(whole, language)} {one if whole == 1 else many}"
    if frac:
        words += f" and {_n2w(frac, language)} {cent if frac == 1 else cents}"
    return words


def _percent(m: re.Match, language: str) -> str:
    whole = _int(m.group(1))
    value = float(f"{whole}.{m.group(2)}") if m.group(2) else whole
    return f"{_n2w(value, language)} {PERCENT_WORD.get(language, 'percent')}"


def _time(m: re.Match, language: str) -> str:
    hour, minute = int(m.group(1)), int(m.group(2))
    if minute == 0:
        return f"{_n2w(hour, language)} o'clock" if language == "en" else _n2w(hour, language)
    if minute < 10 and language == "en":
        return f"{_n2w(hour, language)} oh {_n2w(minute, language)}"
    return f"{_n2w(hour, language)} {_n2w(minute, language)}"


def _number(m: re.Match, language: str) -> str:
    raw = m.group(1)
    value = _int(raw)
    # A bare four-digit number between 1100 and 2099 is read as a year.
    if "," not in raw and len(raw) == 4 and 1100 <= value <= 2099:
        return _n2w(value, language, to="year")
    return _n2w(value, language)


def tidy(text: str) -> str:
    """Unicode NFC, straight quotes, plain dashes, single spaces."""
    text = unicodedata.normalize("NFC", text)
    text = text.translate(str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": " - "}))
    return re.sub(r"\s+", " ", text).strip()


def normalize(text: str, language: str = "en") -> str:
    """Spell out numbers, money, times and abbreviations in ``language``."""
    text = tidy(text)
    for short, full in ABBREVIATIONS.get(language, {}).items():
        text = re.sub(rf"(?<![\w.]){re.escape(short)}", full, text)
    text = _MONEY_RE.sub(lambda m: _money(m, language), text)
    text = _PERCENT_RE.sub(lambda m: _percent(m, language), text)
    text = _TIME_RE.sub(lambda m: _time(m, language), text)
    text = _ORDINAL_RE.sub(lambda m: _n2w(int(m.group(1)), language, to="ordinal"), text)
    text = _DECIMAL_RE.sub(lambda m: _n2w(float(f"{_int(m.group(1))}.{m.group(2)}"), language), text)
    text = _NUMBER_RE.sub(lambda m: _number(m, language), text)
    return re.sub(r"\s+", " ", text).strip()


def for_scoring(text: str, language: str = "en") -> str:
    """Normalised, lowercased, punctuation-free text for WER and CER."""
    text = normalize(text, language).lower()
    text = text.replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    text = text.replace("'", "")
    return re.sub(r"\s+", " ", text).strip()
