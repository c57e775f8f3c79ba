"""Text normalisation: one module, used to build the dataset and to score ASR.

``normalize(text, language)`` writes out what a speaker of ``language`` says
aloud, so that the TTS model learns from words rather than digits and symbols:

- money: ``$ € £`` everywhere, plus the language's own currency (``R$`` in
  pt, ``kr.``/``kr``/``DKK`` in da), before or after the amount, with a scale
  word ("$2.5 million") -> "twelve dollars and fifty cents",
  "doze reais e cinquenta centavos", "tolv kroner og halvtreds øre";
- percentages ("15 %" -> "quinze pour cent");
- dates: ISO "2021-05-03", numeric "3/5/2021" or "3.5.2021" in the
  language's order, and month-name dates ("May 3", "3. Mai", "1er mai");
- times: "10:45", "10h30" (fr, pt), "10.30" (da), "10.30 Uhr" (de);
- ordinals: "3rd", "1º"/"1ª" (pt, es), "1er"/"2e" (fr), "3." before a month
  name (de, da);
- years (a bare 1100..2099), grouped numbers and decimals with the language's
  separators ("1,500.5" in en, "1.500,5" in de/da/pt/es, "1 500,5" in fr);
- common abbreviations, matched case-sensitively and never inside a word;
- Unicode NFC, straight quotes, plain dashes, single spaces (``tidy``).

Number words come from num2words in the language of the text. Case and
sentence punctuation are kept, because the TTS model learns prosody from them;
``lowercase=True`` lowercases the result.

Each language is one ``Language`` row in ``LANGUAGES`` (en, en_GB, pt, da, de,
es, fr). A code with a region ("pt-BR", "de_AT") uses its base language. Any
other code never fails: numbers are spelled by num2words when it knows the
language, and left as digits when it does not (English words in, say, Irish
text would teach the voice the wrong sounds).

Choices a reader may trip over:

- "en" reads numeric dates as month/day/year (US): "3/5/2021" is March fifth.
  A first number above 12 swaps the order ("25/12/2021" is December
  twenty-fifth); "en-GB" and the other dmy regions read day/month/year.
- A decimal fraction of one or two digits is read as a number in pt, es, fr
  and da ("3,14" -> "três vírgula catorze"), digit by digit in en and de
  ("drei Komma eins vier"), as people there say it.
- A German ordinal takes its ending from the word before it: "am 3. Mai" ->
  "am dritten Mai", "der 3. Mai" -> "der dritte Mai", a bare "3. Mai" ->
  "dritter Mai".
- An amount followed by a currency's name ("12,50 Euro", "21 euros") is
  money only when it is whole or has two decimals: "2.5 euros" stays "two
  point five euros". Names that are also common words (pound, livre, libra)
  are not listed, so "1 livre" (a book) stays "un livre".
- Roman numerals and units (km, °C) are left as written, and a range
  "5-10" reads "five-ten": the words a reader puts there vary.

``for_scoring(text, language)`` additionally casefolds, turns hyphens into
spaces and drops punctuation (letters keep their accents), so that two
transcripts that sound the same compare equal (WER, CER).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal

from num2words import CONVERTER_CLASSES, num2words

# (regex, replacement) pairs applied in order to num2words' output.
Rewrites = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Currency:
    """How a currency is said: unit and sub-unit, singular and plural."""

    one: str
    many: str
    sub_one: str
    sub_many: str
    gender: str = ""
    """Key into ``Language.forms`` for the number before the unit ("" = as num2words writes it)."""
    sub_gender: str = ""


# "4:30", "16:05"
_COLON_TIME = r"\b(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)\b"


@dataclass(frozen=True)
class TimeReading:
    """How a clock time is said."""

    patterns: tuple[str, ...] = (_COLON_TIME,)
    """Regexes with an hour group ``h`` and an optional minute group ``m``."""
    on_the_hour: str = "{h}"
    """Format for minute 0; ``{h}`` the hour, ``{hours}`` the hour word."""
    with_minutes: str = "{h} {m}"
    hour_words: tuple[str, str] = ("", "")
    """The word for "hour" after 0 or 1, and after more."""
    minute_pad: str = ""
    """Said before a single-digit minute: en "six oh five"."""
    hour_gender: str = ""
    minute_gender: str = ""


@dataclass(frozen=True)
class Language:
    """Everything language-specific that ``normalize`` needs."""

    num2words: str | None
    """num2words' language code; None: num2words cannot spell it, digits stay."""
    decimal_word: str | None = None
    """Word between the whole and the fraction; None lets num2words read decimals."""
    decimal_seps: str = "."
    """Characters that start a decimal fraction, the usual one first."""
    group_seps: str = ","
    """Characters that group thousands ("1,500"); a group is exactly three digits."""
    fraction_as_number: bool = False
    """Read a 1-2 digit fraction as a number ("vírgula catorze"), not digit by digit."""
    minus_word: str = "minus"
    percent_word: str | None = None
    """None leaves the "%" sign after the spelled number."""
    percent_gender: str = ""
    currencies: dict[str, Currency] = field(default_factory=dict)
    """Symbol or code -> its words; matched before or after the amount."""
    currency_names: dict[str, str] = field(default_factory=dict)
    """A currency's written name after an amount -> its key in ``currencies``."""
    money_and: str = "and"
    """Joins units and sub-units: "twelve dollars and fifty cents"."""
    scales: str = ""
    """Regex of large-number words that may follow an amount: "$2 million"."""
    scale_gender: str = ""
    """Form of a whole number before a scale word: de "eine Million", es "un millón"."""
    of_after: str = ""
    """Regex: an amount whose words end so takes ``of_words`` before the unit."""
    of_words: tuple[str, str] = ("", "")
    """Before a consonant and before a vowel: pt "um milhão de reais", fr "d'euros"."""
    abbreviations: dict[str, str] = field(default_factory=dict)
    """Expanded wherever they stand as a word; lowercase keys also match capitalised."""
    titles: dict[str, str] = field(default_factory=dict)
    """Expanded only before a capitalised name (fr "M. Dupont")."""
    months: tuple[str, ...] = ()
    dates: tuple[tuple[str, str], ...] = ()
    """(regex, format): groups d, mo (number) or mon (name), optional y;
    the format uses {day} and {month}."""
    date_year_sep: str = " "
    date_days: str = "cardinal"
    """How a date's day is said: "ordinal", "cardinal", or "first" (ordinal for day 1 only)."""
    ordinals: dict[str, str] = field(default_factory=dict)
    """Ordinal suffix after digits -> key into ``forms`` ("" = as num2words writes it)."""
    ordinal_after: dict[str, str] = field(default_factory=dict)
    """Word before a date's ordinal day -> key into ``forms`` (German endings)."""
    ordinal_default: str = ""
    forms: dict[str, Rewrites] = field(default_factory=dict)
    """Named rewrites of num2words' words: gender, case, short forms."""
    fixes: Rewrites = ()
    """Slips in num2words 0.5.14's words for this language, fixed after every call."""
    time: TimeReading = TimeReading()


# Dates. Groups: d day, mo month number, mon month name, y year.
_ISO_DATE = r"\b(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})\b"  # 2021-05-03
_DMY_DATE = r"\b(?P<d>\d{1,2})(?P<s>[./-])(?P<mo>\d{1,2})(?P=s)(?P<y>\d{4})\b"  # 3/5/2021, 03.05.2021
_MDY_DATE = r"\b(?P<mo>\d{1,2})(?P<s>[/-])(?P<d>\d{1,2})(?P=s)(?P<y>\d{4})\b"  # 5/3/2021
_DM_DOT_DATE = r"\b(?P<d>\d{1,2})\.(?P<mo>\d{1,2})\.(?!\d)"  # 3.5.
_DAY_DOT_MONTH = r"\b(?P<d>\d{1,2})\. ?(?P<mon>{months})\b"  # 3. Mai
_EN_MONTH_DAY = r"\b(?P<mon>{months}) (?P<d>\d{1,2})(?:st|nd|rd|th)?\b(?![:.,]?\d)"  # May 3
_EN_DAY_MONTH = r"\b(?P<d>\d{1,2})(?:st|nd|rd|th)? (?:of )?(?P<mon>{months})\b"  # 3rd of May

_H_TIME = r"\b(?P<h>[01]?\d|2[0-4]) ?h(?: ?(?P<m>[0-5]\d))?\b"  # 10h30, 10 h, 24h

EN = Language(
    num2words="en",
    decimal_word="point",
    percent_word="percent",
    currencies={
        "$": Currency("dollar", "dollars", "cent", "cents"),
        "€": Currency("euro", "euros", "cent", "cents"),
        "£": Currency("pound", "pounds", "penny", "pence"),
    },
    currency_names={"dollar": "$", "dollars": "$", "euro": "€", "euros": "€"},
    scales="thousand|million|billion|trillion",
    abbreviations={
        "Dr.": "Doctor", "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miss", "Prof.": "Professor",
        "St.": "Street", "Ave.": "Avenue", "Rd.": "Road", "Jr.": "Junior", "Sr.": "Senior",
        "vs.": "versus", "etc.": "et cetera", "e.g.": "for example", "i.e.": "that is",
        "a.m.": "a m", "p.m.": "p m", "No.": "number",
    },
    months=("January", "February", "March", "April", "May", "June", "July", "August",
            "September", "October", "November", "December"),
    dates=((_ISO_DATE, "{month} {day}"), (_MDY_DATE, "{month} {day}"),
           (_EN_MONTH_DAY, "{month} {day}"), (_EN_DAY_MONTH, "the {day} of {month}")),
    date_year_sep=", ",
    date_days="ordinal",
    ordinals={"st": "", "nd": "", "rd": "", "th": ""},
    time=TimeReading(on_the_hour="{h} o'clock", minute_pad="oh"),
)

# British and most other English: day/month/year, "the third of May 2021".
EN_DMY = replace(
    EN,
    dates=((_ISO_DATE, "the {day} of {month}"), (_DMY_DATE, "the {day} of {month}"),
           (_EN_MONTH_DAY, "{month} {day}"), (_EN_DAY_MONTH, "the {day} of {month}")),
    date_year_sep=" ",
)

PT = Language(
    num2words="pt",
    decimal_word="vírgula",
    decimal_seps=",.",
    group_seps=".",
    fraction_as_number=True,
    minus_word="menos",
    percent_word="por cento",
    currencies={
        "R$": Currency("real", "reais", "centavo", "centavos"),
        "$": Currency("dólar", "dólares", "centavo", "centavos"),
        "€": Currency("euro", "euros", "cêntimo", "cêntimos"),
        "£": Currency("libra", "libras", "péni", "pence", gender="f"),
    },
    currency_names={"real": "R$", "reais": "R$", "dólar": "$", "dólares": "$", "euro": "€", "euros": "€"},
    money_and="e",
    scales="mil|milhão|milhões|bilhão|bilhões|bilião|biliões",
    of_after=r"(?:milhão|milhões|bilhão|bilhões|bilião|biliões)$",
    of_words=("de ", "de "),
    abbreviations={
        "Sr.": "senhor", "Sra.": "senhora", "Srta.": "senhorita", "Dr.": "doutor", "Dra.": "doutora",
        "Prof.": "professor", "Profa.": "professora", "etc.": "etcétera", "Av.": "avenida",
        "p. ex.": "por exemplo", "nº": "número", "n.º": "número", "pág.": "página", "Ltda.": "limitada",
    },
    months=("janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto",
            "setembro", "outubro", "novembro", "dezembro"),
    dates=((_ISO_DATE, "{day} de {month}"), (_DMY_DATE, "{day} de {month}")),
    date_year_sep=" de ",
    date_days="first",  # "primeiro de maio", "dois de maio"
    ordinals={"º": "", ".º": "", "ª": "f_ord", ".ª": "f_ord"},
    forms={
        # A feminine noun: "uma libra", "duas libras", "duzentas libras" (but "dois milhões de libras").
        "f": ((r"\bum\b(?!.*\bmilh)", "uma"), (r"\bdois\b(?!.*\bmilh)", "duas"), (r"entos\b(?!.*\bmilh)", "entas")),
        "f_ord": ((r"o\b", "a"),),  # "vigésima primeira"
    },
    time=TimeReading(
        patterns=(_H_TIME, _COLON_TIME),
        on_the_hour="{h} {hours}",
        with_minutes="{h} {hours} e {m}",  # "dez e meia" is also said; this is never wrong
        hour_words=("hora", "horas"),
        hour_gender="f",
    ),
)

DA = Language(
    num2words="da",
    decimal_word="komma",
    decimal_seps=",.",
    group_seps=".",
    fraction_as_number=True,
    percent_word="procent",
    percent_gender="c",
    currencies={
        "kr.": Currency("krone", "kroner", "øre", "øre", gender="c", sub_gender="c"),
        "kr": Currency("krone", "kroner", "øre", "øre", gender="c", sub_gender="c"),
        "DKK": Currency("krone", "kroner", "øre", "øre", gender="c", sub_gender="c"),
        "$": Currency("dollar", "dollars", "cent", "cent", gender="c", sub_gender="c"),
        "€": Currency("euro", "euro", "cent", "cent", gender="c", sub_gender="c"),
        "£": Currency("pund", "pund", "penny", "pence", gender="", sub_gender="c"),  # "et pund"
    },
    currency_names={"krone": "kr", "kroner": "kr", "euro": "€", "dollar": "$", "dollars": "$"},
    money_and="og",
    scales=r"tusind|million|millioner|milliard|milliarder|mio\.|mia\.",
    scale_gender="c",
    abbreviations={
        "f.eks.": "for eksempel", "bl.a.": "blandt andet", "ca.": "cirka", "kr.": "kroner",
        "dvs.": "det vil sige", "osv.": "og så videre", "mv.": "med videre", "nr.": "nummer",
        "kl.": "klokken", "hhv.": "henholdsvis", "evt.": "eventuelt", "pct.": "procent",
        "mio.": "millioner", "mia.": "milliarder",
    },
    months=("januar", "februar", "marts", "april", "maj", "juni", "juli", "august",
            "september", "oktober", "november", "december"),
    # "kl. 10.30." is a time, not the 10th of a 30th month.
    dates=((_ISO_DATE, "{day} {month}"), (_DMY_DATE, "{day} {month}"),
           (r"(?<!kl\. )" + _DM_DOT_DATE, "{day} {month}"), (_DAY_DOT_MONTH, "{day} {month}")),
    date_days="ordinal",
    forms={"c": ((r"\bet$", "en"),)},  # common gender: "en krone", "en procent"
    fixes=((r"divete\b", "divte"), (r"\ben millioner\b", "en million"), (r"\ben milliarder\b", "en milliard")),
    # Danes write "kl. 10.30" as often as "10:30"; "ti nul fem" for 10:05.
    time=TimeReading(patterns=(r"\b(?P<h>[01]?\d|2[0-3])[:.](?P<m>[0-5]\d)\b",), minute_pad="nul"),
)

DE = Language(
    num2words="de",
    decimal_word="Komma",
    decimal_seps=",.",
    group_seps=".",
    percent_word="Prozent",
    percent_gender="m",
    currencies={
        "€": Currency("Euro", "Euro", "Cent", "Cent", gender="m", sub_gender="m"),
        "$": Currency("Dollar", "Dollar", "Cent", "Cent", gender="m", sub_gender="m"),
        "£": Currency("Pfund", "Pfund", "Penny", "Pence", gender="m", sub_gender="m"),
    },
    currency_names={"Euro": "€", "Dollar": "$"},
    money_and="und",
    scales=r"Tausend|Million|Millionen|Milliarde|Milliarden|Mio\.|Mrd\.",
    scale_gender="f",
    abbreviations={
        "z.B.": "zum Beispiel", "z. B.": "zum Beispiel", "usw.": "und so weiter", "bzw.": "beziehungsweise",
        "d.h.": "das heißt", "d. h.": "das heißt", "u.a.": "unter anderem", "u. a.": "unter anderem",
        "Dr.": "Doktor", "Prof.": "Professor", "Nr.": "Nummer", "ca.": "circa", "evtl.": "eventuell",
        "inkl.": "inklusive", "vgl.": "vergleiche", "ggf.": "gegebenenfalls", "bzgl.": "bezüglich",
        "Mio.": "Millionen", "Mrd.": "Milliarden", "Str.": "Straße", "Hr.": "Herr",
    },
    months=("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August",
            "September", "Oktober", "November", "Dezember"),
    dates=((_ISO_DATE, "{day} {month}"), (_DMY_DATE, "{day} {month}"),
           (_DM_DOT_DATE, "{day} {month}"), (_DAY_DOT_MONTH, "{day} {month}")),
    date_days="ordinal",
    ordinal_after={w: "en" for w in ("am", "vom", "zum", "im", "beim", "dem", "den", "des", "seit")}
    | {w: "" for w in ("der", "die", "das")},
    ordinal_default="er",  # a dateline: "Berlin, dritter Mai"
    forms={
        "m": ((r"eins$", "ein"),),  # "ein Euro", "ein Uhr", "ein Prozent"
        "f": ((r"eins$", "eine"),),  # "eine Million"
        "en": ((r"e$", "en"),),
        "er": ((r"e$", "er"),),
    },
    fixes=((r"einstausend", "eintausend"),),
    time=TimeReading(
        # "10:45", "10:45 Uhr", "10.45 Uhr", "10 Uhr"; a dot needs the "Uhr".
        patterns=(r"\b(?P<h>[01]?\d|2[0-4])(?:[:.](?P<m>[0-5]\d))? ?Uhr\b", _COLON_TIME),
        on_the_hour="{h} Uhr",
        with_minutes="{h} Uhr {m}",
        hour_gender="m",
    ),
)

ES = Language(
    num2words="es",
    # num2words says "punto"; with a decimal comma Spain says "coma".
    decimal_word="coma",
    decimal_seps=",.",
    group_seps=".",
    fraction_as_number=True,
    minus_word="menos",
    percent_word="por ciento",
    currencies={
        "€": Currency("euro", "euros", "céntimo", "céntimos", gender="m", sub_gender="m"),
        "$": Currency("dólar", "dólares", "centavo", "centavos", gender="m", sub_gender="m"),
        "£": Currency("libra", "libras", "penique", "peniques", gender="f", sub_gender="m"),
    },
    currency_names={"euro": "€", "euros": "€", "dólar": "$", "dólares": "$"},
    money_and="con",
    scales="mil|millón|millones|millardo|millardos|billón|billones",
    scale_gender="m",
    of_after=r"(?:millón|millones|millardos?|billón|billones)$",
    of_words=("de ", "de "),
    abbreviations={
        "Sr.": "señor", "Sra.": "señora", "Srta.": "señorita", "Dr.": "doctor", "Dra.": "doctora",
        "Prof.": "profesor", "Profa.": "profesora", "Ud.": "usted", "Uds.": "ustedes", "Vd.": "usted",
        "etc.": "etcétera", "p. ej.": "por ejemplo", "Av.": "avenida", "Avda.": "avenida",
        "núm.": "número", "n.º": "número", "aprox.": "aproximadamente", "pág.": "página",
    },
    months=("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto",
            "septiembre", "octubre", "noviembre", "diciembre"),
    dates=((_ISO_DATE, "{day} de {month}"), (_DMY_DATE, "{day} de {month}")),
    date_year_sep=" de ",
    ordinals={"º": "", ".º": "", "ª": "f_ord", ".ª": "f_ord", "er": "short", ".er": "short"},
    forms={
        "m": ((r"\buno$", "un"), (r"veintiuno$", "veintiún")),  # "un euro", "veintiún euros"
        "f": ((r"\buno\b(?!.*\bmill)", "una"), (r"veintiuno\b(?!.*\bmill)", "veintiuna"),
              (r"veintiún\b(?!.*\bmill)", "veintiuna"), (r"ientos\b(?!.*\bmill)", "ientas")),
        "f_ord": ((r"o\b", "a"),),  # "primera"
        "short": ((r"\b(prim|terc)ero$", r"\1er"),),  # "1er" -> "primer"
    },
    fixes=((r"\bveintiuno(?= mil)", "veintiún"), (r"\buno(?= mil)", "un"), (r"décimo(?=\w)", "décimo ")),
    # The RAE reads a 24-hour "18:35" as "dieciocho treinta y cinco" (an hour, "h", may follow).
    time=TimeReading(patterns=(r"\b(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)(?: ?h\b)?",), hour_gender="f"),
)

FR = Language(
    num2words="fr",
    decimal_word="virgule",
    decimal_seps=",.",
    group_seps=" .",  # "1 500" (a non-breaking space once tidied) or "1.500"
    fraction_as_number=True,
    minus_word="moins",
    percent_word="pour cent",
    currencies={
        "€": Currency("euro", "euros", "centime", "centimes"),
        "$": Currency("dollar", "dollars", "cent", "cents"),
        "£": Currency("livre", "livres", "penny", "pence", gender="f"),
    },
    currency_names={"euro": "€", "euros": "€", "dollar": "$", "dollars": "$"},
    money_and="et",
    scales="mille|million|millions|milliard|milliards",
    of_after=r"(?:millions?|milliards?)$",
    of_words=("de ", "d'"),
    abbreviations={
        "Mme": "madame", "Mmes": "mesdames", "Mlle": "mademoiselle", "Mlles": "mesdemoiselles",
        "Dr": "docteur", "Dr.": "docteur", "Pr": "professeur", "etc.": "et cetera",
        "p. ex.": "par exemple", "c.-à-d.": "c'est-à-dire", "env.": "environ", "n°": "numéro", "nº": "numéro",
    },
    titles={"M.": "monsieur", "MM.": "messieurs"},
    months=("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
            "septembre", "octobre", "novembre", "décembre"),
    dates=((_ISO_DATE, "{day} {month}"), (_DMY_DATE, "{day} {month}")),
    date_days="first",  # "premier mai", "deux mai"
    ordinals={"er": "", "re": "f_ord", "ère": "f_ord", "e": "", "ème": "", "eme": ""},
    forms={"f": ((r"\bun$", "une"),), "f_ord": ((r"premier$", "première"),)},
    time=TimeReading(
        patterns=(_H_TIME, _COLON_TIME),
        on_the_hour="{h} {hours}",
        with_minutes="{h} {hours} {m}",
        hour_words=("heure", "heures"),
        hour_gender="f",
        minute_gender="f",
    ),
)

LANGUAGES: dict[str, Language] = {
    "en": EN, "en_gb": EN_DMY, "en_ie": EN_DMY, "en_au": EN_DMY, "en_nz": EN_DMY, "en_in": EN_DMY,
    "pt": PT, "da": DA, "de": DE, "es": ES, "fr": FR,
}

# A language with no row: num2words' words if it has the language, no symbols read.
_GENERIC = Language(num2words=None)


def spoken_chars(text: str) -> int:
    """Letters and digits: what is pronounced (spaces and punctuation are not)."""
    return sum(c.isalnum() for c in text)


def base_language(code: str) -> str:
    """The language without its region, lowercased: "en-GB", "en_gb" and "EN" are "en"."""
    return str(code or "").strip().lower().replace("_", "-").split("-")[0]


def _language(language: str) -> Language:
    """The row for ``language`` ("pt-BR" falls back to "pt"); never fails."""
    key = str(language or "").strip().lower().replace("-", "_")
    base = base_language(language)
    if key in LANGUAGES:
        return LANGUAGES[key]
    if base in LANGUAGES:
        return LANGUAGES[base]
    return replace(_GENERIC, num2words=base if base in CONVERTER_CLASSES else None)


class _CannotSpell(Exception):
    """num2words has no words for this; the matched text is kept as written."""


def _rewrite(words: str, rules: Rewrites) -> str:
    for pattern, repl in rules:
        words = re.sub(pattern, repl, words)
    return words


def _spell(value: int | Decimal, lang: Language, to: str = "cardinal", form: str = "") -> str:
    if lang.num2words is None:
        raise _CannotSpell
    try:
        words = num2words(value, lang=lang.num2words, to=to)
    # num2words' language modules raise NotImplementedError, OverflowError,
    # TypeError or IndexError for what they cannot say; the text must survive.
    except Exception as e:
        if to == "year":
            return _spell(value, lang, form=form)
        raise _CannotSpell from e
    # num2words writes "one thousand, five hundred"; a comma there would teach
    # the voice a pause that a reader does not make.
    words = _rewrite(words.replace(",", ""), lang.fixes)
    return _rewrite(words, lang.forms.get(form, ()))


@functools.lru_cache(maxsize=64)
def _number_regex(decimal_seps: str, group_seps: str) -> str:
    """"1,500.25" (en) or "1.500,25" (de): a group is exactly three digits."""
    grouped = rf"\d{{1,3}}(?:[{re.escape(group_seps)}]\d{{3}})+(?!\d)"
    return rf"(?P<int>{grouped}|\d+)(?:[{re.escape(decimal_seps)}](?P<frac>\d+))?"


def _split(raw: str, lang: Language) -> tuple[bool, int, str | None]:
    """"-1.500,25" -> (True, 1500, "25"); the fraction is None for an integer."""
    m = re.fullmatch(_number_regex(lang.decimal_seps, lang.group_seps), raw.lstrip("-"))
    return raw.startswith("-"), int(re.sub(r"\D", "", m["int"])), m["frac"]


def _number_words(raw: str, lang: Language, form: str = "") -> str:
    negative, whole, frac = _split(raw, lang)
    if frac is None:
        words = _spell(whole, lang, form=form)
    elif lang.decimal_word is None:
        words = _spell(Decimal(f"{whole}.{frac}"), lang)
    else:
        if lang.fraction_as_number and len(frac) <= 2 and not frac.startswith("0"):
            tail = _spell(int(frac), lang)
        else:
            tail = " ".join(_spell(int(d), lang) for d in frac)
        words = f"{_spell(whole, lang)} {lang.decimal_word} {tail}"
    return f"{lang.minus_word} {words}" if negative else words


def _with_of(amount: str, noun: str, lang: Language) -> str:
    """"um milhão" + "reais" -> "um milhão de reais"; "deux millions d'euros"."""
    if lang.of_after and re.search(lang.of_after, amount):
        return f"{amount} {lang.of_words[noun[:1].lower() in 'aeiouéèê']}{noun}"
    return f"{amount} {noun}"


#: A text that ends like this ends a sentence (closing quotes or brackets may follow).
_SENTENCE_END = re.compile(r"[.!?\u2026][\"')\]\u201d]*$")


def ends_sentence(text: str) -> bool:
    """Whether ``text`` (a label, a word as the ASR wrote it) ends with a sentence's final punctuation."""
    return bool(_SENTENCE_END.search(text.strip()))


def _ends_sentence(m: re.Match, before_capital: bool = False) -> bool:
    """Whether the "." that ends a match ("etc.", "kr.") also ends the sentence.

    True at the end of the text; with ``before_capital`` also before a
    capitalised word ("12 kr. Det er billigt"), which is wrong after a title
    ("Dr. Chen"), so abbreviations do not ask for it.
    """
    if not m.group(0).endswith("."):
        return False
    after = m.string[m.end():]
    return not after.strip() or (before_capital and after[:1] == " " and after[1:2].isupper())


@dataclass(frozen=True)
class _Patterns:
    """Regexes built once per language from its ``Language`` row."""

    dates: tuple[tuple[re.Pattern, str], ...]
    money: tuple[re.Pattern, ...]
    percent: re.Pattern
    times: tuple[re.Pattern, ...]
    ordinal: re.Pattern | None
    abbreviation: re.Pattern | None
    plain_number: re.Pattern


def _alternation(words) -> str:
    """Longest first, so that "R$" wins over "$" and "kr." over "kr"."""
    def one(w: str) -> str:
        return re.escape(w) + (r"(?!\w)" if w[-1].isalnum() else "")
    return "|".join(one(w) for w in sorted(words, key=len, reverse=True))


@functools.lru_cache(maxsize=64)
def _compile(language: str) -> tuple[Language, _Patterns]:
    lang = _language(language)
    # Named groups would clash where a pattern holds two numbers: strip them.
    number = re.sub(r"\?P<\w+>", "?:", _number_regex(lang.decimal_seps, lang.group_seps))
    months = "|".join(lang.months + tuple(m.capitalize() for m in lang.months if m != m.capitalize()))
    money = ()
    if lang.currencies:
        symbols = _alternation(lang.currencies)
        units = _alternation({**lang.currencies, **lang.currency_names})  # "12 €", "12 Euro"
        scale = rf"(?: (?P<scale>{lang.scales})(?!\w))?" if lang.scales else ""
        money = (
            re.compile(rf"(?<!\w)(?P<cur>{symbols}) ?\b(?P<num>{number}){scale}"),
            re.compile(rf"\b(?P<num>{number}){scale} ?(?P<cur>{units})"),
        )
    keys = {*lang.abbreviations, *lang.titles, *(_capitalize(k) for k in lang.abbreviations if k[0].islower())}
    patterns = _Patterns(
        dates=tuple((re.compile(p.replace("{months}", months)), f) for p, f in lang.dates),
        money=money,
        percent=re.compile(rf"(?P<sign>(?<!\S)-)?\b(?P<n>{number}) ?%"),
        times=tuple(re.compile(p) for p in lang.time.patterns),
        ordinal=re.compile(rf"\b(?P<n>\d+)(?P<suf>{_alternation(lang.ordinals)})(?!\w)") if lang.ordinals else None,
        abbreviation=re.compile(rf"(?<![\w.])(?:{_alternation(keys)})") if keys else None,
        plain_number=re.compile(rf"(?:(?<!\S)-)?\b{number}\b"),
    )
    return lang, patterns


# -- readers: one per kind of token, each (match, language) -> words ---------


def _read_date(m: re.Match, lang: Language, fmt: str) -> str:
    found = m.groupdict()
    day = int(found["d"])
    if found.get("mon"):
        month = [name.lower() for name in lang.months].index(found["mon"].lower()) + 1
    else:
        month = int(found["mo"])
    if month > 12 and day <= 12:  # "25/12/2021" in en: the writer's order, not ours
        day, month = month, day
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return m.group(0)
    before = m.string[:m.start()].split()
    previous = before[-1].lower() if before else ""
    if lang.date_days == "ordinal" or (lang.date_days == "first" and day == 1):
        form = lang.ordinal_after.get(previous, lang.ordinal_default)
        day_words = _spell(day, lang, to="ordinal", form=form)
    else:
        day_words = _spell(day, lang)
    words = fmt.format(day=day_words, month=lang.months[month - 1])
    if words.split(" ", 1)[0].lower() == previous:  # "on the 3rd of May": one "the"
        words = words.split(" ", 1)[1]
    if found.get("y"):
        words += lang.date_year_sep + _spell(int(found["y"]), lang, to="year")
    return words


def _read_money(m: re.Match, lang: Language) -> str:
    cur = lang.currencies[lang.currency_names.get(m["cur"], m["cur"])]
    _, whole, frac = _split(m["num"], lang)
    if m["cur"] in lang.currency_names and frac is not None and len(frac) != 2:
        return m.group(0)  # "2.5 euros" is read as the number it is
    full_stop = "." if _ends_sentence(m, before_capital=True) else ""
    if m["scale"] or (frac is not None and len(frac) > 2):
        amount = _number_words(m["num"], lang, form=lang.scale_gender) + (f" {m['scale']}" if m["scale"] else "")
        return _with_of(amount, cur.many, lang) + full_stop
    cents = int(frac.ljust(2, "0")) if frac else 0
    parts = []
    if whole or not cents:  # "$0.50" is "fifty cents"
        words = _spell(whole, lang, form=cur.gender)
        parts.append(_with_of(words, cur.one if whole == 1 else cur.many, lang))
    if cents:
        parts.append(f"{_spell(cents, lang, form=cur.sub_gender)} {cur.sub_one if cents == 1 else cur.sub_many}")
    return f" {lang.money_and} ".join(parts) + full_stop


def _read_percent(m: re.Match, lang: Language) -> str:
    raw = (m["sign"] or "") + m["n"]
    words = _number_words(raw, lang, form=lang.percent_gender)
    return f"{words} {lang.percent_word}" if lang.percent_word else f"{words}%"


def _read_time(m: re.Match, lang: Language) -> str:
    t = lang.time
    hour = int(m["h"])
    minute = int(m["m"] or 0)
    h = _spell(hour, lang, form=t.hour_gender)
    hours = t.hour_words[0 if hour <= 1 else 1]
    if minute == 0:
        return t.on_the_hour.format(h=h, hours=hours)
    words = _spell(minute, lang, form=t.minute_gender)
    if minute < 10 and t.minute_pad:
        words = f"{t.minute_pad} {words}"
    return t.with_minutes.format(h=h, hours=hours, m=words)


def _read_ordinal(m: re.Match, lang: Language) -> str:
    return _spell(int(m["n"]), lang, to="ordinal", form=lang.ordinals[m["suf"]])


def _read_abbreviation(m: re.Match, lang: Language) -> str:
    key = m.group(0)
    if key in lang.titles:
        after = m.string[m.end():m.end() + 2]
        if not (after[:1] == " " and after[1:].isupper()):  # "M. Dupont", not "la lettre M."
            return key
        full = lang.titles[key]
    elif key in lang.abbreviations:
        full = lang.abbreviations[key]
    else:  # the capitalised form of a lowercase key: "Z.B." -> "Zum Beispiel"
        full = _capitalize(lang.abbreviations[key[0].lower() + key[1:]])
    before = m.string[:m.start()].split()
    # It starts a sentence, unless the "." before it closes another abbreviation ("bl.a. ca.").
    if not before or (before[-1][-1] in ".!?" and not m.re.fullmatch(before[-1])):
        full = _capitalize(full)
    return full + ("." if _ends_sentence(m) else "")


def _capitalize(words: str) -> str:
    return words[:1].upper() + words[1:]


def _read_number(m: re.Match, lang: Language) -> str:
    raw = m.group(0)
    # A bare four-digit number between 1100 and 2099 is read as a year.
    if raw.isdigit() and len(raw) == 4 and 1100 <= int(raw) <= 2099:
        return _spell(int(raw), lang, to="year")
    return _number_words(raw, lang)


def _sub(pattern: re.Pattern | None, read: Callable[[re.Match], str], text: str) -> str:
    """``pattern.sub`` where a reader that cannot spell a match keeps it as written."""
    if pattern is None:
        return text

    def replace_one(m: re.Match) -> str:
        try:
            return read(m)
        except _CannotSpell:
            return m.group(0)

    return pattern.sub(replace_one, text)


def tidy(text: str) -> str:
    """Unicode NFC, straight quotes, plain dashes, single spaces."""
    text = unicodedata.normalize("NFC", text)
    text = re.sub(r"[\u00ad\u200b\u200c\u200d\ufeff]", "", text)  # soft hyphens and zero-width marks
    text = re.sub(r"«\s*", '"', text)
    text = re.sub(r"\s*»", '"', text)
    text = text.translate(str.maketrans({
        "‘": "'", "’": "'", "‚": "'", "‹": "'", "›": "'", "“": '"', "”": '"', "„": '"',
        "‐": "-", "‑": "-", "–": "-", "−": "-", "—": " - ",
    }))
    return re.sub(r"\s+", " ", text).strip()


def normalize(text: str, language: str = "en", *, lowercase: bool = False) -> str:
    """Spell out numbers, money, dates, times and abbreviations in ``language``."""
    lang, p = _compile(str(language or ""))
    text = tidy(text)
    # Order matters: dates and money hold numbers that a later step would read alone.
    for pattern, fmt in p.dates:
        text = _sub(pattern, lambda m, fmt=fmt: _read_date(m, lang, fmt), text)
    for pattern in p.money:
        text = _sub(pattern, lambda m: _read_money(m, lang), text)
    text = _sub(p.percent, lambda m: _read_percent(m, lang), text)
    for pattern in p.times:
        text = _sub(pattern, lambda m: _read_time(m, lang), text)
    text = _sub(p.ordinal, lambda m: _read_ordinal(m, lang), text)
    text = _sub(p.abbreviation, lambda m: _read_abbreviation(m, lang), text)
    text = _sub(p.plain_number, lambda m: _read_number(m, lang), text)
    text = re.sub(r"\s+", " ", text).strip()
    return text.lower() if lowercase else text


#: For scoring English: spellings and unit symbols that sound the same as their
#: counterparts (a reader says "kilometres" for "km"; "colour" and "color"
#: are one word). British spellings map to American ones, as Whisper's
#: English normaliser does; only whole words, only in :func:`for_scoring`.
SCORING_EQUIVALENTS_EN = {
    "km": "kilometers", "cm": "centimeters", "mm": "millimeters", "kg": "kilograms", "g": "grams",
    "kilometre": "kilometer", "kilometres": "kilometers", "centimetre": "centimeter", "centimetres": "centimeters",
    "metre": "meter", "metres": "meters", "litre": "liter", "litres": "liters", "centre": "center",
    "centres": "centers", "theatre": "theater", "neighbour": "neighbor", "neighbours": "neighbors",
    "colour": "color", "colours": "colors", "favourite": "favorite", "honour": "honor", "labour": "labor",
    "flavour": "flavor", "harbour": "harbor", "travelled": "traveled", "travelling": "traveling",
    "traveller": "traveler", "travellers": "travelers", "cancelled": "canceled", "organise": "organize",
    "organised": "organized", "realise": "realize", "realised": "realized", "recognise": "recognize",
    "programme": "program", "grey": "gray", "cheque": "check", "catalogue": "catalog", "ave": "avenue",
    "st": "street", "dr": "doctor", "mr": "mister", "mrs": "missus",
}


def for_scoring(text: str, language: str = "en") -> str:
    """Normalised, casefolded, punctuation-free text for WER and CER; accents stay.

    In English, spelling variants and unit symbols are made equal too
    (:data:`SCORING_EQUIVALENTS_EN`), so "travelled 25 km" scores equal to
    "traveled twenty-five kilometers".
    """
    text = normalize(text, language).casefold()
    text = text.replace("-", " ")
    text = re.sub(r"[^\w\s']|_", " ", text)
    text = text.replace("'", "")
    words = text.split()
    if base_language(language) == "en":
        words = [SCORING_EQUIVALENTS_EN.get(w, w) for w in words]
    return " ".join(words)
